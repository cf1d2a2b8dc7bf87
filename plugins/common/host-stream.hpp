// SPDX-License-Identifier: LGPL-2.1-or-later
// host-stream.hpp — HostStream: the host half of the stream relay
// (docs/screencast.md, "The stream relay"): a consumer of one host PipeWire
// node that hands each frame, as packed rows of shared memory, to a
// FrameSink — the RelaySender (relay-sender.hpp), which puts it on the frame
// socket toward the guest's producer node.
//
// What it does, and why:
//  - It connects with pw_context_connect_fd() on a PipeWire remote the host
//    portal handed out (OpenPipeWireRemote), so the host portal's
//    permissions hold: it sees only what the user granted.
//  - It runs on the thread-default GLib main context (a GSource around
//    pw_loop_get_fd(), as xdg-desktop-portal does): one thread, no locks,
//    and nothing in it waits for another process.
//  - It asks for raw video in the formats a guest producer can offer (BGRx,
//    BGRA, RGBx, RGBA, xRGB, ARGB, xBGR, ABGR), within Limits, and only in
//    shared memory (MemFd/MemPtr; no modifiers offered): DMA-BUF is refused,
//    since a byte link cannot carry it and the broker has no GPU to read it.
//    A producer that can only do DMA-BUF, or only sizes or rates beyond the
//    limits, ends the stream with the reason.
//  - Backpressure: FrameSink::can_take_frame() is asked before each copy; a
//    frame the sink cannot take is dropped (counted), and the host buffer
//    is queued back at once either way — the host compositor is never held
//    up by the VM.
//  - It ends once, with a reason, when the node goes, the connection breaks,
//    the stream fails, or negotiation fails; FrameSink::on_end() is the last
//    call it makes.
#pragma once

#include <gio/gio.h>

#include <cstdint>
#include <memory>
#include <string>

namespace sidebus::plugins {

struct FrameFormat {
  uint32_t spa_format = 0;  // enum spa_video_format (4 bytes a pixel)
  uint32_t width = 0;
  uint32_t height = 0;
  uint32_t framerate_num = 0;  // 0/1: variable
  uint32_t framerate_den = 1;
  bool operator==(const FrameFormat&) const = default;
};

struct Frame {
  uint64_t seq = 0;     // the producer's sequence number (SPA_META_Header), else counted here
  int64_t pts_ns = -1;  // the producer's timestamp, -1 if it gave none
  const uint8_t* rows = nullptr;  // height rows of width × 4 bytes, packed
  size_t size = 0;
};

// Where the frames go: the relay's frame socket (RelaySender); a test's recorder.
class FrameSink {
 public:
  virtual ~FrameSink() = default;
  // The format of the frames from now on (before the first, and on every change).
  virtual void on_format(const FrameFormat& format) = 0;
  // Whether a frame can be taken now (the channel has credit); false: dropped.
  virtual bool can_take_frame() = 0;
  // @frame's bytes are only valid during the call.
  virtual void on_frame(const Frame& frame) = 0;
  // The stream ended; nothing is called after this.
  virtual void on_end(const std::string& reason) = 0;
};

class HostStream {
 public:
  struct Limits {
    uint32_t max_width = 4096;
    uint32_t max_height = 4096;
    uint32_t max_framerate = 60;
    uint32_t negotiation_timeout_ms = 10000;  // until the host's stream agreed a format
  };
  struct Stats {
    uint64_t delivered = 0;  // frames the sink took
    uint64_t dropped = 0;    // frames the sink could not take
    uint64_t skipped = 0;    // empty or corrupted buffers
  };

  // Consumes @node_id on the PipeWire remote @fd (taken, closed on error),
  // on the thread-default main context. nullptr with @error if the
  // connection cannot even be made; later failures reach @sink->on_end().
  // @sink is borrowed and must outlive the HostStream.
  static std::unique_ptr<HostStream> start(int fd, uint32_t node_id, FrameSink* sink, Limits limits, GError** error);
  ~HostStream();  // disconnects; on_end() is not called for it
  HostStream(const HostStream&) = delete;
  HostStream& operator=(const HostStream&) = delete;

  Stats stats() const;
  bool ended() const;

  struct Impl;

 private:
  explicit HostStream(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace sidebus::plugins
