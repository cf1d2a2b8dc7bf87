// SPDX-License-Identifier: LGPL-2.1-or-later
// files.hpp — files and file:// URIs as the tests handle them: whole-file
// reads and writes (binary-safe), and the conversion between absolute paths
// and file URIs.
#pragma once

#include <optional>
#include <string>

namespace sidebus::test {

// The bytes of @path, or nullopt if it cannot be read.
std::optional<std::string> read_file(const std::string& path);
// Writes @contents to @path, creating its parent directories; FixtureError on failure.
void write_file(const std::string& path, const std::string& contents);

// file:// URI of an absolute path, and back (FixtureError if not a file URI).
std::string uri_for(const std::string& path);
std::string path_of(const std::string& uri);

}  // namespace sidebus::test
