// SPDX-License-Identifier: LGPL-2.1-or-later
// dbus-daemon.hpp — the one bus launcher: a dbus-daemon of the test's own,
// session-type, with no standard service directories (nothing of the
// system's can be activated on it, only what is in @services_dir). HostPortal
// and GuestBus start theirs with it.
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <string>

#include "support/process.hpp"
#include "support/temp-dir.hpp"

namespace sidebus::test {

// The bus configuration: listens on @socket_path, EXTERNAL auth, everything
// allowed, plus @extra_policy (<allow …/> lines of the default policy).
std::string bus_config(const std::string& socket_path, const std::string& services_dir,
                       const std::string& extra_policy = "");

// Writes <dir>/<name>.conf, starts dbus-daemon with it (log: <dir>/<name>.log)
// and returns once it printed its address (into @address).
std::unique_ptr<ChildProcess> start_dbus_daemon(const TempDir& dir, const std::string& name, const std::string& config,
                                                std::optional<Identity> identity,
                                                std::map<std::string, std::string> env, std::string* address);

}  // namespace sidebus::test
