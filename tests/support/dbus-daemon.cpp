// SPDX-License-Identifier: LGPL-2.1-or-later
// dbus-daemon.cpp — bus_config and start_dbus_daemon (dbus-daemon.hpp).
#include "support/dbus-daemon.hpp"

#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <cerrno>

#include "sidebus-config.h"
#include "util/unique-fd.hpp"

namespace sidebus::test {

std::string bus_config(const std::string& socket_path, const std::string& services_dir,
                       const std::string& extra_policy) {
  return "<!DOCTYPE busconfig PUBLIC \"-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN\"\n"
         " \"http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd\">\n"
         "<busconfig>\n"
         "  <type>session</type>\n"
         "  <listen>unix:path=" + socket_path + "</listen>\n"
         "  <auth>EXTERNAL</auth>\n"
         "  <servicedir>" + services_dir + "</servicedir>\n"
         "  <policy context=\"default\">\n"
         "    <allow send_destination=\"*\" eavesdrop=\"true\"/>\n"
         "    <allow eavesdrop=\"true\"/>\n"
         "    <allow own=\"*\"/>\n" +
         extra_policy +
         "  </policy>\n"
         "</busconfig>\n";
}

std::unique_ptr<ChildProcess> start_dbus_daemon(const TempDir& dir, const std::string& name, const std::string& config,
                                                std::optional<Identity> identity,
                                                std::map<std::string, std::string> env, std::string* address) {
  const std::string config_path = dir.write_file(name + ".conf", config);
  int pipe_fds[2];
  if (pipe2(pipe_fds, O_CLOEXEC) != 0) throw FixtureError("pipe: " + std::string(g_strerror(errno)));
  UniqueFd address_in(pipe_fds[0]), address_out(pipe_fds[1]);
  auto daemon = std::make_unique<ChildProcess>(SpawnOptions{
      .name = name,
      .argv = {DBUS_DAEMON, "--config-file=" + config_path, "--nofork", "--nopidfile", "--print-address=3"},
      .env = std::move(env),
      .unset_env = {"G_DEBUG"},
      .cwd = dir.path(),
      .stdout_path = dir / (name + ".log"),
      .identity = identity,
      .fds = {{address_out.get(), 3}},
  });
  address_out.reset();  // so a daemon that dies is an EOF here

  std::string line;
  const gint64 deadline = g_get_monotonic_time() + 10 * G_USEC_PER_SEC;
  while (line.find('\n') == std::string::npos) {
    struct pollfd poll_fd = {address_in.get(), POLLIN, 0};
    int timeout_ms = static_cast<int>((deadline - g_get_monotonic_time()) / 1000);
    if (timeout_ms <= 0 || poll(&poll_fd, 1, timeout_ms) <= 0) break;
    char chunk[256];
    ssize_t n = read(address_in.get(), chunk, sizeof chunk);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    line.append(chunk, n);
  }
  size_t end = line.find('\n');
  if (end == std::string::npos || end == 0)
    throw FixtureError(name + " did not start (its log is printed below)");
  *address = line.substr(0, end);
  return daemon;
}

}  // namespace sidebus::test
