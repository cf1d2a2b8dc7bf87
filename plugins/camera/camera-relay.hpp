// SPDX-License-Identifier: LGPL-2.1-or-later
// camera-relay.hpp — the Camera's OpenPipeWireRemote on byte-only links:
// the host's cameras relayed to nodes on the guest's own PipeWire
// (plugins/common/stream-relay.hpp, docs/screencast.md). The camera has no
// session, so a relay lives per guest client: made on its first
// OpenPipeWireRemote (after the host's consent: without it the host's
// NotAllowed reaches the app), shared by its later calls, and stopped when
// the client leaves the guest bus or the link goes. At most kMaxClients
// clients of one link have a camera relay at once.
#pragma once

#include <sidebus-plugin.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

namespace sidebus::plugins {
class StreamRelay;
}

namespace camera {

class CameraRelays {
 public:
  static constexpr size_t kMaxClients = 4;
  explicit CameraRelays(SidebusContext* context);
  ~CameraRelays();
  CameraRelays(const CameraRelays&) = delete;
  CameraRelays& operator=(const CameraRelays&) = delete;
  // Answers @invocation with the guest's remote for the cameras.
  void open_remote(GDBusMethodInvocation* invocation);

 private:
  struct Client;
  void client_left(const std::string& sender);
  SidebusContext* context_;
  std::map<std::string, std::unique_ptr<Client>> clients_;
};

}  // namespace camera
