// SPDX-License-Identifier: LGPL-2.1-or-later
// handshake-lines.hpp — the versioned text handshake that opens every guest
// link, before the raw D-Bus stream:
//
//   agent  → broker   SIDEBUS 1 fds=<0|1> uid=<n> agent=<version>\n
//   broker → agent    OK 1 fds=<0|1>\n          (fds = AND of both ends)
//                or   ERROR <reason>\n          (then the broker closes)
//   agent  → broker   READY fds=<0|1>\n         (after the agent authenticated
//                                               to the guest bus; may only lower)
//
// Parsing and formatting are pure functions over one line (fuzzed by
// tests/test-link-handshake.cpp): strict ASCII, fields in this exact order,
// no duplicates, decimal numbers without sign or leading zeros, at most
// kMaxLineLength bytes including the '\n'. Anything else is rejected with a
// G_IO_ERROR_INVALID_DATA error; an unknown protocol version with
// G_IO_ERROR_NOT_SUPPORTED, so the broker can answer "ERROR" politely.
//
// The line I/O and the two ends of the exchange are link/handshake.hpp.
#pragma once

#include <glib.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace sidebus::handshake {

inline constexpr uint32_t kProtocolVersion = 1;
inline constexpr size_t kMaxLineLength = 512;         // including the '\n'
inline constexpr size_t kMaxAgentVersionLength = 64;  // [A-Za-z0-9._+~-]
inline constexpr size_t kMaxReasonLength = 200;       // printable ASCII

struct Hello {
  uint32_t version = kProtocolVersion;
  bool fds = false;
  uint32_t uid = 0;
  std::string agent_version;
};

struct Reply {
  bool ok = false;     // OK or ERROR
  bool fds = false;    // OK only
  std::string reason;  // ERROR only
};

struct Ready {
  bool fds = false;
};

// Format: values must be valid (an invalid agent version or reason is
// replaced/truncated so the output always parses).
std::string format_hello(const Hello& hello);
std::string format_reply(const Reply& reply);
std::string format_ready(const Ready& ready);

// Parse one complete line, '\n' included.
bool parse_hello(std::string_view line, Hello* out, GError** error);
bool parse_reply(std::string_view line, Reply* out, GError** error);
bool parse_ready(std::string_view line, Ready* out, GError** error);

// Is this a valid agent version string / ERROR reason?
bool is_valid_agent_version(std::string_view version);
bool is_valid_reason(std::string_view reason);


}  // namespace sidebus::handshake
