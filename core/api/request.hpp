// SPDX-License-Identifier: LGPL-2.1-or-later
// request.hpp — what PortalLink tells a request (request.cpp) beyond the
// public API: the host answered, the host portal left, the link is going.
#pragma once

#include <gio/gio.h>

#include "sidebus-plugin.h"

namespace sidebus::request {

// org.freedesktop.portal.Request::Response at the request's host path.
void on_host_response(SidebusRequest* request, GVariant* parameters);
// The host portal left the bus: the guest gets response 2 and the request
// is retired.
void on_host_gone(SidebusRequest* request);
// The link is going away: the host request is closed and the request
// retired, without a word to the guest.
void on_link_gone(SidebusRequest* request);

// The link's portals restart (a configuration reload): the guest gets
// response 2 (or its call fails if the host has not answered it yet), the
// host request is closed, the request retired.
void on_portals_restart(SidebusRequest* request);
// Host calls that have not been answered yet. A stopping broker waits for
// them (bounded): only the answer says which host request to close.
int host_calls_in_flight();

}  // namespace sidebus::request
