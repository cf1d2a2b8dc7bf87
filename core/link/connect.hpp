// SPDX-License-Identifier: LGPL-2.1-or-later
// connect.hpp — the agent's end of a transport.
#pragma once

#include <gio/gio.h>

#include <string>

#include "util/unique-fd.hpp"

namespace sidebus {

// Connects to a --connect address. Blocking (vsock connect is bounded by the
// kernel's connect timeout). carries_fds tells whether the transport can
// carry SCM_RIGHTS (unix sockets not marked ,nofds).
UniqueFd connect_link(const std::string& address, bool* carries_fds, GError** error);

}  // namespace sidebus
