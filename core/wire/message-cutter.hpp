// SPDX-License-Identifier: LGPL-2.1-or-later
// message-cutter.hpp — a D-Bus byte stream, fed in pieces of any size, cut
// into whole messages. Pure (no I/O): the framed link end
// (link/framed-link.hpp) feeds it channel 0 of a link v2 link, whose frames
// split the stream wherever the sender's buffer happened to end.
//
// Every length comes from wire::parse_fixed_header(); the header fields are
// parsed (wire::parse_header()) as soon as they are complete, before a byte
// of the body is kept; header fields above max_header_size are an error, and
// a message above max_message_size is not kept at all: the cutter returns its
// header (Skipped) and then drops its body as it comes. The body itself is
// not scanned here (the relay does that at the broker end).
//
// Fuzzed by fuzz-message-cutter.cpp: whatever the pieces, the same messages.
#pragma once

#include <glib.h>

#include <cstddef>
#include <cstdint>
#include <vector>

#include "wire/dbus-message.hpp"

namespace sidebus::wire {

struct CutMessage {
  std::vector<uint8_t> bytes;  // the whole message (empty when Skipped)
  MessageHeader header;
  size_t size = 0;  // total size, also of a skipped message
};

class MessageCutter {
 public:
  static constexpr size_t kDefaultMaxHeaderSize = 64 * 1024;
  explicit MessageCutter(size_t max_message_size, size_t max_header_size = kDefaultMaxHeaderSize)
      : max_message_size_(max_message_size), max_header_size_(max_header_size) {}

  enum class Result {
    Message,   // *out holds a whole message
    Skipped,   // *out holds the header and size of a message above the size limit; its body is dropped as it comes
    NeedMore,  // everything given was taken; no message is complete yet
    Invalid,   // *error (G_IO_ERROR_INVALID_DATA) says why; the stream cannot go on
  };
  // Takes bytes from the start of @data, at most up to the end of the
  // current message; *consumed says how many. Call again with the rest.
  Result feed(const uint8_t* data, size_t length, size_t* consumed, CutMessage* out, GError** error);
  // Whether the stream is in the middle of a message (so its end now would
  // be an error).
  bool in_message() const { return !buffer_.empty() || skip_left_ > 0; }
  // Bytes held for the message being cut.
  size_t held_bytes() const { return buffer_.size(); }

 private:
  size_t max_message_size_;
  size_t max_header_size_;
  std::vector<uint8_t> buffer_;
  FixedHeader fixed_;
  MessageHeader header_;
  bool have_fixed_ = false;
  bool have_header_ = false;
  uint64_t skip_left_ = 0;
};

}  // namespace sidebus::wire
