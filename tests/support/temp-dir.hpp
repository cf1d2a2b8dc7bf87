// SPDX-License-Identifier: LGPL-2.1-or-later
// temp-dir.hpp — TempDir, the directory every piece of the test topology
// keeps its files, sockets and logs in, and what makes sure nothing survives
// one:
//  - ~TempDir sweeps it: processes still referencing it (argv, environment,
//    cwd) are killed, mounts under it are unmounted, it is removed. A sweep
//    that finds something counts it in leftovers_swept(): the orderly
//    teardown (process.hpp) should leave it nothing, so tests may assert 0.
//  - A janitor process (forked once, in its own session) outlives an aborted
//    test (a failed g_assert, a crash, a meson timeout), prints the logs
//    (*.log) of the directories that were not torn down and sweeps them.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include "support/process.hpp"

namespace sidebus::test {

// <tmp>/<prefix>-XXXXXX, mode 0755 (other uids can reach sockets in it).
class TempDir {
 public:
  explicit TempDir(const char* prefix);
  ~TempDir();  // sweeps it (see above) and removes it
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }
  std::string make_dir(const std::string& name, mode_t mode = 0755) const;  // with parents
  std::string write_file(const std::string& name, const std::string& contents) const;  // with parents
  void give_to(const Identity& identity) const;  // chown the directory itself

 private:
  std::string path_;
};

// Mount points at or below @dir, from /proc/self/mountinfo.
std::vector<std::string> mounts_under(const std::string& dir);
bool is_mounted(const std::string& path);
// Live processes (not this one) whose argv, environment or cwd mention @dir.
std::vector<pid_t> processes_referencing(const std::string& dir);
// How many stray processes and mounts TempDir sweeps had to clean up so far.
size_t leftovers_swept();

}  // namespace sidebus::test
