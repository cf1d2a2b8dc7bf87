// SPDX-License-Identifier: LGPL-2.1-or-later
// portal.cpp — the SidebusPortal GObject interface every plugin implements
// (sidebus-plugin.h): the extension point the broker's libpeas engine asks for.
#include "sidebus-plugin.h"

G_DEFINE_INTERFACE(SidebusPortal, sidebus_portal, G_TYPE_OBJECT)

static void sidebus_portal_default_init(SidebusPortalInterface*) {}
