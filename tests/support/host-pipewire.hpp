// SPDX-License-Identifier: LGPL-2.1-or-later
// host-pipewire.hpp — HostPipeWire: a PipeWire daemon of the test's own,
// for the portals that hand out PipeWire streams (ScreenCast, Camera). An
// additive piece of the host side (host-portal.hpp); pass env() to
// HostPortalOptions::env so the test backend and xdg-desktop-portal use it,
// and to any other client (sidebus-test-camera).
//
// It runs `pipewire` with a minimal configuration written into its TempDir:
// the native protocol, client-node (pw_stream's nodes, and the factory
// xdg-desktop-portal looks for before it hands out a remote), access,
// adapter and link-factory; no devices, no audio, no D-Bus. No session
// manager runs: xdg-desktop-portal 1.16 counts cameras from its own
// connection's registry, which sees every node; the two things WirePlumber
// would do here, linking a consumer to the node it asked for and giving the
// camera to the portal's camera clients, the test producers do themselves
// (tests/backend/video-source.hpp).
//
// The socket is <dir>/runtime/pipewire-0; the constructor returns once a
// client's round trip through it succeeded.
#pragma once

#include <map>
#include <memory>
#include <string>

#include "support/process.hpp"
#include "support/temp-dir.hpp"

namespace sidebus::test {

class HostPipeWire {
 public:
  HostPipeWire();
  ~HostPipeWire();
  HostPipeWire(const HostPipeWire&) = delete;
  HostPipeWire& operator=(const HostPipeWire&) = delete;

  const TempDir& dir() const { return dir_; }
  const std::string& runtime_dir() const { return runtime_dir_; }  // PIPEWIRE_RUNTIME_DIR
  std::string socket_path() const { return runtime_dir_ + "/pipewire-0"; }
  // What a client needs in its environment to use this daemon.
  std::map<std::string, std::string> env() const { return {{"PIPEWIRE_RUNTIME_DIR", runtime_dir_}}; }
  ChildProcess& process() { return *daemon_; }

 private:
  TempDir dir_;
  std::string runtime_dir_;
  std::unique_ptr<ChildProcess> daemon_;
};

// Whether a PipeWire client can connect to @socket_path and complete a round
// trip within @timeout.
bool pipewire_answers(const std::string& socket_path, Timeout timeout = 2s);

}  // namespace sidebus::test
