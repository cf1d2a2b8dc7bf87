// uri-policy.hpp — which URIs from the guest may be opened on the host.
//
// OpenURI hands a guest's string to whatever application the host has for
// its scheme, so this is the portal's main gate; Wallpaper.SetWallpaperURI
// uses it for file:// URIs of documents. Kept apart from the D-Bus plumbing
// so the whole policy reads in one place: bounded length, valid UTF-8, RFC
// 3986 characters only, a strict parse, a scheme from the administrator's
// allow-list (portals.openuri.schemes), and file:// only for documents the
// VM was given (uri-policy.cpp explains each check). Shared by the plugins
// (plugins/common/), fuzzed by fuzz-uri-policy.cpp.
#pragma once

#include <sidebus-plugin.h>

#include <optional>
#include <string>
#include <vector>

namespace sidebus::common {

// Longer "links" are data smuggled in a URI, not links (browsers' own limits
// are in this range; a data: URI is not allowed by default anyway).
inline constexpr gsize kMaxUriLength = 32 * 1024;
inline constexpr gsize kMaxSchemeLength = 64;
// What a VM may open when portals.openuri.schemes is not configured.
inline const std::vector<std::string> kDefaultSchemes = {"http", "https", "mailto"};

// RFC 3986: ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ), any case, bounded.
bool is_uri_scheme(const char* text);

struct CheckedUri {
  std::string scheme;      // lower case
  std::string guest_path;  // file:// only: the decoded absolute path, inside the documents directory
  bool is_document() const { return scheme == "file"; }
};

// Checks @uri from the guest against @schemes (lower case) and, for file://,
// @documents_path (the guest documents directory; empty: none). A refusal is
// a SIDEBUS_ERROR: INVALID_ARGUMENT for what is not a well-formed URI,
// NOT_ALLOWED for what policy forbids; the message names the reason.
std::optional<CheckedUri> check_guest_uri(const char* uri, const std::vector<std::string>& schemes,
                                          const std::string& documents_path, GError** error);

// Is @path (absolute, no "." or "..") strictly below @dir?
bool path_is_inside(const std::string& path, const std::string& dir);

// "a, b, c" for messages.
std::string join_schemes(const std::vector<std::string>& schemes);
// @text shortened to a readable length, valid UTF-8, control characters escaped.
std::string quote_for_message(const char* text);

}  // namespace sidebus::common
