// SPDX-License-Identifier: LGPL-2.1-or-later
// stream-relay.hpp — StreamRelay: the granted host streams of one screen
// cast session (or one camera remote) relayed to nodes on the guest's own
// PipeWire, for byte-only links (docs/screencast.md, "The stream relay").
//
//   start(host nodes):  for each node the broker opens its own host remote
//                       (the host portal's OpenPipeWireRemote: its
//                       permissions hold), a RelaySender consumes the node,
//                       and once the format is agreed the guest's
//                       sidebus-stream-relay makes a producer node
//                       (CreateStream, with the frame socket); done() gets
//                       the guest's node ids.
//   open_remote():      the guest relay's OpenRemote (a guest PipeWire
//                       connection that sees only those nodes), whose fd the
//                       link keeps in the guest (KEPT): the reply to the app
//                       names it again and the agent hands the guest's fd on.
//   destruction:        the relay stops: every host consumer goes, every
//                       frame socket closes, so every guest node goes.
//
// Where the guest cannot have a relay (no sidebus-stream-relay on its bus,
// no PipeWire daemon in the VM) start() still succeeds, with node ids 0,
// and unavailable() says what is missing: OpenPipeWireRemote answers
// NotSupported with it. A host side that fails (no remote, a format the
// relay cannot read, DMA-BUF only) fails start() with the reason.
#pragma once

#include <sidebus-plugin.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace sidebus::plugins {

class StreamRelay {
 public:
  // @host_interface: whose OpenPipeWireRemote the broker calls on the host
  // ("org.freedesktop.portal.ScreenCast" with @host_parameters "(oa{sv})",
  // or "org.freedesktop.portal.Camera" with "(a{sv})"); @media_role: the
  // guest node's ("Screen", "Camera").
  StreamRelay(SidebusContext* context, std::string host_interface, GVariant* host_parameters, std::string media_role);
  ~StreamRelay();
  StreamRelay(const StreamRelay&) = delete;
  StreamRelay& operator=(const StreamRelay&) = delete;

  using StartedFunc = std::function<void(std::vector<uint32_t> guest_nodes, GError* error)>;
  // @done runs once, unless the StreamRelay is destroyed first.
  void start(const std::vector<uint32_t>& host_nodes, StartedFunc done);
  // The same for every Video/Source node of the media role that the host's
  // remote shows (the Camera, whose host answer is a remote, not nodes).
  void start_discovering(StartedFunc done);
  // Answers @invocation (OpenPipeWireRemote) with the guest's remote, once
  // (taking the caller's reference, as g_dbus_method_invocation_return_*).
  void open_remote(GDBusMethodInvocation* invocation);
  const std::string& unavailable() const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace sidebus::plugins
