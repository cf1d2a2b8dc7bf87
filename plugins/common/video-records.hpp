// SPDX-License-Identifier: LGPL-2.1-or-later
// video-records.hpp — the records of a stream relay's frame socket
// (docs/screencast.md, "The stream relay"): the broker's relay sender
// (relay-sender.hpp) writes them, the guest's sidebus-stream-relay reads
// them. The socket is an ordinary stream socket the broker handed the
// helper in CreateStream; on a byte-only link it crosses as a link v2 stream
// channel, so the link's own per-channel credit already keeps it from
// holding channel 0. Pure: no I/O.
//
// A record is an 8-byte header and a payload, integers little-endian:
//
//   offset 0  u32 type     RecordType
//          4  u32 length   payload bytes that follow
//
//   type    way          payload
//   FORMAT  host→guest   u32 spa_video_format, u32 width, u32 height,
//                        u32 framerate num, u32 framerate den   (20 bytes)
//   FRAME   host→guest   u64 seq, i64 pts_ns, u64 sent_ns (the sender's
//                        CLOCK_MONOTONIC), then height rows of width × 4
//                        bytes: exactly 24 + width × height × 4 bytes for the
//                        format in force; none before the first FORMAT
//   END     host→guest   the reason, UTF-8, at most kMaxReasonLength bytes
//   CREDIT  guest→host   u32 frames (1..kMaxCredit): the guest took that many
//                        frames off the socket (shown or dropped)
//
// The reader of either side checks every header against this before it
// reads a payload byte (check_header()): a peer that breaks it is cut off.
#pragma once

#include <glib.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace sidebus::plugins::video {

inline constexpr size_t kHeaderSize = 8;
inline constexpr size_t kFormatSize = 20;
inline constexpr size_t kFramePrefixSize = 24;
inline constexpr size_t kMaxReasonLength = 1024;
inline constexpr uint32_t kMaxCredit = 16;
// The largest picture either side accepts (4 bytes a pixel).
inline constexpr uint32_t kMaxWidth = 4096, kMaxHeight = 4096;

enum class RecordType : uint32_t { Format = 1, Frame = 2, End = 3, Credit = 4 };

struct Format {
  uint32_t spa_format = 0;
  uint32_t width = 0;
  uint32_t height = 0;
  uint32_t framerate_num = 0;
  uint32_t framerate_den = 1;
  size_t frame_bytes() const { return size_t(width) * height * 4; }
};

struct Header {
  RecordType type = RecordType::Format;
  uint32_t length = 0;
};

// Checks a record header arriving at the guest (@to_guest) or the host, with
// @format the format in force (width 0: none yet). False with *error
// (G_IO_ERROR_INVALID_DATA) saying what is wrong.
bool check_header(const uint8_t bytes[kHeaderSize], bool to_guest, const Format& format, Header* out, GError** error);
// A FORMAT payload (kFormatSize bytes): false if a size is 0 or beyond the
// limits, or the framerate's denominator is 0.
bool parse_format(const uint8_t* payload, Format* out, GError** error);

struct FramePrefix {
  uint64_t seq = 0;
  int64_t pts_ns = -1;
  uint64_t sent_ns = 0;
};
FramePrefix parse_frame_prefix(const uint8_t* payload);

// Encoders: append a whole record (a FRAME's header and prefix only: the
// rows follow it).
void append_format(std::vector<uint8_t>* out, const Format& format);
void append_frame_start(std::vector<uint8_t>* out, const Format& format, const FramePrefix& prefix);
void append_end(std::vector<uint8_t>* out, const std::string& reason);
void append_credit(std::vector<uint8_t>* out, uint32_t frames);
uint32_t read_u32(const uint8_t* at);

}  // namespace sidebus::plugins::video
