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

// What the two ends agreed (handshake-lines.hpp has the lines).
struct Terms {
  uint32_t version = kProtocolVersion;  // 1 or 2
  bool native_fds = false;  // fds pass as they are (SCM_RIGHTS on a unix socket; both ends can)
  bool framed = false;      // protocol 2 on a byte-only transport: frames, fds forwarded as channels
  std::string documents_path;  // protocol 2: the guest documents path the broker announced ("" if none)
  bool fds = false;  // after READY: the guest bus agreed to fd passing, and the link carries fds (either way)
};

// What the broker offers a protocol 2 agent.
struct BrokerOffer {
  bool forward_fds = true;     // frame byte-only links (protocol 2)
  std::string documents_path;  // announced in OK 2 (must fit kMaxDocsFieldLength encoded; else "-")
};

// Broker: reads SIDEBUS, answers OK in the agent's version (or ERROR and
// fails). A protocol 1 agent gets protocol 1 (raw stream, fds only natively).
bool broker_begin(int fd, bool transport_carries_fds, const BrokerOffer& offer, gint64 deadline, const char* what,
                  Hello* hello, Terms* terms, GError** error);
// Broker: reads READY; terms->fds says whether fds cross (only possible on
// a native or framed link).
bool broker_finish(int fd, gint64 deadline, const char* what, Terms* terms, GError** error);
// Broker: refuses the link with a reason, best effort, without blocking.
void broker_refuse(int fd, std::string_view reason);

// Agent: sends SIDEBUS @version (1 or 2), reads the reply into *terms. A
// broker that does not speak @version refuses with an ERROR: that is
// G_IO_ERROR_NOT_SUPPORTED (try again with an older version), any other
// ERROR G_IO_ERROR_CONNECTION_REFUSED.
bool agent_begin(int fd, bool transport_carries_fds, uint32_t uid, const char* agent_version, uint32_t version,
                 gint64 deadline, const char* what, Terms* terms, GError** error);
// Agent: sends READY.
bool agent_finish(int fd, bool fds, gint64 deadline, const char* what, GError** error);

}  // namespace sidebus::handshake
