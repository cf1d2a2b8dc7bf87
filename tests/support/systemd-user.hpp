// SPDX-License-Identifier: LGPL-2.1-or-later
// systemd-user.hpp — SystemdUser: a real systemd user manager (`systemd
// --user`, 252 on Debian 12) serving org.freedesktop.systemd1 on a test's
// host bus, as a desktop session's user manager does on the session bus. The
// broker's move into its VM's app scope (core/broker/host-identity.hpp) and
// the host xdg-desktop-portal's reading of the scope's name then run for
// real.
//
// This machine boots without systemd, so the manager gets what it needs and
// no more, and nothing of it leaks out of the test:
//  - its own mount namespace (unshare -m) with a tmpfs on /run/systemd
//    holding system/, the sign that the machine "booted with systemd";
//  - its own cgroup, <cgroup2 root>/sidebus\x2dtest\x2d<pid>\x2d<n>.slice/
//    user@<uid>.service: libsystemd skips leading slices and the user@
//    element to find a user unit, so xdg-desktop-portal reads the units below
//    it exactly as on a desktop. Swept (cgroup.kill, rmdir) when it goes, in
//    the cgroup2 hierarchy and the legacy name=systemd one (a hybrid host's
//    manager keeps both);
//  - units only from its own directory (SYSTEMD_UNIT_PATH): default.target,
//    app.slice, exit.target and a stand-in dbus.socket/dbus.service pair (a
//    user manager joins the session bus once "dbus.service" runs; the bus
//    itself is the test's, $DBUS_SESSION_BUS_ADDRESS); no generators;
//  - XDG_RUNTIME_DIR and HOME in its TempDir.
// unavailable() says why it cannot run (not root, no cgroup2 hierarchy, no
// unshare or systemd); tests skip with that reason.
#pragma once

#include <sys/types.h>

#include <map>
#include <memory>
#include <string>

#include "support/process.hpp"
#include "support/temp-dir.hpp"

namespace sidebus::test {

class SystemdUser {
 public:
  // "" if a manager can run here, else why not.
  static std::string unavailable();
  // Starts the manager on @bus_address; returns once org.freedesktop.systemd1
  // is on that bus (FixtureError otherwise).
  explicit SystemdUser(const std::string& bus_address);
  ~SystemdUser();
  SystemdUser(const SystemdUser&) = delete;
  SystemdUser& operator=(const SystemdUser&) = delete;

  ChildProcess& process() { return *manager_; }
  const std::string& runtime_dir() const { return runtime_dir_; }
  // Environment for systemd-run --user / systemctl --user against it.
  std::map<std::string, std::string> client_env() const;

 private:
  TempDir dir_;
  std::string bus_address_;
  std::string runtime_dir_;
  std::string cgroup_name_;  // the top slice, as a path element
  std::unique_ptr<ChildProcess> manager_;
};

}  // namespace sidebus::test
