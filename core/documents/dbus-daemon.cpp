// SPDX-License-Identifier: LGPL-2.1-or-later
// dbus-daemon.cpp — see dbus-daemon.hpp.
#include "documents/dbus-daemon.hpp"

#include <fcntl.h>
#include <glib-unix.h>
#include <glib/gstdio.h>
#include <signal.h>

#include "sidebus-config.h"
#include "util/main-context.hpp"
#include "util/unique-fd.hpp"

namespace sidebus {

// The daemon until it printed its address: the read end of its
// --print-address pipe, watched on the main context, and a deadline.
struct DBusDaemon::Spawning {
  std::unique_ptr<DBusDaemon> daemon;
  UniqueFd read_end;
  std::string line;
  Started done;
  guint watch = 0;
  guint timeout = 0;

  void finish(GError* error) {
    g_source_remove(watch);
    g_source_remove(timeout);
    if (error == nullptr) {
      daemon->address_ = line.substr(0, line.find('\n'));
      done(std::move(daemon), nullptr);
    } else {
      done(nullptr, error);  // ~DBusDaemon stops the child
      g_error_free(error);
    }
    delete this;
  }
  GError* no_address() const {
    return g_error_new(G_IO_ERROR, G_IO_ERROR_FAILED,
                       "%s with %s did not print its address within 10 s; run it by hand to see why", DBUS_DAEMON,
                       daemon->config_path_.c_str());
  }
};

void DBusDaemon::spawn_async(const std::string& config_path, const std::string& socket_path, Started done) {
  GError* error = nullptr;
  auto fail_soon = [&done](GError* error) {
    post_to_context(g_main_context_get_thread_default(), [done = std::move(done), error] {
      done(nullptr, error);
      g_error_free(error);
    });
  };
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
  if (!g_file_set_contents(config_path.c_str(), config, -1, &error)) return fail_soon(error);
  g_unlink(socket_path.c_str());  // a stale socket from a crashed run

  int pipe_fds[2];
  if (!g_unix_open_pipe(pipe_fds, FD_CLOEXEC, &error)) return fail_soon(error);
  auto* spawning = new Spawning();
  spawning->read_end = UniqueFd(pipe_fds[0]);
  UniqueFd write_end(pipe_fds[1]);
  g_autofree char* config_arg = g_strdup_printf("--config-file=%s", config_path.c_str());
  spawning->daemon = std::unique_ptr<DBusDaemon>(new DBusDaemon());
  spawning->daemon->config_path_ = config_path;
  spawning->daemon->socket_path_ = socket_path;
  spawning->daemon->process_ = ChildProcess::spawn(
      "dbus-daemon", {.argv = {DBUS_DAEMON, config_arg, "--nofork", "--print-address=3"}, .fds = {{write_end.get(), 3}}},
      &error);
  if (!spawning->daemon->process_) {
    delete spawning;
    return fail_soon(error);
  }
  write_end.reset();  // so that EOF arrives if the daemon dies
  spawning->done = std::move(done);
  g_unix_set_fd_nonblocking(spawning->read_end.get(), TRUE, nullptr);
  spawning->watch = g_unix_fd_add(spawning->read_end.get(), GIOCondition(G_IO_IN | G_IO_HUP), [](int fd, GIOCondition, gpointer data) -> gboolean {
    auto* spawning = static_cast<Spawning*>(data);
    char buffer[512];
    ssize_t n = read(fd, buffer, sizeof buffer);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) return G_SOURCE_CONTINUE;
    if (n > 0) spawning->line.append(buffer, size_t(n));
    if (spawning->line.find('\n') != std::string::npos) {
      spawning->finish(nullptr);
    } else if (n <= 0 || spawning->line.size() > 4096) {
      spawning->finish(spawning->no_address());
    }
    return G_SOURCE_CONTINUE;  // finish() removed the source already
  }, spawning);
  spawning->timeout = g_timeout_add_seconds(10, [](gpointer data) -> gboolean {
    auto* spawning = static_cast<Spawning*>(data);
    spawning->finish(spawning->no_address());
    return G_SOURCE_CONTINUE;
  }, spawning);
}

std::unique_ptr<DBusDaemon> DBusDaemon::spawn(const std::string& config_path, const std::string& socket_path,
                                              GError** error) {
  bool finished = false;
  std::unique_ptr<DBusDaemon> result;
  spawn_async(config_path, socket_path, [&](std::unique_ptr<DBusDaemon> daemon, GError* failure) {
    result = std::move(daemon);
    if (failure != nullptr) g_propagate_error(error, g_error_copy(failure));
    finished = true;
  });
  while (!finished) g_main_context_iteration(g_main_context_get_thread_default(), TRUE);
  return result;
}

std::unique_ptr<ChildProcess> DBusDaemon::release() {
  g_unlink(socket_path_.c_str());
  g_unlink(config_path_.c_str());
  return std::move(process_);
}

DBusDaemon::~DBusDaemon() {
  process_.reset();  // stops it
  g_unlink(socket_path_.c_str());
  g_unlink(config_path_.c_str());
}

}  // namespace sidebus
