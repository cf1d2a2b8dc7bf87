// SPDX-License-Identifier: LGPL-2.1-or-later
// temp-dir.cpp — TempDir and its sweep, and the janitor process
// (temp-dir.hpp). The sweep is plain libc, because the janitor runs it in a
// forked child.
#include "support/temp-dir.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <glib/gstdio.h>
#include <limits.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <set>

#include "support/files.hpp"
#include "util/unique-fd.hpp"

namespace sidebus::test {
namespace {

std::atomic<size_t> leftovers{0};

// ---- Sweeping: plain libc, because the janitor runs it in a forked child ----

std::string read_all(const std::string& path) {
  std::string data;
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return data;
  char buffer[4096];
  for (;;) {
    ssize_t n = read(fd, buffer, sizeof buffer);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    data.append(buffer, n);
  }
  close(fd);
  return data;
}

// Alive and not a zombie, from /proc/PID/stat ("pid (comm) S ...").
bool process_alive(pid_t pid) {
  std::string stat = read_all("/proc/" + std::to_string(pid) + "/stat");
  size_t paren = stat.rfind(')');
  if (paren == std::string::npos || paren + 2 >= stat.size()) return false;
  char state = stat[paren + 2];
  return state != 'Z' && state != 'X';
}

bool references(pid_t pid, const std::string& dir) {
  const std::string proc = "/proc/" + std::to_string(pid);
  if (read_all(proc + "/cmdline").find(dir) != std::string::npos) return true;
  if (read_all(proc + "/environ").find(dir) != std::string::npos) return true;
  char cwd[PATH_MAX];
  ssize_t n = readlink((proc + "/cwd").c_str(), cwd, sizeof cwd);
  if (n > 0) {
    std::string path(cwd, n);
    if (path == dir || path.starts_with(dir + "/")) return true;
  }
  return false;
}

std::string describe_process(pid_t pid) {
  std::string cmdline = read_all("/proc/" + std::to_string(pid) + "/cmdline");
  std::replace(cmdline.begin(), cmdline.end(), '\0', ' ');
  return "process " + std::to_string(pid) + ": " + cmdline;
}

// mountinfo escapes space, tab, newline and backslash as \ooo.
std::string unescape_mount_point(const std::string& escaped) {
  std::string path;
  for (size_t i = 0; i < escaped.size(); i++) {
    if (escaped[i] == '\\' && i + 3 < escaped.size()) {
      path += static_cast<char>(std::stoi(escaped.substr(i + 1, 3), nullptr, 8));
      i += 3;
    } else {
      path += escaped[i];
    }
  }
  return path;
}

bool unmount(const std::string& path) {
  if (umount2(path.c_str(), MNT_DETACH) == 0) return true;
  // Not root: our own FUSE mounts still go with fusermount.
  for (const char* tool : {"fusermount3", "fusermount"}) {
    pid_t pid = fork();
    if (pid == 0) {
      int null = open("/dev/null", O_RDWR);
      dup2(null, STDOUT_FILENO);
      dup2(null, STDERR_FILENO);
      execlp(tool, tool, "-u", "-z", path.c_str(), static_cast<char*>(nullptr));
      _exit(127);
    }
    int status = 0;
    if (pid > 0 && waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0) return true;
  }
  return false;
}

int remove_entry(const char* path, const struct stat*, int, struct FTW*) {
  remove(path);
  return 0;
}

// Kills what still references @dir, unmounts what is mounted under it and
// removes it (never crossing into a mount). Returns one line per stray.
std::vector<std::string> sweep(const std::string& dir) {
  std::vector<std::string> strays;
  for (int round = 0; round < 3; round++) {  // a killed process may have left children
    std::vector<pid_t> pids = processes_referencing(dir);
    if (pids.empty()) break;
    for (pid_t pid : pids) {
      strays.push_back(describe_process(pid));
      kill(pid, SIGKILL);
    }
    for (int i = 0; i < 400; i++) {  // up to 2 s; our children are reaped here
      bool alive = false;
      for (pid_t pid : pids) {
        waitpid(pid, nullptr, WNOHANG);
        alive = alive || process_alive(pid);
      }
      if (!alive) break;
      usleep(5000);
    }
  }
  std::vector<std::string> mounts = mounts_under(dir);
  std::sort(mounts.rbegin(), mounts.rend());  // deepest first
  for (const std::string& mount : mounts) {
    strays.push_back("mount " + mount);
    unmount(mount);
  }
  nftw(dir.c_str(), remove_entry, 32, FTW_DEPTH | FTW_PHYS | FTW_MOUNT);
  return strays;
}

// ---- The janitor ------------------------------------------------------------
// A process forked once, in its own session (so a kill of the test's process
// group does not reach it). TempDirs register with it and unregister when
// torn down; when the test process is gone (the socket reaches EOF), the
// janitor prints the logs of what is still registered and sweeps it.
class Janitor {
 public:
  static Janitor& instance() {
    static Janitor janitor;
    return janitor;
  }
  void track(const std::string& dir) { send("+" + dir + "\n"); }
  void untrack(const std::string& dir) { send("-" + dir + "\n"); }

 private:
  Janitor() {
    int fds[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) return;
    UniqueFd ours(fds[0]), theirs(fds[1]);
    pid_t pid = fork();
    if (pid == 0) run(theirs.get());
    if (pid > 0) fd_ = std::move(ours);
  }

  void send(const std::string& line) {
    const char* data = line.data();
    size_t left = line.size();
    while (fd_ && left > 0) {
      ssize_t n = ::send(fd_.get(), data, left, MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return;
      data += n;
      left -= n;
    }
  }

  static void write_stderr(const std::string& text) {
    size_t done = 0;
    while (done < text.size()) {
      ssize_t n = write(STDERR_FILENO, text.data() + done, text.size() - done);
      if (n <= 0) return;
      done += n;
    }
  }

  [[noreturn]] static void run(int fd) {
    setsid();
    prctl(PR_SET_NAME, "sidebus-janitor");
    signal(SIGPIPE, SIG_IGN);
    dup2(fd, 3);
    int null = open("/dev/null", O_RDWR);
    dup2(null, STDIN_FILENO);
    dup2(null, STDOUT_FILENO);  // keep the TAP stream to the test alone
    close_range(4, ~0U, 0);

    std::set<std::string> dirs;
    std::string pending;
    char chunk[4096];
    for (;;) {
      ssize_t n = read(3, chunk, sizeof chunk);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      pending.append(chunk, n);
      for (size_t end; (end = pending.find('\n')) != std::string::npos; pending.erase(0, end + 1)) {
        std::string dir = pending.substr(1, end - 1);
        if (pending[0] == '+') dirs.insert(dir);
        else dirs.erase(dir);
      }
    }
    for (const std::string& dir : dirs) {
      write_stderr("sidebus test support: the test ended without tearing down " + dir + "\n");
      if (DIR* listing = opendir(dir.c_str())) {
        while (struct dirent* entry = readdir(listing)) {
          std::string name = entry->d_name;
          if (!name.ends_with(".log")) continue;
          write_stderr("---- " + name + " ----\n" + read_all(dir + "/" + name) + "\n");
        }
        closedir(listing);
      }
      for (const std::string& stray : sweep(dir)) write_stderr("sidebus test support: swept " + stray + "\n");
    }
    _exit(0);
  }

  UniqueFd fd_;  // without a janitor, destructors and PR_SET_PDEATHSIG remain
};

}  // namespace

std::vector<std::string> mounts_under(const std::string& dir) {
  std::vector<std::string> mounts;
  const std::string info = read_all("/proc/self/mountinfo");
  size_t line_start = 0;
  while (line_start < info.size()) {
    size_t line_end = info.find('\n', line_start);
    if (line_end == std::string::npos) line_end = info.size();
    // "id parent major:minor root mount-point options ...": the fifth field.
    size_t field_start = line_start;
    for (int field = 0; field < 4 && field_start < line_end; field++)
      field_start = info.find(' ', field_start) + 1;
    size_t field_end = std::min(info.find(' ', field_start), line_end);
    if (field_start > line_start && field_start < line_end) {
      std::string mount_point = unescape_mount_point(info.substr(field_start, field_end - field_start));
      if (mount_point == dir || mount_point.starts_with(dir + "/")) mounts.push_back(mount_point);
    }
    line_start = line_end + 1;
  }
  return mounts;
}

bool is_mounted(const std::string& path) {
  std::vector<std::string> mounts = mounts_under(path);
  return std::find(mounts.begin(), mounts.end(), path) != mounts.end();
}

std::vector<pid_t> processes_referencing(const std::string& dir) {
  std::vector<pid_t> pids;
  DIR* proc = opendir("/proc");
  if (!proc) return pids;
  const pid_t self = getpid();
  while (struct dirent* entry = readdir(proc)) {
    char* end = nullptr;
    long pid = strtol(entry->d_name, &end, 10);
    if (*end != '\0' || pid <= 0 || pid == self) continue;
    if (references(static_cast<pid_t>(pid), dir) && process_alive(static_cast<pid_t>(pid)))
      pids.push_back(static_cast<pid_t>(pid));
  }
  closedir(proc);
  return pids;
}

size_t leftovers_swept() { return leftovers.load(); }

// ---- TempDir ----------------------------------------------------------------

TempDir::TempDir(const char* prefix) {
  std::string path_template = std::string(g_get_tmp_dir()) + "/" + prefix + "-XXXXXX";
  if (!mkdtemp(path_template.data())) throw FixtureError("mkdtemp: " + std::string(g_strerror(errno)));
  path_ = path_template;
  chmod(path_.c_str(), 0755);
  Janitor::instance().track(path_);
}

TempDir::~TempDir() {
  std::vector<std::string> strays = sweep(path_);
  leftovers += strays.size();
  for (const std::string& stray : strays) g_test_message("teardown swept %s: %s", path_.c_str(), stray.c_str());
  Janitor::instance().untrack(path_);
}

std::string TempDir::make_dir(const std::string& name, mode_t mode) const {
  const std::string path = *this / name;
  if (g_mkdir_with_parents(path.c_str(), mode) != 0 || chmod(path.c_str(), mode) != 0)
    throw FixtureError("cannot create " + path + ": " + g_strerror(errno));
  return path;
}

std::string TempDir::write_file(const std::string& name, const std::string& contents) const {
  const std::string path = *this / name;
  sidebus::test::write_file(path, contents);
  return path;
}

void TempDir::give_to(const Identity& identity) const {
  if (chown(path_.c_str(), identity.uid, identity.gid) != 0)
    throw FixtureError("cannot chown " + path_ + ": " + g_strerror(errno));
}

}  // namespace sidebus::test
