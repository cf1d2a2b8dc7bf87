// SPDX-License-Identifier: LGPL-2.1-or-later
// agent.cpp — Agent (agent.hpp).
#include "support/agent.hpp"

namespace sidebus::test {

Agent::Agent(AgentOptions options) : options_(std::move(options)), dir_("sidebus-test-agent") {
  if (options_.identity) dir_.give_to(*options_.identity);
  std::vector<std::string> argv = {env_path("SIDEBUS_AGENT"), "--connect", options_.connect};
  argv.insert(argv.end(), options_.extra_args.begin(), options_.extra_args.end());
  process_ = std::make_unique<ChildProcess>(SpawnOptions{
      .name = "sidebus-agent",
      .argv = argv,
      .env = {{"DBUS_SESSION_BUS_ADDRESS", options_.guest_bus_address},
              {"G_MESSAGES_DEBUG", "sidebus"},
              {"HOME", dir_.path()}},
      .cwd = dir_.path(),
      .stdout_path = dir_ / "agent.log",
      .identity = options_.identity,
  });
}

Agent::~Agent() { process_.reset(); }

}  // namespace sidebus::test
