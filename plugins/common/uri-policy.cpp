// uri-policy.cpp — the checks behind check_guest_uri() (see uri-policy.hpp).
//
// Why each step, in the order they run:
//  1. length and UTF-8 first, so nothing later walks an unbounded or
//     malformed string;
//  2. RFC 3986 characters only (plus non-ASCII text, as IRIs have it, minus
//     control and bidirectional formatting characters): GLib's "strict"
//     g_uri_parse() still accepts spaces, tabs and control bytes, and a host
//     handler receives the string verbatim (argv, Exec %u); an encoded NUL
//     (%00) is refused too, whatever the scheme;
//  3. g_uri_parse() strict: the grammar, and percent-escapes that decode to
//     invalid UTF-8 ("%ff") are refused here;
//  4. the scheme (lower-cased, RFC 3986 is case-insensitive there) must be in
//     the administrator's allow-list — except file:, which is never "allowed"
//     as such: it is only ever accepted for the VM's own documents (5);
//  5. file:// is inspected from g_uri_split() *without* decoding or
//     normalising (g_uri_parse() silently resolves "/a/../b"), so ".", "..",
//     "%2e%2e", an encoded "/" (%2F), a host other than localhost,
//     user/port/query/fragment are all refused before the decoded path must
//     lie inside the guest documents directory. The core then maps it to the
//     host file (sidebus_context_guest_path_to_host_path), checking the
//     document itself.
#include "uri-policy.hpp"

#include <algorithm>
#include <cstring>

namespace sidebus::common {
namespace {

constexpr gsize kMessageQuoteLength = 120;

bool is_rfc3986_ascii(char c) {
  if (g_ascii_isalnum(c)) return true;
  return strchr("-._~:/?#[]@!$&'()*+,;=%", c) != nullptr;
}

// Unicode characters that make a URI display as something it is not, or
// that a handler's argv has no business receiving unescaped.
bool is_forbidden_code_point(gunichar c) {
  return (c >= 0x80 && c <= 0x9f)         // C1 controls
         || c == 0x200e || c == 0x200f    // LRM, RLM
         || (c >= 0x202a && c <= 0x202e)  // bidi embeddings/overrides
         || (c >= 0x2066 && c <= 0x2069)  // bidi isolates
         || c == 0xfeff;                  // BOM / zero-width no-break space
}

std::string describe_byte(char c) {
  if (c == ' ') return "a space";
  g_autofree char* text =
      g_ascii_iscntrl(c) ? g_strdup_printf("the control character 0x%02x", guchar(c)) : g_strdup_printf("“%c”", c);
  return text;
}

bool check_characters(const char* uri, GError** error) {
  for (const char* p = uri; *p != '\0'; p = g_utf8_next_char(p)) {
    gsize offset = gsize(p - uri);
    if (static_cast<guchar>(*p) < 0x80) {
      if (*p == '%') {
        if (!g_ascii_isxdigit(p[1]) || !g_ascii_isxdigit(p[2])) {
          g_set_error(error, SIDEBUS_ERROR, SIDEBUS_ERROR_INVALID_ARGUMENT,
                      "a “%%” at byte %zu does not start a percent-escape (%%XX)", offset);
          return false;
        }
        if (p[1] == '0' && p[2] == '0') {  // a handler decoding it in C would see a shorter string
          g_set_error(error, SIDEBUS_ERROR, SIDEBUS_ERROR_INVALID_ARGUMENT,
                      "it contains an encoded NUL byte (%%00) at byte %zu", offset);
          return false;
        }
        continue;
      }
      if (!is_rfc3986_ascii(*p)) {
        g_set_error(error, SIDEBUS_ERROR, SIDEBUS_ERROR_INVALID_ARGUMENT,
                    "it contains %s at byte %zu, which a URI must percent-encode", describe_byte(*p).c_str(), offset);
        return false;
      }
      continue;
    }
    gunichar c = g_utf8_get_char(p);
    if (is_forbidden_code_point(c)) {
      g_set_error(error, SIDEBUS_ERROR, SIDEBUS_ERROR_INVALID_ARGUMENT,
                  "it contains the invisible or control character U+%04X at byte %zu, which a URI must "
                  "percent-encode",
                  c, offset);
      return false;
    }
  }
  return true;
}

// "/a/b/" → {"", "a", "b", ""}
std::vector<std::string> split_path(const std::string& path) {
  std::vector<std::string> segments;
  size_t start = 0;
  for (;;) {
    size_t slash = path.find('/', start);
    segments.push_back(path.substr(start, slash == std::string::npos ? std::string::npos : slash - start));
    if (slash == std::string::npos) break;
    start = slash + 1;
  }
  return segments;
}

bool contains_escape(const char* text, const char* escape) {  // @escape upper case, e.g. "%2F"
  for (const char* p = text; (p = strchr(p, '%')) != nullptr; p++)
    if (g_ascii_toupper(p[1]) == escape[1] && g_ascii_toupper(p[2]) == escape[2]) return true;
  return false;
}

std::optional<CheckedUri> check_file_uri(const char* uri, const std::string& documents_path, GError** error) {
  auto refuse = [&](SidebusError code, const char* why) -> std::optional<CheckedUri> {
    g_set_error(error, SIDEBUS_ERROR, code, "%s", why);
    return std::nullopt;
  };
  if (documents_path.empty())
    return refuse(SIDEBUS_ERROR_NOT_ALLOWED, "file:// URIs cannot be opened: this VM has no shared documents");

  g_autofree char* userinfo = nullptr;
  g_autofree char* host = nullptr;
  g_autofree char* path = nullptr;
  g_autofree char* query = nullptr;
  g_autofree char* fragment = nullptr;
  gint port = -1;
  g_autoptr(GError) split_error = nullptr;
  if (!g_uri_split(uri, G_URI_FLAGS_ENCODED, nullptr, &userinfo, &host, &port, &path, &query, &fragment,
                   &split_error)) {
    g_set_error(error, SIDEBUS_ERROR, SIDEBUS_ERROR_INVALID_ARGUMENT, "it is malformed: %s", split_error->message);
    return std::nullopt;
  }
  if (host != nullptr && *host != '\0' && g_ascii_strcasecmp(host, "localhost") != 0) {
    g_autofree char* why =
        g_strdup_printf("the file:// URI names the host “%s”; only local files (no host, or localhost) are accepted",
                        quote_for_message(host).c_str());
    return refuse(SIDEBUS_ERROR_NOT_ALLOWED, why);
  }
  if (userinfo != nullptr || port != -1)
    return refuse(SIDEBUS_ERROR_NOT_ALLOWED, "a file:// URI must not name a user or a port");
  if (query != nullptr || fragment != nullptr)
    return refuse(SIDEBUS_ERROR_INVALID_ARGUMENT, "a file:// URI must not have a query (?) or a fragment (#)");
  if (path == nullptr || path[0] != '/')
    return refuse(SIDEBUS_ERROR_INVALID_ARGUMENT, "a file:// URI must hold an absolute path");
  if (contains_escape(path, "%2F")) return refuse(SIDEBUS_ERROR_NOT_ALLOWED, "the path contains an encoded “/” (%2F)");
  g_autofree char* decoded = g_uri_unescape_string(path, "/");
  if (decoded == nullptr) return refuse(SIDEBUS_ERROR_INVALID_ARGUMENT, "the path has a malformed percent-escape");

  std::string guest_path = decoded;
  if (guest_path.size() > 1 && guest_path.back() == '/') guest_path.pop_back();  // a folder: file:///docs/x/dir/
  std::vector<std::string> segments = split_path(guest_path);
  for (size_t i = 1; i < segments.size(); i++) {
    if (segments[i] == "." || segments[i] == "..")
      return refuse(SIDEBUS_ERROR_NOT_ALLOWED, "the path contains “.” or “..” (percent-encoded or not)");
    if (segments[i].empty()) return refuse(SIDEBUS_ERROR_INVALID_ARGUMENT, "the path contains an empty segment (//)");
  }
  if (!path_is_inside(guest_path, documents_path)) {
    g_autofree char* why = g_strdup_printf(
        "“%s” is outside the VM's documents directory %s; only documents shared with the VM can be opened on the "
        "host",
        quote_for_message(guest_path.c_str()).c_str(), documents_path.c_str());
    return refuse(SIDEBUS_ERROR_NOT_ALLOWED, why);
  }
  return CheckedUri{"file", guest_path};
}

}  // namespace

bool is_uri_scheme(const char* text) {
  if (text == nullptr || !g_ascii_isalpha(text[0])) return false;
  gsize length = 1;
  for (const char* c = text + 1; *c != '\0'; c++, length++)
    if (!g_ascii_isalnum(*c) && *c != '+' && *c != '-' && *c != '.') return false;
  return length <= kMaxSchemeLength;
}

std::optional<CheckedUri> check_guest_uri(const char* uri, const std::vector<std::string>& schemes,
                                          const std::string& documents_path, GError** error) {
  gsize length = strnlen(uri, kMaxUriLength + 1);
  if (length > kMaxUriLength) {
    g_set_error(error, SIDEBUS_ERROR, SIDEBUS_ERROR_INVALID_ARGUMENT,
                "it is longer than %zu bytes, the most a VM may hand to the host", kMaxUriLength);
    return std::nullopt;
  }
  if (length == 0) {
    g_set_error(error, SIDEBUS_ERROR, SIDEBUS_ERROR_INVALID_ARGUMENT, "it is empty");
    return std::nullopt;
  }
  const char* invalid = nullptr;
  if (!g_utf8_validate(uri, gssize(length), &invalid)) {
    g_set_error(error, SIDEBUS_ERROR, SIDEBUS_ERROR_INVALID_ARGUMENT, "it is not valid UTF-8 (at byte %zu)",
                gsize(invalid - uri));
    return std::nullopt;
  }
  if (!check_characters(uri, error)) return std::nullopt;

  g_autoptr(GError) parse_error = nullptr;
  g_autoptr(GUri) parsed = g_uri_parse(uri, G_URI_FLAGS_NONE, &parse_error);
  if (parsed == nullptr) {
    g_set_error(error, SIDEBUS_ERROR, SIDEBUS_ERROR_INVALID_ARGUMENT, "it is not a valid absolute URI: %s",
                parse_error->message);
    return std::nullopt;
  }
  const char* raw_scheme = g_uri_get_scheme(parsed);
  if (!is_uri_scheme(raw_scheme)) {
    g_set_error(error, SIDEBUS_ERROR, SIDEBUS_ERROR_INVALID_ARGUMENT, "its scheme is not a valid URI scheme");
    return std::nullopt;
  }
  g_autofree char* scheme = g_ascii_strdown(raw_scheme, -1);

  if (strcmp(scheme, "file") == 0) return check_file_uri(uri, documents_path, error);

  if (std::find(schemes.begin(), schemes.end(), scheme) == schemes.end()) {
    g_set_error(error, SIDEBUS_ERROR, SIDEBUS_ERROR_NOT_ALLOWED,
                "the scheme “%s” is not allowed for this VM (allowed: %s); an administrator can allow more in "
                "portals.openuri.schemes",
                scheme, schemes.empty() ? "none" : join_schemes(schemes).c_str());
    return std::nullopt;
  }
  return CheckedUri{scheme, {}};
}

bool path_is_inside(const std::string& path, const std::string& dir) {
  std::string base = dir;
  while (base.size() > 1 && base.back() == '/') base.pop_back();
  if (base.empty() || base[0] != '/') return false;
  if (base == "/") return path.size() > 1 && path[0] == '/';
  return path.size() > base.size() + 1 && path.compare(0, base.size(), base) == 0 && path[base.size()] == '/';
}

std::string join_schemes(const std::vector<std::string>& schemes) {
  std::string joined;
  for (const std::string& scheme : schemes) joined += (joined.empty() ? "" : ", ") + scheme;
  return joined;
}

std::string quote_for_message(const char* text) {
  gsize length = strnlen(text, kMaxUriLength + 1);
  g_autofree char* valid = g_utf8_make_valid(text, gssize(length));
  bool shortened = g_utf8_strlen(valid, -1) > glong(kMessageQuoteLength);
  if (shortened) *g_utf8_offset_to_pointer(valid, kMessageQuoteLength) = '\0';
  // g_strescape() would also escape non-ASCII text, which is fine to show.
  std::string quoted;
  for (const char* p = valid; *p != '\0'; p++) {
    if (g_ascii_iscntrl(*p)) {
      g_autofree char* escaped = g_strdup_printf("\\x%02x", guchar(*p));
      quoted += escaped;
    } else {
      quoted += *p;
    }
  }
  return shortened ? quoted + "…" : quoted;
}

}  // namespace sidebus::common
