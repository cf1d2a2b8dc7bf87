// dbus-daemon.hpp — spawning a dbus-daemon of our own with a generated
// configuration (the per-VM private bus, the --debug-access bus): the child
// is owned by a DBusDaemon value and stopped when it goes.
#pragma once

#include <gio/gio.h>

#include <memory>
#include <string>

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
  GPid pid() const { return pid_; }

 private:
  GPid pid_ = 0;
  std::string address_;
  std::string config_path_;
  std::string socket_path_;
};

// GSpawnChildSetupFunc: the child gets SIGTERM if the broker dies, so a
// killed broker does not leave its helpers running.
void die_with_parent(gpointer);

// Stops a child: SIGTERM, waits up to timeout_ms, then SIGKILL. Reaps it.
void stop_child(GPid pid, int timeout_ms = 3000);

}  // namespace sidebus
