// SPDX-License-Identifier: LGPL-2.1-or-later
// debug-bus.hpp — --debug-access: a local dbus-daemon at DIR/vm.sock stands
// for the guest session bus, and the broker's own in-process agent connects
// it to the broker through a socket pair, exactly as a real link would. Any
// portal client on the host can then be pointed at it with
// DBUS_SESSION_BUS_ADDRESS=unix:path=DIR/vm.sock.
#pragma once

#include <gio/gio.h>

#include <memory>
#include <string>

#include "link/listener.hpp"

namespace sidebus {

class DebugBus {
 public:
  static std::unique_ptr<DebugBus> start(const std::string& dir, const std::string& runtime_dir,
                                         Listener::AcceptFunc on_link, GError** error);
  virtual ~DebugBus() = default;  // stops the agent session and the bus, removes vm.sock
};

}  // namespace sidebus
