// SPDX-License-Identifier: LGPL-2.1-or-later
// agent.hpp — Agent: one sidebus-agent process, the guest half of the
// link: it connects to the broker's link address and serves the portal on
// the guest bus (optionally as the guest user).
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "support/process.hpp"
#include "support/temp-dir.hpp"

namespace sidebus::test {

struct AgentOptions {
  std::string connect;                    // e.g. the broker's link_address()
  std::string guest_bus_address;          // its DBUS_SESSION_BUS_ADDRESS
  std::optional<Identity> identity;       // run as the guest user
  std::vector<std::string> extra_args;
};

class Agent {
 public:
  explicit Agent(AgentOptions options);
  ~Agent();
  Agent(const Agent&) = delete;
  Agent& operator=(const Agent&) = delete;

  const TempDir& dir() const { return dir_; }
  ChildProcess& process() { return *process_; }
  ExitStatus stop(Timeout timeout = 10s) { return process_->stop(timeout); }
  std::optional<ExitStatus> wait_for_exit(Timeout timeout) { return process_->wait_for_exit(timeout); }

 private:
  AgentOptions options_;
  TempDir dir_;
  std::unique_ptr<ChildProcess> process_;
};

}  // namespace sidebus::test
