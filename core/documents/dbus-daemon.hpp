// SPDX-License-Identifier: LGPL-2.1-or-later
// dbus-daemon.hpp — spawning a dbus-daemon of our own with a generated
// configuration (the per-VM private bus, the --debug-access bus): the child
// is a ChildProcess owned by a DBusDaemon value and stopped when it goes.
#pragma once

#include <gio/gio.h>

#include <functional>
#include <memory>
#include <string>

#include "util/child-process.hpp"

namespace sidebus {

class DBusDaemon {
 public:
  // Writes config_path (a bus listening on unix:path=socket_path, only our
  // uid, permissive policy, no service directories), starts dbus-daemon on it
  // and, without blocking, waits (at most 10 s) until it prints its address;
  // then @done runs on the main context with the daemon, or with an error
  // (borrowed). Never inside this call.
  using Started = std::function<void(std::unique_ptr<DBusDaemon> daemon, GError* error)>;
  static void spawn_async(const std::string& config_path, const std::string& socket_path, Started done);
  // The same, waiting (iterating the thread-default main context): for
  // start-up, before the broker serves anyone.
  static std::unique_ptr<DBusDaemon> spawn(const std::string& config_path, const std::string& socket_path,
                                           GError** error);
  ~DBusDaemon();  // SIGTERM, bounded wait, SIGKILL; removes the socket and config

  const std::string& address() const { return address_; }
  pid_t pid() const { return process_->pid(); }
  // Removes the socket and the config and hands over the process, for a
  // caller that stops it without waiting (ChildProcess::stop_async).
  std::unique_ptr<ChildProcess> release();

 private:
  struct Spawning;
  std::unique_ptr<ChildProcess> process_;
  std::string address_;
  std::string config_path_;
  std::string socket_path_;
};

}  // namespace sidebus
