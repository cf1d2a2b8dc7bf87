// link.hpp — the guest link: transports, the versioned handshake and the
// splice between the link and a D-Bus stream, on both ends.
//
// Broker end: a Listener accepts links on every --listen address; each accepted
// link goes through establish_guest_link(), which runs the handshake and gives
// the broker a GDBusConnection that is a client of the *guest* session bus
// (reverse tunnel). The broker's GDBus speaks ordinary SASL to a local SASL
// server on one end of a socketpair; the SASL exchange never crosses the link.
//
// Agent end: an AgentSession takes a connected link fd, runs the handshake,
// authenticates to the guest bus with the agent's own credentials and splices
// the two streams.
//
// On links that cannot carry fds, NEGOTIATE_UNIX_FD is refused on both ends,
// so neither the guest bus nor the broker ever sends an fd across.
#pragma once

#include <gio/gio.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "unique-fd.hpp"

namespace sidebus {

// What the other end said in the handshake.
struct LinkPeerInfo {
  uint32_t protocol_version = 0;
  bool carries_fds = false;  // agreed by both ends (and the guest bus)
  uint32_t guest_uid = 0;    // the agent's uid in the guest
  std::string agent_version;
  std::string transport;  // "unix:/path", "vsock:1234 from cid 3", "fd:3", ... for logs
};

// ---- addresses ----

// A parsed --listen or --connect address. Grammar (strict; no spaces):
//   unix:PATH[,nofds][,mode=OCTAL]   listen and connect; PATH may not contain ','
//                                    ,nofds: the socket is byte-only (hybrid vsock
//                                    PATH_PORT sockets, libkrun vsock mappings)
//                                    ,mode=0660: chmod the listening socket file
//                                    (default: the umask decides; listen only)
//   vsock:PORT                       listen on VMADDR_CID_ANY (byte-only)
//   vsock:CID:PORT                   connect (vsock:PORT means CID 2, the host)
//   fd:N[,nofds]                     listen: an inherited listening socket, or a
//                                    connected socket taken as one link
//   systemd[,nofds]                  listen: every LISTEN_FDS socket
//   virtio-serial:PATH               connect: a virtio-serial port (byte-only)
struct LinkAddress {
  enum class Kind { Unix, Vsock, Fd, Systemd, VirtioSerial };
  Kind kind = Kind::Unix;
  std::string path;    // Unix, VirtioSerial
  uint32_t cid = 2;    // Vsock (connect)
  uint32_t port = 0;   // Vsock
  int fd = -1;         // Fd
  bool nofds = false;  // marked byte-only by the user
  int mode = -1;       // Unix listen: chmod after bind, -1 = leave alone
};

bool parse_listen_address(const std::string& address, LinkAddress* out, GError** error);
bool parse_connect_address(const std::string& address, LinkAddress* out, GError** error);

// Agent side: connects to a parsed --connect address. Blocking (vsock connect
// is bounded by the kernel's connect timeout). carries_fds tells whether the
// transport can carry SCM_RIGHTS (unix sockets not marked ,nofds).
UniqueFd connect_link(const std::string& address, bool* carries_fds, GError** error);

// ---- broker end ----

// Accepts guest links on every address: "unix:PATH", "vsock:PORT", "fd:N",
// "systemd" (all LISTEN_FDS). on_accept runs on the main context for every
// accepted connection. transport_carries_fds is false for vsock, and for unix
// sockets only true where the socket really is a unix socket pair end to end
// (a --listen option may mark it byte-only: "unix:PATH,nofds").
class Listener {
 public:
  using AcceptFunc = std::function<void(UniqueFd link, bool transport_carries_fds, std::string transport)>;
  static std::unique_ptr<Listener> create(const std::vector<std::string>& addresses, AcceptFunc on_accept,
                                          GError** error);
  virtual ~Listener() = default;  // stops listening and removes unix socket files it created
};

// The broker's end of one established link.
class GuestLink {
 public:
  virtual ~GuestLink() = default;  // closes the connection and stops the splice
  // Client connection to the guest session bus; its unique name is already
  // assigned (Hello done). Borrowed.
  virtual GDBusConnection* connection() = 0;
  virtual const LinkPeerInfo& peer() = 0;
};

// What one guest may push at the broker through its link; only the guest →
// broker direction is limited. The defaults are Config's (broker.* keys).
struct GuestLinkLimits {
  // Largest D-Bus message in bytes (broker.max_message_size). A bigger one,
  // or a malformed message header, closes the link with a warning before any
  // of that message reaches the broker.
  size_t max_message_size = 16 * 1024 * 1024;
  // Messages per second, burst as many (broker.max_messages_per_second).
  // Above it the broker reads the link more slowly, so the guest's sends
  // wait; nothing is dropped.
  unsigned max_messages_per_second = 1000;
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
                          std::function<void()> on_closed, GuestLinkLimits limits = {});

// ---- agent end ----

class AgentSession {
 public:
  // Takes a connected link; connects to guest_bus_address with the caller's
  // own credentials. on_closed(error or NULL, borrowed) runs on the main
  // context when either side goes away; guest_bus_gone tells which (a hint:
  // the bus side ended first; the agent watches its own bus connection too).
  // Blocks for the handshake and the guest bus authentication (each bounded
  // by 10 s). From the main thread that is fine as long as the broker end is
  // served elsewhere: establish_guest_link() runs its handshake in a thread,
  // so --debug-access can call establish_guest_link(pair[0]) and then
  // start(pair[1]) on the main thread.
  static std::unique_ptr<AgentSession> start(UniqueFd link, bool transport_carries_fds, std::string transport,
                                             std::string guest_bus_address,
                                             std::function<void(bool guest_bus_gone, GError*)> on_closed,
                                             GError** error);
  virtual ~AgentSession() = default;
};

}  // namespace sidebus
