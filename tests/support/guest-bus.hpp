// SPDX-License-Identifier: LGPL-2.1-or-later
// guest-bus.hpp — the guest side: GuestBus, a dbus-daemon standing for the
// VM's session bus (dbus-daemon.hpp), the bus the agent serves the portal on
// and the guest's applications call it on.
#pragma once

#include <gio/gio.h>

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "support/process.hpp"
#include "support/temp-dir.hpp"
#include "support/variant.hpp"

namespace sidebus::test {

// A dbus-daemon standing for the VM's session bus, optionally run as another
// user. Such a bus accepts only its own uid, so:
//  - run_as_guest() runs a real client (e.g. `gdbus call`) as that uid;
//  - connection(), the test's own client, is root: with allow_root_client
//    (the default) the bus config adds <allow user="root"/> for it. This does
//    not weaken what the agent is tested for: the daemon still checks that
//    the identity a client claims is its socket's peer uid.
struct GuestBusOptions {
  std::optional<Identity> identity;            // nullopt: same user as the test
  bool allow_root_client = true;
  std::map<std::string, std::string> services;  // activatable: bus name → Exec line
};

class GuestBus {
 public:
  explicit GuestBus(GuestBusOptions options = {});
  ~GuestBus();
  GuestBus(const GuestBus&) = delete;
  GuestBus& operator=(const GuestBus&) = delete;

  const std::string& address() const { return address_; }
  const std::optional<Identity>& identity() const { return options_.identity; }
  const TempDir& dir() const { return dir_; }
  GDBusConnection* connection();  // connects on first use, borrowed

  struct Output {
    ExitStatus status;
    std::string out;
    std::string err;
  };
  // Runs @argv as the guest user with DBUS_SESSION_BUS_ADDRESS = this bus;
  // killed after @timeout.
  Output run_as_guest(const std::vector<std::string>& argv, Timeout timeout = kDefaultTimeout);

 private:
  GuestBusOptions options_;
  TempDir dir_;
  std::unique_ptr<ChildProcess> bus_;
  std::string address_;
  GObjectPtr<GDBusConnection> connection_;
  int clients_run_ = 0;
};

}  // namespace sidebus::test
