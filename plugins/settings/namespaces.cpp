// namespaces.cpp — see namespaces.hpp.
#include "namespaces.hpp"

namespace sidebus::settings {

namespace {

bool is_name_character(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
}

// "org.freedesktop.appearance": elements of [A-Za-z0-9_-] joined by single dots.
bool is_namespace(std::string_view name) {
  if (name.empty() || name.size() > kMaxNameLength) return false;
  bool element_empty = true;
  for (char c : name) {
    if (c == '.') {
      if (element_empty) return false;
      element_empty = true;
    } else if (is_name_character(c)) {
      element_empty = false;
    } else {
      return false;
    }
  }
  return !element_empty;
}

}  // namespace

std::string check_allow_pattern(std::string_view pattern) {
  if (pattern.empty() || pattern == "*" || pattern == ".*")
    return "would let the VM read every host setting, including privacy and account settings; list the namespaces "
           "it may read (e.g. \"org.freedesktop.appearance\")";
  if (pattern.size() > kMaxNameLength) return "is longer than 255 bytes";
  std::string_view name = pattern;
  if (name.ends_with(".*")) name.remove_suffix(2);
  if (!is_namespace(name))
    return "is not a namespace (elements of A-Z a-z 0-9 _ - joined by dots, e.g. \"org.freedesktop.appearance\") "
           "or a namespace followed by \".*\" (e.g. \"org.gnome.*\")";
  return "";
}

bool allow_pattern_matches(std::string_view pattern, std::string_view name_space) {
  if (pattern.ends_with(".*")) {
    std::string_view prefix = pattern.substr(0, pattern.size() - 1);  // keeps the dot
    return name_space.size() > prefix.size() && name_space.starts_with(prefix);
  }
  return pattern == name_space;
}

bool filters_match(const std::vector<std::string>& filters, std::string_view name_space) {
  if (filters.empty()) return true;
  for (const std::string& filter : filters) {
    if (filter.empty() || filter == name_space) return true;
    if (filter.back() == '*' && name_space.starts_with(std::string_view(filter).substr(0, filter.size() - 1)))
      return true;
  }
  return false;
}

bool AllowList::allows(std::string_view name_space) const {
  for (const std::string& pattern : patterns_)
    if (allow_pattern_matches(pattern, name_space)) return true;
  return false;
}

std::string AllowList::describe() const {
  std::string text;
  for (const std::string& pattern : patterns_) text += (text.empty() ? "" : ", ") + pattern;
  return text.empty() ? "(none)" : text;
}

}  // namespace sidebus::settings
