// dbus-daemon.hpp — spawning a dbus-daemon of our own with a generated
// configuration (the per-VM private bus, the --debug-access bus): the child
// is a ChildProcess owned by a DBusDaemon value and stopped when it goes.
#pragma once

#include <gio/gio.h>

#include <memory>
#include <string>

#include "util/child-process.hpp"

namespace sidebus {

class DBusDaemon {
 public:
  // Writes config_path (a bus listening on unix:path=socket_path, only our
  // uid, permissive policy, no service directories), starts dbus-daemon on it
  // and waits (bounded) until it prints its address.
  static std::unique_ptr<DBusDaemon> spawn(const std::string& config_path, const std::string& socket_path,
                                           GError** error);
  ~DBusDaemon();  // SIGTERM, bounded wait, SIGKILL; removes the socket and config

  const std::string& address() const { return address_; }
  pid_t pid() const { return process_->pid(); }

 private:
  std::unique_ptr<ChildProcess> process_;
  std::string address_;
  std::string config_path_;
  std::string socket_path_;
};

}  // namespace sidebus
