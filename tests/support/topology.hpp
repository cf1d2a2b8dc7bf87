// SPDX-License-Identifier: LGPL-2.1-or-later
// topology.hpp — Topology, the process topology every integration test runs
// in: HostPortal (host-portal.hpp) + GuestBus (guest-bus.hpp) + Broker on
// the host bus (broker.hpp) + Agent from the broker's link to the guest bus
// (agent.hpp). Unless told otherwise, the constructor returns once the
// broker owns org.freedesktop.portal.Desktop on the guest bus. The broker
// can be restarted (on the same state directory if BrokerOptions::state_dir
// names one that outlives it), the agent stopped and started again.
//
// Failures to set up throw FixtureError (register tests with add_test());
// the children's logs are printed when a test fails.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "support/agent.hpp"
#include "support/broker.hpp"
#include "support/dbus.hpp"
#include "support/guest-bus.hpp"
#include "support/host-portal.hpp"

namespace sidebus::test {

struct TopologyOptions {
  HostPortalOptions host;
  // A host shared with other topologies (two VMs on one desktop): used
  // instead of starting one from @host; it must outlive this topology.
  HostPortal* shared_host = nullptr;
  GuestBusOptions guest;                   // the agent runs as guest.identity too
  BrokerOptions broker;                    // host_bus_address is filled in
  std::vector<std::string> agent_args;
  bool start_agent = true;
  bool wait_for_portal = true;
  // Called after each start of the broker, before its agent starts (e.g. to
  // share the broker's document view with the guest, as a VMM would).
  std::function<void(Broker&)> broker_started;
};

class Topology {
 public:
  explicit Topology(TopologyOptions options = {});
  ~Topology();
  Topology(const Topology&) = delete;
  Topology& operator=(const Topology&) = delete;

  HostPortal& host() { return *host_; }
  GuestBus& guest() { return *guest_; }
  Broker& broker() { return *broker_; }
  Agent& agent();  // FixtureError while no agent runs
  bool has_agent() const { return agent_ != nullptr; }

  // Starts (or restarts) the agent; does not wait for the portal.
  void start_agent();
  // Stops the agent (the guest loses the portal); a no-op without one.
  void stop_agent();
  // Stops the agent and the broker and starts both again with the same
  // options, as after a host reboot or a broker update; returns (unless
  // wait_for_portal is off) once the portal is back on the guest bus.
  // @while_stopped runs between the old broker and the new (e.g. to edit its state).
  void restart_broker(const std::function<void()>& while_stopped = {});

  // Until @name has an owner on the guest bus; false on timeout or when the
  // broker or the agent exits first.
  bool wait_for_guest_name(const char* name = kPortalBusName, Timeout timeout = kDefaultTimeout);
  // Introspection XML of @path at @name on the guest bus.
  std::string guest_introspect(const char* path = kPortalPath, const char* name = kPortalBusName);

 private:
  void start_broker_and_agent();
  TopologyOptions options_;
  std::unique_ptr<HostPortal> owned_host_;
  HostPortal* host_ = nullptr;  // owned_host_, or TopologyOptions::shared_host
  std::unique_ptr<GuestBus> guest_;
  std::unique_ptr<Broker> broker_;
  std::unique_ptr<Agent> agent_;
};

}  // namespace sidebus::test
