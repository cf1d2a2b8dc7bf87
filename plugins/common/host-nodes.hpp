// SPDX-License-Identifier: LGPL-2.1-or-later
// host-nodes.hpp — which video sources a host PipeWire remote shows: for
// the Camera relay (docs/screencast.md, "The stream relay"), whose host
// answer is a remote, not a list of nodes. The broker connects to the
// remote the host portal handed out (so it sees exactly what the VM was
// granted), reads the registry, and reports the Video/Source nodes of the
// asked media.role. A session manager may grant a node a moment after the
// connection is made (WirePlumber's access rules, the test camera), so it
// waits up to @settle_ms for the first one. Runs on the thread-default main
// context; nothing blocks; @done runs once, from an idle (it may destroy the
// lister), unless the lister is destroyed first.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace sidebus::plugins {

class HostNodes {
 public:
  using DoneFunc = std::function<void(std::vector<uint32_t> nodes, const std::string& error)>;
  // Takes @fd.
  static std::unique_ptr<HostNodes> list(int fd, std::string media_role, unsigned settle_ms, DoneFunc done);
  ~HostNodes();
  HostNodes(const HostNodes&) = delete;
  HostNodes& operator=(const HostNodes&) = delete;
  struct Impl;

 private:
  explicit HostNodes(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace sidebus::plugins
