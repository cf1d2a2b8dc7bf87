// SPDX-License-Identifier: LGPL-2.1-or-later
// child-process.hpp — a helper process the broker spawns and owns (the
// private dbus-daemon, xdg-permission-store, xdg-document-portal, virtiofsd):
// it dies with the broker (PR_SET_PDEATHSIG), its stdout goes to our stderr
// (never into a TAP stream or a pipe we read), and it is stopped — SIGTERM, a
// bounded wait, SIGKILL — when the value goes away. GLib's worker thread
// reaps it (GSubprocess).
#pragma once

#include <gio/gio.h>
#include <sys/types.h>

#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "util/gobject-ptr.hpp"

namespace sidebus {

class ChildProcess {
 public:
  struct Options {
    std::vector<std::string> argv;
    const char* const* envp = nullptr;        // nullptr: inherit ours
    std::vector<std::pair<int, int>> fds;     // (our fd, its number in the child); the child gets a copy
  };
  // name: for messages ("xdg-document-portal").
  static std::unique_ptr<ChildProcess> spawn(const std::string& name, const Options& options, GError** error);
  ~ChildProcess();  // stop()
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  const std::string& name() const { return name_; }
  pid_t pid() const { return pid_; }

  // Without reaping: a zombie, or already reaped by GLib, has exited.
  bool has_exited() const;
  // Polls until it has exited, at most timeout_us; false on timeout.
  bool wait_exit(gint64 timeout_us) const;
  // "exited with status 6", "was killed by signal 9"; "is still running".
  std::string exit_description() const;
  // -1 unless it exited normally.
  int exit_status() const;

  // Calls on_exit once, on the thread-default main context, when the process
  // ends; replaces an earlier watch.
  void watch(std::function<void()> on_exit);
  void unwatch();
  // SIGTERM, a bounded wait, SIGKILL: blocks up to twice the grace period.
  // For the broker's own exit; at run time use stop_async().
  void stop();
  // The same without waiting: SIGTERM now, SIGKILL once the grace period
  // passed; on_stopped (may be empty) runs on the thread-default main context
  // once it has exited. Destroying the ChildProcess first stops it at once.
  void stop_async(std::function<void()> on_stopped);

 private:
  ChildProcess(std::string name, GSubprocess* process);
  static void on_wait_done(GObject* source, GAsyncResult* result, gpointer user_data);

  std::string name_;
  pid_t pid_;
  GObjectPtr<GSubprocess> process_;
  GObjectPtr<GCancellable> watch_cancellable_;
  std::function<void()> on_exit_;
  guint kill_timer_ = 0;  // stop_async()'s SIGKILL
};

}  // namespace sidebus

