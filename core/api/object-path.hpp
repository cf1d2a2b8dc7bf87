// SPDX-License-Identifier: LGPL-2.1-or-later
// object-path.hpp — the object paths of portal requests and sessions, as
// xdg-desktop-portal names them:
//   /org/freedesktop/portal/desktop/request/<sender>/<handle_token>
//   /org/freedesktop/portal/desktop/session/<sender>/<session_handle_token>
// where <sender> is the caller's unique name without its ':' and with every
// character an object path element cannot hold ('.', and '-' which unique
// names may contain) replaced by '_'. Clients compute the same path to
// subscribe to Response before they call, so this must match them exactly.
#pragma once

#include <glib.h>

#include <string>

namespace sidebus {

inline constexpr gsize kMaxTokenLength = 64;

// ":1.42" → "1_42"; anything but [A-Za-z0-9_] becomes '_'.
inline std::string escape_sender(const char* sender) {
  std::string escaped(sender[0] == ':' ? sender + 1 : sender);
  for (char& c : escaped)
    if (!g_ascii_isalnum(c) && c != '_') c = '_';
  if (escaped.empty()) escaped = "_";
  return escaped;
}

// handle_token / session_handle_token: 1..kMaxTokenLength of [A-Za-z0-9_].
inline bool is_valid_token(const char* token) {
  gsize length = 0;
  for (const char* p = token; *p; p++, length++)
    if ((!g_ascii_isalnum(*p) && *p != '_') || length >= kMaxTokenLength) return false;
  return length > 0;
}

// kind: "request" or "session".
inline std::string portal_object_path(const char* kind, const char* sender, const char* token) {
  return std::string("/org/freedesktop/portal/desktop/") + kind + "/" + escape_sender(sender) + "/" + token;
}

}  // namespace sidebus
