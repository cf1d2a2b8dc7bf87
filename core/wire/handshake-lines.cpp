// SPDX-License-Identifier: LGPL-2.1-or-later
// handshake-lines.cpp — parse and format the handshake lines: pure, strict,
// bounded (see handshake-lines.hpp). Fuzzed by fuzz-handshake-lines.cpp.
#include "wire/handshake-lines.hpp"

#include <gio/gio.h>

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

bool check_version(std::string_view line, std::string_view text, uint32_t* out, GError** error) {
  uint32_t version = 0;
  if (!parse_uint32(line, "protocol version", text, &version, error)) return false;
  if (version < kMinProtocolVersion || version > kProtocolVersion) {
    g_set_error(error, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED,
                "link protocol version %u is not supported (this end speaks %u to %u): install the same sidebus "
                "version on the host and in the guest",
                version, kMinProtocolVersion, kProtocolVersion);
    return false;
  }
  *out = version;
  return true;
}

bool is_unreserved(char c) { return g_ascii_isalnum(c) || c == '/' || c == '.' || c == '_' || c == '~' || c == '-'; }

// The docs= value: "-" (none) or the canonical percent-encoding of an absolute path.
bool parse_documents_path(std::string_view line, std::string_view text, std::string* out, GError** error) {
  if (text == "-") {
    out->clear();
    return true;
  }
  if (text.size() > kMaxDocsFieldLength) return fail(error, line, "docs is longer than %zu bytes", kMaxDocsFieldLength);
  std::string path;
  for (size_t i = 0; i < text.size(); i++) {
    char c = text[i];
    if (is_unreserved(c)) {
      path += c;
      continue;
    }
    if (c != '%') return fail(error, line, "docs holds “%c”, which must be percent-encoded", c);
    if (text.size() - i < 3) return fail(error, line, "docs ends in the middle of a percent-escape");
    auto hex = [](char h) { return (h >= '0' && h <= '9') ? h - '0' : (h >= 'A' && h <= 'F') ? h - 'A' + 10 : -1; };
    int high = hex(text[i + 1]), low = hex(text[i + 2]);
    if (high < 0 || low < 0) return fail(error, line, "docs has a percent-escape that is not two upper-case hex digits");
    char decoded = static_cast<char>(high * 16 + low);
    if (decoded == '\0') return fail(error, line, "docs holds a NUL byte");
    if (is_unreserved(decoded)) return fail(error, line, "docs percent-encodes “%c”, which needs no escape", decoded);
    path += decoded;
    i += 2;
  }
  if (path.empty() || path[0] != '/') return fail(error, line, "docs is not an absolute path");
  *out = std::move(path);
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

std::string encode_documents_path(std::string_view path) {
  if (path.empty()) return "-";
  if (path[0] != '/') return "";
  std::string out;
  for (char c : path) {
    if (c == '\0') return "";
    if (is_unreserved(c)) {
      out += c;
    } else {
      char escaped[4];
      g_snprintf(escaped, sizeof escaped, "%%%02X", static_cast<unsigned char>(c));
      out += escaped;
    }
  }
  return out.size() <= kMaxDocsFieldLength ? out : "";
}

std::string format_hello(const Hello& hello) {
  std::string version = is_valid_agent_version(hello.agent_version) ? hello.agent_version : "unknown";
  return "SIDEBUS " + std::to_string(hello.version) + " fds=" + (hello.fds ? "1" : "0") +
         " uid=" + std::to_string(hello.uid) + " agent=" + version + "\n";
}

std::string format_reply(const Reply& reply) {
  if (reply.ok && reply.version == 1) return std::string("OK 1 fds=") + (reply.fds ? "1" : "0") + "\n";
  if (reply.ok) {
    std::string docs = encode_documents_path(reply.documents_path);
    if (docs.empty()) docs = "-";
    return std::string("OK 2 fds=") + (reply.fds ? "1" : "0") + " framed=" + (reply.framed && !reply.fds ? "1" : "0") +
           " docs=" + docs + "\n";
  }
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
  Hello hello;
  if (!check_version(line, tokens[1], &hello.version, error)) return false;
  std::vector<std::string_view> values;
  if (!split_fields(line, {tokens.begin() + 2, tokens.end()}, {"fds", "uid", "agent"}, &values, error)) return false;
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
    Reply refused;
    refused.reason = std::string(reason);
    *out = std::move(refused);
    return true;
  }
  std::vector<std::string_view> tokens;
  if (!split_line(line, &tokens, error)) return false;
  if (tokens[0] != "OK") return fail(error, line, "expected “OK” or “ERROR”: is a sidebus-broker on the other end?");
  if (tokens.size() < 2) return fail(error, line, "missing protocol version");
  Reply reply;
  reply.ok = true;
  if (!check_version(line, tokens[1], &reply.version, error)) return false;
  std::vector<std::string_view> values;
  std::vector<std::string_view> keys = {"fds"};
  if (reply.version >= 2) keys = {"fds", "framed", "docs"};
  if (!split_fields(line, {tokens.begin() + 2, tokens.end()}, keys, &values, error)) return false;
  if (!parse_flag(line, "fds", values[0], &reply.fds, error)) return false;
  if (reply.version >= 2) {
    if (!parse_flag(line, "framed", values[1], &reply.framed, error)) return false;
    if (reply.fds && reply.framed) return fail(error, line, "a link that carries fds is never framed");
    if (!parse_documents_path(line, values[2], &reply.documents_path, error)) return false;
  }
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

}  // namespace sidebus::handshake
