// SPDX-License-Identifier: LGPL-2.1-or-later
// topology.cpp — Topology (topology.hpp): the pieces started in order
// (host, guest, broker, agent) and torn down in reverse.
#include "support/topology.hpp"

#include <sys/stat.h>

namespace sidebus::test {

Topology::Topology(TopologyOptions options) : options_(std::move(options)) {
  if (options_.shared_host == nullptr) owned_host_ = std::make_unique<HostPortal>(options_.host);
  host_ = options_.shared_host != nullptr ? options_.shared_host : owned_host_.get();
  guest_ = std::make_unique<GuestBus>(options_.guest);
  start_broker_and_agent();
}

Topology::~Topology() {
  agent_.reset();
  broker_.reset();
  guest_.reset();
  owned_host_.reset();
}

void Topology::start_broker_and_agent() {
  BrokerOptions broker_options = options_.broker;
  broker_options.host_bus_address = host_->bus_address();
  broker_ = std::make_unique<Broker>(std::move(broker_options));
  if (options_.guest.identity) {
    // As a VMM would: the guest user's agent must be able to connect.
    std::optional<std::string> path = unix_socket_path(broker_->link_address());
    if (path) chmod(path->c_str(), 0666);
  }
  if (options_.broker_started) options_.broker_started(*broker_);
  if (!options_.start_agent) return;
  start_agent();
  if (options_.wait_for_portal && !wait_for_guest_name(kPortalBusName))
    throw FixtureError("org.freedesktop.portal.Desktop did not appear on the guest bus (logs are printed below)");
}

Agent& Topology::agent() {
  if (!agent_) throw FixtureError("no agent is running");
  return *agent_;
}

void Topology::start_agent() {
  agent_.reset();
  agent_ = std::make_unique<Agent>(AgentOptions{
      .connect = broker_->link_address(),
      .guest_bus_address = guest_->address(),
      .identity = options_.guest.identity,
      .extra_args = options_.agent_args,
  });
}

void Topology::stop_agent() { agent_.reset(); }

void Topology::restart_broker(const std::function<void()>& while_stopped) {
  agent_.reset();
  broker_.reset();
  if (while_stopped) while_stopped();
  start_broker_and_agent();
}

bool Topology::wait_for_guest_name(const char* name, Timeout timeout) {
  GDBusConnection* connection = guest_->connection();
  wait_until(
      [&] {
        return name_has_owner(connection, name) || !broker_->process().running() ||
               (agent_ && !agent_->process().running());
      },
      timeout);
  return name_has_owner(connection, name);
}

std::string Topology::guest_introspect(const char* path, const char* name) {
  return introspect(guest_->connection(), name, path);
}

}  // namespace sidebus::test
