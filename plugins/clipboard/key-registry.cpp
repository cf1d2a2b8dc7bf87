// SPDX-License-Identifier: LGPL-2.1-or-later
// key-registry.cpp — markers of the VMs' transfer keys (see key-registry.hpp).
#include "key-registry.hpp"

#include <errno.h>
#include <gio/gio.h>
#include <glib/gstdio.h>

#include <cstring>

namespace sidebus::clipboard {

namespace {
constexpr gsize kMaxKeyLength = 64;
constexpr gsize kMaxVmNameLength = 256;
}  // namespace

bool is_valid_key(const char* key) {
  gsize length = strnlen(key, kMaxKeyLength + 1);
  if (length == 0 || length > kMaxKeyLength) return false;
  for (const char* c = key; *c != '\0'; c++)
    if (!g_ascii_isalnum(*c) && *c != '_' && *c != '-') return false;
  return true;
}

KeyRegistry::KeyRegistry(std::string dir, std::string vm_name) : dir_(std::move(dir)), vm_name_(std::move(vm_name)) {
  if (dir_.empty()) dir_ = std::string(g_get_user_runtime_dir()) + "/sidebus-filetransfer-keys";
}

bool KeyRegistry::claim(const std::string& key) {
  if (g_mkdir_with_parents(dir_.c_str(), 0700) != 0) {
    g_warning("cannot create the transfer key registry %s: %s", dir_.c_str(), g_strerror(errno));
    return false;
  }
  std::string path = dir_ + "/" + key;
  g_autoptr(GError) error = nullptr;
  if (!g_file_set_contents_full(path.c_str(), vm_name_.c_str(), -1, G_FILE_SET_CONTENTS_NONE, 0600, &error)) {
    g_warning("cannot mark transfer key in %s: %s", dir_.c_str(), error->message);
    return false;
  }
  return true;
}

void KeyRegistry::release(const std::string& key) { (void)g_unlink((dir_ + "/" + key).c_str()); }

std::optional<std::string> KeyRegistry::other_owner(const std::string& key) const {
  std::string path = dir_ + "/" + key;
  g_autofree char* contents = nullptr;
  gsize length = 0;
  if (!g_file_get_contents(path.c_str(), &contents, &length, nullptr)) return std::nullopt;
  std::string owner(contents, MIN(length, kMaxVmNameLength));
  if (owner == vm_name_) return std::nullopt;
  return owner;
}

}  // namespace sidebus::clipboard
