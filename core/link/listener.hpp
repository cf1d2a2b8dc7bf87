// SPDX-License-Identifier: LGPL-2.1-or-later
// listener.hpp — the broker accepts guest links on every --listen address.
#pragma once

#include <gio/gio.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "util/unique-fd.hpp"

namespace sidebus {

// Accepts guest links on every address: "unix:PATH", "vsock:PORT", "fd:N",
// "systemd" (all LISTEN_FDS). on_accept runs on the main context for every
// accepted connection. transport_carries_fds is false for vsock, and for unix
// sockets only true where the socket really is a unix socket pair end to end
// (a --listen option may mark it byte-only: "unix:PATH,nofds").
class Listener {
 public:
  using AcceptFunc = std::function<void(UniqueFd link, bool transport_carries_fds, std::string transport)>;
  // Binds and listens on every address (an error names the address and what
  // to do). With @paused, connections wait in the sockets' backlog until
  // start_accepting(): the broker binds first, so that a bad --listen is
  // refused before anything else is started, and accepts once it is ready.
  static std::unique_ptr<Listener> create(const std::vector<std::string>& addresses, AcceptFunc on_accept,
                                          GError** error, bool paused = false);
  virtual ~Listener() = default;  // stops listening and removes unix socket files it created
  virtual void start_accepting() = 0;
};

}  // namespace sidebus
