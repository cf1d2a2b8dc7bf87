// SPDX-License-Identifier: LGPL-2.1-or-later
// errors.hpp — core-internal side of SIDEBUS_ERROR (errors.cpp).
#pragma once

#include <gio/gio.h>

namespace sidebus {

// Rewrites SIDEBUS_ERROR codes whose D-Bus names belong to G_DBUS_ERROR into
// that domain, in place; returns @error.
GError* error_to_dbus(GError* error);

}  // namespace sidebus
