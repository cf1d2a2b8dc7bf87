// SPDX-License-Identifier: LGPL-2.1-or-later
// broker-status.hpp — what a running broker tells its operator: the facts
// behind `sidebusctl status` and the outcome of a reload, and their JSON
// (docs/operations.md lists every field). The broker fills them in
// (broker.cpp); this file only knows how to write them down.
#pragma once

#include <json-glib/json-glib.h>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace sidebus {

struct LinkStatus {
  uint64_t serial = 0;  // counts the links this broker accepted, from 1
  std::string state;    // "waiting-for-host-portal", "serving"
  double up_seconds = 0;
  std::string transport;  // "unix:/run/…/vm1.link", "vsock:1234 from cid 3", "systemd:fd3"
  std::string fd_mode;    // "native" (SCM_RIGHTS), "forwarded" (link protocol 2) or "none"
  uint32_t protocol = 0;  // link protocol version
  std::string agent_version;
  uint32_t guest_uid = 0;
  std::string guest_name;  // the broker's unique name on the guest bus
};

struct PortalStatus {
  std::string name;                                          // the plugin ("filechooser")
  std::vector<std::pair<std::string, uint32_t>> interfaces;  // served to the guest, with "version"
};

struct BrokerStatus {
  std::string vm_name;
  std::string version;
  int pid = 0;
  double uptime_seconds = 0;
  std::optional<LinkStatus> link;  // none: waiting for the agent
  uint64_t links_accepted = 0;
  bool host_portal_ready = false;
  std::vector<std::string> enabled_portals;  // by the configuration
  std::vector<PortalStatus> serving;         // started on the current link
  size_t pending_requests = 0;
  size_t sessions = 0;
  size_t exported_documents = 0;
  std::map<std::string, unsigned> helper_exits;  // private bus helper → times it died
  unsigned helper_restarts = 0;
  bool helpers_given_up = false;
  std::string runtime_dir;
  std::string state_dir;
  std::vector<std::string> config_files;
  unsigned reloads = 0;  // successful reloads
  std::string last_reload_error;
  // broker.* as the files set them (the rest are the defaults), and the
  // keys the current link's relay still has older values of.
  std::vector<std::pair<std::string, JsonNode*>> broker_settings;  // references, dropped by ~BrokerStatus
  std::vector<std::string> pending_next_link;

  BrokerStatus() = default;
  BrokerStatus(const BrokerStatus&) = delete;
  BrokerStatus& operator=(const BrokerStatus&) = delete;
  BrokerStatus(BrokerStatus&&) = default;
  ~BrokerStatus() {
    for (auto& [key, node] : broker_settings) json_node_unref(node);
  }
};

// What a reload did (`sidebusctl reload`, SIGHUP).
struct ReloadReport {
  std::vector<std::string> files;      // read, in order
  std::vector<std::string> applied;    // changed keys in effect now, for new calls
  std::vector<std::string> next_link;  // changed keys that apply from the next link on
  bool portals_restarted = false;      // the link's portals were stopped and started again
  std::vector<std::string> enabled_portals;
};

// Both as a JSON object, borrowed by nobody: the caller owns the node.
JsonNode* to_json(const BrokerStatus& status);
JsonNode* to_json(const ReloadReport& report);
// One line for STATUS= and the log: "serving the guest (agent 0.1.0 on …)".
std::string summary_line(const BrokerStatus& status);

}  // namespace sidebus
