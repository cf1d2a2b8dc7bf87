// SPDX-License-Identifier: LGPL-2.1-or-later
// service-notify.hpp — the systemd notification protocol (sd_notify(3)),
// without libsystemd: one datagram per state change to $NOTIFY_SOCKET, so a
// Type=notify unit knows when the broker is ready and what its link does
// (`systemctl status` shows the STATUS= line).
//
// take_from_environment() reads $NOTIFY_SOCKET once and unsets it, so that
// no child (dbus-daemon, the document portal, virtiofsd) talks to systemd
// in our name. Without it (not run by systemd), every call is a no-op.
#pragma once

#include <string>

namespace sidebus::service_notify {

// Reads and unsets $NOTIFY_SOCKET: a filesystem path ("/run/systemd/notify")
// or an abstract address ("@name"). Any other value (a vsock address of newer
// systemd versions, garbage) is logged and ignored. Call once, early.
void take_from_environment();
// Whether there is somewhere to send to.
bool enabled();

// Sends @state ("READY=1\nSTATUS=…") as one datagram, without blocking: a
// manager that does not read loses the message, the broker never waits.
// False if it could not be sent (logged once).
bool send(const std::string& state);

// The lines the broker sends: READY=1 with a STATUS=, a STATUS= alone,
// RELOADING=1 (with MONOTONIC_USEC=, as systemd ≥ 253 wants it) and
// STOPPING=1. Newlines in @status become spaces.
void ready(const std::string& status);
void status(const std::string& status);
void reloading();
void stopping();

}  // namespace sidebus::service_notify
