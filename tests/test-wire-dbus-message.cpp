// SPDX-License-Identifier: LGPL-2.1-or-later
// test-wire-dbus-message.cpp — the D-Bus message checks of
// wire/dbus-message.hpp: real messages serialized by GDBus (every type, both
// byte orders, many body signatures) parse to the same fields; element
// counts on hand-computed cases; one hand-made message per rejection rule;
// the element cap stops early; encode_error() output parses in GDBus.
//
// With SIDEBUS_WRITE_FUZZ_SEEDS=<dir>, the GDBus-serialized messages are also
// written there, one file each: that is how tests/fuzz/dbus-message/ was seeded.
#include <fcntl.h>
#include <gio/gio.h>
#include <gio/gunixfdlist.h>
#include <unistd.h>

#include <functional>
#include <string>
#include <vector>

#include "wire/dbus-message.hpp"

using namespace sidebus::wire;

namespace {

using Bytes = std::vector<uint8_t>;

// ---- helpers ----

Bytes to_blob(GDBusMessage* message) {
  gsize size = 0;
  g_autoptr(GError) error = nullptr;
  g_autofree guchar* blob = g_dbus_message_to_blob(message, &size, G_DBUS_CAPABILITY_FLAGS_UNIX_FD_PASSING, &error);
  g_assert_no_error(error);
  return Bytes(blob, blob + size);
}

// All three steps over a whole message, as the broker runs them.
bool check_message(const Bytes& blob, uint64_t max_elements, MessageHeader* header, BodyStats* stats,
                   GError** error) {
  if (blob.size() < kFixedHeaderSize) {
    g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA, "(test) shorter than a fixed header");
    return false;
  }
  FixedHeader fixed;
  if (!parse_fixed_header(blob.data(), &fixed, error)) return false;
  if (!parse_header(blob.data(), blob.size(), header, error)) return false;
  g_assert_cmpuint(header->fixed.header_size(), ==, fixed.header_size());
  return scan_body(*header, blob.data() + fixed.header_size(), blob.size() - fixed.header_size(), max_elements, stats,
                   error);
}

uint64_t count_elements(const Bytes& blob) {
  MessageHeader header;
  BodyStats stats;
  g_autoptr(GError) error = nullptr;
  g_assert_true(check_message(blob, UINT64_MAX, &header, &stats, &error));
  g_assert_no_error(error);
  return stats.elements;
}

void expect_accepted(const Bytes& blob, MessageHeader* header = nullptr) {
  MessageHeader local;
  BodyStats stats;
  g_autoptr(GError) error = nullptr;
  bool ok = check_message(blob, UINT64_MAX, header != nullptr ? header : &local, &stats, &error);
  g_assert_no_error(error);
  g_assert_true(ok);
}

// Rejected with @code, and the message says @fragment.
void expect_rejected(const Bytes& blob, const char* fragment, int code = G_IO_ERROR_INVALID_DATA,
                     uint64_t max_elements = UINT64_MAX) {
  MessageHeader header;
  BodyStats stats;
  g_autoptr(GError) error = nullptr;
  g_assert_false(check_message(blob, max_elements, &header, &stats, &error));
  g_assert_error(error, G_IO_ERROR, code);
  g_test_message("rejected: %s", error->message);
  if (strstr(error->message, fragment) == nullptr)
    g_error("error “%s” does not say “%s”", error->message, fragment);
}

// Hand-made messages: a byte writer with D-Bus alignment (offsets from the
// start of what it writes, which starts 8-aligned in the message).
class Raw {
 public:
  explicit Raw(bool little_endian = true) : little_endian_(little_endian) {}
  Raw& align(size_t n) {
    while (bytes.size() % n != 0) bytes.push_back(0);
    return *this;
  }
  Raw& u8(uint8_t v) {
    bytes.push_back(v);
    return *this;
  }
  Raw& u16(uint16_t v) { return align(2).put(v, 2); }
  Raw& u32(uint32_t v) { return align(4).put(v, 4); }
  Raw& u64(uint64_t v) { return align(8).put(v, 8); }
  Raw& raw(std::string_view text) {
    bytes.insert(bytes.end(), text.begin(), text.end());
    return *this;
  }
  Raw& str(std::string_view text) { return u32(uint32_t(text.size())).raw(text).u8(0); }
  Raw& sig(std::string_view text) { return u8(uint8_t(text.size())).raw(text).u8(0); }
  Raw& field(uint8_t code, std::string_view type) { return align(8).u8(code).sig(type); }
  // A typical field set: PATH, MEMBER and (when not empty) SIGNATURE.
  Raw& call_fields(std::string_view body_sig = "") {
    field(1, "o").str("/p");
    field(3, "s").str("M");
    if (!body_sig.empty()) field(8, "g").sig(body_sig);
    return *this;
  }
  bool little_endian() const { return little_endian_; }
  Bytes bytes;

 private:
  Raw& put(uint64_t v, int size) {
    for (int i = 0; i < size; i++) {
      int shift = little_endian_ ? 8 * i : 8 * (size - 1 - i);
      bytes.push_back(uint8_t(v >> shift));
    }
    return *this;
  }
  bool little_endian_;
};

struct Fixed {
  uint8_t type = 1;
  uint32_t serial = 1;
  uint8_t flags = 0;
};

Bytes assemble(const Raw& fields, const Raw& body = Raw(), Fixed fixed = {}) {
  Raw message(fields.little_endian());
  message.u8(fields.little_endian() ? 'l' : 'B').u8(fixed.type).u8(fixed.flags).u8(1);
  message.u32(uint32_t(body.bytes.size())).u32(fixed.serial).u32(uint32_t(fields.bytes.size()));
  message.raw(std::string_view(reinterpret_cast<const char*>(fields.bytes.data()), fields.bytes.size()));
  message.align(8);
  message.raw(std::string_view(reinterpret_cast<const char*>(body.bytes.data()), body.bytes.size()));
  return message.bytes;
}

// A method call whose body has signature @sig and bytes @body.
Bytes call_with_body(std::string_view sig, const Raw& body, uint32_t unix_fds = 0) {
  Raw fields;
  fields.call_fields(sig);
  if (unix_fds != 0) fields.field(9, "u").u32(unix_fds);
  return assemble(fields, body);
}

// ---- GDBus-serialized messages parse to the same fields ----

GDBusMessage* new_message(int kind, GVariant* body) {
  GDBusMessage* message = nullptr;
  switch (kind) {
    case 0:
      message = g_dbus_message_new_method_call("org.example.Service", "/org/example/Object", "org.example.Iface",
                                               "DoThing");
      break;
    case 1: {
      g_autoptr(GDBusMessage) call = g_dbus_message_new_method_call(":1.7", "/", nullptr, "Get");
      g_dbus_message_set_serial(call, 41);
      g_dbus_message_set_sender(call, ":1.99");
      message = g_dbus_message_new_method_reply(call);
      break;
    }
    case 2: {
      g_autoptr(GDBusMessage) call = g_dbus_message_new_method_call("org.x-y.Z9", "/a/b_c/D1", "a.b", "M_1");
      g_dbus_message_set_serial(call, 0xfffffffe);
      g_dbus_message_set_sender(call, ":1.42");
      message = g_dbus_message_new_method_error_literal(call, "org.example.Error.Broken", "it broke");
      break;
    }
    default:
      message = g_dbus_message_new_signal("/org/example/Object", "org.example.Iface", "Changed");
      g_dbus_message_set_sender(message, "org.example.Service");
      break;
  }
  if (body != nullptr) g_dbus_message_set_body(message, body);
  return message;
}

void compare_with_gdbus(GDBusMessage* message, const MessageHeader& header) {
  auto same = [](const char* gdbus, const std::string& ours) { g_assert_cmpstr(gdbus ? gdbus : "", ==, ours.c_str()); };
  g_assert_cmpint(static_cast<int>(header.fixed.type), ==, g_dbus_message_get_message_type(message));
  g_assert_cmpuint(header.fixed.serial, ==, g_dbus_message_get_serial(message));
  g_assert_cmpuint(header.fixed.flags, ==, g_dbus_message_get_flags(message));
  g_assert_cmpint(header.fixed.little_endian, ==,
                  g_dbus_message_get_byte_order(message) == G_DBUS_MESSAGE_BYTE_ORDER_LITTLE_ENDIAN);
  same(g_dbus_message_get_path(message), header.path);
  same(g_dbus_message_get_interface(message), header.interface_name);
  same(g_dbus_message_get_member(message), header.member);
  same(g_dbus_message_get_error_name(message), header.error_name);
  same(g_dbus_message_get_destination(message), header.destination);
  same(g_dbus_message_get_sender(message), header.sender);
  same(g_dbus_message_get_signature(message), header.signature);
  g_assert_cmpuint(header.unix_fds, ==, g_dbus_message_get_num_unix_fds(message));
  bool has_reply_serial = g_dbus_message_get_header(message, G_DBUS_MESSAGE_HEADER_FIELD_REPLY_SERIAL) != nullptr;
  g_assert_cmpint(header.has_reply_serial, ==, has_reply_serial);
  g_assert_cmpuint(header.reply_serial, ==, g_dbus_message_get_reply_serial(message));
}

// Bodies in GVariant text format; each also goes into a message of every type.
const char* const kBodies[] = {
    nullptr,
    "('hello',)",
    "('héllo wörld ✓ \U0001F600',)",
    "(byte 1, true, int16 -2, uint16 3, -4, uint32 5, int64 -6, uint64 7, 8.5, objectpath '/a/b', signature 'a{sv}')",
    "({'a': <'x'>, 'b': <'y'>, 'c': <'z'>},)",
    "(@as [], @a(ii) [], @aay [], @a{sv} {}, @ay [], @ax [])",
    "(byte 1, @ax [], byte 2, @a(y) [], byte 3, @a{ss} {})",
    "([(1, 'x'), (2, 'y')],)",
    "(<<<<int32 5>>>>,)",
    "(<(byte 1, <@a{sv} {}>, [<'x'>, <objectpath '/'>])>,)",
    "([byte 1, 2, 3], [int16 1, -2], [uint16 3], [4, 5], [uint32 6], [int64 7], [uint64 8], [1.5, 2.5], "
    "[true, false])",
    "({'k': (1, <'v'>), 'l': (2, <[byte 9]>)}, {uint32 1: ['a', 'b'], 2: @as []})",
    "([['a', 'b'], @as [], ['c']], [[[byte 1]]])",
    "({byte 1: true}, {int16 2: int64 3}, {objectpath '/o': signature 's'}, {2.5: <2.5>})",
    "(byte 7, (int16 1, (uint64 2, (byte 3, 's'))), 'tail')",
    "(@a(ayay) [([byte 1], [byte 2, 3])], @a(sa{sv}) [('x', {'y': <1>})])",
};

// Handles. g_dbus_message_to_blob() wants a GUnixFDList as long as UNIX_FDS
// says; the blob parsed has none, as on the link (fds travel beside it).
const char* const kHandleBodies[] = {
    "(handle 0, [handle 1, handle 0], <handle 1>)",
    "({'fd': <handle 0>},)",
};

void set_two_fds(GDBusMessage* message) {
  g_autoptr(GUnixFDList) fds = g_unix_fd_list_new();
  for (int i = 0; i < 2; i++) {
    int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    g_assert_cmpint(fd, >=, 0);
    g_assert_cmpint(g_unix_fd_list_append(fds, fd, nullptr), ==, i);
    close(fd);
  }
  g_dbus_message_set_unix_fd_list(message, fds);
}

void write_seed(const Bytes& blob) {
  const char* dir = g_getenv("SIDEBUS_WRITE_FUZZ_SEEDS");
  if (dir == nullptr) return;
  static int n = 0;
  g_autofree char* path = g_strdup_printf("%s/gdbus-%03d", dir, n++);
  g_autoptr(GError) error = nullptr;
  g_assert_true(g_file_set_contents(path, reinterpret_cast<const char*>(blob.data()), gssize(blob.size()), &error));
}

void check_gdbus_message(GDBusMessage* message) {
  Bytes blob = to_blob(message);
  write_seed(blob);
  MessageHeader header;
  BodyStats stats;
  g_autoptr(GError) error = nullptr;
  bool ok = check_message(blob, UINT64_MAX, &header, &stats, &error);
  if (!ok) {
    g_autofree char* printed = g_dbus_message_print(message, 2);
    g_error("rejected a GDBus message: %s\n%s", error->message, printed);
  }
  g_assert_cmpuint(header.fixed.total_size(), ==, blob.size());
  compare_with_gdbus(message, header);
  // And GDBus reads its own blob back the same (the comparison's other half).
  g_autoptr(GDBusMessage) parsed =
      g_dbus_message_new_from_blob(blob.data(), blob.size(), G_DBUS_CAPABILITY_FLAGS_UNIX_FD_PASSING, &error);
  g_assert_no_error(error);
  compare_with_gdbus(parsed, header);
}

void test_gdbus_messages() {
  int checked = 0;
  for (bool big_endian : {false, true}) {
    for (int kind = 0; kind < 4; kind++) {
      for (const char* text : kBodies) {
        GVariant* body = nullptr;
        if (text != nullptr) {
          g_autoptr(GError) error = nullptr;
          body = g_variant_parse(nullptr, text, nullptr, nullptr, &error);
          g_assert_no_error(error);
        }
        g_autoptr(GDBusMessage) message = new_message(kind, body);
        g_dbus_message_set_serial(message, 1000 + checked);
        if (big_endian) g_dbus_message_set_byte_order(message, G_DBUS_MESSAGE_BYTE_ORDER_BIG_ENDIAN);
        if (kind == 0 && checked % 3 == 0)
          g_dbus_message_set_flags(message, GDBusMessageFlags(G_DBUS_MESSAGE_FLAGS_NO_REPLY_EXPECTED |
                                                              G_DBUS_MESSAGE_FLAGS_NO_AUTO_START));
        check_gdbus_message(message);
        checked++;
      }
      for (const char* text : kHandleBodies) {
        g_autoptr(GDBusMessage) message = new_message(kind, g_variant_parse(nullptr, text, nullptr, nullptr, nullptr));
        g_dbus_message_set_serial(message, 5000 + checked);
        set_two_fds(message);
        if (big_endian) g_dbus_message_set_byte_order(message, G_DBUS_MESSAGE_BYTE_ORDER_BIG_ENDIAN);
        check_gdbus_message(message);
        checked++;
      }
    }
  }
  g_test_message("%d GDBus messages parsed alike", checked);
}

// ---- element counts ----

uint64_t count_body(const char* text, bool with_fds = false) {
  g_autoptr(GDBusMessage) message = new_message(0, g_variant_parse(nullptr, text, nullptr, nullptr, nullptr));
  g_dbus_message_set_serial(message, 1);
  if (with_fds) set_two_fds(message);
  return count_elements(to_blob(message));
}

void test_element_counts() {
  // 1 array + 3 × (dict entry + key string + variant + string inside)
  g_assert_cmpuint(count_body("({'a': <'x'>, 'b': <'y'>, 'c': <'z'>},)"), ==, 13);
  g_assert_cmpuint(count_body("('s', uint32 1)"), ==, 2);  // the body's tuple does not count
  g_assert_cmpuint(count_body("(@as [],)"), ==, 1);
  g_assert_cmpuint(count_body("(@ay [],)"), ==, 1);
  g_assert_cmpuint(count_body("([uint64 1, 2, 3, 4],)"), ==, 1);
  g_assert_cmpuint(count_body("([true, false, true],)"), ==, 4);  // GDBus builds booleans one by one
  g_assert_cmpuint(count_body("((1, uint32 2),)"), ==, 3);
  g_assert_cmpuint(count_body("([(1, uint32 2), (3, uint32 4)],)"), ==, 7);
  g_assert_cmpuint(count_body("([['a', 'b'], @as [], ['c']],)"), ==, 7);
  g_assert_cmpuint(count_body("(<<int32 5>>,)"), ==, 3);
  g_assert_cmpuint(count_body("([handle 0, handle 1],)", true), ==, 1);
  g_assert_cmpuint(count_body("({'k': [byte 1, 2]},)"), ==, 4);

  // An ay of 1 MiB is one value.
  std::vector<uint8_t> mebibyte(1 << 20, 0xa5);
  g_autoptr(GDBusMessage) message = new_message(0, nullptr);
  g_dbus_message_set_serial(message, 1);
  GVariant* bytes = g_variant_new_fixed_array(G_VARIANT_TYPE_BYTE, mebibyte.data(), mebibyte.size(), 1);
  g_dbus_message_set_body(message, g_variant_new_tuple(&bytes, 1));
  Bytes blob = to_blob(message);
  g_assert_cmpuint(blob.size(), >, mebibyte.size());
  g_assert_cmpuint(count_elements(blob), ==, 1);

  // The header's own values: the array, and per field entry + code + variant + value.
  MessageHeader header;
  expect_accepted(assemble(Raw().call_fields()), &header);
  g_assert_cmpuint(header.field_elements, ==, 1 + 2 * 4);
}

// Exactly max_elements passes; one fewer is refused with MESSAGE_TOO_LARGE.
void test_element_cap_exact() {
  g_autoptr(GDBusMessage) message =
      new_message(0, g_variant_parse(nullptr, "({'a': <'x'>, 'b': <'y'>, 'c': <'z'>},)", nullptr, nullptr, nullptr));
  g_dbus_message_set_serial(message, 1);
  Bytes blob = to_blob(message);
  MessageHeader header;
  BodyStats stats;
  g_assert_true(check_message(blob, 13, &header, &stats, nullptr));
  g_assert_cmpuint(stats.elements, ==, 13);
  expect_rejected(blob, "more than 12 values", G_IO_ERROR_MESSAGE_TOO_LARGE, 12);
}

// A 64 MiB array of empty arrays claims 16 million values; with a cap of
// 1000 the scan stops after 1001. Only the first 1001 elements are valid
// (the rest is 0xff): had it walked further it would have failed on them
// with INVALID_DATA instead.
void test_element_cap_stops_early() {
  constexpr size_t kArrayBytes = kMaxArraySize;
  Raw body;
  body.u32(uint32_t(kArrayBytes));
  for (int i = 0; i < 1001; i++) body.u32(0);
  body.bytes.resize(4 + kArrayBytes, 0xff);
  Bytes blob = call_with_body("aay", body);
  g_assert_cmpuint(blob.size(), >, kArrayBytes);

  MessageHeader header;
  BodyStats stats;
  g_autoptr(GError) error = nullptr;
  g_assert_false(check_message(blob, 1000, &header, &stats, &error));
  g_assert_error(error, G_IO_ERROR, G_IO_ERROR_MESSAGE_TOO_LARGE);
  g_assert_nonnull(strstr(error->message, "more than 1000 values"));

  // The same for booleans: refused before one of them is read.
  Raw booleans;
  booleans.u32(uint32_t(kArrayBytes));
  booleans.bytes.resize(4 + kArrayBytes, 0xff);
  expect_rejected(call_with_body("ab", booleans), "more than 1000 values", G_IO_ERROR_MESSAGE_TOO_LARGE, 1000);
}

// ---- rejections: fixed header ----

void test_reject_fixed_header() {
  Bytes good = assemble(Raw().call_fields());
  expect_accepted(good);

  Bytes bad = good;
  bad[0] = 'x';
  expect_rejected(bad, "byte 0 (byte order) is 0x78");
  bad = good;
  bad[1] = 0;
  expect_rejected(bad, "byte 1 (message type) is 0");
  bad = good;
  bad[3] = 2;
  expect_rejected(bad, "byte 3 (protocol version) is 2");
  expect_rejected(assemble(Raw().call_fields(), Raw(), Fixed{1, 0}), "serial");

  FixedHeader fixed;
  g_autoptr(GError) error = nullptr;
  bad = good;
  bad[12] = 1, bad[13] = 0, bad[14] = 0, bad[15] = 4;  // 64 MiB + 1
  g_assert_false(parse_fixed_header(bad.data(), &fixed, &error));
  g_assert_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA);
  g_assert_nonnull(strstr(error->message, "header fields length"));
  g_clear_error(&error);

  // 64 MiB of fields + 64 MiB + 1 of body: one byte over 128 MiB.
  bad = good;
  bad[12] = 0, bad[13] = 0, bad[14] = 0, bad[15] = 4;
  bad[4] = 0xf1, bad[5] = 0xff, bad[6] = 0xff, bad[7] = 0x03;
  g_assert_false(parse_fixed_header(bad.data(), &fixed, &error));
  g_assert_nonnull(strstr(error->message, "134217729 bytes long"));
  g_clear_error(&error);
  bad[4] = 0xf0;  // exactly 128 MiB
  g_assert_true(parse_fixed_header(bad.data(), &fixed, &error));
  g_assert_cmpuint(fixed.total_size(), ==, kMaxMessageSize);

  // Unknown types are accepted as they are and need no fields.
  Bytes unknown = assemble(Raw(), Raw(), Fixed{7, 1});
  MessageHeader header;
  expect_accepted(unknown, &header);
  g_assert_cmpuint(static_cast<uint8_t>(header.fixed.type), ==, 7);

  // Big endian.
  Raw big(false);
  big.call_fields("u");
  Raw big_body(false);
  big_body.u32(0x01020304);
  Bytes big_blob = assemble(big, big_body, Fixed{1, 0x01000000});
  expect_accepted(big_blob, &header);
  g_assert_false(header.fixed.little_endian);
  g_assert_cmpuint(header.fixed.serial, ==, 0x01000000);
}

// ---- rejections: header fields ----

void test_reject_header_framing() {
  Bytes good = assemble(Raw().call_fields());
  MessageHeader header;
  g_autoptr(GError) error = nullptr;
  g_assert_false(parse_header(good.data(), 15, &header, &error));
  g_assert_nonnull(strstr(error->message, "cut short"));
  g_clear_error(&error);
  g_assert_false(parse_header(good.data(), good.size() - 1, &header, &error));
  g_assert_nonnull(strstr(error->message, "cut short"));
  g_clear_error(&error);

  // Non-zero padding after the last field, before the body.
  Raw fields;
  fields.call_fields();  // ends at 16 + 30 = 46: two bytes of padding
  Bytes bad = assemble(fields);
  g_assert_cmpuint(bad.size(), ==, 48);
  bad[47] = 1;
  expect_rejected(bad, "header byte 47: alignment padding byte is 0x01");

  // Non-zero padding between two fields.
  bad = assemble(fields);
  bad[16 + 13] = 0x20;  // after PATH "/p" (16+12 bytes), before MEMBER at 32
  expect_rejected(bad, "header byte 29: alignment padding byte is 0x20");

  // A field running past the end of the fields array.
  Raw cut;
  cut.field(1, "o").str("/p").field(3, "s").str("Member");
  Bytes cut_blob = assemble(cut);
  cut_blob[12] -= 3;  // the array now ends inside "Member" (the header still takes 48 bytes)
  expect_rejected(cut_blob, "before the end of the header fields array");

  // Field code 0, a field twice (known or not).
  expect_rejected(assemble(Raw().call_fields().field(0, "s").str("x")), "header field code 0");
  expect_rejected(assemble(Raw().call_fields().field(3, "s").str("N")), "MEMBER (3) appears twice");
  expect_rejected(assemble(Raw().call_fields().field(200, "y").u8(1).field(200, "y").u8(2)), "header field 200 appears twice");
}

void test_reject_header_types() {
  // A known field of the wrong type.
  expect_rejected(assemble(Raw().field(1, "s").str("/p").field(3, "s").str("M")), "PATH has type “s”, not “o”");
  expect_rejected(assemble(Raw().call_fields().field(5, "i").u32(1)), "REPLY_SERIAL has type “i”");
  expect_rejected(assemble(Raw().call_fields().field(8, "s").str("")), "SIGNATURE has type “s”");
  expect_rejected(assemble(Raw().call_fields().field(9, "au").u32(0)), "UNIX_FDS has type “au”");

  // Unknown fields: skipped, but validated.
  MessageHeader header;
  expect_accepted(assemble(Raw().call_fields().field(100, "a{sv}").u32(0).align(8)), &header);
  expect_accepted(assemble(Raw().call_fields().field(101, "(ub)").align(8).u32(1).u32(1)), &header);
  expect_rejected(assemble(Raw().call_fields().field(102, "(ub)").align(8).u32(1).u32(2)), "a boolean is 2");
  expect_rejected(assemble(Raw().call_fields().field(103, "ii").u32(1).u32(2)), "more than one complete type");
  expect_rejected(assemble(Raw().call_fields().field(104, "s").str("\xff")), "not valid UTF-8");
  expect_rejected(assemble(Raw().call_fields().field(105, "h").u32(0)), "file descriptor index 0");
  expect_accepted(assemble(Raw().call_fields().field(105, "h").u32(0).field(9, "u").u32(1)));
}

void test_reject_header_syntax() {
  auto with_path = [](const char* path) { return assemble(Raw().field(1, "o").str(path).field(3, "s").str("M")); };
  for (const char* path : {"", "a", "/a/", "//", "/a//b", "/a-b", "/a.b", "/ä"}) expect_rejected(with_path(path), "PATH");
  for (const char* path : {"/", "/a", "/a/B_9/c"}) expect_accepted(with_path(path));

  auto with_interface = [](const char* name) { return assemble(Raw().call_fields().field(2, "s").str(name)); };
  for (const char* name : {"", "org", "org.", ".org.x", "org..x", "org.1x", "org.x-y", "org.x/y", "org.x y"})
    expect_rejected(with_interface(name), "is not an interface name");
  for (const char* name : {"org.x", "a.b.c_1", "_.x9"}) expect_accepted(with_interface(name));
  expect_rejected(with_interface(std::string(250, 'a').append(".bbbbbb").c_str()), "is not an interface name");

  auto with_member = [](const char* name) { return assemble(Raw().field(1, "o").str("/").field(3, "s").str(name)); };
  for (const char* name : {"", "1x", "a.b", "a-b", "a b"}) expect_rejected(with_member(name), "is not a member name");
  expect_rejected(with_member(std::string(256, 'm').c_str()), "is not a member name");
  expect_accepted(with_member(std::string(255, 'm').c_str()));

  auto with_error = [](const char* name) {
    return assemble(Raw().field(4, "s").str(name).field(5, "u").u32(1), Raw(), Fixed{3, 1});
  };
  expect_rejected(with_error("Broken"), "is not an error name");
  expect_accepted(with_error("org.example.Broken"));

  auto with_destination = [](const char* name) { return assemble(Raw().call_fields().field(6, "s").str(name)); };
  for (const char* name : {"", ":", "org", ":1", ":1..2", "1a.b", "org.1x", ".a.b", "a.b.", "a.b/c"})
    expect_rejected(with_destination(name), "DESTINATION");
  for (const char* name : {":1.42", ":a-b.9", "org.x-y.Z", "org.freedesktop.DBus"})
    expect_accepted(with_destination(name));
  expect_rejected(assemble(Raw().call_fields().field(7, "s").str("bad")), "SENDER");

  // Signatures.
  auto with_signature = [](std::string sig) { return assemble(Raw().call_fields().field(8, "g").sig(sig)); };
  for (const char* sig : {"a", "(", ")", "(i", "()", "{sv}", "a{vs}", "a{s}", "a{sss}", "a{(i)s}", "r", "m", "e", "*",
                          "ii)", "a(}"})
    expect_rejected(with_signature(sig), "is not a valid signature");
  expect_rejected(with_signature(std::string(33, 'a') + "y"), "arrays are nested more than 32 deep");
  expect_rejected(with_signature(std::string(33, '(') + "y" + std::string(33, ')')), "more than 32 deep");
  // (a{s...} counts as an array and a struct)
  std::string dicts;
  for (int i = 0; i < 32; i++) dicts += "a{s";
  dicts += "y" + std::string(32, '}');
  Raw empty_dict;
  empty_dict.u32(0).align(8);
  expect_accepted(call_with_body(dicts, empty_dict));
  expect_rejected(with_signature("(" + dicts + ")"), "more than 32 deep");

  // Strings: NUL inside, no NUL after.
  Raw nul;
  nul.field(1, "o").str("/").field(3, "s").u32(3).raw(std::string_view("a\0b", 3)).u8(0);
  expect_rejected(assemble(nul), "contains a NUL byte");
  Raw unterminated;
  unterminated.field(1, "o").str("/").field(3, "s").u32(1).raw("ab");
  expect_rejected(assemble(unterminated), "not followed by a NUL byte");
  Raw too_long;
  too_long.field(1, "o").str("/").field(3, "s").u32(0xffffffff).raw("M");
  expect_rejected(assemble(too_long), "needs 4294967296 bytes");
}

void test_reject_required_fields() {
  expect_rejected(assemble(Raw().field(1, "o").str("/")), "METHOD_CALL message needs the MEMBER");
  expect_rejected(assemble(Raw().field(3, "s").str("M")), "METHOD_CALL message needs the PATH");
  expect_rejected(assemble(Raw().call_fields(), Raw(), Fixed{4, 1}), "SIGNAL message needs the INTERFACE");
  expect_accepted(assemble(Raw().call_fields().field(2, "s").str("a.b"), Raw(), Fixed{4, 1}));
  expect_rejected(assemble(Raw().field(4, "s").str("a.b"), Raw(), Fixed{3, 1}), "ERROR message needs the REPLY_SERIAL");
  expect_rejected(assemble(Raw().field(5, "u").u32(1), Raw(), Fixed{3, 1}), "ERROR message needs the ERROR_NAME");
  expect_rejected(assemble(Raw(), Raw(), Fixed{2, 1}), "METHOD_RETURN message needs the REPLY_SERIAL");
  MessageHeader header;
  // Any order; reply serial 0 is a value like another.
  expect_accepted(assemble(Raw().field(5, "u").u32(0).field(6, "s").str(":1.1"), Raw(), Fixed{2, 1}), &header);
  g_assert_true(header.has_reply_serial);
  g_assert_cmpuint(header.reply_serial, ==, 0);
  expect_accepted(assemble(Raw().field(3, "s").str("M").field(9, "u").u32(3).field(1, "o").str("/x")), &header);
  g_assert_cmpstr(header.path.c_str(), ==, "/x");
  g_assert_cmpuint(header.unix_fds, ==, 3);
}

// ---- rejections: body ----

void test_reject_body() {
  Raw body;
  body.str("hello");
  Bytes good = call_with_body("s", body);
  expect_accepted(good);

  // Cut short: scan_body() given fewer bytes than announced.
  MessageHeader header;
  g_assert_true(parse_header(good.data(), good.size(), &header, nullptr));
  BodyStats stats;
  g_autoptr(GError) error = nullptr;
  g_assert_false(scan_body(header, good.data() + header.fixed.header_size(), header.fixed.body_length - 1,
                           UINT64_MAX, &stats, &error));
  g_assert_nonnull(strstr(error->message, "body is cut short"));
  g_clear_error(&error);

  // A string longer than the body; an array longer than the body.
  Raw long_string;
  long_string.u32(100).raw("abc").u8(0);
  expect_rejected(call_with_body("s", long_string), "body byte 4: string needs 101 bytes, only 4 are left");
  Raw long_array;
  long_array.u32(8).u32(1);
  expect_rejected(call_with_body("au", long_array), "an array's elements needs 8 bytes, only 4 are left");
  Raw long_inner;  // an element running past the end of its array
  long_inner.u32(6).str("abcdef");
  expect_rejected(call_with_body("as", long_inner), "before the end of the array");
  Raw huge_array;
  huge_array.u32(uint32_t(kMaxArraySize) + 1);
  expect_rejected(call_with_body("ay", huge_array), "67108865 bytes long, at most 67108864");
  Raw odd_array;
  odd_array.u32(6).u32(1).u16(2);
  expect_rejected(call_with_body("au", odd_array), "not a multiple of 4");

  // Padding: before a uint32, and before the first element of an empty array of structs.
  Raw padding;
  padding.u8(1).u8(0).u8(7).u8(0).u32(5);
  expect_rejected(call_with_body("yu", padding), "body byte 2: alignment padding byte is 0x07");
  Raw array_padding;
  array_padding.u32(0).u32(0x01000000);
  expect_rejected(call_with_body("a(i)", array_padding), "body byte 7: alignment padding byte is 0x01");
  Raw empty_structs;
  empty_structs.u32(0).u32(0);
  expect_accepted(call_with_body("a(i)", empty_structs));

  // Values.
  Raw boolean;
  boolean.u32(2);
  expect_rejected(call_with_body("b", boolean), "a boolean is 2");
  Raw booleans;
  booleans.u32(8).u32(1).u32(0xffffffff);
  expect_rejected(call_with_body("ab", booleans), "body byte 8: a boolean is 4294967295");
  Raw utf8;
  utf8.str("ok\xc3\x28");
  expect_rejected(call_with_body("s", utf8), "body byte 6: string “ok\\xc3(” is not valid UTF-8");
  Raw overlong;
  overlong.str("\xc0\xaf");
  expect_rejected(call_with_body("s", overlong), "not valid UTF-8");
  Raw surrogate;
  surrogate.str("\xed\xa0\x80");
  expect_rejected(call_with_body("s", surrogate), "not valid UTF-8");
  Raw path;
  path.str("/a/");
  expect_rejected(call_with_body("o", path), "object path “/a/” is not a valid object path");
  Raw signature;
  signature.sig("a{vs}");
  expect_rejected(call_with_body("g", signature), "is not a valid signature");
  Raw variant_two;
  variant_two.sig("ii").u32(1).u32(2);
  expect_rejected(call_with_body("v", variant_two), "more than one complete type");
  Raw variant_none;
  variant_none.sig("");
  expect_rejected(call_with_body("v", variant_none), "a variant needs one complete type");

  // Handles.
  Raw handle;
  handle.u32(1);
  expect_rejected(call_with_body("h", handle), "file descriptor index 1, but the message carries 0");
  expect_rejected(call_with_body("h", handle, 1), "file descriptor index 1, but the message carries 1");
  expect_accepted(call_with_body("h", handle, 2));
  Raw handles;
  handles.u32(8).u32(0).u32(5);
  expect_rejected(call_with_body("ah", handles, 5), "body byte 8: file descriptor index 5");
  expect_accepted(call_with_body("ah", handles, 6));

  // No signature but a body; bytes after the last value.
  expect_rejected(assemble(Raw().call_fields(), body), "but the message has no signature");
  Raw trailing;
  trailing.u32(1).u8(0);
  expect_rejected(call_with_body("u", trailing), "1 bytes follow the last value");
}

// Nesting: 64 containers in all, variants included.
void test_reject_nesting() {
  auto nested_variants = [](int n) {
    Raw body;
    for (int i = 0; i < n - 1; i++) body.sig("v");
    body.sig("y").u8(1);
    return call_with_body("v", body);
  };
  expect_accepted(nested_variants(64));
  expect_rejected(nested_variants(65), "a variant nests containers more than 64 deep");

  // Arrays, a variant, arrays in it: 31 + 1 + 32 = 64 containers.
  auto build = [](int outer, int inner) {
    // Every array holds one element; lengths are patched once the inside is known.
    Raw body;
    std::vector<size_t> length_at;
    for (int i = 0; i < outer; i++) {
      body.align(4);
      length_at.push_back(body.bytes.size());
      body.u32(0);
    }
    body.sig(std::string(size_t(inner), 'a') + "y");
    std::vector<size_t> inner_at;
    for (int i = 0; i < inner; i++) {
      body.align(4);
      inner_at.push_back(body.bytes.size());
      body.u32(0);
    }
    body.u8(9);
    size_t end = body.bytes.size();
    auto patch = [&](size_t at) {
      uint32_t length = uint32_t(end - (at + 4));
      for (int k = 0; k < 4; k++) body.bytes[at + k] = uint8_t(length >> (8 * k));
    };
    for (size_t at : length_at) patch(at);
    for (size_t at : inner_at) patch(at);
    return call_with_body(std::string(size_t(outer), 'a') + "v", body);
  };
  expect_accepted(build(31, 32));
  expect_rejected(build(32, 32), "an array nests containers more than 64 deep");
  expect_accepted(build(0, 32));
}

// ---- encode_error ----

void test_encode_error() {
  struct Case {
    uint32_t serial, reply_serial;
    std::string destination, name, message;
    const char* expect_destination;
    const char* expect_name;
    const char* expect_message;
  } cases[] = {
      {7, 3, ":1.5", "org.freedesktop.DBus.Error.LimitsExceeded", "too many values", ":1.5",
       "org.freedesktop.DBus.Error.LimitsExceeded", "too many values"},
      {0xffffffff, 0, "", "a.b", "", nullptr, "a.b", ""},
      {2, 9, "not a name", "Not.A Name", std::string("bad \xff utf-8 and \0 nul", 21), nullptr,
       "org.freedesktop.DBus.Error.Failed", "bad \xef\xbf\xbd utf-8 and \xef\xbf\xbd nul"},
  };
  for (const Case& c : cases) {
    Bytes blob = encode_error(c.serial, c.reply_serial, c.destination, c.name, c.message);
    MessageHeader header;
    expect_accepted(blob, &header);
    g_assert_cmpuint(static_cast<uint8_t>(header.fixed.type), ==, 3);
    g_assert_cmpuint(header.fixed.total_size(), ==, blob.size());

    g_autoptr(GError) error = nullptr;
    g_autoptr(GDBusMessage) parsed = g_dbus_message_new_from_blob(blob.data(), blob.size(), GDBusCapabilityFlags(0), &error);
    g_assert_no_error(error);
    g_assert_cmpint(g_dbus_message_get_message_type(parsed), ==, G_DBUS_MESSAGE_TYPE_ERROR);
    g_assert_cmpuint(g_dbus_message_get_serial(parsed), ==, c.serial);
    g_assert_cmpuint(g_dbus_message_get_reply_serial(parsed), ==, c.reply_serial);
    g_assert_cmpstr(g_dbus_message_get_destination(parsed), ==, c.expect_destination);
    g_assert_cmpstr(g_dbus_message_get_error_name(parsed), ==, c.expect_name);
    g_assert_cmpstr(g_dbus_message_get_signature(parsed), ==, "s");
    const char* text = nullptr;
    g_variant_get(g_dbus_message_get_body(parsed), "(&s)", &text);
    g_assert_cmpstr(text, ==, c.expect_message);
    compare_with_gdbus(parsed, header);
  }
  // A long message is cut (at a character boundary).
  std::string long_text;
  while (long_text.size() < 2 * kMaxErrorMessageLength) long_text += "é";
  Bytes blob = encode_error(1, 1, "", "a.b", long_text);
  expect_accepted(blob);
  g_assert_cmpuint(blob.size(), <, kMaxErrorMessageLength + 200);
}

}  // namespace

int main(int argc, char** argv) {
  g_test_init(&argc, &argv, nullptr);
  g_test_add_func("/wire/dbus-message/gdbus-messages", test_gdbus_messages);
  g_test_add_func("/wire/dbus-message/element-counts", test_element_counts);
  g_test_add_func("/wire/dbus-message/element-cap-exact", test_element_cap_exact);
  g_test_add_func("/wire/dbus-message/element-cap-stops-early", test_element_cap_stops_early);
  g_test_add_func("/wire/dbus-message/reject/fixed-header", test_reject_fixed_header);
  g_test_add_func("/wire/dbus-message/reject/header-framing", test_reject_header_framing);
  g_test_add_func("/wire/dbus-message/reject/header-types", test_reject_header_types);
  g_test_add_func("/wire/dbus-message/reject/header-syntax", test_reject_header_syntax);
  g_test_add_func("/wire/dbus-message/reject/required-fields", test_reject_required_fields);
  g_test_add_func("/wire/dbus-message/reject/body", test_reject_body);
  g_test_add_func("/wire/dbus-message/reject/nesting", test_reject_nesting);
  g_test_add_func("/wire/dbus-message/encode-error", test_encode_error);
  return g_test_run();
}
