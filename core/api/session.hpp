// SPDX-License-Identifier: LGPL-2.1-or-later
// session.hpp — what request.cpp and PortalLink tell a session
// (session.cpp) beyond the public API.
#pragma once

#include <gio/gio.h>

#include <string>

#include "sidebus-plugin.h"

namespace sidebus::session {

// A session for @sender at @guest_path, reserved on the link but not yet
// active (its CreateSession-style request is still pending). NULL with an
// error (Exists, LimitsExceeded) if it cannot be.
SidebusSession* create(SidebusContext* context, const std::string& sender, const std::string& token,
                       GError** error);
// The core's session_handle_token for the host call.
const char* host_token(SidebusSession* session);
// The request that creates it succeeded: the guest's Session object is
// exported and the session follows the host session at @host_path.
void activate(SidebusSession* session, const std::string& host_path);
// The request failed or was retired first: the reserved session ends
// quietly.
void abandon(SidebusSession* session);
// org.freedesktop.portal.Session::Closed at the host path.
void on_host_closed(SidebusSession* session, GVariant* parameters);
// The host portal left the bus: the guest gets Closed.
void on_host_gone(SidebusSession* session);
// The link is going away: the host session is closed, nothing is said to
// the guest.
void on_link_gone(SidebusSession* session);
// The link's portals restart (a configuration reload): the guest gets
// Closed and the host session is closed.
void on_portals_restart(SidebusSession* session);

}  // namespace sidebus::session
