// SPDX-License-Identifier: LGPL-2.1-or-later
// agent-session.cpp — the guest end of one link: handshake (client side),
// connect and authenticate to the guest bus as ourselves, then relay
// link ↔ guest bus. Used by sidebus-agent and by the broker's --debug-access
// mode (with a socketpair as the link).
//
// This is where host and guest identities are decoupled: the broker's GDBus
// authenticates to a SASL server inside the broker; the guest bus only ever
// sees this process's own EXTERNAL authentication, as its own uid.
//
// start() blocks, but every step that waits on a peer is bounded by
// handshake::kTimeoutUsec (connecting to the guest bus is a local socket
// connect). Call it from the main thread only if the broker end of the link is
// served by another thread or process (establish_guest_link() is: its
// handshake runs in a thread).
#include <fcntl.h>
#include <gio/gio.h>
#include <sys/socket.h>
#include <unistd.h>

#include "util/gobject-ptr.hpp"
#include "util/socket.hpp"
#include "link/handshake.hpp"
#include "agent/agent-session.hpp"
#include "link/sasl.hpp"
#include "sidebus-config.h"
#include "link/relay.hpp"

namespace sidebus {

namespace {

class AgentSessionImpl : public AgentSession {
 public:
  const Relay::Counters& counters() const override { return relay->counters(); }
  uint32_t protocol_version() const override { return terms.version; }
  bool framed() const override { return terms.framed; }
  std::unique_ptr<Relay> relay;
  handshake::Terms terms;
};


// Connects to the guest bus (any D-Bus address GIO understands) and returns a
// plain fd of that socket; the GIO objects are dropped.
UniqueFd connect_guest_bus(const std::string& address, GError** error) {
  GError* local = nullptr;
  GObjectPtr<GIOStream> stream(
      g_dbus_address_get_stream_sync(address.c_str(), nullptr, nullptr, &local));
  if (!stream) {
    g_propagate_prefixed_error(
        error, local, "cannot connect to the guest bus at “%s” (is the session bus running?): ", address.c_str());
    return {};
  }
  if (!G_IS_SOCKET_CONNECTION(stream.get())) {
    g_set_error(error, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED, "the guest bus at “%s” is not a socket connection",
                address.c_str());
    return {};
  }
  GSocket* socket = g_socket_connection_get_socket(G_SOCKET_CONNECTION(stream.get()));
  // A duplicate outlives the GSocket (which only close()s its own fd).
  UniqueFd fd(fcntl(g_socket_get_fd(socket), F_DUPFD_CLOEXEC, 3));
  if (!fd) {
    int saved = errno;
    g_set_error(error, G_IO_ERROR, g_io_error_from_errno(saved), "dup of the guest bus socket: %s", g_strerror(saved));
  }
  return fd;
}


}  // namespace

std::unique_ptr<AgentSession> AgentSession::start(UniqueFd link, bool transport_carries_fds, std::string transport,
                                                  std::string guest_bus_address,
                                                  std::function<void(bool guest_bus_gone, GError*)> on_closed,
                                                  GError** error, uint32_t protocol_version) {
  std::string link_name = "the broker at " + transport;
  std::string bus_name = "the guest bus at " + guest_bus_address;
  uint32_t uid = geteuid();  // what SO_PEERCRED shows the bus
  gint64 deadline = g_get_monotonic_time() + handshake::kTimeoutUsec;
  handshake::Terms terms;
  if (!handshake::agent_begin(link.get(), transport_carries_fds, uid, SIDEBUS_VERSION, protocol_version, deadline,
                              link_name.c_str(), &terms, error))
    return nullptr;

  UniqueFd bus = connect_guest_bus(guest_bus_address, error);
  if (!bus) return nullptr;
  bool bus_fds = false;
  deadline = g_get_monotonic_time() + handshake::kTimeoutUsec;
  // On a framed link the fds the guest bus hands us are forwarded: ask for
  // them as on a link that passes them natively.
  bool want_fds = (terms.native_fds || terms.framed) && is_unix_socket(bus.get());
  if (!sasl::run_client(bus.get(), uid, want_fds, deadline, bus_name.c_str(), &bus_fds, nullptr, error)) return nullptr;
  if (!handshake::agent_finish(link.get(), bus_fds, deadline, link_name.c_str(), error)) return nullptr;
  g_debug("link %s ready: protocol %u, fds %s", transport.c_str(), terms.version,
          !bus_fds ? "not carried" : terms.framed ? "forwarded" : "passed natively");

  auto session = std::make_unique<AgentSessionImpl>();
  session->terms = terms;
  Relay::Options options;
  options.pass_fds = bus_fds;
  if (terms.framed) {
    FramedLinkOptions framed;
    framed.broker_end = false;
    framed.documents_path = terms.documents_path;
    framed.limit_prefix = "the agent's ";
    options.framed = std::move(framed);
  }
  session->relay = Relay::start(
      std::move(bus), "the guest bus", std::move(link), "link " + transport, options,
      [on_closed = std::move(on_closed)](Relay::Side ended_first, const GError* error) {
        GError* copy = error ? g_error_copy(error) : nullptr;
        on_closed(ended_first == Relay::Side::Local, copy);
        g_clear_error(&copy);
      },
      error);
  if (!session->relay) return nullptr;
  return session;
}

}  // namespace sidebus
