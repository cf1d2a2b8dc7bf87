// SPDX-License-Identifier: LGPL-2.1-or-later
// control-commands.hpp — what the control socket answers (control-socket.hpp
// carries the bytes): "status", "dump-log" and "reload", each documented in
// docs/operations.md and sidebusctl(1).
#pragma once

#include <functional>

#include "broker/broker.hpp"
#include "broker/control-socket.hpp"

namespace sidebus {

// @broker returns the running broker, or nullptr while it is starting.
ControlSocket::Handler control_commands(std::function<Broker*()> broker);

// A reload as SIGHUP asks for it: the outcome is logged, nothing else.
void reload_on_signal(Broker* broker);

}  // namespace sidebus
