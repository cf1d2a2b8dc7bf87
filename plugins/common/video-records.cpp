// SPDX-License-Identifier: LGPL-2.1-or-later
// video-records.cpp — see video-records.hpp.
#include "video-records.hpp"

#include <gio/gio.h>

namespace sidebus::plugins::video {
namespace {

void put32(std::vector<uint8_t>* out, uint32_t value) {
  for (int i = 0; i < 4; i++) out->push_back(uint8_t(value >> (8 * i)));
}
void put64(std::vector<uint8_t>* out, uint64_t value) {
  for (int i = 0; i < 8; i++) out->push_back(uint8_t(value >> (8 * i)));
}
uint64_t read_u64(const uint8_t* at) {
  uint64_t value = 0;
  for (int i = 0; i < 8; i++) value |= uint64_t(at[i]) << (8 * i);
  return value;
}
bool invalid(GError** error, const char* message) {
  g_set_error_literal(error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA, message);
  return false;
}

}  // namespace

uint32_t read_u32(const uint8_t* at) {
  return uint32_t(at[0]) | uint32_t(at[1]) << 8 | uint32_t(at[2]) << 16 | uint32_t(at[3]) << 24;
}

bool check_header(const uint8_t bytes[kHeaderSize], bool to_guest, const Format& format, Header* out, GError** error) {
  const uint32_t type = read_u32(bytes), length = read_u32(bytes + 4);
  switch (RecordType(type)) {
    case RecordType::Format:
      if (!to_guest) return invalid(error, "a format record from the guest");
      if (length != kFormatSize) return invalid(error, "a format record of the wrong size");
      break;
    case RecordType::Frame:
      if (!to_guest) return invalid(error, "a frame record from the guest");
      if (format.width == 0) return invalid(error, "a frame before any format");
      if (length != kFramePrefixSize + format.frame_bytes())
        return invalid(error, "a frame record whose size is not the format's");
      break;
    case RecordType::End:
      if (!to_guest) return invalid(error, "an end record from the guest");
      if (length > kMaxReasonLength) return invalid(error, "an end record with a reason too long");
      break;
    case RecordType::Credit:
      if (to_guest) return invalid(error, "a credit record from the host");
      if (length != 4) return invalid(error, "a credit record of the wrong size");
      break;
    default:
      return invalid(error, "a record of an unknown type");
  }
  out->type = RecordType(type);
  out->length = length;
  return true;
}

bool parse_format(const uint8_t* payload, Format* out, GError** error) {
  Format format{read_u32(payload), read_u32(payload + 4), read_u32(payload + 8), read_u32(payload + 12),
                read_u32(payload + 16)};
  if (format.width == 0 || format.height == 0 || format.width > kMaxWidth || format.height > kMaxHeight)
    return invalid(error, "a format with a size of 0 or beyond 4096x4096");
  if (format.framerate_den == 0) return invalid(error, "a format with a framerate denominator of 0");
  *out = format;
  return true;
}

FramePrefix parse_frame_prefix(const uint8_t* payload) {
  return FramePrefix{read_u64(payload), int64_t(read_u64(payload + 8)), read_u64(payload + 16)};
}

void append_format(std::vector<uint8_t>* out, const Format& format) {
  put32(out, uint32_t(RecordType::Format));
  put32(out, kFormatSize);
  for (uint32_t value : {format.spa_format, format.width, format.height, format.framerate_num, format.framerate_den})
    put32(out, value);
}

void append_frame_start(std::vector<uint8_t>* out, const Format& format, const FramePrefix& prefix) {
  put32(out, uint32_t(RecordType::Frame));
  put32(out, uint32_t(kFramePrefixSize + format.frame_bytes()));
  put64(out, prefix.seq);
  put64(out, uint64_t(prefix.pts_ns));
  put64(out, prefix.sent_ns);
}

void append_end(std::vector<uint8_t>* out, const std::string& reason) {
  const std::string cut = reason.substr(0, kMaxReasonLength);
  put32(out, uint32_t(RecordType::End));
  put32(out, uint32_t(cut.size()));
  out->insert(out->end(), cut.begin(), cut.end());
}

void append_credit(std::vector<uint8_t>* out, uint32_t frames) {
  put32(out, uint32_t(RecordType::Credit));
  put32(out, 4);
  put32(out, frames);
}

}  // namespace sidebus::plugins::video
