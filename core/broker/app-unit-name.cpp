// SPDX-License-Identifier: LGPL-2.1-or-later
// app-unit-name.cpp — unit names and xdg-desktop-portal's reading of them
// (app-unit-name.hpp). The regular expressions are xdg-desktop-portal's own,
// character for character, run with GRegex as it runs them.
#include "broker/app-unit-name.hpp"

#include <glib.h>

#include <cstring>

namespace sidebus::unit_name {

namespace {

void escape_byte(std::string& out, unsigned char c) {
  static const char kHex[] = "0123456789abcdef";
  out += "\\x";
  out += kHex[c >> 4];
  out += kHex[c & 0xf];
}

bool ends_with(std::string_view text, std::string_view suffix) {
  return text.size() >= suffix.size() && text.substr(text.size() - suffix.size()) == suffix;
}

// systemd's cunescape(…, UNESCAPE_RELAX, …) for the escapes unit names use;
// false where it fails (a NUL byte).
bool unescape(std::string_view text, std::string& out) {
  out.clear();
  for (size_t i = 0; i < text.size(); i++) {
    if (text[i] != '\\' || i + 1 == text.size()) {
      out += text[i];
      continue;
    }
    char e = text[i + 1];
    const char* singles = "abfnrtv\\\"'s";
    const char* values = "\a\b\f\n\r\t\v\\\"' ";
    if (const char* at = e != '\0' ? strchr(singles, e) : nullptr) {
      out += values[at - singles];
      i++;
      continue;
    }
    if (e == 'x' && i + 3 < text.size() && g_ascii_isxdigit(text[i + 2]) && g_ascii_isxdigit(text[i + 3])) {
      int value = g_ascii_xdigit_value(text[i + 2]) * 16 + g_ascii_xdigit_value(text[i + 3]);
      if (value == 0) return false;  // systemd refuses NUL bytes
      out += static_cast<char>(value);
      i += 3;
      continue;
    }
    out += '\\';  // RELAX: an escape it does not know stays as written
  }
  return true;
}

std::string match_group(const char* pattern, std::string_view unit) {
  g_autoptr(GError) error = nullptr;
  g_autoptr(GRegex) regex = g_regex_new(pattern, GRegexCompileFlags(0), GRegexMatchFlags(0), &error);
  g_assert_no_error(error);
  std::string text(unit);
  g_autoptr(GMatchInfo) match = nullptr;
  if (!g_regex_match(regex, text.c_str(), GRegexMatchFlags(0), &match)) return "";
  g_autofree char* escaped = g_match_info_fetch(match, 1);
  std::string app_id;
  if (escaped == nullptr || !unescape(escaped, app_id)) return "";
  return app_id;
}

}  // namespace

std::string escape(std::string_view text) {
  std::string out;
  for (size_t i = 0; i < text.size(); i++) {
    unsigned char c = static_cast<unsigned char>(text[i]);
    if (c == '/')
      out += '-';
    else if ((i == 0 && c == '.') || !(g_ascii_isalnum(c) || c == ':' || c == '_' || c == '.'))
      escape_byte(out, c);
    else
      out += static_cast<char>(c);
  }
  return out;
}

std::string app_scope(std::string_view app_id, pid_t pid) {
  std::string name = "app-sidebus-" + escape(app_id) + "-" + std::to_string(pid) + ".scope";
  return name.size() <= kMaxUnitNameLength ? name : "";
}

std::string xdp_app_id(std::string_view unit, XdpParser parser) {
  if (unit.substr(0, 4) != "app-") return "";
  if (parser == XdpParser::k1_14)
    return match_group(
        "^app-(?:[[:alnum:]]+\\-)?(.+?\\..+?\\..+?)"
        "(?:[@\\-][[:alnum:]]*)?(?:-autostart)?"
        "(?:\\.scope|\\.service|\\.slice)$",
        unit);
  std::string app_id = match_group("^app-(?:[[:alnum:]]+\\-)?(.+?)(?:\\-[[:alnum:]]*)(?:\\.scope|\\.slice)$", unit);
  if (app_id.empty())
    app_id = match_group("^app-(?:[[:alnum:]]+\\-)?(.+?)(?:@[[:alnum:]]*|\\-autostart)?\\.service$", unit);
  return app_id;
}

std::string unit_of_cgroup(std::string_view proc_cgroup) {
  auto unit_in = [](std::string_view path) {
    std::string unit;
    while (!path.empty()) {
      size_t slash = path.find('/');
      std::string_view element = path.substr(0, slash);
      if (ends_with(element, ".scope") || ends_with(element, ".service")) unit = std::string(element);
      if (slash == std::string_view::npos) break;
      path.remove_prefix(slash + 1);
    }
    return unit;
  };
  std::string unified, legacy;
  while (!proc_cgroup.empty()) {
    size_t newline = proc_cgroup.find('\n');
    std::string_view line = proc_cgroup.substr(0, newline);
    if (line.substr(0, 3) == "0::") unified = unit_in(line.substr(3));
    size_t colon = line.find(':');
    if (colon != std::string_view::npos && line.substr(colon + 1, 13) == "name=systemd:")
      legacy = unit_in(line.substr(colon + 14));
    if (newline == std::string_view::npos) break;
    proc_cgroup.remove_prefix(newline + 1);
  }
  return !unified.empty() ? unified : legacy;
}

}  // namespace sidebus::unit_name
