// SPDX-License-Identifier: LGPL-2.1-or-later
// fuzz-video-records.cpp — libFuzzer target for the stream relay's record
// checks (video-records.hpp; corpus: tests/fuzz/video-records/): the bytes a
// frame socket carries, read as its readers read them — the guest relay
// (to_guest: FORMAT, FRAME, END from the host) when the first byte is odd,
// the broker (CREDIT from the guest) when it is even. What the checks
// promise, whatever the input:
//  - a payload is only ever as long as its type allows: 20 bytes a FORMAT,
//    exactly 24 + width × height × 4 a FRAME of the format in force (none
//    before a FORMAT), at most kMaxReasonLength an END, 4 a CREDIT;
//  - a record for the other direction is refused;
//  - a FORMAT's size is 1..4096 on both axes, its framerate's denominator
//    not 0;
//  - an accepted record encodes back to the same header.
#include <gio/gio.h>

#include <cstdio>
#include <cstdlib>
#include <vector>

#include "video-records.hpp"

using namespace sidebus::plugins::video;

namespace {

[[noreturn]] void broken(const char* what) {
  std::fprintf(stderr, "fuzz-video-records: %s\n", what);
  abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const bool to_guest = (data[0] & 1) != 0;
  size_t at = 1;
  Format format;
  while (size - at >= kHeaderSize) {
    Header header;
    GError* error = nullptr;
    if (!check_header(data + at, to_guest, format, &header, &error)) {
      if (error == nullptr || error->domain != G_IO_ERROR) broken("a refusal without its error");
      g_error_free(error);
      return 0;
    }
    at += kHeaderSize;
    switch (header.type) {
      case RecordType::Format:
        if (!to_guest || header.length != kFormatSize) broken("a format record of the wrong way or size");
        break;
      case RecordType::Frame:
        if (!to_guest || format.width == 0 || header.length != kFramePrefixSize + format.frame_bytes())
          broken("a frame record that does not fit the format");
        break;
      case RecordType::End:
        if (!to_guest || header.length > kMaxReasonLength) broken("an end record too long");
        break;
      case RecordType::Credit:
        if (to_guest || header.length != 4) broken("a credit record of the wrong way or size");
        break;
    }
    if (header.length > size - at) return 0;  // the rest has not arrived
    if (header.type == RecordType::Format) {
      Format next;
      GError* format_error = nullptr;
      if (parse_format(data + at, &next, &format_error)) {
        if (next.width == 0 || next.height == 0 || next.width > kMaxWidth || next.height > kMaxHeight ||
            next.framerate_den == 0)
          broken("a format beyond the limits accepted");
        std::vector<uint8_t> again;
        append_format(&again, next);
        if (again.size() != kHeaderSize + kFormatSize) broken("a format that does not encode back");
        format = next;
      } else {
        g_error_free(format_error);
        return 0;
      }
    }
    at += header.length;
  }
  return 0;
}
