// SPDX-License-Identifier: LGPL-2.1-or-later
// channel-frames.hpp — the frames a link v2 "framed" link carries after the
// handshake (docs/broker.md, "Protocol 2"), and the fd records that say what
// a forwarded file descriptor becomes. Pure: no I/O, no policy; the link end
// that uses them is link/framed-link.hpp. Fuzzed by fuzz-channel-frames.cpp.
//
// A frame is a 12-byte header and a payload, all integers little-endian:
//
//   offset 0  u32 channel    0: the D-Bus byte stream; others: one fd's data
//          4  u8  kind       FrameKind
//          5  u8  0          reserved, must be 0
//          6  u16 0          reserved, must be 0
//          8  u32 length     payload bytes that follow
//
//   kind    channel  payload
//   DATA    any      1..kMaxFramePayload bytes of the channel's stream
//   END     any      none: the sender sends no more DATA on it (EOF)
//   CREDIT  any      u32 increment ≥ 1: the sender may receive that many
//                    more DATA bytes on the channel
//   STOP    ≠ 0      none: the sender reads no more of it (its reader went
//                    away); the other end answers with END
//   FD      0        one FdRecord (kMinRecordSize..kMaxRecordSize bytes)
//
// parse_frame() checks the header alone (known kind, reserved bytes zero,
// the length each kind allows, FD only on channel 0, STOP never on it, a
// CREDIT of at least 1); what a frame means for the state of a link — which
// channels exist, who owns them, how much credit is left — is the link end's
// business, not the parser's.
//
// An FD record (the payload of an FD frame) announces one fd of the next
// D-Bus message on channel 0, in the order of the message's fds:
//
//   offset 0  u8  type     RecordType
//          1  u8  access   FdAccess (DOCUMENT; 0 for the others)
//          2  u16 0        reserved
//          4  ...          by type:
//   DOCUMENT  u16 n, n bytes document id ([A-Za-z0-9], 1..kMaxDocumentIdLength),
//             u16 m, m bytes path inside the document (relative: name[/dir…],
//             no empty, "." or ".." component, no NUL, 1..kMaxDocumentPathLength)
//   CONTENT   u32 channel (≠ 0), u64 size (≤ kMaxContentSize),
//             u16 n, n bytes file name (no '/', no NUL, 0..kMaxFileNameLength)
//   STREAM    u32 channel (≠ 0), u8 object (StreamObject),
//             u8 directions (kToReceiver | kToAnnouncer: a pipe exactly one,
//             a socket both), u16 0
//   KEPT      u32 key (≠ 0): an fd that stays in the guest. From the agent:
//             "I keep this fd under @key; take a stand-in" (replies of the
//             guest's relay helpers, kKeptRepliesInterface). From the
//             broker: "this is your fd @key again": the agent hands its own
//             fd on (docs/screencast.md, how the app's PipeWire remote is
//             made in the guest and named in the broker's reply)
//
// No trailing bytes. Every accepted frame and record encodes back to exactly
// the bytes it was parsed from (one spelling per value).
#pragma once

#include <glib.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <variant>
#include <vector>

namespace sidebus::wire {

inline constexpr size_t kFrameHeaderSize = 12;
inline constexpr uint32_t kMaxFramePayload = 256 * 1024;
inline constexpr size_t kMinRecordSize = 4;
inline constexpr size_t kMaxRecordSize = 8192;
inline constexpr uint32_t kDBusChannel = 0;

enum class FrameKind : uint8_t { Data = 1, End = 2, Credit = 3, Stop = 4, Fd = 5 };
const char* frame_kind_name(FrameKind kind);

struct FrameHeader {
  uint32_t channel = 0;
  FrameKind kind = FrameKind::Data;
  uint32_t length = 0;
};

// A frame parsed in place: payload points into the bytes given to parse_frame().
struct Frame {
  FrameHeader header;
  const uint8_t* payload = nullptr;
  uint32_t credit = 0;  // CREDIT only: the increment
};

enum class ParseResult { Frame, NeedMore, Invalid };

// The frame at the start of @data (@length bytes available). Frame: *out
// and *consumed (header + payload) are set. NeedMore: the header or payload
// is not complete yet (nothing is set). Invalid: *error
// (G_IO_ERROR_INVALID_DATA) says what is wrong; the header alone decides
// that, so a bad frame is reported as soon as its 12 bytes are there.
ParseResult parse_frame(const uint8_t* data, size_t length, Frame* out, size_t* consumed, GError** error);

// Appends a frame to @out. DATA payloads must be 1..kMaxFramePayload bytes,
// FD payloads a record; the caller keeps to the table above.
void append_frame(std::vector<uint8_t>* out, uint32_t channel, FrameKind kind, const uint8_t* payload,
                  uint32_t length);
void append_credit(std::vector<uint8_t>* out, uint32_t channel, uint32_t increment);
// Writes a DATA header for @length bytes at @at (kFrameHeaderSize bytes), so
// that a payload can be read straight into the buffer behind it.
void write_data_header(uint8_t* at, uint32_t channel, uint32_t length);

// ---- fd records ----

enum class RecordType : uint8_t { Document = 1, Content = 2, Stream = 3, Kept = 4 };
// How the fd was opened (O_ACCMODE, or O_PATH).
enum class FdAccess : uint8_t { ReadOnly = 0, WriteOnly = 1, ReadWrite = 2, Path = 3 };
const char* fd_access_name(FdAccess access);
enum class StreamObject : uint8_t { Pipe = 1, Socket = 2 };
inline constexpr uint8_t kToReceiver = 1;   // the announcer's local fd is read, its bytes go to the receiver
inline constexpr uint8_t kToAnnouncer = 2;  // the receiver's bytes are written to the announcer's local fd

inline constexpr size_t kMaxDocumentIdLength = 64;
inline constexpr size_t kMaxDocumentPathLength = 4096;
inline constexpr size_t kMaxFileNameLength = 255;
inline constexpr uint64_t kMaxContentSize = uint64_t(1) << 40;  // the wire's bound; limits are far lower

struct DocumentRecord {
  FdAccess access = FdAccess::ReadOnly;
  std::string doc_id;
  std::string path;  // inside the document: its file name, then any folders below it
};
struct ContentRecord {
  uint32_t channel = 0;
  uint64_t size = 0;
  std::string name;  // the file's name, for the copy (may be empty)
};
struct StreamRecord {
  uint32_t channel = 0;
  StreamObject object = StreamObject::Pipe;
  uint8_t directions = kToReceiver;
};
struct KeptRecord {
  uint32_t key = 0;
};
using FdRecord = std::variant<DocumentRecord, ContentRecord, StreamRecord, KeptRecord>;

// Replies to method calls of this interface (the guest's stream relay
// helper, sidebus-stream-relay) keep their fds in the guest: the broker gets
// KEPT stand-ins, and names them again to hand the fd to a guest client.
inline constexpr char kKeptRepliesInterface[] = "org.sidebus.GuestRelay1";

bool parse_record(const uint8_t* data, size_t length, FdRecord* out, GError** error);
// The record's bytes; nothing if a value breaks the rules above (the caller
// checks with is_valid_document_id() etc. first).
std::vector<uint8_t> encode_record(const FdRecord& record);

bool is_valid_document_id(std::string_view id);
bool is_valid_document_path(std::string_view path);
bool is_valid_file_name(std::string_view name);

}  // namespace sidebus::wire
