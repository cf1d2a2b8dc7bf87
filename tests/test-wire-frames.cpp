// SPDX-License-Identifier: LGPL-2.1-or-later
// test-wire-frames.cpp — the pure pieces of link protocol 2
// (core/wire/channel-frames.hpp, core/wire/message-cutter.hpp): frames and
// fd records round trip, every rule of the header and of each record is
// enforced, and a D-Bus stream cut into any pieces gives the same messages.
//
// SIDEBUS_WRITE_FUZZ_SEEDS=<dir> writes the seeds of the channel-frames and
// message-cutter fuzz targets into <dir>/channel-frames and
// <dir>/message-cutter (tests/fuzz/ holds what this wrote).
#include <fcntl.h>
#include <gio/gio.h>
#include <gio/gunixfdlist.h>
#include <unistd.h>
#include <glib/gstdio.h>

#include <cstring>
#include <string>
#include <vector>

#include "wire/channel-frames.hpp"
#include "wire/message-cutter.hpp"

using namespace sidebus::wire;

namespace {

std::vector<uint8_t> frame(uint32_t channel, FrameKind kind, const std::vector<uint8_t>& payload) {
  std::vector<uint8_t> out;
  append_frame(&out, channel, kind, payload.data(), uint32_t(payload.size()));
  return out;
}

std::vector<uint8_t> record_frame(const FdRecord& record) {
  std::vector<uint8_t> encoded = encode_record(record);
  g_assert_cmpuint(encoded.size(), >, 0);
  return frame(0, FrameKind::Fd, encoded);
}

std::vector<uint8_t> blob_of(GDBusMessage* message) {
  gsize size = 0;
  g_autoptr(GError) error = nullptr;
  g_autofree guchar* blob = g_dbus_message_to_blob(message, &size, G_DBUS_CAPABILITY_FLAGS_UNIX_FD_PASSING, &error);
  g_assert_no_error(error);
  return std::vector<uint8_t>(blob, blob + size);
}

std::vector<uint8_t> call(uint32_t serial, const char* member, GVariant* body, uint32_t fds = 0) {
  g_autoptr(GDBusMessage) message =
      g_dbus_message_new_method_call(":1.1", "/org/freedesktop/portal/desktop", "dev.sidebus.test.Echo", member);
  g_dbus_message_set_serial(message, serial);
  g_dbus_message_set_body(message, body);
  g_autoptr(GUnixFDList) list = g_unix_fd_list_new();
  for (uint32_t i = 0; i < fds; i++) {
    int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    g_unix_fd_list_append(list, fd, nullptr);
    close(fd);
  }
  if (fds > 0) g_dbus_message_set_unix_fd_list(message, list);
  return blob_of(message);
}

// ---- frames ----

void test_frame_round_trip() {
  const std::vector<std::vector<uint8_t>> frames = {
      frame(0, FrameKind::Data, {1, 2, 3}),
      frame(7, FrameKind::Data, std::vector<uint8_t>(kMaxFramePayload, 0xab)),
      frame(3, FrameKind::End, {}),
      frame(4, FrameKind::Stop, {}),
      record_frame(DocumentRecord{FdAccess::ReadWrite, "a1b2c3", "report.txt"}),
  };
  std::vector<uint8_t> stream;
  for (const auto& f : frames) stream.insert(stream.end(), f.begin(), f.end());
  append_credit(&stream, 5, 65536);
  size_t at = 0, count = 0;
  while (at < stream.size()) {
    Frame parsed;
    size_t consumed = 0;
    g_autoptr(GError) error = nullptr;
    g_assert_true(parse_frame(stream.data() + at, stream.size() - at, &parsed, &consumed, &error) == ParseResult::Frame);
    g_assert_no_error(error);
    if (count < frames.size()) g_assert_cmpuint(consumed, ==, frames[count].size());
    if (parsed.header.kind == FrameKind::Credit) {
      g_assert_cmpuint(parsed.header.channel, ==, 5);
      g_assert_cmpuint(parsed.credit, ==, 65536);
    }
    at += consumed;
    count++;
  }
  g_assert_cmpuint(count, ==, frames.size() + 1);
  // Little-endian, 12 bytes of header.
  auto data = frame(0x01020304, FrameKind::Data, {9});
  const uint8_t expected[] = {4, 3, 2, 1, 1, 0, 0, 0, 1, 0, 0, 0, 9};
  g_assert_cmpmem(data.data(), data.size(), expected, sizeof expected);
  // Not decided before the header is complete, not returned before the payload is.
  Frame parsed;
  size_t consumed = 0;
  g_assert_true(parse_frame(data.data(), 11, &parsed, &consumed, nullptr) == ParseResult::NeedMore);
  g_assert_true(parse_frame(data.data(), 12, &parsed, &consumed, nullptr) == ParseResult::NeedMore);
}

void test_frame_hostile() {
  auto header = [](uint32_t channel, uint8_t kind, uint32_t length, uint8_t reserved = 0) {
    std::vector<uint8_t> out(12 + std::min<uint32_t>(length, 8), 0);
    memcpy(out.data(), &channel, 4);  // (a little-endian host)
    out[4] = kind;
    out[5] = reserved;
    memcpy(out.data() + 8, &length, 4);
    return out;
  };
  struct Case {
    std::vector<uint8_t> bytes;
    const char* mentions;
  };
  const Case cases[] = {
      {header(1, 0, 1), "unknown frame kind 0"},
      {header(1, 6, 1), "unknown frame kind 6"},
      {header(1, 255, 0), "unknown frame kind 255"},
      {header(1, 1, 0), "DATA frame on channel 1 with a payload of 0 bytes"},
      {header(1, 1, kMaxFramePayload + 1), "DATA frame"},
      {header(1, 2, 1), "END frame"},
      {header(1, 3, 3), "CREDIT frame"},
      {header(1, 3, 4), "CREDIT frame of 0 bytes"},
      {header(0, 4, 0), "STOP frame on channel 0"},
      {header(1, 4, 1), "STOP frame"},
      {header(1, 5, 8), "FD frame on channel 1"},
      {header(0, 5, 3), "FD frame"},
      {header(0, 5, kMaxRecordSize + 1), "FD frame"},
      {header(1, 1, 1, 1), "reserved"},
  };
  for (const Case& c : cases) {
    Frame parsed;
    size_t consumed = 0;
    g_autoptr(GError) error = nullptr;
    g_assert_true(parse_frame(c.bytes.data(), c.bytes.size(), &parsed, &consumed, &error) == ParseResult::Invalid);
    g_assert_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA);
    if (strstr(error->message, c.mentions) == nullptr) g_error("“%s” does not mention “%s”", error->message, c.mentions);
  }
  // A reserved byte in the middle.
  auto bad = frame(1, FrameKind::End, {});
  bad[6] = 1;
  Frame parsed;
  size_t consumed = 0;
  g_assert_true(parse_frame(bad.data(), bad.size(), &parsed, &consumed, nullptr) == ParseResult::Invalid);
}

// ---- records ----

void test_record_round_trip() {
  const FdRecord records[] = {
      DocumentRecord{FdAccess::ReadOnly, "abc123", "report.txt"},
      DocumentRecord{FdAccess::Path, std::string(kMaxDocumentIdLength, 'Z'), "dir/sub/file name é"},
      ContentRecord{5, 0, ""},
      ContentRecord{UINT32_MAX, kMaxContentSize, std::string(kMaxFileNameLength, 'n')},
      StreamRecord{2, StreamObject::Pipe, kToReceiver},
      StreamRecord{4, StreamObject::Pipe, kToAnnouncer},
      StreamRecord{6, StreamObject::Socket, kToReceiver | kToAnnouncer},
      KeptRecord{1},
      KeptRecord{UINT32_MAX},
  };
  for (const FdRecord& record : records) {
    std::vector<uint8_t> encoded = encode_record(record);
    g_assert_cmpuint(encoded.size(), >=, kMinRecordSize);
    FdRecord parsed;
    g_autoptr(GError) error = nullptr;
    g_assert_true(parse_record(encoded.data(), encoded.size(), &parsed, &error));
    g_assert_no_error(error);
    g_assert_cmpuint(parsed.index(), ==, record.index());
    g_assert_true(encode_record(parsed) == encoded);
  }
  // Values the rules forbid are not encoded at all.
  const FdRecord unencodable[] = {
      DocumentRecord{FdAccess::ReadOnly, "", "x"},
      DocumentRecord{FdAccess::ReadOnly, "a/b", "x"},
      DocumentRecord{FdAccess::ReadOnly, "ab", ""},
      DocumentRecord{FdAccess::ReadOnly, "ab", "../x"},
      DocumentRecord{FdAccess::ReadOnly, "ab", "x//y"},
      DocumentRecord{FdAccess::ReadOnly, "ab", "/x"},
      DocumentRecord{FdAccess::ReadOnly, "ab", "x/./y"},
      ContentRecord{0, 1, "x"},
      ContentRecord{1, 1, "a/b"},
      ContentRecord{1, kMaxContentSize + 1, "x"},
      StreamRecord{0, StreamObject::Pipe, kToReceiver},
      StreamRecord{1, StreamObject::Pipe, kToReceiver | kToAnnouncer},
      StreamRecord{1, StreamObject::Socket, kToReceiver},
      KeptRecord{0},
  };
  for (const FdRecord& record : unencodable) g_assert_cmpuint(encode_record(record).size(), ==, 0);
}

void test_record_hostile() {
  std::vector<uint8_t> document = encode_record(DocumentRecord{FdAccess::ReadOnly, "abc", "f"});
  std::vector<uint8_t> content = encode_record(ContentRecord{3, 10, "f"});
  std::vector<uint8_t> stream = encode_record(StreamRecord{3, StreamObject::Pipe, kToReceiver});
  std::vector<uint8_t> kept = encode_record(KeptRecord{3});
  auto with = [](std::vector<uint8_t> bytes, size_t at, uint8_t value) {
    bytes[at] = value;
    return bytes;
  };
  auto longer = [](std::vector<uint8_t> bytes) {
    bytes.push_back(0);
    return bytes;
  };
  auto shorter = [](std::vector<uint8_t> bytes) {
    bytes.pop_back();
    return bytes;
  };
  struct Case {
    std::vector<uint8_t> bytes;
    const char* mentions;
  };
  const Case cases[] = {
      {{}, "of 0 bytes"},
      {{1, 0, 0}, "of 3 bytes"},
      {with(document, 0, 9), "unknown type 9"},
      {with(document, 1, 4), "access mode 4"},
      {with(document, 2, 1), "reserved"},
      {longer(document), "after a document record"},
      {shorter(document), "truncated document record"},
      {with(document, 6, '.'), "invalid document id"},
      {with(document, 11, '/'), "invalid path"},
      {with(content, 1, 1), "access mode"},
      {with(content, 4, 0), "channel 0"},
      {longer(content), "after a content record"},
      {shorter(content), "truncated content record"},
      {with(content, 18, '/'), "invalid file name"},
      {with(stream, 8, 3), "object type 3"},
      {with(stream, 9, 3), "a pipe goes one way"},
      {with(with(stream, 8, 2), 9, 1), "a socket goes both ways"},
      {with(stream, 10, 1), "reserved"},
      {longer(stream), "after a stream record"},
      {with(kept, 1, 1), "kept record with an access mode"},
      {with(kept, 4, 0), "key 0"},
      {longer(kept), "after a kept record"},
      {shorter(kept), "truncated kept record"},
  };
  for (const Case& c : cases) {
    FdRecord parsed;
    g_autoptr(GError) error = nullptr;
    g_assert_false(parse_record(c.bytes.data(), c.bytes.size(), &parsed, &error));
    g_assert_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA);
    if (strstr(error->message, c.mentions) == nullptr) g_error("“%s” does not mention “%s”", error->message, c.mentions);
  }
}

// ---- the message cutter ----

void test_cutter_pieces() {
  std::vector<uint8_t> stream;
  std::vector<std::vector<uint8_t>> messages = {
      call(1, "Echo", g_variant_new("(s)", "one")),
      call(2, "ReadFd", g_variant_new("(h)", 0), 1),
      call(3, "Echo", g_variant_new("(s)", std::string(5000, 'x').c_str())),
  };
  for (const auto& m : messages) stream.insert(stream.end(), m.begin(), m.end());
  for (size_t piece : {size_t(1), size_t(7), size_t(16), size_t(100), stream.size()}) {
    MessageCutter cutter(1 << 20);
    std::vector<CutMessage> cut;
    for (size_t at = 0; at < stream.size();) {
      size_t end = std::min(stream.size(), at + piece);
      while (at < end) {
        CutMessage message;
        size_t consumed = 0;
        g_autoptr(GError) error = nullptr;
        auto result = cutter.feed(stream.data() + at, end - at, &consumed, &message, &error);
        g_assert_no_error(error);
        at += consumed;
        if (result == MessageCutter::Result::Message) cut.push_back(std::move(message));
      }
    }
    g_assert_false(cutter.in_message());
    g_assert_cmpuint(cut.size(), ==, messages.size());
    for (size_t i = 0; i < cut.size(); i++) {
      g_assert_true(cut[i].bytes == messages[i]);
      g_assert_cmpuint(cut[i].header.fixed.serial, ==, i + 1);
    }
    g_assert_cmpuint(cut[1].header.unix_fds, ==, 1);
  }
}

void test_cutter_limits() {
  // Above the size limit: the header comes back, the body is dropped as it comes.
  std::vector<uint8_t> big = call(1, "Echo", g_variant_new("(s)", std::string(3000, 'b').c_str()));
  std::vector<uint8_t> next = call(2, "Echo", g_variant_new("(s)", "after"));
  std::vector<uint8_t> stream = big;
  stream.insert(stream.end(), next.begin(), next.end());
  MessageCutter cutter(1024);
  std::vector<MessageCutter::Result> results;
  std::vector<CutMessage> cut;
  for (size_t at = 0; at < stream.size();) {
    size_t end = std::min(stream.size(), at + 500);
    while (at < end) {
      CutMessage message;
      size_t consumed = 0;
      auto result = cutter.feed(stream.data() + at, end - at, &consumed, &message, nullptr);
      at += consumed;
      if (result != MessageCutter::Result::NeedMore) {
        results.push_back(result);
        cut.push_back(std::move(message));
      }
    }
    g_assert_cmpuint(cutter.held_bytes(), <=, 1024);
  }
  g_assert_cmpuint(results.size(), ==, 2);
  g_assert_true(results[0] == MessageCutter::Result::Skipped);
  g_assert_cmpuint(cut[0].size, ==, big.size());
  g_assert_cmpuint(cut[0].bytes.size(), ==, 0);
  g_assert_cmpstr(cut[0].header.member.c_str(), ==, "Echo");
  g_assert_true(results[1] == MessageCutter::Result::Message);
  g_assert_true(cut[1].bytes == next);

  // Not D-Bus, or header fields above the limit: an error.
  for (std::vector<uint8_t> bad : {std::vector<uint8_t>(16, 'x'), call(1, "Echo", g_variant_new("(s)", "x"))}) {
    MessageCutter small(1 << 20, bad[0] == 'x' ? 65536 : 16);
    CutMessage message;
    size_t consumed = 0;
    g_autoptr(GError) error = nullptr;
    g_assert_true(small.feed(bad.data(), bad.size(), &consumed, &message, &error) == MessageCutter::Result::Invalid);
    g_assert_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA);
  }
}

// ---- fuzz seeds ----

void write_seed(const std::string& dir, const std::string& name, const std::vector<uint8_t>& bytes) {
  g_mkdir_with_parents(dir.c_str(), 0755);
  std::string path = dir + "/" + name;
  g_assert_true(g_file_set_contents(path.c_str(), reinterpret_cast<const char*>(bytes.data()), gssize(bytes.size()),
                                    nullptr));
}

void test_write_seeds() {
  const char* root = g_getenv("SIDEBUS_WRITE_FUZZ_SEEDS");
  if (root == nullptr) {
    g_test_skip("SIDEBUS_WRITE_FUZZ_SEEDS is not set");
    return;
  }
  std::string frames = std::string(root) + "/channel-frames";
  std::vector<uint8_t> credit;
  append_credit(&credit, 0, 4 * 1024 * 1024);
  std::vector<uint8_t> session = credit;
  for (const auto& f : {record_frame(StreamRecord{1, StreamObject::Pipe, kToReceiver}),
                        frame(0, FrameKind::Data, call(5, "ReadFd", g_variant_new("(h)", 0), 1)),
                        frame(1, FrameKind::Data, {'h', 'e', 'l', 'l', 'o'}), frame(1, FrameKind::End, {}),
                        frame(2, FrameKind::Stop, {})})
    session.insert(session.end(), f.begin(), f.end());
  write_seed(frames, "seed-session", session);
  write_seed(frames, "seed-document", record_frame(DocumentRecord{FdAccess::ReadWrite, "f00d", "a/b.txt"}));
  write_seed(frames, "seed-content", record_frame(ContentRecord{3, 12, "notes.txt"}));
  write_seed(frames, "seed-socket", record_frame(StreamRecord{5, StreamObject::Socket, kToReceiver | kToAnnouncer}));
  write_seed(frames, "seed-credit", credit);
  write_seed(frames, "seed-record-only", encode_record(ContentRecord{7, 0, ""}));

  std::string cutter = std::string(root) + "/message-cutter";
  auto with_piece = [](uint8_t piece, std::vector<uint8_t> bytes) {
    bytes.insert(bytes.begin(), piece);
    return bytes;
  };
  std::vector<uint8_t> two = call(1, "Echo", g_variant_new("(s)", "one"));
  std::vector<uint8_t> second = call(2, "ReadFd", g_variant_new("(h)", 0), 1);
  two.insert(two.end(), second.begin(), second.end());
  write_seed(cutter, "seed-two", with_piece(3, two));
  write_seed(cutter, "seed-big", with_piece(16, call(3, "Echo", g_variant_new("(s)", std::string(1500, 'b').c_str()))));
  write_seed(cutter, "seed-one-byte", with_piece(0, call(4, "Echo", g_variant_new("(s)", "x"))));
}

}  // namespace

int main(int argc, char** argv) {
  g_test_init(&argc, &argv, nullptr);
  g_test_add_func("/frames/round-trip", test_frame_round_trip);
  g_test_add_func("/frames/hostile", test_frame_hostile);
  g_test_add_func("/records/round-trip", test_record_round_trip);
  g_test_add_func("/records/hostile", test_record_hostile);
  g_test_add_func("/cutter/pieces", test_cutter_pieces);
  g_test_add_func("/cutter/limits", test_cutter_limits);
  g_test_add_func("/fuzz-seeds", test_write_seeds);
  return g_test_run();
}
