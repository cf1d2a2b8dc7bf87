// dbus-daemon.cpp — see dbus-daemon.hpp.
#include "documents/dbus-daemon.hpp"

#include <fcntl.h>
#include <glib-unix.h>
#include <glib/gstdio.h>
#include <signal.h>

#include "sidebus-config.h"
#include "util/unique-fd.hpp"

namespace sidebus {

std::unique_ptr<DBusDaemon> DBusDaemon::spawn(const std::string& config_path, const std::string& socket_path,
                                              GError** error) {
  g_autofree char* escaped_socket = g_markup_escape_text(socket_path.c_str(), -1);
  g_autofree char* config = g_strdup_printf(
      "<!DOCTYPE busconfig PUBLIC \"-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN\"\n"
      " \"http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd\">\n"
      "<busconfig>\n"
      "  <type>session</type>\n"
      "  <listen>unix:path=%s</listen>\n"
      "  <auth>EXTERNAL</auth>\n"
      "  <policy context=\"default\">\n"
      "    <allow send_destination=\"*\" eavesdrop=\"true\"/>\n"
      "    <allow eavesdrop=\"true\"/>\n"
      "    <allow own=\"*\"/>\n"
      "  </policy>\n"
      "</busconfig>\n",
      escaped_socket);
  if (!g_file_set_contents(config_path.c_str(), config, -1, error)) return nullptr;
  g_unlink(socket_path.c_str());  // a stale socket from a crashed run

  int pipe_fds[2];
  if (!g_unix_open_pipe(pipe_fds, FD_CLOEXEC, error)) return nullptr;
  UniqueFd read_end(pipe_fds[0]);
  UniqueFd write_end(pipe_fds[1]);

  g_autofree char* config_arg = g_strdup_printf("--config-file=%s", config_path.c_str());
  auto daemon = std::unique_ptr<DBusDaemon>(new DBusDaemon());
  daemon->config_path_ = config_path;
  daemon->socket_path_ = socket_path;
  daemon->process_ = ChildProcess::spawn(
      "dbus-daemon", {.argv = {DBUS_DAEMON, config_arg, "--nofork", "--print-address=3"}, .fds = {{write_end.get(), 3}}},
      error);
  if (!daemon->process_) return nullptr;
  write_end.reset();  // so that EOF arrives if the daemon dies

  // Read the address line, bounded in time and size.
  std::string line;
  gint64 deadline = g_get_monotonic_time() + 10 * G_USEC_PER_SEC;
  while (line.find('\n') == std::string::npos) {
    GPollFD poll_fd = {read_end.get(), G_IO_IN, 0};
    gint64 remaining_ms = (deadline - g_get_monotonic_time()) / 1000;
    if (remaining_ms <= 0 || g_poll(&poll_fd, 1, remaining_ms) <= 0) break;
    char buffer[512];
    ssize_t n = read(read_end.get(), buffer, sizeof buffer);
    if (n <= 0) break;
    line.append(buffer, n);
    if (line.size() > 4096) break;
  }
  size_t newline = line.find('\n');
  if (newline == std::string::npos) {
    g_set_error(error, G_IO_ERROR, G_IO_ERROR_FAILED,
                "%s with %s did not print its address within 10 s; run it by hand to see why", DBUS_DAEMON,
                config_path.c_str());
    return nullptr;  // the destructor stops the child
  }
  daemon->address_ = line.substr(0, newline);
  return daemon;
}

DBusDaemon::~DBusDaemon() {
  process_.reset();
  g_unlink(socket_path_.c_str());
  g_unlink(config_path_.c_str());
}

}  // namespace sidebus
