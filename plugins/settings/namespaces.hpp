// namespaces.hpp — which host settings a VM may read: the allow-list of
// namespaces (portals.settings.namespaces) and the namespace globs of
// Settings.ReadAll. Pure functions, no D-Bus: settings.cpp applies them and
// tests/test-settings-namespaces.cpp checks them on their own.
//
// Two kinds of pattern, as xdg-desktop-portal and its backends read them:
//  - allow-list entries (the administrator's): a namespace
//    ("org.freedesktop.appearance") or a namespace followed by ".*"
//    ("org.gnome.*", every namespace below org.gnome). Nothing else: a bare
//    "*" or "" would hand the VM every host setting, including privacy and
//    account settings, and "org.gnome*" means different things to different
//    backends.
//  - the guest's ReadAll filters: "" or an empty list matches everything,
//    a trailing '*' matches any rest, anything else itself (the GNOME and
//    GTK backends' rule). They only ever narrow what the allow-list gives.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace sidebus::settings {

// Namespaces and keys are D-Bus-name-sized at most; longer is refused.
inline constexpr std::size_t kMaxNameLength = 255;
// Filters in one ReadAll call.
inline constexpr std::size_t kMaxFilters = 64;

// The default allow-list: appearance (dark mode, accent colour, contrast).
inline const std::vector<std::string> kDefaultNamespaces = {"org.freedesktop.appearance"};

// An empty string if @pattern may be an allow-list entry, otherwise why not.
std::string check_allow_pattern(std::string_view pattern);

// Whether @name_space matches the allow-list entry @pattern.
bool allow_pattern_matches(std::string_view pattern, std::string_view name_space);

// Whether @name_space matches one of the guest's ReadAll @filters
// (empty: all).
bool filters_match(const std::vector<std::string>& filters, std::string_view name_space);

class AllowList {
 public:
  explicit AllowList(std::vector<std::string> patterns) : patterns_(std::move(patterns)) {}
  bool allows(std::string_view name_space) const;
  const std::vector<std::string>& patterns() const { return patterns_; }
  // "org.freedesktop.appearance, org.gnome.*" (or "(none)"), for logs.
  std::string describe() const;

 private:
  std::vector<std::string> patterns_;
};

}  // namespace sidebus::settings
