// SPDX-License-Identifier: LGPL-2.1-or-later
// pipewire-client.hpp — PipeWire as a portal's app sees it, for the video
// portal tests (ScreenCast, Camera), on the host or in the guest:
//  - PipeWireClient: a libpipewire client on the fd an OpenPipeWireRemote
//    returned (pw_context_connect_fd), as an app uses it: the nodes its
//    registry shows (what the portal lets it see) and the frames of a stream
//    it consumes, checked against tests/backend/test-patterns.hpp (frame
//    numbers, pixels);
//  - start_test_camera(): sidebus-test-camera on a HostPipeWire, and its node.
// (test-backends.cpp has its own copy of the client, from before this file.)
#pragma once

#include <pipewire/pipewire.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "support/host-pipewire.hpp"
#include "support/process.hpp"

namespace sidebus::test {

// Runs on its own pw_thread_loop; the accessors take its lock. pw_init()
// must have been called (main()).
class PipeWireClient {
 public:
  struct Node {
    std::string media_class;
    std::string media_role;
    std::string name;
  };
  struct Frames {
    std::vector<uint32_t> numbers;  // frame numbers, in arrival order
    uint32_t width = 0;
    uint32_t height = 0;
    size_t mismatches = 0;  // frames whose pixels are not the pattern
    // Per frame with a producer timestamp (SPA_META_Header pts, the test
    // sources' CLOCK_MONOTONIC at painting): how long it took to arrive.
    std::vector<int64_t> latencies_ns;
  };

  // Takes @fd.
  explicit PipeWireClient(int fd);
  ~PipeWireClient();
  PipeWireClient(const PipeWireClient&) = delete;
  PipeWireClient& operator=(const PipeWireClient&) = delete;

  std::map<uint32_t, Node> nodes();
  bool sees(uint32_t node_id) { return nodes().contains(node_id); }
  // The connection failed or the daemon went away.
  bool broken();

  // Consumes the frames of @node_id (raw BGRx), checked against @tag's pattern.
  void consume(uint32_t node_id, uint8_t tag);
  Frames frames();
  // Until @count frames arrived.
  bool wait_for_frames(size_t count, Timeout timeout = kDefaultTimeout);
  // The pixels of the latest frame (BGRx, rows packed to width × 4), kept
  // from the next frame on once asked for (e.g. to save it as a picture).
  void keep_last_frame();
  std::vector<uint8_t> last_frame();

 private:
  struct Lock;
  static void on_global(void* data, uint32_t id, uint32_t, const char* type, uint32_t, const spa_dict* props);
  static void on_global_remove(void* data, uint32_t id);
  static void on_core_error(void* data, uint32_t id, int seq, int res, const char* message);
  static void on_param_changed(void* data, uint32_t id, const spa_pod* param);
  static void on_process(void* data);

  pw_thread_loop* loop_ = nullptr;
  pw_context* context_ = nullptr;
  pw_core* core_ = nullptr;
  spa_hook core_listener_{};
  pw_registry* registry_ = nullptr;
  spa_hook registry_listener_{};
  pw_stream* stream_ = nullptr;
  spa_hook stream_listener_{};
  uint8_t tag_ = 0;
  bool broken_ = false;
  bool keep_last_ = false;
  std::vector<uint8_t> last_frame_;
  std::map<uint32_t, Node> nodes_;
  Frames frames_;
};

// The frames arrived, each newer than the last, at least @at_least of them,
// every one @width × @height and the pattern (g_assert).
void assert_good_frames(const PipeWireClient::Frames& frames, uint32_t width, uint32_t height, size_t at_least = 10);

// The video consumers (media.class Stream/Input/Video) on @pipewire now, as
// a client of its own sees them: whether anything still takes a source's
// frames (the broker's relay among them).
size_t video_consumers(const HostPipeWire& pipewire);

// sidebus-test-camera on @pipewire (a Video/Source node, media.role Camera,
// painting test_patterns::kCameraTag at 320×240); its node id in @node_id.
// Start it before the HostPortal: xdg-desktop-portal 1.16 only counts the
// cameras present when it connects to PipeWire.
std::unique_ptr<ChildProcess> start_test_camera(const HostPipeWire& pipewire, uint32_t* node_id);

}  // namespace sidebus::test
