// SPDX-License-Identifier: LGPL-2.1-or-later
// channel-frames.cpp — parse and encode link v2 frames and fd records (see
// channel-frames.hpp). Every length is checked against what is there before
// a byte of it is read; the frame parser looks at 12 bytes at most before it
// decides, so a hostile peer is caught at its first bad header.
#include "wire/channel-frames.hpp"

#include <gio/gio.h>

#include <cstring>

namespace sidebus::wire {

namespace {

uint16_t get16(const uint8_t* p) { return uint16_t(p[0] | (p[1] << 8)); }
uint32_t get32(const uint8_t* p) { return uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24; }
uint64_t get64(const uint8_t* p) { return uint64_t(get32(p)) | uint64_t(get32(p + 4)) << 32; }

void put16(std::vector<uint8_t>* out, uint16_t v) {
  out->push_back(uint8_t(v));
  out->push_back(uint8_t(v >> 8));
}
void put32(uint8_t* p, uint32_t v) {
  p[0] = uint8_t(v);
  p[1] = uint8_t(v >> 8);
  p[2] = uint8_t(v >> 16);
  p[3] = uint8_t(v >> 24);
}
void put32(std::vector<uint8_t>* out, uint32_t v) {
  uint8_t b[4];
  put32(b, v);
  out->insert(out->end(), b, b + 4);
}
void put64(std::vector<uint8_t>* out, uint64_t v) {
  put32(out, uint32_t(v));
  put32(out, uint32_t(v >> 32));
}

bool invalid(GError** error, const char* format, ...) G_GNUC_PRINTF(2, 3);
bool invalid(GError** error, const char* format, ...) {
  va_list args;
  va_start(args, format);
  g_autofree char* message = g_strdup_vprintf(format, args);
  va_end(args);
  g_set_error_literal(error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA, message);
  return false;
}

// A cursor over a record's bytes: every read is bounds-checked.
struct Reader {
  const uint8_t* data;
  size_t length;
  size_t at = 0;
  bool ok = true;
  bool has(size_t n) const { return ok && length - at >= n; }
  uint8_t u8() {
    if (!has(1)) return ok = false, 0;
    return data[at++];
  }
  uint16_t u16() {
    if (!has(2)) return ok = false, 0;
    at += 2;
    return get16(data + at - 2);
  }
  uint32_t u32() {
    if (!has(4)) return ok = false, 0;
    at += 4;
    return get32(data + at - 4);
  }
  uint64_t u64() {
    if (!has(8)) return ok = false, 0;
    at += 8;
    return get64(data + at - 8);
  }
  std::string string16() {
    uint16_t n = u16();
    if (!has(n)) return ok = false, std::string();
    at += n;
    return std::string(reinterpret_cast<const char*>(data + at - n), n);
  }
};

void put_string16(std::vector<uint8_t>* out, const std::string& text) {
  put16(out, uint16_t(text.size()));
  out->insert(out->end(), text.begin(), text.end());
}

}  // namespace

const char* frame_kind_name(FrameKind kind) {
  switch (kind) {
    case FrameKind::Data:
      return "DATA";
    case FrameKind::End:
      return "END";
    case FrameKind::Credit:
      return "CREDIT";
    case FrameKind::Stop:
      return "STOP";
    case FrameKind::Fd:
      return "FD";
  }
  return "?";
}

const char* fd_access_name(FdAccess access) {
  switch (access) {
    case FdAccess::ReadOnly:
      return "read-only";
    case FdAccess::WriteOnly:
      return "write-only";
    case FdAccess::ReadWrite:
      return "read-write";
    case FdAccess::Path:
      return "O_PATH";
  }
  return "?";
}

ParseResult parse_frame(const uint8_t* data, size_t length, Frame* out, size_t* consumed, GError** error) {
  if (length < kFrameHeaderSize) return ParseResult::NeedMore;
  uint32_t channel = get32(data);
  uint8_t kind = data[4];
  uint32_t payload = get32(data + 8);
  if (data[5] != 0 || get16(data + 6) != 0) {
    invalid(error, "frame on channel %u has non-zero reserved bytes", channel);
    return ParseResult::Invalid;
  }
  bool ok = true;
  switch (FrameKind(kind)) {
    case FrameKind::Data:
      ok = payload >= 1 && payload <= kMaxFramePayload;
      break;
    case FrameKind::End:
      ok = payload == 0;
      break;
    case FrameKind::Credit:
      ok = payload == 4;
      break;
    case FrameKind::Stop:
      ok = payload == 0;
      if (ok && channel == kDBusChannel) {
        invalid(error, "STOP frame on channel 0 (the D-Bus stream cannot be stopped)");
        return ParseResult::Invalid;
      }
      break;
    case FrameKind::Fd:
      ok = payload >= kMinRecordSize && payload <= kMaxRecordSize;
      if (ok && channel != kDBusChannel) {
        invalid(error, "FD frame on channel %u (fd records belong to channel 0)", channel);
        return ParseResult::Invalid;
      }
      break;
    default:
      invalid(error, "unknown frame kind %u on channel %u", kind, channel);
      return ParseResult::Invalid;
  }
  if (!ok) {
    invalid(error, "%s frame on channel %u with a payload of %u bytes", frame_kind_name(FrameKind(kind)), channel,
            payload);
    return ParseResult::Invalid;
  }
  if (length - kFrameHeaderSize < payload) return ParseResult::NeedMore;
  Frame frame;
  frame.header = FrameHeader{channel, FrameKind(kind), payload};
  frame.payload = data + kFrameHeaderSize;
  if (frame.header.kind == FrameKind::Credit) {
    frame.credit = get32(frame.payload);
    if (frame.credit == 0) {
      invalid(error, "CREDIT frame of 0 bytes on channel %u", channel);
      return ParseResult::Invalid;
    }
  }
  *out = frame;
  *consumed = kFrameHeaderSize + payload;
  return ParseResult::Frame;
}

void write_data_header(uint8_t* at, uint32_t channel, uint32_t length) {
  put32(at, channel);
  at[4] = uint8_t(FrameKind::Data);
  at[5] = at[6] = at[7] = 0;
  put32(at + 8, length);
}

void append_frame(std::vector<uint8_t>* out, uint32_t channel, FrameKind kind, const uint8_t* payload,
                  uint32_t length) {
  size_t at = out->size();
  out->resize(at + kFrameHeaderSize);
  uint8_t* header = out->data() + at;
  put32(header, channel);
  header[4] = uint8_t(kind);
  header[5] = header[6] = header[7] = 0;
  put32(header + 8, length);
  if (length > 0) out->insert(out->end(), payload, payload + length);
}

void append_credit(std::vector<uint8_t>* out, uint32_t channel, uint32_t increment) {
  uint8_t payload[4];
  put32(payload, increment);
  append_frame(out, channel, FrameKind::Credit, payload, 4);
}

// ---- records ----

bool is_valid_document_id(std::string_view id) {
  if (id.empty() || id.size() > kMaxDocumentIdLength) return false;
  for (char c : id)
    if (!g_ascii_isalnum(c)) return false;
  return true;
}

bool is_valid_document_path(std::string_view path) {
  if (path.empty() || path.size() > kMaxDocumentPathLength) return false;
  size_t start = 0;
  while (true) {
    size_t slash = path.find('/', start);
    std::string_view component = path.substr(start, slash == std::string_view::npos ? path.npos : slash - start);
    if (component.empty() || component == "." || component == "..") return false;
    if (component.find('\0') != std::string_view::npos) return false;
    if (slash == std::string_view::npos) return true;
    start = slash + 1;
  }
}

bool is_valid_file_name(std::string_view name) {
  if (name.size() > kMaxFileNameLength || name == "." || name == "..") return false;
  return name.find('/') == std::string_view::npos && name.find('\0') == std::string_view::npos;
}

bool parse_record(const uint8_t* data, size_t length, FdRecord* out, GError** error) {
  if (length < kMinRecordSize || length > kMaxRecordSize)
    return invalid(error, "an fd record of %zu bytes (%zu..%zu allowed)", length, kMinRecordSize, kMaxRecordSize);
  Reader r{data, length};
  uint8_t type = r.u8();
  uint8_t access = r.u8();
  uint16_t reserved = r.u16();
  if (reserved != 0) return invalid(error, "an fd record with non-zero reserved bytes");
  switch (RecordType(type)) {
    case RecordType::Document: {
      if (access > uint8_t(FdAccess::Path)) return invalid(error, "a document record with access mode %u", access);
      DocumentRecord record;
      record.access = FdAccess(access);
      record.doc_id = r.string16();
      record.path = r.string16();
      if (!r.ok) return invalid(error, "a truncated document record");
      if (!is_valid_document_id(record.doc_id)) return invalid(error, "a document record with an invalid document id");
      if (!is_valid_document_path(record.path))
        return invalid(error, "a document record with an invalid path inside the document");
      if (r.at != length) return invalid(error, "%zu bytes after a document record", length - r.at);
      *out = std::move(record);
      return true;
    }
    case RecordType::Content: {
      if (access != 0) return invalid(error, "a content record with an access mode");
      ContentRecord record;
      record.channel = r.u32();
      record.size = r.u64();
      record.name = r.string16();
      if (!r.ok) return invalid(error, "a truncated content record");
      if (record.channel == kDBusChannel) return invalid(error, "a content record for channel 0");
      if (record.size > kMaxContentSize) return invalid(error, "a content record of %" G_GUINT64_FORMAT " bytes", record.size);
      if (!is_valid_file_name(record.name)) return invalid(error, "a content record with an invalid file name");
      if (r.at != length) return invalid(error, "%zu bytes after a content record", length - r.at);
      *out = std::move(record);
      return true;
    }
    case RecordType::Stream: {
      if (access != 0) return invalid(error, "a stream record with an access mode");
      StreamRecord record;
      record.channel = r.u32();
      uint8_t object = r.u8();
      record.directions = r.u8();
      uint16_t pad = r.u16();
      if (!r.ok) return invalid(error, "a truncated stream record");
      if (pad != 0) return invalid(error, "a stream record with non-zero reserved bytes");
      if (record.channel == kDBusChannel) return invalid(error, "a stream record for channel 0");
      if (object == uint8_t(StreamObject::Pipe)) {
        if (record.directions != kToReceiver && record.directions != kToAnnouncer)
          return invalid(error, "a pipe record with directions %u (a pipe goes one way)", record.directions);
      } else if (object == uint8_t(StreamObject::Socket)) {
        if (record.directions != (kToReceiver | kToAnnouncer))
          return invalid(error, "a socket record with directions %u (a socket goes both ways)", record.directions);
      } else {
        return invalid(error, "a stream record for object type %u", object);
      }
      record.object = StreamObject(object);
      if (r.at != length) return invalid(error, "%zu bytes after a stream record", length - r.at);
      *out = record;
      return true;
    }
    case RecordType::Kept: {
      if (access != 0) return invalid(error, "a kept record with an access mode");
      KeptRecord record;
      record.key = r.u32();
      if (!r.ok) return invalid(error, "a truncated kept record");
      if (record.key == 0) return invalid(error, "a kept record with key 0");
      if (r.at != length) return invalid(error, "%zu bytes after a kept record", length - r.at);
      *out = record;
      return true;
    }
  }
  return invalid(error, "an fd record of unknown type %u", type);
}

std::vector<uint8_t> encode_record(const FdRecord& record) {
  std::vector<uint8_t> out;
  if (const auto* document = std::get_if<DocumentRecord>(&record)) {
    if (!is_valid_document_id(document->doc_id) || !is_valid_document_path(document->path)) return {};
    out = {uint8_t(RecordType::Document), uint8_t(document->access), 0, 0};
    put_string16(&out, document->doc_id);
    put_string16(&out, document->path);
  } else if (const auto* content = std::get_if<ContentRecord>(&record)) {
    if (content->channel == kDBusChannel || content->size > kMaxContentSize || !is_valid_file_name(content->name))
      return {};
    out = {uint8_t(RecordType::Content), 0, 0, 0};
    put32(&out, content->channel);
    put64(&out, content->size);
    put_string16(&out, content->name);
  } else if (const auto* kept = std::get_if<KeptRecord>(&record)) {
    if (kept->key == 0) return {};
    out = {uint8_t(RecordType::Kept), 0, 0, 0};
    put32(&out, kept->key);
  } else {
    const auto& stream = std::get<StreamRecord>(record);
    bool pipe_ok = stream.object == StreamObject::Pipe &&
                   (stream.directions == kToReceiver || stream.directions == kToAnnouncer);
    bool socket_ok = stream.object == StreamObject::Socket && stream.directions == (kToReceiver | kToAnnouncer);
    if (stream.channel == kDBusChannel || (!pipe_ok && !socket_ok)) return {};
    out = {uint8_t(RecordType::Stream), 0, 0, 0};
    put32(&out, stream.channel);
    out.push_back(uint8_t(stream.object));
    out.push_back(stream.directions);
    put16(&out, 0);
  }
  if (out.size() > kMaxRecordSize) return {};
  return out;
}

}  // namespace sidebus::wire
