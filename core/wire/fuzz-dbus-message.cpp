// SPDX-License-Identifier: LGPL-2.1-or-later
// fuzz-dbus-message.cpp — libFuzzer target for dbus-message.hpp (corpus:
// tests/fuzz/dbus-message/; how it runs: docs/testing.md, "Fuzzing").
//
// Each input is one message. It goes through parse_fixed_header(),
// parse_header() and scan_body() with a small value cap, as the broker runs
// them, and then through GDBus' own parser, g_dbus_message_new_from_blob(),
// to check that the two agree:
//
//  - what GDBus accepts, we accept too — except where GDBus lets through what
//    the D-Bus specification forbids (kGDBusLeniencies below: our parser
//    stays strict there, and the case is skipped, not a failure);
//  - what we accept, GDBus accepts too — except the few messages GDBus
//    refuses for reasons beyond the wire format (kGDBusRefusals);
//  - when both accept, the header fields are the same, and our element count
//    is the number of values GDBus built (counted on its GVariant body);
//  - the count is exact: one less as the cap is refused, as "too large".
//
// Any disagreement aborts with both verdicts printed.
//
// It also feeds the input's bytes to encode_error() as destination, error
// name and message: the result must always pass both parsers.
#include <gio/gio.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "wire/dbus-message.hpp"

using namespace sidebus::wire;

namespace {

constexpr uint64_t kMaxElements = 512;

// What GDBus (2.74) accepts although the specification forbids it, by the
// words of our error message (all of an entry's words). Each is a rule our
// parser keeps.
struct Leniency {
  const char* words;
  const char* more_words = nullptr;
};
const Leniency kGDBusLeniencies[] = {
    // GDBus skips padding without reading it.
    {"alignment padding byte is"},
    // GDBus keeps the last of two fields with the same code.
    {"appears twice"},
    // GDBus stores any value under a known field code (only SIGNATURE's type is checked).
    {" has type “"},
    {"header field code 0"},
    // The header fields' strings are not checked as names.
    {"is not an interface name"},
    {"is not a member name"},
    {"is not an error name"},
    {"is not a bus name"},
    {"serial must not be 0"},
    // GDBus validates a string's UTF-8 up to its first NUL only.
    {"contains a NUL byte"},
    // GDBus reads array elements until it is at or past the array's end: the
    // last element may run over it (the header fields array's too).
    {"before the end of the", "array"},
    {"padding runs past the end of the", "array"},
    // An empty array's padding to its element type may be cut off by the
    // end of the body: GDBus reads no padding for an array of nothing (the
    // only padding with no value behind it).
    {"alignment padding runs past the end of the body"},
    {"an array of “b”", "not a multiple of 4"},  // GDBus reads booleans one by one
    // GDBus reads a boolean as any uint32, and never checks fd indexes.
    {"a boolean is"},
    {"file descriptor index"},
    // GDBus reads the values the signature calls for and ignores the rest of
    // the body; an empty SIGNATURE field lets any body through.
    {"follow the last value"},
    {"but the message has no signature"},
    // GVariant type strings are not D-Bus signatures: GDBus (g_variant_is_signature)
    // accepts empty structs, dict entries outside arrays, and 64 levels of any
    // container where D-Bus allows 32 arrays and 32 structs.
    {"a struct is empty"},
    {"a dict entry is not an array's element type"},
    {"arrays are nested more than 32 deep"},
    {"structs and dict entries are nested more than 32 deep"},
    // GDBus does not count the header fields array and its entries in the
    // nesting depth of a header field's value.
    {"header byte", "nests containers more than 64 deep"},
};

// What we accept and GDBus refuses: not wire-format rules, but reserved
// names (the specification says "should not send").
const char* const kGDBusRefusals[] = {
    "The PATH header field is using the reserved value /org/freedesktop/DBus/Local",
    "The INTERFACE header field is using the reserved value org.freedesktop.DBus.Local",
};

bool is_leniency(const char* message) {
  for (const Leniency& leniency : kGDBusLeniencies)
    if (strstr(message, leniency.words) != nullptr &&
        (leniency.more_words == nullptr || strstr(message, leniency.more_words) != nullptr))
      return true;
  return false;
}

bool is_refusal(const char* message) {
  for (const char* words : kGDBusRefusals)
    if (strstr(message, words) != nullptr) return true;
  return false;
}

[[noreturn]] void disagree(const char* what, const char* ours, const char* gdbus) {
  fprintf(stderr, "fuzz-dbus-message: %s\n  ours:  %s\n  GDBus: %s\n", what, ours, gdbus);
  abort();
}

void check(bool condition, const char* what) {
  if (!condition) {
    fprintf(stderr, "fuzz-dbus-message: invariant broken: %s\n", what);
    abort();
  }
}

struct Verdict {
  bool accepted = false;
  MessageHeader header;
  BodyStats stats;
  GError* error = nullptr;
  ~Verdict() { g_clear_error(&error); }
};

// Our three steps over @data, which holds exactly one message (or less).
void run_ours(const uint8_t* data, size_t size, uint64_t max_elements, Verdict* verdict) {
  if (size < kFixedHeaderSize) {
    g_set_error(&verdict->error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA, "(fuzz) shorter than a fixed header");
    return;
  }
  FixedHeader fixed;
  if (!parse_fixed_header(data, &fixed, &verdict->error)) return;
  if (!parse_header(data, size, &verdict->header, &verdict->error)) return;
  check(verdict->header.fixed.header_size() == fixed.header_size(), "both parsers agree on the header size");
  check(fixed.header_size() <= size, "an accepted header lies within the input");
  size_t header_size = fixed.header_size();
  if (!scan_body(verdict->header, data + header_size, size - header_size, max_elements, &verdict->stats,
                 &verdict->error))
    return;
  verdict->accepted = true;
}

// The values GDBus built for @value, counted as scan_body() counts them.
uint64_t count_values(GVariant* value) {
  const GVariantType* type = g_variant_get_type(value);
  if (g_variant_type_is_basic(type)) return 1;
  if (g_variant_type_is_variant(type)) {
    g_autoptr(GVariant) inner = g_variant_get_variant(value);
    return 1 + count_values(inner);
  }
  if (g_variant_type_is_array(type)) {
    const char* element = g_variant_type_peek_string(g_variant_type_element(type));
    if (strchr("ynqiuxtdh", element[0]) != nullptr) return 1;
  }
  uint64_t n = 1;  // the array, struct or dict entry itself
  GVariantIter iter;
  g_variant_iter_init(&iter, value);
  while (GVariant* child = g_variant_iter_next_value(&iter)) {
    n += count_values(child);
    g_variant_unref(child);
  }
  return n;
}

void compare_fields(const MessageHeader& ours, GDBusMessage* gdbus) {
  auto same = [](const char* theirs, const std::string& mine, const char* field) {
    if (std::string(theirs != nullptr ? theirs : "") != mine) disagree(field, mine.c_str(), theirs ? theirs : "(none)");
  };
  check(static_cast<int>(ours.fixed.type) == static_cast<int>(g_dbus_message_get_message_type(gdbus)), "type");
  check(ours.fixed.serial == g_dbus_message_get_serial(gdbus), "serial");
  check(ours.fixed.flags == static_cast<unsigned>(g_dbus_message_get_flags(gdbus)), "flags");
  same(g_dbus_message_get_path(gdbus), ours.path, "PATH");
  same(g_dbus_message_get_interface(gdbus), ours.interface_name, "INTERFACE");
  same(g_dbus_message_get_member(gdbus), ours.member, "MEMBER");
  same(g_dbus_message_get_error_name(gdbus), ours.error_name, "ERROR_NAME");
  same(g_dbus_message_get_destination(gdbus), ours.destination, "DESTINATION");
  same(g_dbus_message_get_sender(gdbus), ours.sender, "SENDER");
  same(g_dbus_message_get_signature(gdbus), ours.signature, "SIGNATURE");
  check(ours.has_reply_serial ==
            (g_dbus_message_get_header(gdbus, G_DBUS_MESSAGE_HEADER_FIELD_REPLY_SERIAL) != nullptr),
        "REPLY_SERIAL present");
  check(ours.reply_serial == g_dbus_message_get_reply_serial(gdbus), "REPLY_SERIAL");
  check(ours.unix_fds == g_dbus_message_get_num_unix_fds(gdbus), "UNIX_FDS");
}

void differential(const uint8_t* data, size_t size) {
  if (size < kFixedHeaderSize) return;
  // The message as GDBus would frame it from the stream.
  g_autoptr(GError) framing_error = nullptr;
  gssize needed = g_dbus_message_bytes_needed(const_cast<uint8_t*>(data), size, &framing_error);
  if (needed < gssize(kFixedHeaderSize) || size_t(needed) > size) return;
  size = size_t(needed);

  Verdict ours;
  run_ours(data, size, kMaxElements, &ours);
  if (ours.error != nullptr && g_error_matches(ours.error, G_IO_ERROR, G_IO_ERROR_MESSAGE_TOO_LARGE))
    return;  // our cap, which GDBus does not have

  g_autoptr(GError) gdbus_error = nullptr;
  g_autoptr(GDBusMessage) gdbus = g_dbus_message_new_from_blob(const_cast<uint8_t*>(data), size,
                                                               G_DBUS_CAPABILITY_FLAGS_UNIX_FD_PASSING, &gdbus_error);
  if (gdbus != nullptr && !ours.accepted) {
    if (is_leniency(ours.error->message)) return;
    disagree("GDBus accepts a message we reject", ours.error->message, "accepted");
  }
  if (gdbus == nullptr && ours.accepted) {
    if (is_refusal(gdbus_error->message)) return;
    disagree("we accept a message GDBus rejects", "accepted", gdbus_error->message);
  }
  if (!ours.accepted) return;

  compare_fields(ours.header, gdbus);
  GVariant* body = g_dbus_message_get_body(gdbus);
  uint64_t gdbus_values = 0;
  if (body != nullptr) gdbus_values = count_values(body) - 1;  // not the body's tuple
  if (gdbus_values != ours.stats.elements) {
    g_autofree char* ours_text = g_strdup_printf("%" G_GUINT64_FORMAT " values", ours.stats.elements);
    g_autofree char* gdbus_text = g_strdup_printf("%" G_GUINT64_FORMAT " values", gdbus_values);
    disagree("value counts differ", ours_text, gdbus_text);
  }
}

// The cap is exact: the count passes, one less is "too large".
void check_cap(const uint8_t* data, size_t size) {
  Verdict ours;
  run_ours(data, size, kMaxElements, &ours);
  check(ours.accepted == (ours.error == nullptr), "an error is set exactly when the message is refused");
  if (!ours.accepted) {
    check(ours.error->domain == G_IO_ERROR && (ours.error->code == G_IO_ERROR_INVALID_DATA ||
                                               ours.error->code == G_IO_ERROR_MESSAGE_TOO_LARGE),
          "refusals are INVALID_DATA or MESSAGE_TOO_LARGE");
    return;
  }
  check(ours.stats.elements <= kMaxElements, "the count stays within the cap");
  check(ours.header.fixed.total_size() <= size, "an accepted message lies within the input");
  if (ours.stats.elements == 0) return;
  BodyStats stats;
  g_autoptr(GError) error = nullptr;
  size_t header_size = ours.header.fixed.header_size();
  check(!scan_body(ours.header, data + header_size, size - header_size, ours.stats.elements - 1, &stats, &error),
        "a cap one below the count is refused");
  check(g_error_matches(error, G_IO_ERROR, G_IO_ERROR_MESSAGE_TOO_LARGE), "... as MESSAGE_TOO_LARGE");
}

// encode_error() on arbitrary strings: destination, name, message split at NUL bytes.
void check_encode_error(const uint8_t* data, size_t size) {
  std::string_view input(reinterpret_cast<const char*>(data), size);
  size_t first = input.find('\0');
  if (first == std::string_view::npos) return;
  size_t second = input.find('\0', first + 1);
  if (second == std::string_view::npos) return;
  std::vector<uint8_t> blob = encode_error(uint32_t(size) + 1, uint32_t(first), input.substr(0, first),
                                           input.substr(first + 1, second - first - 1), input.substr(second + 1));
  Verdict ours;
  run_ours(blob.data(), blob.size(), 2, &ours);
  if (!ours.accepted) disagree("encode_error() output refused", ours.error->message, "-");
  check(ours.header.fixed.total_size() == blob.size(), "encode_error() writes exactly one message");
  g_autoptr(GError) error = nullptr;
  g_autoptr(GDBusMessage) gdbus =
      g_dbus_message_new_from_blob(blob.data(), blob.size(), GDBusCapabilityFlags(0), &error);
  if (gdbus == nullptr) disagree("encode_error() output refused by GDBus", "accepted", error->message);
  compare_fields(ours.header, gdbus);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  check_cap(data, size);
  differential(data, size);
  check_encode_error(data, size);
  return 0;
}
