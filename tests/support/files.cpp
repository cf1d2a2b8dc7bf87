// SPDX-License-Identifier: LGPL-2.1-or-later
// files.cpp — read_file, write_file, uri_for and path_of (files.hpp).
#include "support/files.hpp"

#include <glib.h>
#include <glib/gstdio.h>

#include "support/process.hpp"

namespace sidebus::test {

std::optional<std::string> read_file(const std::string& path) {
  g_autofree char* bytes = nullptr;
  gsize length = 0;
  if (!g_file_get_contents(path.c_str(), &bytes, &length, nullptr)) return std::nullopt;
  return std::string(bytes, length);
}

void write_file(const std::string& path, const std::string& contents) {
  g_autofree char* parent = g_path_get_dirname(path.c_str());
  g_mkdir_with_parents(parent, 0755);
  g_autoptr(GError) error = nullptr;
  if (!g_file_set_contents(path.c_str(), contents.data(), static_cast<gssize>(contents.size()), &error))
    throw FixtureError(error->message);
}

std::string uri_for(const std::string& path) {
  g_autofree char* uri = g_filename_to_uri(path.c_str(), nullptr, nullptr);
  if (uri == nullptr) throw FixtureError("not an absolute path: " + path);
  return uri;
}

std::string path_of(const std::string& uri) {
  g_autofree char* path = g_filename_from_uri(uri.c_str(), nullptr, nullptr);
  if (path == nullptr) throw FixtureError("not a file URI: " + uri);
  return path;
}

}  // namespace sidebus::test
