// SPDX-License-Identifier: LGPL-2.1-or-later
// handshake.hpp — the link's opening exchange on a connected fd (the lines
// themselves are wire/handshake-lines.hpp), and the blocking line I/O it and
// SASL use: one byte at a time, so not a single byte of the D-Bus stream that
// follows a line is consumed, and bounded by a monotonic deadline.
#pragma once

#include <glib.h>

#include <string>
#include <string_view>

#include "wire/handshake-lines.hpp"

namespace sidebus::handshake {

inline constexpr gint64 kTimeoutUsec = 10 * G_USEC_PER_SEC;

// ---- blocking line I/O with a deadline (g_get_monotonic_time() µs) ----

// Reads exactly one byte; EOF is an error.
bool read_byte(int fd, gint64 deadline, const char* what, char* out, GError** error);
// Reads up to and including `terminator` ("\n" or "\r\n"), one byte at a time.
// Fails on EOF, timeout or when the line exceeds max_length bytes; the content
// is checked by the caller.
// what names the peer for error messages ("link unix:/run/vm.sock").
bool read_line(int fd, std::string_view terminator, size_t max_length, gint64 deadline, const char* what,
               std::string* line, GError** error);
// Writes everything (never raises SIGPIPE).
bool write_all(int fd, std::string_view data, gint64 deadline, const char* what, GError** error);

// ---- the two ends of the exchange, on a connected link fd ----

// Broker: reads SIDEBUS, answers OK (or ERROR and fails). *fds is the agreed
// value (hello.fds && transport_carries_fds).
bool broker_begin(int fd, bool transport_carries_fds, gint64 deadline, const char* what, Hello* hello, bool* fds,
                  GError** error);
// Broker: reads READY; *fds may only stay or drop.
bool broker_finish(int fd, gint64 deadline, const char* what, bool* fds, GError** error);
// Broker: refuses the link with a reason, best effort, without blocking.
void broker_refuse(int fd, std::string_view reason);

// Agent: sends SIDEBUS, reads the reply; *fds is what the broker agreed to.
bool agent_begin(int fd, bool transport_carries_fds, uint32_t uid, const char* agent_version, gint64 deadline,
                 const char* what, bool* fds, GError** error);
// Agent: sends READY.
bool agent_finish(int fd, bool fds, gint64 deadline, const char* what, GError** error);

}  // namespace sidebus::handshake
