// link-handshake.cpp — parse/format the handshake lines (pure, strict,
// bounded) and the blocking line I/O both link ends use for the handshake and
// for SASL. See link-handshake.hpp for the protocol.
#include "link-handshake.hpp"

#include <gio/gio.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

namespace sidebus::handshake {

namespace {

// A short, escaped excerpt of untrusted input for error messages.
std::string quote(std::string_view text) {
  constexpr size_t kExcerpt = 80;
  std::string excerpt(text.substr(0, kExcerpt));
  g_autofree char* escaped = g_strescape(excerpt.c_str(), nullptr);
  std::string out = "“";
  // g_strescape stops at a NUL byte; show it explicitly instead.
  out += escaped;
  if (excerpt.find('\0') != std::string::npos)
    out += "\\0…";
  else if (text.size() > kExcerpt)
    out += "…";
  out += "”";
  return out;
}

bool fail(GError** error, std::string_view line, const char* format, ...) G_GNUC_PRINTF(3, 4);
bool fail(GError** error, std::string_view line, const char* format, ...) {
  va_list args;
  va_start(args, format);
  g_autofree char* reason = g_strdup_vprintf(format, args);
  va_end(args);
  g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA, "invalid handshake line %s: %s", quote(line).c_str(), reason);
  return false;
}

// Checks the framing shared by every line: size, final newline, printable ASCII.
bool check_framing(std::string_view line, GError** error) {
  if (line.empty()) return fail(error, line, "empty line");
  if (line.size() > kMaxLineLength)
    return fail(error, line, "%zu bytes long, at most %zu allowed", line.size(), kMaxLineLength);
  if (line.back() != '\n') return fail(error, line, "does not end with a newline");
  for (size_t i = 0; i + 1 < line.size(); i++) {
    auto c = static_cast<unsigned char>(line[i]);
    if (c == 0) return fail(error, line, "NUL byte at offset %zu", i);
    if (c > 0x7e) return fail(error, line, "non-ASCII byte 0x%02x at offset %zu", c, i);
    if (c < 0x20) return fail(error, line, "control character 0x%02x at offset %zu", c, i);
  }
  return true;
}

// Checks the framing and splits the line at single spaces.
bool split_line(std::string_view line, std::vector<std::string_view>* tokens, GError** error) {
  if (!check_framing(line, error)) return false;
  std::string_view body = line.substr(0, line.size() - 1);
  tokens->clear();
  size_t start = 0;
  while (true) {
    size_t space = body.find(' ', start);
    std::string_view token =
        body.substr(start, space == std::string_view::npos ? std::string_view::npos : space - start);
    if (token.empty()) return fail(error, line, "empty field (leading, trailing or double space)");
    tokens->push_back(token);
    if (space == std::string_view::npos) break;
    start = space + 1;
  }
  return true;
}

// Decimal uint32: digits only, no sign, no leading zeros, no overflow.
bool parse_uint32(std::string_view line, const char* name, std::string_view text, uint32_t* out, GError** error) {
  if (text.empty()) return fail(error, line, "%s is empty", name);
  if (text.size() > 10) return fail(error, line, "%s is out of range", name);
  uint64_t value = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return fail(error, line, "%s is not a decimal number", name);
    value = value * 10 + static_cast<uint64_t>(c - '0');
  }
  if (text.size() > 1 && text[0] == '0') return fail(error, line, "%s has a leading zero", name);
  if (value > UINT32_MAX) return fail(error, line, "%s is out of range", name);
  *out = static_cast<uint32_t>(value);
  return true;
}

bool parse_flag(std::string_view line, const char* name, std::string_view text, bool* out, GError** error) {
  if (text == "0" || text == "1") {
    *out = text == "1";
    return true;
  }
  return fail(error, line, "%s must be 0 or 1", name);
}

// Matches `fields` (key=value tokens) against the expected keys, in order.
bool split_fields(std::string_view line, const std::vector<std::string_view>& fields,
                  const std::vector<std::string_view>& keys, std::vector<std::string_view>* values, GError** error) {
  values->clear();
  for (size_t i = 0; i < fields.size(); i++) {
    size_t eq = fields[i].find('=');
    if (eq == std::string_view::npos) return fail(error, line, "field %zu is not key=value", i + 1);
    std::string key(fields[i].substr(0, eq));
    bool known = false;
    for (auto k : keys) known = known || k == key;
    // (keys are printable ASCII: check_framing() saw to that)
    if (!known) return fail(error, line, "unknown field “%s”", key.c_str());
    for (size_t j = 0; j < i; j++)
      if (fields[j].substr(0, fields[j].find('=')) == key)
        return fail(error, line, "duplicate field “%s”", key.c_str());
    if (i >= keys.size()) return fail(error, line, "too many fields");
    if (keys[i] != key)
      return fail(error, line, "field “%s” out of order (expected “%.*s”)", key.c_str(),
                  static_cast<int>(keys[i].size()), keys[i].data());
    values->push_back(fields[i].substr(eq + 1));
  }
  if (fields.size() < keys.size())
    return fail(error, line, "missing field “%.*s”", static_cast<int>(keys[fields.size()].size()),
                keys[fields.size()].data());
  return true;
}

bool check_version(std::string_view line, std::string_view text, GError** error) {
  uint32_t version = 0;
  if (!parse_uint32(line, "protocol version", text, &version, error)) return false;
  if (version != kProtocolVersion) {
    g_set_error(error, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED,
                "link protocol version %u is not supported (this end speaks %u): install the same sidebus "
                "version on the host and in the guest",
                version, kProtocolVersion);
    return false;
  }
  return true;
}

}  // namespace

bool is_valid_agent_version(std::string_view version) {
  if (version.empty() || version.size() > kMaxAgentVersionLength) return false;
  for (char c : version)
    if (!g_ascii_isalnum(c) && c != '.' && c != '_' && c != '+' && c != '~' && c != '-') return false;
  return true;
}

bool is_valid_reason(std::string_view reason) {
  if (reason.empty() || reason.size() > kMaxReasonLength) return false;
  for (char c : reason)
    if (c < 0x20 || c > 0x7e) return false;
  return true;
}

std::string format_hello(const Hello& hello) {
  std::string version = is_valid_agent_version(hello.agent_version) ? hello.agent_version : "unknown";
  return "SIDEBUS " + std::to_string(hello.version) + " fds=" + (hello.fds ? "1" : "0") +
         " uid=" + std::to_string(hello.uid) + " agent=" + version + "\n";
}

std::string format_reply(const Reply& reply) {
  if (reply.ok) return std::string("OK ") + std::to_string(kProtocolVersion) + " fds=" + (reply.fds ? "1" : "0") + "\n";
  std::string reason = reply.reason.substr(0, kMaxReasonLength);
  for (char& c : reason)
    if (c < 0x20 || c > 0x7e) c = '?';
  if (reason.empty()) reason = "refused";
  return "ERROR " + reason + "\n";
}

std::string format_ready(const Ready& ready) { return std::string("READY fds=") + (ready.fds ? "1" : "0") + "\n"; }

bool parse_hello(std::string_view line, Hello* out, GError** error) {
  std::vector<std::string_view> tokens;
  if (!split_line(line, &tokens, error)) return false;
  if (tokens[0] != "SIDEBUS")
    return fail(error, line, "expected “SIDEBUS”: is a sidebus-agent on the other end of the link?");
  if (tokens.size() < 2) return fail(error, line, "missing protocol version");
  if (!check_version(line, tokens[1], error)) return false;
  std::vector<std::string_view> values;
  if (!split_fields(line, {tokens.begin() + 2, tokens.end()}, {"fds", "uid", "agent"}, &values, error)) return false;
  Hello hello;
  if (!parse_flag(line, "fds", values[0], &hello.fds, error)) return false;
  if (!parse_uint32(line, "uid", values[1], &hello.uid, error)) return false;
  if (!is_valid_agent_version(values[2]))
    return fail(error, line, "agent version must be 1 to %zu of [A-Za-z0-9._+~-]", kMaxAgentVersionLength);
  hello.agent_version = std::string(values[2]);
  *out = std::move(hello);
  return true;
}

bool parse_reply(std::string_view line, Reply* out, GError** error) {
  // ERROR carries free text (any printable ASCII), so it is not tokenised.
  if (!check_framing(line, error)) return false;
  std::string_view body = line.substr(0, line.size() - 1);
  if (body == "ERROR" || body.substr(0, 6) == "ERROR ") {
    std::string_view reason = body.size() > 6 ? body.substr(6) : std::string_view();
    if (reason.empty()) return fail(error, line, "ERROR without a reason");
    if (!is_valid_reason(reason)) return fail(error, line, "reason longer than %zu bytes", kMaxReasonLength);
    *out = Reply{false, false, std::string(reason)};
    return true;
  }
  std::vector<std::string_view> tokens;
  if (!split_line(line, &tokens, error)) return false;
  if (tokens[0] != "OK") return fail(error, line, "expected “OK” or “ERROR”: is a sidebus-broker on the other end?");
  if (tokens.size() < 2) return fail(error, line, "missing protocol version");
  if (!check_version(line, tokens[1], error)) return false;
  std::vector<std::string_view> values;
  if (!split_fields(line, {tokens.begin() + 2, tokens.end()}, {"fds"}, &values, error)) return false;
  Reply reply{true, false, {}};
  if (!parse_flag(line, "fds", values[0], &reply.fds, error)) return false;
  *out = std::move(reply);
  return true;
}

bool parse_ready(std::string_view line, Ready* out, GError** error) {
  std::vector<std::string_view> tokens;
  if (!split_line(line, &tokens, error)) return false;
  if (tokens[0] != "READY") return fail(error, line, "expected “READY”");
  std::vector<std::string_view> values;
  if (!split_fields(line, {tokens.begin() + 1, tokens.end()}, {"fds"}, &values, error)) return false;
  Ready ready;
  if (!parse_flag(line, "fds", values[0], &ready.fds, error)) return false;
  *out = ready;
  return true;
}

// ---- blocking I/O ----

namespace {

bool is_socket(int fd) {
  struct stat st;
  return fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode);
}

// Waits until fd is ready for `events` or the deadline passes.
bool wait_fd(int fd, short events, gint64 deadline, const char* what, GError** error) {
  while (true) {
    gint64 remaining = deadline - g_get_monotonic_time();
    if (remaining <= 0) {
      g_set_error(error, G_IO_ERROR, G_IO_ERROR_TIMED_OUT, "timed out waiting for %s", what);
      return false;
    }
    struct pollfd pfd = {fd, events, 0};
    int n = poll(&pfd, 1, static_cast<int>((remaining + 999) / 1000));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int saved = errno;
      g_set_error(error, G_IO_ERROR, g_io_error_from_errno(saved), "waiting for %s: %s", what, g_strerror(saved));
      return false;
    }
    if (n > 0 && (pfd.revents & POLLNVAL)) {
      g_set_error(error, G_IO_ERROR, G_IO_ERROR_CLOSED, "%s: file descriptor is not open", what);
      return false;
    }
    if (n > 0) return true;  // readable, writable, hung up or in error: the next call tells
  }
}

}  // namespace

bool read_byte(int fd, gint64 deadline, const char* what, char* out, GError** error) {
  while (true) {
    if (!wait_fd(fd, POLLIN, deadline, what, error)) return false;
    ssize_t n = read(fd, out, 1);
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (n < 0) {
      int saved = errno;
      g_set_error(error, G_IO_ERROR, g_io_error_from_errno(saved), "reading from %s: %s", what, g_strerror(saved));
      return false;
    }
    if (n == 0) {
      g_set_error(error, G_IO_ERROR, G_IO_ERROR_CONNECTION_CLOSED, "%s closed the connection", what);
      return false;
    }
    return true;
  }
}

bool read_line(int fd, std::string_view terminator, size_t max_length, gint64 deadline, const char* what,
               std::string* line, GError** error) {
  line->clear();
  while (true) {
    if (line->size() >= max_length) {
      g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA, "%s sent a line longer than %zu bytes", what, max_length);
      return false;
    }
    char c;
    if (!read_byte(fd, deadline, what, &c, error)) {
      if (!line->empty()) g_prefix_error(error, "in the middle of a line: ");
      return false;
    }
    line->push_back(c);
    if (line->size() >= terminator.size() &&
        std::string_view(*line).substr(line->size() - terminator.size()) == terminator)
      return true;
  }
}

bool write_all(int fd, std::string_view data, gint64 deadline, const char* what, GError** error) {
  bool socket = is_socket(fd);
  while (!data.empty()) {
    if (!wait_fd(fd, POLLOUT, deadline, what, error)) return false;
    ssize_t n =
        socket ? send(fd, data.data(), data.size(), MSG_NOSIGNAL | MSG_DONTWAIT) : write(fd, data.data(), data.size());
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (n < 0) {
      int saved = errno;
      g_set_error(error, G_IO_ERROR, g_io_error_from_errno(saved), "writing to %s: %s", what, g_strerror(saved));
      return false;
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

// ---- the exchange ----

bool broker_begin(int fd, bool transport_carries_fds, gint64 deadline, const char* what, Hello* hello, bool* fds,
                  GError** error) {
  std::string line;
  if (!read_line(fd, "\n", kMaxLineLength, deadline, what, &line, error)) return false;
  GError* parse_error = nullptr;
  if (!parse_hello(line, hello, &parse_error)) {
    broker_refuse(fd, g_error_matches(parse_error, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED)
                          ? "unsupported protocol version, this broker speaks 1"
                          : "malformed handshake");
    g_propagate_error(error, parse_error);
    return false;
  }
  *fds = hello->fds && transport_carries_fds;
  return write_all(fd, format_reply(Reply{true, *fds, {}}), deadline, what, error);
}

bool broker_finish(int fd, gint64 deadline, const char* what, bool* fds, GError** error) {
  std::string line;
  Ready ready;
  if (!read_line(fd, "\n", kMaxLineLength, deadline, what, &line, error) || !parse_ready(line, &ready, error))
    return false;
  if (ready.fds && !*fds) {
    g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA,
                "%s announced fd passing in READY although the broker refused it", what);
    return false;
  }
  *fds = ready.fds;
  return true;
}

void broker_refuse(int fd, std::string_view reason) {
  std::string line = format_reply(Reply{false, false, std::string(reason)});
  // Best effort: a full socket buffer just loses the courtesy message.
  if (is_socket(fd))
    (void)!send(fd, line.data(), line.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
  else
    (void)!write(fd, line.data(), line.size());
}

bool agent_begin(int fd, bool transport_carries_fds, uint32_t uid, const char* agent_version, gint64 deadline,
                 const char* what, bool* fds, GError** error) {
  Hello hello{kProtocolVersion, transport_carries_fds, uid, agent_version};
  if (!write_all(fd, format_hello(hello), deadline, what, error)) return false;
  std::string line;
  Reply reply;
  if (!read_line(fd, "\n", kMaxLineLength, deadline, what, &line, error) || !parse_reply(line, &reply, error))
    return false;
  if (!reply.ok) {
    g_set_error(error, G_IO_ERROR, G_IO_ERROR_CONNECTION_REFUSED, "%s refused the link: %s", what,
                reply.reason.c_str());
    return false;
  }
  if (reply.fds && !transport_carries_fds) {
    g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA,
                "%s agreed to fd passing although this transport cannot carry fds", what);
    return false;
  }
  *fds = reply.fds;
  return true;
}

bool agent_finish(int fd, bool fds, gint64 deadline, const char* what, GError** error) {
  return write_all(fd, format_ready(Ready{fds}), deadline, what, error);
}

}  // namespace sidebus::handshake
