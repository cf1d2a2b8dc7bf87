// SPDX-License-Identifier: LGPL-2.1-or-later
// producer.hpp — Producer: one relayed stream as a node on the guest's own
// PipeWire (docs/screencast.md, "The stream relay"). It reads the broker's
// frame records (plugins/common/video-records.hpp) from the socket the
// broker handed over in CreateStream, and plays them as a Video/Source node
// that drives itself. The guest has no session manager to rely on, so the
// producer links every node that asks for it (target.object / node.target is
// its id or serial), as a session manager would.
//
// Backpressure, on the guest's side: a frame is taken off the socket as soon
// as it is complete, and a CREDIT goes back to the broker for it; if the
// node has no free buffer (its consumer stopped reading) the frame is
// dropped here. So the broker never waits for the guest app, and the link
// never waits for either.
//
// Everything runs on the GLib main context (the pw_loop is iterated from a
// GSource): one thread. A broken record, the socket's end (the session
// closed, the link dropped) or the node failing ends the producer: its node
// goes, and @on_end runs from an idle callback (it may destroy the Producer).
#pragma once

#include <pipewire/pipewire.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "video-records.hpp"

namespace sidebus::guest {

struct ProducerOptions {
  std::string media_role = "Screen";  // "Camera" for the camera
  std::string description = "Host screen (sidebus)";
  plugins::video::Format format;
};

class Producer {
 public:
  // @frames: the socket (taken). @ready runs once with the node id (or an
  // error message), @on_end once when the producer ended.
  using ReadyFunc = std::function<void(uint32_t node_id, const std::string& error)>;
  using EndFunc = std::function<void(const std::string& reason)>;
  static std::unique_ptr<Producer> start(pw_context* context, int frames, ProducerOptions options, ReadyFunc ready,
                                         EndFunc on_end, std::string* error);
  ~Producer();
  Producer(const Producer&) = delete;
  Producer& operator=(const Producer&) = delete;

  uint32_t node_id() const;
  struct Impl;

 private:
  explicit Producer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};


}  // namespace sidebus::guest
