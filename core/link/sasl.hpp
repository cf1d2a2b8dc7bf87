// SPDX-License-Identifier: LGPL-2.1-or-later
// sasl.hpp — the two halves of D-Bus SASL (EXTERNAL only) that sidebus speaks
// itself, on plain blocking-or-not fds, bounded by a deadline:
//
// * run_server(): the broker's GDBusConnection (AUTHENTICATION_CLIENT) talks to
//   this on its own end of a local socketpair, so the broker's identity never
//   has to mean anything to the guest bus; it accepts any EXTERNAL identity
//   (the only peer is our own process) and agrees to fd passing only when the
//   link carries fds.
// * run_client(): the agent authenticates to the guest bus with its own uid.
//
// Both read one byte at a time during authentication, so the first bytes of
// the D-Bus stream after BEGIN are never consumed here: once they return, the
// fd can be spliced as is.
#pragma once

#include <glib.h>

#include <cstddef>
#include <cstdint>
#include <string>

namespace sidebus::sasl {

inline constexpr size_t kMaxLineLength = 16 * 1024;  // including "\r\n"
inline constexpr size_t kMaxAuthBytes = 64 * 1024;   // the whole exchange
inline constexpr int kMaxCommands = 64;

// Answers one client up to and including BEGIN. *fds_agreed tells whether
// NEGOTIATE_UNIX_FD was agreed to (only possible with allow_fds).
bool run_server(int fd, bool allow_fds, gint64 deadline, bool* fds_agreed, GError** error);

// Authenticates as `uid` with EXTERNAL, negotiates fd passing if want_fds
// (*fds_agreed false when the server refuses) and sends BEGIN. what names the
// bus in error messages. guid may be NULL.
bool run_client(int fd, uint32_t uid, bool want_fds, gint64 deadline, const char* what, bool* fds_agreed,
                std::string* guid, GError** error);

}  // namespace sidebus::sasl
