// SPDX-License-Identifier: LGPL-2.1-or-later
// relay.hpp — one link's D-Bus traffic between its two ends, message by
// message, in a thread of its own: the link (to the other side of the VM
// boundary) and a local unix socket (the broker's own GDBusConnection, or the
// guest bus for the agent).
//
// * The link is a raw D-Bus stream (protocol 1, and links that pass fds
//   natively) or, on a byte-only transport with protocol 2, a framed link
//   that forwards the messages' fds as channels (framed-link.hpp). The relay
//   is the same for both (link-end.hpp); a message whose fds cannot cross is
//   answered where it came from: a call with an error reply, a reply turned
//   into an error for the caller waiting for it, anything else dropped with
//   a warning.
// * Whole messages (message-stream.hpp): fds stay with their message, and
//   at the broker end every message from the guest is checked before the
//   broker sees it: its size (above broker.max_message_size it is refused
//   unread), its header, the values its body would make GDBus allocate
//   (broker.max_message_values), and what its client may still have pending
//   (GuestTraffic). A call that does not pass gets an error reply from the
//   relay itself; the link stays up. Only a guest that breaks the framing (a
//   malformed header, an fd where none may come) loses its link.
// * Nothing waits on the other side: the relay thread polls both fds and a
//   stop eventfd; when what is queued toward one side passes a high-water
//   mark it stops reading the other (backpressure) — at the broker end also
//   the guest's own side, so a guest that does not read what it is answered
//   cannot make the queue toward it grow — and a guest that sends more than
//   broker.max_messages_per_second is read more slowly.
// * The end of one side is passed on once what was queued for the other
//   side is written (shutdown(SHUT_WR) on a socket); on_done runs once both
//   directions ended, or at once on an error, on the main context the relay
//   was started from, and never after the Relay is destroyed.
// * The destructor stops the thread and joins it, closing both fds.
#pragma once

#include <gio/gio.h>

#include <atomic>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "link/framed-link.hpp"
#include "link/guest-traffic.hpp"
#include "util/unique-fd.hpp"

namespace sidebus {

class Relay {
 public:
  enum class Side { Local, Link };
  using DoneFunc = std::function<void(Side ended_first, const GError* error)>;

  struct Options {
    // Raw link: both fds are unix sockets and the link carries fds: they
    // pass with their messages; otherwise an fd from either side is an
    // error. Framed link: the local socket's peer agreed to fd passing.
    bool pass_fds = false;
    // Present: protocol 2 frames on the link, fds forwarded as channels.
    std::optional<FramedLinkOptions> framed;
    // The broker end: what comes over the link is the guest's, and these
    // limits apply to it. The agent end: none.
    std::optional<GuestTrafficLimits> guest_limits;
    // Messages per second the guest originates (calls and signals), burst as
    // many; 0: no limit (broker.max_messages_per_second).
    unsigned guest_messages_per_second = 0;
  };

  // What the relay did with the guest's messages (broker end), for tests
  // and status.
  struct Counters {
    std::atomic<uint64_t> forwarded{0};
    std::atomic<uint64_t> refused{0};   // answered with an error by the relay
    std::atomic<uint64_t> dropped{0};   // signals and no-reply calls over the limits
    std::atomic<uint64_t> throttled{0};  // times reading was slowed down
    FramedLinkCounters forwarding;       // framed links: fds and channels
  };

  static std::unique_ptr<Relay> start(UniqueFd local, std::string local_name, UniqueFd link, std::string link_name,
                                      Options options, DoneFunc on_done, GError** error);
  virtual ~Relay() = default;

  // Whether an error stopped (or is stopping) the relay: then the side it
  // came from and a copy of it. Safe from the owner's thread at any time.
  virtual bool failed(Side* side, GError** error) const = 0;
  virtual const Counters& counters() const = 0;
};

}  // namespace sidebus
