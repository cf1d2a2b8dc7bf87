// SPDX-License-Identifier: LGPL-2.1-or-later
// video-source.hpp — a real PipeWire video source node for the tests: the
// ScreenCast streams of sidebus-test-backend and the node of
// sidebus-test-camera. A pw_stream producer (PW_DIRECTION_OUTPUT,
// media.class Video/Source, raw BGRx at a fixed size and rate) that drives
// itself and paints test-patterns.hpp's frames, the frame number in the first
// pixels.
//
// The tests run PipeWire without a session manager (tests/support/host-pipewire.hpp),
// so the source also does the two things one would do for it:
//  - it links every node that asks for it (node.target or target.object is
//    its node id or object.serial, as pw_stream_connect() sets it) to its
//    output port, through the link-factory;
//  - with grant_camera_clients, it gives its node to every client whose
//    pipewire.access.portal.media_roles names "Camera": xdg-desktop-portal's
//    Camera.OpenPipeWireRemote hides all nodes from the connection it hands
//    out and leaves granting the camera to the session manager (WirePlumber's
//    access-portal.lua grants it to unsandboxed clients).
//
// Threading: each source runs its own pw_thread_loop (its own connection,
// context and thread), so frames keep coming whatever the GLib main loop of
// the process does. The public methods take the loop's lock.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

namespace sidebus::test_backend {

struct VideoFormat {
  uint32_t width = 320;
  uint32_t height = 240;
  uint32_t framerate = 30;
};

struct VideoSourceOptions {
  std::string node_name;    // node.name
  std::string description;  // node.description
  std::string media_role;   // media.role; empty: none ("Camera" for a camera)
  uint8_t tag = 0;          // test_patterns tag painted into the gradient
  VideoFormat format;
  bool grant_camera_clients = false;
};

class VideoSource {
 public:
  // Connects to the PipeWire daemon of $PIPEWIRE_RUNTIME_DIR (else
  // $XDG_RUNTIME_DIR) and creates the node; returns once it has an id, or
  // nullptr with @error set.
  static std::unique_ptr<VideoSource> start(const VideoSourceOptions& options, std::string* error);
  ~VideoSource();  // destroys the node (consumers see it go) and disconnects
  VideoSource(const VideoSource&) = delete;
  VideoSource& operator=(const VideoSource&) = delete;

  uint32_t node_id() const;
  uint32_t frames_sent() const;
  const VideoFormat& format() const;

  struct Impl;

 private:
  explicit VideoSource(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace sidebus::test_backend
