// SPDX-License-Identifier: LGPL-2.1-or-later
// systemd-user.cpp — SystemdUser (systemd-user.hpp).
#include "support/systemd-user.hpp"

#include <glib/gstdio.h>
#include <signal.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <functional>
#include <vector>

#include "support/dbus.hpp"

namespace sidebus::test {
namespace {

constexpr long kCgroup2Magic = 0x63677270;  // CGROUP2_SUPER_MAGIC
constexpr long kCgroupMagic = 0x27e0eb;     // CGROUP_SUPER_MAGIC

bool is_filesystem(const char* path, long magic) {
  struct statfs fs;
  return statfs(path, &fs) == 0 && static_cast<long>(fs.f_type) == magic;
}

// Where libsystemd looks for the systemd hierarchy: cgroup2 at /sys/fs/cgroup
// (unified) or at /sys/fs/cgroup/unified (hybrid).
std::string cgroup2_root() {
  if (is_filesystem("/sys/fs/cgroup", kCgroup2Magic)) return "/sys/fs/cgroup";
  if (is_filesystem("/sys/fs/cgroup/unified", kCgroup2Magic)) return "/sys/fs/cgroup/unified";
  return "";
}

std::string systemd_binary() {
  for (const char* path : {"/lib/systemd/systemd", "/usr/lib/systemd/systemd"})
    if (g_file_test(path, G_FILE_TEST_IS_EXECUTABLE)) return path;
  return "";
}

// Kills what is left in @dir's cgroup tree and removes it, deepest first.
void remove_cgroup_tree(const std::string& dir) {
  if (!g_file_test(dir.c_str(), G_FILE_TEST_IS_DIR)) return;
  // cgroupfs takes plain writes only (no temp file and rename).
  if (FILE* kill = fopen((dir + "/cgroup.kill").c_str(), "w")) {
    fputs("1", kill);
    fclose(kill);
  }
  std::function<bool(const std::string&)> remove = [&](const std::string& path) {
    g_autoptr(GDir) handle = g_dir_open(path.c_str(), 0, nullptr);
    std::vector<std::string> children;
    while (const char* name = handle ? g_dir_read_name(handle) : nullptr)
      if (g_file_test((path + "/" + name).c_str(), G_FILE_TEST_IS_DIR)) children.push_back(path + "/" + name);
    bool removed = true;
    for (const std::string& child : children) removed = remove(child) && removed;
    return removed && (g_rmdir(path.c_str()) == 0 || errno == ENOENT);
  };
  if (!wait_until([&] { return remove(dir); }, 5s)) g_test_message("could not remove the cgroup %s", dir.c_str());
}

}  // namespace

std::string SystemdUser::unavailable() {
  if (geteuid() != 0) return "a user manager of the test's own needs root (cgroups, a mount namespace)";
  if (cgroup2_root().empty()) return "no cgroup2 hierarchy at /sys/fs/cgroup or /sys/fs/cgroup/unified";
  if (systemd_binary().empty()) return "no systemd binary (/lib/systemd/systemd)";
  g_autofree char* unshare = g_find_program_in_path("unshare");
  if (unshare == nullptr) return "no unshare (util-linux) for the manager's mount namespace";
  return "";
}

SystemdUser::SystemdUser(const std::string& bus_address) : dir_("sidebus-test-systemd"), bus_address_(bus_address) {
  if (std::string why = unavailable(); !why.empty()) throw FixtureError("systemd --user cannot run here: " + why);
  static std::atomic<int> serial{0};
  cgroup_name_ = "sidebus\\x2dtest\\x2d" + std::to_string(getpid()) + "\\x2d" + std::to_string(serial++) + ".slice";
  std::string manager_cgroup = cgroup2_root() + "/" + cgroup_name_ + "/user@" + std::to_string(geteuid()) + ".service";
  if (g_mkdir_with_parents(manager_cgroup.c_str(), 0755) != 0)
    throw FixtureError("cannot create the cgroup " + manager_cgroup + ": " + g_strerror(errno));

  runtime_dir_ = dir_.make_dir("runtime", 0700);
  std::string units = dir_.make_dir("units");
  dir_.write_file("units/default.target", "[Unit]\nDescription=the test's session\nWants=dbus.socket dbus.service\n");
  dir_.write_file("units/app.slice", "[Unit]\nDescription=applications\n");
  dir_.write_file("units/exit.target", "[Unit]\nDescription=exit\nDefaultDependencies=no\n");
  // The bus is the test's; these only tell the manager that it runs.
  dir_.write_file("units/dbus.socket",
                  "[Unit]\nDescription=stands for the test's host bus\nDefaultDependencies=no\n"
                  "[Socket]\nListenStream=%t/unused-bus-socket\n");
  dir_.write_file("units/dbus.service",
                  "[Unit]\nDescription=stands for the test's host bus\nDefaultDependencies=no\n"
                  "Requires=dbus.socket\nAfter=dbus.socket\n"
                  "[Service]\nExecStart=/bin/sleep infinity\n");
  std::string none = dir_.make_dir("none");

  // In its own mount namespace: into its cgroup, /run/systemd/system as on a
  // machine booted with systemd, then the manager itself.
  const char* script =
      "set -e\n"
      "echo $$ > \"$1/cgroup.procs\"\n"
      "if [ -d /run/systemd ]; then run=/run/systemd; else run=/run; fi\n"
      "mount -t tmpfs -o mode=0755 sidebus-test \"$run\"\n"
      "mkdir -p /run/systemd/system\n"
      "exec \"$2\" --user\n";
  manager_ = std::make_unique<ChildProcess>(SpawnOptions{
      .name = "systemd --user",
      .argv = {"unshare", "--mount", "--propagation", "private", "/bin/sh", "-c", script, "sh", manager_cgroup,
               systemd_binary()},
      .env = {{"DBUS_SESSION_BUS_ADDRESS", bus_address},
              {"XDG_RUNTIME_DIR", runtime_dir_},
              {"HOME", dir_.make_dir("home")},
              {"XDG_CONFIG_HOME", dir_.make_dir("config")},
              {"SYSTEMD_UNIT_PATH", units},
              {"SYSTEMD_GENERATOR_PATH", none},
              {"SYSTEMD_ENVIRONMENT_GENERATOR_PATH", none},
              {"SYSTEMD_LOG_TARGET", "console"},
              {"SYSTEMD_LOG_LEVEL", "info"}},
      .cwd = dir_.path(),
      .stdout_path = dir_ / "systemd.log",
  });
  GObjectPtr<GDBusConnection> bus = connect(bus_address);
  if (!wait_until([&] { return name_has_owner(bus.get(), "org.freedesktop.systemd1") || !manager_->running(); }) ||
      !manager_->running())
    throw FixtureError("systemd --user did not come up on the host bus (its log is printed below)");
}

SystemdUser::~SystemdUser() {
  if (manager_->running()) {
    manager_->send_signal(SIGRTMIN + 24);  // a user manager's immediate exit
    if (!manager_->wait_for_exit(5s)) manager_->stop();
  }
  manager_.reset();
  remove_cgroup_tree(cgroup2_root() + "/" + cgroup_name_);
  if (is_filesystem("/sys/fs/cgroup/systemd", kCgroupMagic))
    remove_cgroup_tree("/sys/fs/cgroup/systemd/" + cgroup_name_);
}

std::map<std::string, std::string> SystemdUser::client_env() const {
  return {{"DBUS_SESSION_BUS_ADDRESS", bus_address_}, {"XDG_RUNTIME_DIR", runtime_dir_}};
}

}  // namespace sidebus::test
