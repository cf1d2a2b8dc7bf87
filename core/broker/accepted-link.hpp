// SPDX-License-Identifier: LGPL-2.1-or-later
// accepted-link.hpp — the broker's end of a guest link.
//
// Each link the Listener accepts goes through establish_guest_link(), which
// runs the handshake and gives the broker a GDBusConnection that is a client
// of the *guest* session bus (reverse tunnel). The broker's GDBus speaks
// ordinary SASL to a local SASL server on one end of a socketpair; the SASL
// exchange never crosses the link. On links that cannot carry fds,
// NEGOTIATE_UNIX_FD is refused, so neither the guest bus nor the broker ever
// sends an fd across.
#pragma once

#include <gio/gio.h>

#include <cstddef>
#include <functional>
#include <memory>
#include <string>

#include "link/framed-link.hpp"
#include "link/guest-traffic.hpp"
#include "link/relay.hpp"
#include "link/peer.hpp"
#include "util/unique-fd.hpp"

namespace sidebus {

// The broker's end of one established link.
class GuestLink {
 public:
  virtual ~GuestLink() = default;  // closes the connection and stops the splice
  // Client connection to the guest session bus; its unique name is already
  // assigned (Hello done). Borrowed.
  virtual GDBusConnection* connection() = 0;
  virtual const LinkPeerInfo& peer() = 0;
  // What the link's relay did (for tests and status).
  virtual const Relay::Counters* counters() = 0;
};

// What one guest may push at the broker through its link; only the guest →
// broker direction is limited. The defaults are Config's (broker.* keys).
struct GuestLinkLimits {
  // Per message and per guest client (link/guest-traffic.hpp): refused with
  // an error reply, the link stays up.
  GuestTrafficLimits traffic;
  // Messages per second the guest originates, burst as many
  // (broker.max_messages_per_second). Above it the broker reads the link
  // more slowly, so the guest's sends wait; nothing is dropped.
  unsigned max_messages_per_second = 20000;
  // What the guest may make the broker hold for forwarded fds (framed links).
  ForwardingLimits forwarding;
};

// Fd forwarding on byte-only links (protocol 2, link/framed-link.hpp).
struct GuestLinkForwarding {
  bool enabled = true;          // frame byte-only links of protocol 2 agents
  std::string documents_path;   // the guest documents path, announced to the agent
  DocumentResolver resolver;    // guest document references → host files (relay thread); none: refused
};

// Runs the handshake on an accepted link (off the main thread, so a slow or
// hostile guest cannot stall the broker; 10 s for the handshake, 30 s until
// the guest bus answered Hello) and then authenticates the broker's
// GDBusConnection. done runs exactly once, later, on the calling thread's
// default main context, with the link or with an error naming the transport
// and what went wrong (G_IO_ERROR_BUSY when too many links are in handshake
// at once). on_closed runs there once the established link has gone away
// (the splice ended or the GDBusConnection closed); by then the link is
// already torn down (connection closed, agent sees EOF), destroying the
// GuestLink is all that is left to do. Neither runs after the GuestLink is
// destroyed. If the main loop stops before done, done never runs. The GError
// passed to done is borrowed (freed after done returns). limits apply from
// the first byte after the handshake on.
void establish_guest_link(UniqueFd link, bool transport_carries_fds, std::string transport,
                          std::function<void(std::unique_ptr<GuestLink>, GError*)> done,
                          std::function<void()> on_closed, GuestLinkLimits limits = {},
                          GuestLinkForwarding forwarding = {});

}  // namespace sidebus
