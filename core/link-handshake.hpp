// link-handshake.hpp — the versioned text handshake that opens every guest
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
// The blocking line I/O below (used for the handshake and for SASL) reads one
// byte at a time, so not a single byte of the D-Bus stream that follows a line
// is consumed, and gives up at a monotonic deadline.
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
inline constexpr gint64 kTimeoutUsec = 10 * G_USEC_PER_SEC;

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
