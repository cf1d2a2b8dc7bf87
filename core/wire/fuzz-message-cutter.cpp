// SPDX-License-Identifier: LGPL-2.1-or-later
// fuzz-message-cutter.cpp — libFuzzer target for message-cutter.hpp (corpus:
// tests/fuzz/message-cutter/; docs/testing.md, "Fuzzing").
//
// The first input byte chooses how the rest is cut into pieces; the rest is
// a D-Bus byte stream. Fed whole and fed in pieces, the cutter must give the
// same results at the same stream offsets; every message it returns is one
// whole, valid header (parse_fixed_header, parse_header) of the size it
// says, at most the limit; every skipped one is above the limit.
#include <gio/gio.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "wire/message-cutter.hpp"

using namespace sidebus::wire;

namespace {

constexpr size_t kLimit = 1024;  // small, so that skipping is exercised

void check(bool condition, const char* what) {
  if (condition) return;
  fprintf(stderr, "fuzz-message-cutter: %s\n", what);
  abort();
}

struct Event {
  MessageCutter::Result result;
  size_t offset;  // stream offset after the event
  std::vector<uint8_t> bytes;
  size_t size;
  uint32_t serial;
  std::string member;
};

std::vector<Event> run(const uint8_t* data, size_t size, size_t piece) {
  MessageCutter cutter(kLimit, 256);
  std::vector<Event> events;
  size_t at = 0;
  while (at < size) {
    size_t end = piece == 0 ? size : std::min(size, at + piece);
    while (at < end) {
      CutMessage message;
      size_t consumed = 0;
      GError* error = nullptr;
      auto result = cutter.feed(data + at, end - at, &consumed, &message, &error);
      check(consumed <= end - at, "never consumes more than it was given");
      check((result == MessageCutter::Result::Invalid) == (error != nullptr), "an error exactly on Invalid");
      at += consumed;
      if (error) g_error_free(error);
      if (result == MessageCutter::Result::NeedMore) {
        check(at == end, "NeedMore takes everything");
        continue;
      }
      events.push_back({result, at, message.bytes, message.size, message.header.fixed.serial, message.header.member});
      if (result == MessageCutter::Result::Invalid) return events;
      if (result == MessageCutter::Result::Message) {
        check(message.bytes.size() == message.size && message.size <= kLimit, "a message is whole and within the limit");
        FixedHeader fixed;
        check(parse_fixed_header(message.bytes.data(), &fixed, nullptr), "a message's fixed header parses");
        check(fixed.total_size() == message.size, "a message is as long as its header says");
        MessageHeader header;
        check(parse_header(message.bytes.data(), message.bytes.size(), &header, nullptr), "a message's header parses");
      } else {
        check(message.bytes.empty() && message.size > kLimit, "only messages above the limit are skipped");
      }
    }
  }
  events.push_back({MessageCutter::Result::NeedMore, at, {}, cutter.in_message() ? size_t(1) : size_t(0), 0, {}});
  return events;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  size_t piece = size_t(data[0] % 17) + 1;
  std::vector<Event> whole = run(data + 1, size - 1, 0);
  std::vector<Event> pieces = run(data + 1, size - 1, piece);
  check(whole.size() == pieces.size(), "the same number of results, however the stream is cut");
  for (size_t i = 0; i < whole.size(); i++) {
    check(whole[i].result == pieces[i].result, "the same results");
    check(whole[i].offset == pieces[i].offset, "at the same offsets");
    check(whole[i].bytes == pieces[i].bytes && whole[i].size == pieces[i].size, "the same messages");
    check(whole[i].serial == pieces[i].serial && whole[i].member == pieces[i].member, "the same headers");
  }
  return 0;
}
