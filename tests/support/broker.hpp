// SPDX-License-Identifier: LGPL-2.1-or-later
// broker.hpp — Broker: one sidebus-broker process for one VM, on a host bus
// (HostPortal::bus_address()), with its runtime, state and config
// directories in its own TempDir, JSON config drop-ins written before it
// starts, and its link listening where the agent connects.
#pragma once

#include <map>
#include <optional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "support/process.hpp"
#include "support/temp-dir.hpp"

namespace sidebus::test {

struct BrokerOptions {
  std::string host_bus_address;           // required
  std::vector<std::string> listen;        // default: unix:<dir>/link.sock
  std::string vm_name = "testvm";
  // Default: <runtime-dir>/doc/by-app/<app id>, this VM's view of the
  // document mount (what a VMM shares), so clients of a guest bus on this
  // machine can open the files they are given.
  std::string guest_documents_path;
  std::string state_dir;                  // default: <dir>/state (pass one to survive a restart)
  // JSON drop-ins written to the --config-dir before start, file name →
  // text, e.g. {"50-filechooser.json", R"({"portals":{"filechooser":{"enabled":true}}})"}.
  std::vector<std::pair<std::string, std::string>> config;
  std::string plugin_dir;                 // default: $SIDEBUS_PLUGIN_DIR
  std::vector<std::string> extra_args;
  std::map<std::string, std::string> env;  // on top of the support library's (e.g. NOTIFY_SOCKET)
  bool verbose = true;
  bool wait_for_listen = true;            // return once unix: listen sockets exist and the broker is ready
};

class Broker {
 public:
  explicit Broker(BrokerOptions options);
  ~Broker();
  Broker(const Broker&) = delete;
  Broker& operator=(const Broker&) = delete;

  // The first --listen address as given ("unix:PATH,nofds"), and as an agent
  // connects to it (listen options dropped: "unix:PATH").
  const std::string& listen_address() const { return options_.listen.front(); }
  std::string link_address() const;
  const std::string& runtime_dir() const { return runtime_dir_; }
  const std::string& state_dir() const { return options_.state_dir; }
  const std::string& config_dir() const { return config_dir_; }
  const TempDir& dir() const { return dir_; }
  ChildProcess& process() { return *process_; }
  ExitStatus stop(Timeout timeout = 10s) { return process_->stop(timeout); }
  std::optional<ExitStatus> wait_for_exit(Timeout timeout) { return process_->wait_for_exit(timeout); }

 private:
  BrokerOptions options_;
  TempDir dir_;
  std::string runtime_dir_;
  std::string config_dir_;
  std::unique_ptr<ChildProcess> process_;
};

// "unix:PATH[,options]" → PATH; nullopt for other transports.
std::optional<std::string> unix_socket_path(const std::string& address);

}  // namespace sidebus::test
