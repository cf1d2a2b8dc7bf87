// SPDX-License-Identifier: LGPL-2.1-or-later
// app-id.hpp — the app id a VM's documents are granted to in its private
// document portal. xdg-document-portal 1.16 only serves by-app/<id> for ids
// shaped like "org.example.App" (two or more dot-separated elements of
// [A-Za-z0-9_], '-' only in the last), and silently hides documents granted
// to anything else. A VM name of that shape is used as it is; any other
// becomes "dev.sidebus.vm.<name, other characters replaced by '_'>".
// Header-only: the test fixture needs the same rule without the core.
#pragma once

#include <glib.h>

#include <string>

namespace sidebus {

inline bool is_valid_app_id(const std::string& id) {
  if (id.empty() || id.size() > 255 || id.front() == '.' || id.back() == '.') return false;
  size_t last_dot = id.rfind('.');
  if (last_dot == std::string::npos) return false;  // at least two elements
  for (size_t i = 0; i < id.size(); i++) {
    char c = id[i];
    if (c == '.') {
      if (id[i + 1] == '.') return false;
      continue;
    }
    if (!g_ascii_isalnum(c) && c != '_' && !(c == '-' && i > last_dot)) return false;
  }
  return true;
}

inline std::string app_id_for_vm(const std::string& vm_name) {
  if (is_valid_app_id(vm_name)) return vm_name;
  std::string app_id = "dev.sidebus.vm.";
  for (char c : vm_name) app_id += (g_ascii_isalnum(c) || c == '_' || c == '-') ? c : '_';
  if (vm_name.empty()) app_id += "unnamed";
  return app_id.substr(0, 255);
}

}  // namespace sidebus
