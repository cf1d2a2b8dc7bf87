// SPDX-License-Identifier: LGPL-2.1-or-later
// fuzz-channel-frames.cpp — libFuzzer target for channel-frames.hpp (corpus:
// tests/fuzz/channel-frames/; docs/testing.md, "Fuzzing").
//
// The input is read twice: as a stream of frames (what a link end reads from
// an untrusted peer), and as one fd record. Whatever is accepted must encode
// back to the very bytes it came from, parse back equal, and a frame must
// not be decided before its 12 header bytes are there (a shorter prefix of an
// accepted frame needs more, never fails). A refusal comes with an error.
#include <gio/gio.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "wire/channel-frames.hpp"

using namespace sidebus::wire;

namespace {

void check(bool condition, const char* what) {
  if (condition) return;
  fprintf(stderr, "fuzz-channel-frames: %s\n", what);
  abort();
}

bool same(const FdRecord& a, const FdRecord& b) {
  if (a.index() != b.index()) return false;
  if (auto* x = std::get_if<DocumentRecord>(&a)) {
    auto& y = std::get<DocumentRecord>(b);
    return x->access == y.access && x->doc_id == y.doc_id && x->path == y.path;
  }
  if (auto* x = std::get_if<ContentRecord>(&a)) {
    auto& y = std::get<ContentRecord>(b);
    return x->channel == y.channel && x->size == y.size && x->name == y.name;
  }
  if (auto* x = std::get_if<KeptRecord>(&a)) return x->key == std::get<KeptRecord>(b).key;
  auto& x = std::get<StreamRecord>(a);
  auto& y = std::get<StreamRecord>(b);
  return x.channel == y.channel && x.object == y.object && x.directions == y.directions;
}

void check_record(const uint8_t* data, size_t size) {
  FdRecord record;
  GError* error = nullptr;
  bool accepted = parse_record(data, size, &record, &error);
  check(accepted == (error == nullptr), "an error is set exactly when a record is refused");
  if (!accepted) {
    check(g_error_matches(error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA), "refusals are INVALID_DATA");
    g_error_free(error);
    return;
  }
  std::vector<uint8_t> encoded = encode_record(record);
  check(encoded.size() == size && memcmp(encoded.data(), data, size) == 0, "an accepted record encodes to itself");
  FdRecord again;
  check(parse_record(encoded.data(), encoded.size(), &again, nullptr), "an encoded record parses");
  check(same(record, again), "an encoded record parses back equal");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  size_t at = 0;
  while (at < size) {
    Frame frame;
    size_t consumed = 0;
    GError* error = nullptr;
    ParseResult result = parse_frame(data + at, size - at, &frame, &consumed, &error);
    check((result == ParseResult::Invalid) == (error != nullptr), "an error is set exactly when a frame is refused");
    if (result == ParseResult::Invalid) {
      check(size - at >= kFrameHeaderSize, "a frame is refused only once its header is complete");
      g_error_free(error);
      break;
    }
    if (result == ParseResult::NeedMore) break;
    check(consumed == kFrameHeaderSize + frame.header.length, "a frame is its header and its payload");
    check(consumed <= size - at, "a frame lies within the input");
    std::vector<uint8_t> encoded;
    if (frame.header.kind == FrameKind::Credit)
      append_credit(&encoded, frame.header.channel, frame.credit);
    else
      append_frame(&encoded, frame.header.channel, frame.header.kind, frame.payload, frame.header.length);
    check(encoded.size() == consumed && memcmp(encoded.data(), data + at, consumed) == 0,
          "an accepted frame encodes to itself");
    if (frame.header.kind == FrameKind::Data) {
      uint8_t header[kFrameHeaderSize];
      write_data_header(header, frame.header.channel, frame.header.length);
      check(memcmp(header, data + at, kFrameHeaderSize) == 0, "write_data_header writes the same header");
    }
    // Any shorter prefix needs more bytes.
    for (size_t prefix : {size_t(0), kFrameHeaderSize - 1, kFrameHeaderSize, consumed - 1}) {
      if (prefix >= consumed) continue;
      Frame partial;
      size_t partial_consumed = 0;
      check(parse_frame(data + at, prefix, &partial, &partial_consumed, nullptr) == ParseResult::NeedMore,
            "a prefix of an accepted frame needs more");
    }
    if (frame.header.kind == FrameKind::Fd) check_record(frame.payload, frame.header.length);
    at += consumed;
  }
  check_record(data, size);
  return 0;
}
