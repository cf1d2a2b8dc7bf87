// SPDX-License-Identifier: LGPL-2.1-or-later
// dbus-message.hpp — validate one D-Bus message from the untrusted guest
// before GDBus sees it.
//
// The broker receives the guest's D-Bus traffic as a byte stream over the
// link. GDBus parses what it is given into GVariants with no per-sender
// limit, so a guest could make the host allocate millions of small values
// from one message, or hand GDBus things the D-Bus specification forbids and
// GDBus lets through (duplicate or mistyped header fields, non-zero padding,
// strings with NUL bytes, out-of-range booleans and fd indexes). These pure
// functions — no I/O, no GDBus — check a message in three steps, each
// bounded by what the step before has already checked:
//
//   parse_fixed_header()  the first 16 bytes: byte order, type, version,
//                         serial, and the sizes of what follows;
//   parse_header()        the header fields, their types and syntax, and the
//                         fields each message type requires;
//   scan_body()           the body against the header's signature, counting
//                         the values GDBus would allocate and stopping as
//                         soon as there are more than the caller allows.
//
// Every check follows the D-Bus specification ("Message Protocol" and
// "Marshaling"); where GDBus is more lenient, we are not (fuzz-dbus-message.cpp
// lists the differences). A rejection is a G_IO_ERROR: INVALID_DATA for a
// malformed message, MESSAGE_TOO_LARGE when the caller's value limit is hit;
// the message names the offset, the field and the bad value (untrusted text
// only as a short, escaped excerpt).
//
// encode_error() is the one encoder: the ERROR reply the broker sends in
// place of a refused method call.
#pragma once

#include <glib.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace sidebus::wire {

enum class MessageType : uint8_t { Invalid = 0, MethodCall = 1, MethodReturn = 2, Error = 3, Signal = 4 };

inline constexpr uint8_t kFlagNoReplyExpected = 0x1;
inline constexpr size_t kFixedHeaderSize = 16;
inline constexpr size_t kMaxMessageSize = size_t(1) << 27;  // the spec's 128 MiB
inline constexpr size_t kMaxArraySize = size_t(1) << 26;    // 64 MiB, also the header fields array
inline constexpr size_t kMaxNameLength = 255;               // bus, interface, error and member names
inline constexpr unsigned kMaxArrayNesting = 32;            // in one signature
inline constexpr unsigned kMaxStructNesting = 32;           // '(' and '{' in one signature
inline constexpr unsigned kMaxTotalNesting = 64;            // containers around a value, variants included

struct FixedHeader {
  bool little_endian = true;
  MessageType type = MessageType::Invalid;  // may hold a raw value > 4 (unknown types are allowed)
  uint8_t flags = 0;
  uint32_t body_length = 0;
  uint32_t serial = 0;
  uint32_t fields_length = 0;  // the header fields array's byte length
  size_t header_size() const;  // 16 + fields_length rounded up to 8
  size_t total_size() const;   // header_size() + body_length
};

// The first kFixedHeaderSize bytes of a message. Rejects an endianness other
// than 'l'/'B', type 0, a protocol version other than 1, serial 0, a fields
// array over kMaxArraySize and a total size over kMaxMessageSize.
bool parse_fixed_header(const uint8_t* bytes, FixedHeader* out, GError** error);

struct MessageHeader {
  FixedHeader fixed;
  std::string path, interface_name, member, error_name, destination, sender, signature;
  bool has_reply_serial = false;
  uint32_t reply_serial = 0;
  uint32_t unix_fds = 0;
  // (addition) The values GDBus allocates for the header fields, counted as
  // scan_body() counts (the fields array, each field's entry, code, variant
  // and value): unknown fields may carry any value, so a caller bounding a
  // message's values adds this to the body's count.
  uint64_t field_elements = 0;
};

// The whole header: fixed.header_size() bytes (fixed header, fields array,
// zero padding to 8) at @bytes; @length may be larger (the rest is not read).
// Checks each known field's type code and value syntax (object path, names,
// signature, strings valid UTF-8 without NUL), no field twice, no field code
// 0, unknown fields skipped but their values fully validated, zero padding,
// and the fields each type requires: METHOD_CALL path+member, SIGNAL
// path+interface+member, ERROR error_name+reply_serial, METHOD_RETURN
// reply_serial. Fields may come in any order.
bool parse_header(const uint8_t* bytes, size_t length, MessageHeader* out, GError** error);

struct BodyStats {
  uint64_t elements = 0;
};

// Walks the body — header.fixed.body_length bytes at @body, @length may be
// larger — against header.signature in the header's byte order, building
// nothing: alignment, zero padding, lengths within bounds, no bytes after the
// last value, strings/paths/signatures valid, booleans 0 or 1, arrays at most
// kMaxArraySize, nesting within kMaxArrayNesting/kMaxStructNesting per
// signature and kMaxTotalNesting in all, variant signatures single complete
// types, handles below header.unix_fds.
//
// Counts "elements", the values GDBus allocates one by one when it parses the
// body: each basic value not inside a fixed-size array, each variant, struct,
// dict entry and array. An array of y n q i u x t d h counts 1 however long
// (GDBus keeps it as one block); an array of b counts 1 plus one per boolean
// (GDBus builds those one by one). The body itself (GDBus' tuple) does not
// count. Fails with G_IO_ERROR_MESSAGE_TOO_LARGE as soon as the count exceeds
// @max_elements, so the work done is bounded by @max_elements (plus one pass
// over each fixed-size array of handles, whose indexes are checked).
bool scan_body(const MessageHeader& header, const uint8_t* body, size_t length, uint64_t max_elements,
               BodyStats* out, GError** error);

// A complete little-endian ERROR message replying to @reply_serial, addressed
// to @destination (omitted when empty or not a valid bus name), named
// @error_name (org.freedesktop.DBus.Error.Failed when not a valid error
// name), whose one string argument is @message (made valid UTF-8 without NUL,
// cut to kMaxErrorMessageLength bytes). @serial must not be 0. The result
// passes parse_fixed_header(), parse_header() and scan_body().
inline constexpr size_t kMaxErrorMessageLength = 4096;
std::vector<uint8_t> encode_error(uint32_t serial, uint32_t reply_serial, std::string_view destination,
                                  std::string_view error_name, std::string_view message);

// The syntax checks behind parse_header(), for other users of D-Bus names.
bool is_valid_object_path(std::string_view path);
bool is_valid_interface_name(std::string_view name);  // also error names
bool is_valid_member_name(std::string_view name);
bool is_valid_bus_name(std::string_view name);  // unique (":1.42") or well-known
bool is_valid_signature(std::string_view signature);
bool is_valid_single_complete_type(std::string_view signature);

}  // namespace sidebus::wire
