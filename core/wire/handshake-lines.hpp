// SPDX-License-Identifier: LGPL-2.1-or-later
// handshake-lines.hpp — the versioned text handshake that opens every guest
// link, before the D-Bus stream (protocol 1: raw; protocol 2: raw on links
// that carry fds, frames on byte-only links, wire/channel-frames.hpp):
//
//   agent  → broker   SIDEBUS <1|2> fds=<0|1> uid=<n> agent=<version>\n
//                                               (the highest version it speaks;
//                                               fds: its transport carries fds)
//   broker → agent    OK 1 fds=<0|1>\n          (to SIDEBUS 1: fds = AND of both ends)
//                or   OK 2 fds=<0|1> framed=<0|1> docs=<path>\n
//                                               (to SIDEBUS 2: fds as above;
//                                               framed: fds are forwarded as
//                                               channels, never with fds=1;
//                                               docs: the guest documents path,
//                                               percent-encoded, or "-")
//                or   ERROR <reason>\n          (then the broker closes)
//   agent  → broker   READY fds=<0|1>\n         (after the agent authenticated
//                                               to the guest bus: whether it
//                                               agreed to fd passing; only on
//                                               an fds=1 or framed=1 link)
//
// Parsing and formatting are pure functions over one line (fuzzed by
// fuzz-handshake-lines.cpp, and tests/test-link-handshake.cpp): strict
// ASCII, fields in this exact order, no duplicates, decimal numbers without
// sign or leading zeros, one spelling of every path (percent-escapes in
// upper case, only where needed: every byte but [A-Za-z0-9/._~-]), at most
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

// The newest protocol; every version from kMinProtocolVersion on is spoken.
inline constexpr uint32_t kProtocolVersion = 2;
inline constexpr uint32_t kMinProtocolVersion = 1;
inline constexpr size_t kMaxLineLength = 512;         // including the '\n'
inline constexpr size_t kMaxAgentVersionLength = 64;  // [A-Za-z0-9._+~-]
inline constexpr size_t kMaxReasonLength = 200;       // printable ASCII
inline constexpr size_t kMaxDocsFieldLength = 400;    // the docs= value, encoded
// The start of the ERROR reason a broker gives for a version it does not
// speak (protocol 1 brokers say "…, this broker speaks 1"): an agent that
// reads it may try again with an older version.
inline constexpr char kUnsupportedVersionReason[] = "unsupported protocol version";

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
  uint32_t version = kProtocolVersion;  // OK only: 1 or 2
  bool framed = false;                  // OK 2 only
  std::string documents_path;           // OK 2 only: absolute, or "" (sent as "-")
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
// The docs= spelling of an absolute path ("" if it is not absolute, holds a
// NUL or encodes to more than kMaxDocsFieldLength bytes; "-" for "").
std::string encode_documents_path(std::string_view path);


}  // namespace sidebus::handshake
