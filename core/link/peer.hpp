// SPDX-License-Identifier: LGPL-2.1-or-later
// peer.hpp — what the two ends of a link learned about each other in the
// handshake (link/handshake.hpp).
#pragma once

#include <cstdint>
#include <string>

namespace sidebus {

struct LinkPeerInfo {
  uint32_t protocol_version = 0;
  bool carries_fds = false;  // fds cross: agreed by both ends (and the guest bus), natively or forwarded
  bool framed = false;       // protocol 2 frames: fds are forwarded as channels (framed-link.hpp)
  uint32_t guest_uid = 0;    // the agent's uid in the guest
  std::string agent_version;
  std::string transport;  // "unix:/path", "vsock:1234 from cid 3", "fd:3", ... for logs
};

}  // namespace sidebus
