// SPDX-License-Identifier: LGPL-2.1-or-later
// relay-sender.hpp — RelaySender: the host half of one relayed stream
// (docs/screencast.md, "The stream relay"). A HostStream consumes the
// granted host node; its frames go, as video-records.hpp records, to the
// broker's end of a socket whose other end the guest's sidebus-stream-relay
// got in CreateStream (on a byte-only link it crosses as a link v2 stream
// channel, with that channel's own credit).
//
// Backpressure is a window of frames: the guest gives a CREDIT back for
// every frame it took off the socket, and without credit — or while the
// last frame is still being written — a new frame is dropped (the host
// buffer is queued back at once by HostStream either way). Nothing waits:
// writes are non-blocking, driven by the socket's POLLOUT on the main
// context, and what is buffered is at most one frame beyond the window.
//
// It ends once (on_end) when the host's stream ends, the guest closes the
// socket (the node went, the link dropped) or breaks the record protocol;
// destroying it ends the relay without a call (the session closed): the
// socket closes, the guest's node goes.
#pragma once

#include <gio/gio.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "host-stream.hpp"
#include "video-records.hpp"

namespace sidebus::plugins {

class RelaySender : public FrameSink {
 public:
  struct Stats {
    uint64_t sent = 0;     // frames put on the socket
    uint64_t dropped = 0;  // frames the window had no room for
  };
  using FormatFunc = std::function<void(const video::Format& format)>;
  using EndFunc = std::function<void(const std::string& reason)>;

  // @socket: the broker's end (taken). @first_format runs once, when the
  // host's stream agreed its format (the guest node is made with it);
  // @on_end once at the end (it may destroy the RelaySender).
  RelaySender(int socket, uint32_t window, FormatFunc first_format, EndFunc on_end);
  ~RelaySender() override;
  // Consumes @node_id on host PipeWire remote @fd (taken).
  bool start(int fd, uint32_t node_id, HostStream::Limits limits, GError** error);
  // The guest's node exists: frames flow from now on.
  void guest_ready() { guest_ready_ = true; }

  Stats stats() const { return stats_; }
  const video::Format& format() const { return format_; }

  void on_format(const FrameFormat& format) override;
  bool can_take_frame() override;
  void on_frame(const Frame& frame) override;
  void on_end(const std::string& reason) override;

 private:
  void flush();
  void read_credit();
  void finish(const std::string& reason);
  void watch_writable(bool on);

  int socket_;
  uint32_t window_;
  uint32_t credit_;
  FormatFunc first_format_;
  EndFunc on_end_;
  std::unique_ptr<HostStream> host_;
  video::Format format_;
  bool have_format_ = false;
  bool guest_ready_ = false;
  bool ended_ = false;
  std::vector<uint8_t> out_;
  size_t out_sent_ = 0;
  uint8_t in_[video::kHeaderSize + 4];
  size_t in_have_ = 0;
  GSource* read_source_ = nullptr;
  GSource* write_source_ = nullptr;
  Stats stats_;
};

}  // namespace sidebus::plugins
