// SPDX-License-Identifier: LGPL-2.1-or-later
// broker.hpp — one broker serves one VM: it owns the configuration, the
// plugins, the host bus connection, the VM's private bus with its document
// portal, the listener for guest links and the current link.
#pragma once

#include <gio/gio.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "broker/broker-status.hpp"

namespace sidebus {

struct BrokerOptions {
  std::vector<std::string> listen;      // --listen
  std::string runtime_dir;              // --runtime-dir
  std::string state_dir;                // --state-dir
  std::string vm_name;                  // --vm-name
  std::string guest_documents_path;     // --guest-documents-path
  std::string host_bus;                 // --host-bus (empty: the session bus)
  std::vector<std::string> config_dirs;  // --config-dir (empty: the defaults)
  std::vector<std::string> plugin_dirs;  // --plugin-dir (empty: the default)
  std::string debug_access_dir;         // --debug-access
  std::string virtiofsd;                // --virtiofsd (empty: the VMM shares the documents itself)
  std::string private_bus;              // --private-bus: the VM manager's bus (empty: spawn our own)
  bool incoming = false;                // --incoming: a migration's destination, waits for Load
  unsigned incoming_timeout_s = 0;      // --incoming-timeout (0: as long as it takes)
  std::string vmstate_id = "sidebus";   // --vmstate-id: org.qemu.VMState1's Id
  std::string vmstate_key;              // the secret read from --vmstate-key (empty: none)
  // Ends the broker from within (the main loop quits, main() returns
  // @status): an --incoming broker whose Load never came.
  std::function<void(int status)> stop;
};

class Broker {
 public:
  // Everything up to "ready to accept a guest link"; the error names what
  // failed (file, option, child) and what to do.
  // Binds the --listen sockets first (paused), so that a bad address stops
  // the start before anything else runs, and accepts links once the rest is
  // up.
  static std::unique_ptr<Broker> start(const BrokerOptions& options, GError** error);
  virtual ~Broker() = default;  // stops the link, plugins, listener and private bus

  // Reads the configuration again (`sidebusctl reload`, SIGHUP). On any
  // error — a file that does not parse, a key a plugin refuses, a plugin
  // that does not load — the configuration in effect stays and the error
  // names the file, line and key. Otherwise: broker.max_pending_requests,
  // broker.max_sessions and broker.dialog_title_prefix hold for new calls at
  // once; the other broker.* keys (what the link's relay checks) from the
  // next link on; a change of portals.* (enabling, disabling, any key of an
  // enabled portal) restarts the current link's portals: its pending
  // requests get Response 2 and its sessions Closed, then the portals the new
  // configuration enables start. docs/operations.md says the same.
  virtual bool reload(ReloadReport* report, GError** error) = 0;
  virtual BrokerStatus status() const = 0;
};

}  // namespace sidebus
