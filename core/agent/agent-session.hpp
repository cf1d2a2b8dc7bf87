// SPDX-License-Identifier: LGPL-2.1-or-later
// agent-session.hpp — the guest end of one link: the agent's handshake,
// authentication to the guest bus with the agent's own credentials, and the
// splice between the two streams. Used by sidebus-agent and by the broker's
// --debug-access mode.
#pragma once

#include <gio/gio.h>

#include <functional>
#include <memory>
#include <string>

#include "link/relay.hpp"
#include "util/unique-fd.hpp"

namespace sidebus {

class AgentSession {
 public:
  // Takes a connected link; connects to guest_bus_address with the caller's
  // own credentials. on_closed(error or NULL, borrowed) runs on the main
  // context when either side goes away; guest_bus_gone tells which (a hint:
  // the bus side ended first; the agent watches its own bus connection too).
  // Blocks for the handshake and the guest bus authentication (each bounded
  // by 10 s). From the main thread that is fine as long as the broker end is
  // served elsewhere: establish_guest_link() runs its handshake in a thread,
  // so --debug-access can call establish_guest_link(pair[0]) and then
  // start(pair[1]) on the main thread.
  // @protocol_version: the link protocol to offer (1 or 2,
  // handshake-lines.hpp); a broker that does not speak it refuses with
  // G_IO_ERROR_NOT_SUPPORTED (see agent-main.cpp, which then offers 1).
  static std::unique_ptr<AgentSession> start(UniqueFd link, bool transport_carries_fds, std::string transport,
                                             std::string guest_bus_address,
                                             std::function<void(bool guest_bus_gone, GError*)> on_closed,
                                             GError** error, uint32_t protocol_version = 2);
  virtual ~AgentSession() = default;

  // What was agreed, and what the relay did (for tests and logs).
  virtual uint32_t protocol_version() const = 0;
  virtual bool framed() const = 0;
  virtual const Relay::Counters& counters() const = 0;
};

}  // namespace sidebus
