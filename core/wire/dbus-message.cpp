// SPDX-License-Identifier: LGPL-2.1-or-later
// dbus-message.cpp — the checks behind parse_fixed_header(), parse_header()
// and scan_body(), and the ERROR encoder (see dbus-message.hpp). Fuzzed by
// fuzz-dbus-message.cpp, against GDBus.
//
// How it is kept safe on hostile input:
//  - one cursor (Walker) reads every value, and checks each length against
//    what is left before its limit — the end of the block, or of the array
//    being walked — in 64-bit arithmetic, before it reads a byte;
//  - signatures are checked (grammar, length, nesting) before anything is
//    walked with them, so the walk can rely on their shape;
//  - recursion (signature grammar, containers) stops at the spec's nesting
//    limits, which are checked before each level is entered, so the stack is
//    bounded by kMaxTotalNesting frames;
//  - every value that costs GDBus an allocation is counted before it is
//    walked, and the walk stops at the caller's limit: a huge array of small
//    values costs at most max_elements steps. Every element of a D-Bus array
//    takes at least one byte, so each step advances.
#include "wire/dbus-message.hpp"

#include <gio/gio.h>

#include <cstdarg>
#include <cstring>

namespace sidebus::wire {

namespace {

// Header field codes and the one type each must have.
enum FieldCode : uint8_t {
  kFieldInvalid = 0,
  kFieldPath = 1,
  kFieldInterface = 2,
  kFieldMember = 3,
  kFieldErrorName = 4,
  kFieldReplySerial = 5,
  kFieldDestination = 6,
  kFieldSender = 7,
  kFieldSignature = 8,
  kFieldUnixFds = 9,
  kLastKnownField = kFieldUnixFds,
};

struct KnownField {
  const char* name;
  char type;
};

constexpr KnownField kKnownFields[kLastKnownField + 1] = {
    {"INVALID", 0},       {"PATH", 'o'},        {"INTERFACE", 's'}, {"MEMBER", 's'},    {"ERROR_NAME", 's'},
    {"REPLY_SERIAL", 'u'}, {"DESTINATION", 's'}, {"SENDER", 's'},    {"SIGNATURE", 'g'}, {"UNIX_FDS", 'u'},
};

// The containers around a header field's value: the fields array, its entry, the variant.
constexpr unsigned kHeaderFieldValueDepth = 3;

constexpr size_t kExcerptLength = 40;

// A short excerpt of untrusted bytes for an error message: printable ASCII
// as is, everything else (and the quote characters) as \xNN.
std::string quote(std::string_view text) {
  std::string out = "“";
  for (size_t i = 0; i < text.size() && i < kExcerptLength; i++) {
    auto c = static_cast<unsigned char>(text[i]);
    if (c >= 0x20 && c < 0x7f && c != '\\' && c != '"') {
      out += static_cast<char>(c);
    } else {
      char escaped[8];
      g_snprintf(escaped, sizeof escaped, "\\x%02x", c);
      out += escaped;
    }
  }
  if (text.size() > kExcerptLength) out += "…";
  out += "”";
  return out;
}

bool fail(GError** error, const char* format, ...) G_GNUC_PRINTF(2, 3);
bool fail(GError** error, const char* format, ...) {
  va_list args;
  va_start(args, format);
  g_autofree char* reason = g_strdup_vprintf(format, args);
  va_end(args);
  g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA, "invalid D-Bus message: %s", reason);
  return false;
}

uint32_t load32(const uint8_t* p, bool little_endian) {
  if (little_endian) return uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24;
  return uint32_t(p[3]) | uint32_t(p[2]) << 8 | uint32_t(p[1]) << 16 | uint32_t(p[0]) << 24;
}

uint64_t round_up_8(uint64_t n) { return (n + 7) & ~uint64_t(7); }

// ---- names and signatures ----

bool is_name_char(char c, bool hyphen_allowed) {
  return g_ascii_isalnum(c) || c == '_' || (hyphen_allowed && c == '-');
}

// Dot-separated elements of [A-Za-z0-9_] (and '-' for bus names), at least
// two, none empty; elements may start with a digit only in unique names.
bool is_valid_dotted_name(std::string_view name, bool hyphen_allowed, bool digit_first_allowed) {
  if (name.empty() || name.size() > kMaxNameLength) return false;
  size_t elements = 0;
  size_t start = 0;
  while (true) {
    size_t dot = name.find('.', start);
    std::string_view element = name.substr(start, dot == std::string_view::npos ? std::string_view::npos : dot - start);
    if (element.empty()) return false;
    if (!digit_first_allowed && g_ascii_isdigit(element[0])) return false;
    for (char c : element)
      if (!is_name_char(c, hyphen_allowed)) return false;
    elements++;
    if (dot == std::string_view::npos) break;
    start = dot + 1;
  }
  return elements >= 2;
}

bool is_basic_type_code(char c) { return c != '\0' && strchr("ybnqiuxtdhsog", c) != nullptr; }

// Where each fixed-size basic type's values are aligned (and how long they are).
size_t fixed_type_size(char c) {
  switch (c) {
    case 'y':
      return 1;
    case 'n':
    case 'q':
      return 2;
    case 'b':
    case 'i':
    case 'u':
    case 'h':
      return 4;
    case 'x':
    case 't':
    case 'd':
      return 8;
    default:
      return 0;
  }
}

size_t type_alignment(char c) {
  switch (c) {
    case 'y':
    case 'g':
    case 'v':
      return 1;
    case 's':
    case 'o':
    case 'a':
      return 4;
    case '(':
    case '{':
      return 8;
    default:
      return fixed_type_size(c);
  }
}

// Recursive descent over one single complete type starting at sig[*pos],
// within the nesting limits (checked before each level, so the recursion is
// at most kMaxArrayNesting + kMaxStructNesting deep). Sets *why on failure.
bool check_complete_type(std::string_view sig, size_t* pos, unsigned arrays, unsigned structs, const char** why) {
  if (*pos >= sig.size()) {
    *why = "a type is missing (an array without element type, or an unclosed struct)";
    return false;
  }
  char c = sig[*pos];
  if (is_basic_type_code(c) || c == 'v') {
    (*pos)++;
    return true;
  }
  switch (c) {
    case 'a':
      if (arrays + 1 > kMaxArrayNesting) {
        *why = "arrays are nested more than 32 deep";
        return false;
      }
      (*pos)++;
      if (*pos < sig.size() && sig[*pos] == '{') {
        if (structs + 1 > kMaxStructNesting) {
          *why = "structs and dict entries are nested more than 32 deep";
          return false;
        }
        (*pos)++;
        if (*pos >= sig.size() || !is_basic_type_code(sig[*pos])) {
          *why = "a dict entry's key is not a basic type";
          return false;
        }
        (*pos)++;
        if (*pos < sig.size() && sig[*pos] == '}') {
          *why = "a dict entry has only a key";
          return false;
        }
        if (!check_complete_type(sig, pos, arrays + 1, structs + 1, why)) return false;
        if (*pos >= sig.size() || sig[*pos] != '}') {
          *why = "a dict entry does not hold exactly two types";
          return false;
        }
        (*pos)++;
        return true;
      }
      return check_complete_type(sig, pos, arrays + 1, structs, why);
    case '(':
      if (structs + 1 > kMaxStructNesting) {
        *why = "structs and dict entries are nested more than 32 deep";
        return false;
      }
      (*pos)++;
      if (*pos < sig.size() && sig[*pos] == ')') {
        *why = "a struct is empty";
        return false;
      }
      while (*pos < sig.size() && sig[*pos] != ')')
        if (!check_complete_type(sig, pos, arrays, structs + 1, why)) return false;
      if (*pos >= sig.size()) {
        *why = "a struct is not closed";
        return false;
      }
      (*pos)++;
      return true;
    case '{':
      *why = "a dict entry is not an array's element type";
      return false;
    case ')':
    case '}':
      *why = "a closing bracket has no opening one";
      return false;
    default:
      *why = "it contains a character that is not a type code";
      return false;
  }
}

// A signature (zero or more complete types) or, when @single, one complete type.
bool check_signature(std::string_view sig, bool single, const char** why) {
  if (sig.size() > 255) {
    *why = "it is longer than 255 bytes";
    return false;
  }
  size_t pos = 0;
  size_t types = 0;
  while (pos < sig.size()) {
    if (!check_complete_type(sig, &pos, 0, 0, why)) return false;
    types++;
  }
  if (single && types != 1) {
    *why = types == 0 ? "it is empty, a variant needs one complete type" : "it holds more than one complete type";
    return false;
  }
  return true;
}

// ---- the cursor ----

// Reads the values of one block (the header or the body). Offsets are from
// the block's start; both blocks start 8-aligned in the message, so
// alignment computed on them is the message's.
class Walker {
 public:
  Walker(const uint8_t* data, size_t size, bool little_endian, const char* block, uint64_t max_elements,
         GError** error)
      : data_(data), limit_(size), little_endian_(little_endian), block_(block), max_elements_(max_elements),
        error_(error) {}

  size_t pos() const { return pos_; }
  void set_pos(size_t pos) { pos_ = pos; }
  uint64_t elements() const { return elements_; }

  // Handles are checked against @unix_fds; in the header, where the number of
  // fds may only come later, the largest one is remembered instead.
  void check_handles_against(uint32_t unix_fds) {
    unix_fds_ = unix_fds;
    check_handles_ = true;
  }
  bool saw_handle() const { return saw_handle_; }
  uint32_t largest_handle() const { return largest_handle_; }

  // Walks one value of the complete type at sig[*sig_pos] (already checked
  // by check_signature), inside @depth containers; advances *sig_pos past it.
  bool value(std::string_view sig, size_t* sig_pos, unsigned depth);

  // Pieces of values, for the header fields.
  bool align(size_t alignment);
  bool byte(const char* what, uint8_t* out);
  bool uint32(const char* what, uint32_t* out);
  bool string_like(char type, std::string_view* out, const char* label = nullptr);
  bool count(uint64_t n = 1);

  // Reads are limited to [pos, limit): the block, or the array being walked
  // (@name, for messages; nullptr: the block).
  void set_limit(size_t limit, const char* name) {
    limit_ = limit;
    limit_name_ = name;
  }

  bool fail_at(size_t offset, const char* format, ...) G_GNUC_PRINTF(3, 4);

 private:
  bool need(uint64_t n, const char* what);
  bool enter_container(unsigned depth, char type);
  bool array(std::string_view sig, size_t* sig_pos, unsigned depth);
  bool variant(unsigned depth);
  bool note_handle(uint32_t handle, size_t offset);

  const uint8_t* data_;
  size_t pos_ = 0;
  size_t limit_;
  const char* limit_name_ = nullptr;  // nullptr: the end of the block
  bool little_endian_;
  const char* block_;
  uint64_t elements_ = 0;
  uint64_t max_elements_;
  bool check_handles_ = false;
  uint32_t unix_fds_ = 0;
  bool saw_handle_ = false;
  uint32_t largest_handle_ = 0;
  GError** error_;
};

bool Walker::fail_at(size_t offset, const char* format, ...) {
  va_list args;
  va_start(args, format);
  g_autofree char* reason = g_strdup_vprintf(format, args);
  va_end(args);
  return fail(error_, "%s byte %zu: %s", block_, offset, reason);
}

bool Walker::need(uint64_t n, const char* what) {
  // pos_ <= limit_ always holds: nothing moves pos_ past a checked length.
  if (n <= limit_ - pos_) return true;
  return fail_at(pos_, "%s needs %" G_GUINT64_FORMAT " bytes, only %zu are left before the end of the %s", what, n,
                 limit_ - pos_, limit_name_ != nullptr ? limit_name_ : block_);
}

bool Walker::align(size_t alignment) {
  size_t padding = (alignment - pos_ % alignment) % alignment;
  if (padding > limit_ - pos_)
    return fail_at(pos_, "alignment padding runs past the end of the %s", limit_name_ != nullptr ? limit_name_ : block_);
  for (size_t i = 0; i < padding; i++)
    if (data_[pos_ + i] != 0)
      return fail_at(pos_ + i, "alignment padding byte is 0x%02x, not zero", data_[pos_ + i]);
  pos_ += padding;
  return true;
}

bool Walker::count(uint64_t n) {
  if (n <= max_elements_ && elements_ <= max_elements_ - n) {
    elements_ += n;
    return true;
  }
  g_set_error(error_, G_IO_ERROR, G_IO_ERROR_MESSAGE_TOO_LARGE,
              "D-Bus message %s has more than %" G_GUINT64_FORMAT " values (at byte %zu)", block_, max_elements_,
              pos_);
  return false;
}

bool Walker::byte(const char* what, uint8_t* out) {
  if (!need(1, what)) return false;
  *out = data_[pos_++];
  return true;
}

bool Walker::uint32(const char* what, uint32_t* out) {
  if (!align(4) || !need(4, what)) return false;
  *out = load32(data_ + pos_, little_endian_);
  pos_ += 4;
  return true;
}

// A STRING, OBJECT_PATH or SIGNATURE: length, bytes, NUL; valid UTF-8 with
// no NUL inside; the syntax of a path or signature. @label names it in
// messages ("header field PATH"); by default, its type.
bool Walker::string_like(char type, std::string_view* out, const char* label) {
  const char* what = label != nullptr ? label : type == 's' ? "string" : type == 'o' ? "object path" : "signature";
  size_t start = pos_;
  uint64_t length = 0;
  if (type == 'g') {
    uint8_t length8 = 0;
    if (!byte(what, &length8)) return false;
    length = length8;
  } else {
    uint32_t length32 = 0;
    if (!uint32(what, &length32)) return false;
    start = pos_ - 4;
    length = length32;
  }
  if (!need(length + 1, what)) return false;
  auto text = std::string_view(reinterpret_cast<const char*>(data_ + pos_), size_t(length));
  if (data_[pos_ + length] != 0)
    return fail_at(pos_ + size_t(length), "%s %s is not followed by a NUL byte (0x%02x instead)", what,
                   quote(text).c_str(), data_[pos_ + length]);
  if (const void* nul = memchr(text.data(), 0, text.size())) {
    size_t at = size_t(static_cast<const char*>(nul) - text.data());
    return fail_at(pos_ + at, "%s %s contains a NUL byte", what, quote(text.substr(0, at + 1)).c_str());
  }
  const char* valid_end = nullptr;
  if (!g_utf8_validate_len(text.data(), text.size(), &valid_end))
    return fail_at(pos_ + size_t(valid_end - text.data()), "%s %s is not valid UTF-8", what, quote(text).c_str());
  if (type == 'o' && !is_valid_object_path(text))
    return fail_at(start, "%s %s is not a valid object path", what, quote(text).c_str());
  const char* why = nullptr;
  if (type == 'g' && !check_signature(text, false, &why))
    return fail_at(start, "%s %s is not a valid signature: %s", what, quote(text).c_str(), why);
  pos_ += size_t(length) + 1;
  *out = text;
  return true;
}

bool Walker::enter_container(unsigned depth, char type) {
  if (depth + 1 <= kMaxTotalNesting) return true;
  return fail_at(pos_, "%s nests containers more than %u deep (variants included)",
                 type == 'v' ? "a variant" : type == 'a' ? "an array" : "a struct", kMaxTotalNesting);
}


// The position just past the complete type at sig[pos] (checked by check_signature()).
size_t skip_complete_type(std::string_view sig, size_t pos) {
  while (sig[pos] == 'a') pos++;
  if (sig[pos] != '(' && sig[pos] != '{') return pos + 1;
  unsigned open = 0;
  do {
    if (sig[pos] == '(' || sig[pos] == '{') open++;
    if (sig[pos] == ')' || sig[pos] == '}') open--;
    pos++;
  } while (open > 0);
  return pos;
}

bool Walker::value(std::string_view sig, size_t* sig_pos, unsigned depth) {
  char type = sig[*sig_pos];
  switch (type) {
    case 'y':
      if (!count() || !need(1, "a byte")) return false;
      pos_ += 1;
      break;
    case 'b': {
      uint32_t boolean = 0;
      if (!count() || !uint32("a boolean", &boolean)) return false;
      if (boolean > 1) return fail_at(pos_ - 4, "a boolean is %u, not 0 or 1", boolean);
      break;
    }
    case 'h': {
      uint32_t handle = 0;
      if (!count() || !uint32("a file descriptor index", &handle)) return false;
      if (!note_handle(handle, pos_ - 4)) return false;
      break;
    }
    case 'n':
    case 'q':
    case 'i':
    case 'u':
    case 'x':
    case 't':
    case 'd': {
      size_t size = fixed_type_size(type);
      if (!count() || !align(size) || !need(size, "a number")) return false;
      pos_ += size;
      break;
    }
    case 's':
    case 'o':
    case 'g': {
      std::string_view text;
      if (!count() || !string_like(type, &text)) return false;
      break;
    }
    case 'v':
      if (!variant(depth)) return false;
      break;
    case 'a':
      return array(sig, sig_pos, depth);
    case '(':
    case '{': {
      char close = type == '(' ? ')' : '}';
      if (!enter_container(depth, type) || !count() || !align(8)) return false;
      (*sig_pos)++;
      while (sig[*sig_pos] != close)
        if (!value(sig, sig_pos, depth + 1)) return false;
      break;  // past the closing bracket below
    }
    default:
      g_assert_not_reached();  // check_signature() admitted it
  }
  (*sig_pos)++;
  return true;
}

bool Walker::note_handle(uint32_t handle, size_t offset) {
  if (check_handles_ && handle >= unix_fds_)
    return fail_at(offset, "file descriptor index %u, but the message carries %u (UNIX_FDS)", handle, unix_fds_);
  saw_handle_ = true;
  largest_handle_ = MAX(largest_handle_, handle);
  return true;
}

bool Walker::variant(unsigned depth) {
  size_t start = pos_;
  if (!enter_container(depth, 'v') || !count()) return false;
  uint8_t length = 0;
  if (!byte("a variant's signature length", &length) || !need(uint64_t(length) + 1, "a variant's signature"))
    return false;
  auto sig = std::string_view(reinterpret_cast<const char*>(data_ + pos_), length);
  if (data_[pos_ + length] != 0)
    return fail_at(pos_ + length, "a variant's signature is not followed by a NUL byte (0x%02x instead)",
                   data_[pos_ + length]);
  const char* why = nullptr;
  if (memchr(sig.data(), 0, sig.size()) != nullptr)
    why = "it contains a NUL byte";
  else
    check_signature(sig, true, &why);
  if (why != nullptr) return fail_at(start, "variant signature %s is not valid: %s", quote(sig).c_str(), why);
  pos_ += size_t(length) + 1;
  size_t sig_pos = 0;
  return value(sig, &sig_pos, depth + 1);
}

bool Walker::array(std::string_view sig, size_t* sig_pos, unsigned depth) {
  uint32_t length = 0;
  if (!enter_container(depth, 'a') || !count() || !uint32("an array's length", &length)) return false;
  if (length > kMaxArraySize)
    return fail_at(pos_ - 4, "an array is %u bytes long, at most %zu are allowed", length, kMaxArraySize);
  size_t element_sig = *sig_pos + 1;
  size_t element_sig_end = skip_complete_type(sig, element_sig);
  char element = sig[element_sig];
  // The padding before the first element is there even when there is none.
  if (!align(type_alignment(element)) || !need(length, "an array's elements")) return false;
  size_t end = pos_ + length;

  if (size_t size = fixed_type_size(element); size != 0) {
    // One block for GDBus: no value inside is counted, except booleans,
    // which GDBus builds one by one.
    if (length % size != 0)
      return fail_at(pos_, "an array of “%c” is %u bytes long, not a multiple of %zu", element, length, size);
    if (element == 'b' && !count(length / 4)) return false;
    if (element == 'b' || element == 'h') {
      for (size_t at = pos_; at < end; at += 4) {
        uint32_t item = load32(data_ + at, little_endian_);
        if (element == 'b' && item > 1) return fail_at(at, "a boolean is %u, not 0 or 1", item);
        if (element == 'h' && !note_handle(item, at)) return false;
      }
    }
    pos_ = end;
    *sig_pos = element_sig_end;
    return true;
  }

  size_t saved_limit = limit_;
  const char* saved_limit_name = limit_name_;
  set_limit(end, "array");
  while (pos_ < end) {
    size_t element_start = pos_;
    size_t p = element_sig;
    if (!value(sig, &p, depth + 1)) return false;
    g_assert(pos_ > element_start);  // every element takes at least one byte, so this ends
  }
  set_limit(saved_limit, saved_limit_name);
  *sig_pos = element_sig_end;
  return true;
}

// ---- encoding ----

class Writer {
 public:
  void align(size_t alignment) {
    while (bytes.size() % alignment != 0) bytes.push_back(0);
  }
  void u8(uint8_t value) { bytes.push_back(value); }
  void u32(uint32_t value) {
    align(4);
    for (int shift = 0; shift < 32; shift += 8) bytes.push_back(uint8_t(value >> shift));
  }
  void string(std::string_view text) {
    u32(uint32_t(text.size()));
    bytes.insert(bytes.end(), text.begin(), text.end());
    bytes.push_back(0);
  }
  void signature(std::string_view text) {
    u8(uint8_t(text.size()));
    bytes.insert(bytes.end(), text.begin(), text.end());
    bytes.push_back(0);
  }
  void patch32(size_t offset, uint32_t value) {
    for (int i = 0; i < 4; i++) bytes[offset + i] = uint8_t(value >> (8 * i));
  }
  std::vector<uint8_t> bytes;
};

// @text as valid UTF-8 without NUL (each bad byte becomes U+FFFD), at most @max bytes.
std::string make_valid_text(std::string_view text, size_t max) {
  std::string out;
  size_t i = 0;
  while (i < text.size()) {
    const char* p = text.data() + i;
    gunichar c = g_utf8_get_char_validated(p, gssize(text.size() - i));
    std::string_view piece;
    size_t consumed = 1;
    if (c == gunichar(-1) || c == gunichar(-2) || c == 0) {
      piece = "\xef\xbf\xbd";
    } else {
      consumed = size_t(g_utf8_next_char(p) - p);
      piece = std::string_view(p, consumed);
    }
    if (out.size() + piece.size() > max) break;
    out += piece;
    i += consumed;
  }
  return out;
}

}  // namespace

// ---- public ----

bool is_valid_object_path(std::string_view path) {
  if (path.empty() || path[0] != '/') return false;
  if (path.size() == 1) return true;
  if (path.back() == '/') return false;
  for (size_t i = 1; i < path.size(); i++) {
    if (path[i] == '/') {
      if (path[i - 1] == '/') return false;
    } else if (!is_name_char(path[i], false)) {
      return false;
    }
  }
  return true;
}

bool is_valid_interface_name(std::string_view name) { return is_valid_dotted_name(name, false, false); }

bool is_valid_member_name(std::string_view name) {
  if (name.empty() || name.size() > kMaxNameLength || g_ascii_isdigit(name[0])) return false;
  for (char c : name)
    if (!is_name_char(c, false)) return false;
  return true;
}

bool is_valid_bus_name(std::string_view name) {
  if (name.size() > kMaxNameLength) return false;
  if (!name.empty() && name[0] == ':') return is_valid_dotted_name(name.substr(1), true, true);
  return is_valid_dotted_name(name, true, false);
}

bool is_valid_signature(std::string_view signature) {
  const char* why = nullptr;
  return memchr(signature.data(), 0, signature.size()) == nullptr && check_signature(signature, false, &why);
}

bool is_valid_single_complete_type(std::string_view signature) {
  const char* why = nullptr;
  return memchr(signature.data(), 0, signature.size()) == nullptr && check_signature(signature, true, &why);
}

size_t FixedHeader::header_size() const { return size_t(kFixedHeaderSize + round_up_8(fields_length)); }

size_t FixedHeader::total_size() const { return header_size() + size_t(body_length); }

bool parse_fixed_header(const uint8_t* bytes, FixedHeader* out, GError** error) {
  FixedHeader fixed;
  if (bytes[0] != 'l' && bytes[0] != 'B')
    return fail(error, "byte 0 (byte order) is 0x%02x, not “l” or “B”", bytes[0]);
  fixed.little_endian = bytes[0] == 'l';
  if (bytes[1] == 0) return fail(error, "byte 1 (message type) is 0 (INVALID)");
  fixed.type = static_cast<MessageType>(bytes[1]);
  fixed.flags = bytes[2];
  if (bytes[3] != 1) return fail(error, "byte 3 (protocol version) is %u, not 1", bytes[3]);
  fixed.body_length = load32(bytes + 4, fixed.little_endian);
  fixed.serial = load32(bytes + 8, fixed.little_endian);
  if (fixed.serial == 0) return fail(error, "bytes 8-11 (serial) are 0, a serial must not be 0");
  fixed.fields_length = load32(bytes + 12, fixed.little_endian);
  if (fixed.fields_length > kMaxArraySize)
    return fail(error, "bytes 12-15 (header fields length) are %u, at most %zu are allowed", fixed.fields_length,
                kMaxArraySize);
  // (64-bit: at most 16 + 2^26 + 2^32)
  uint64_t total = kFixedHeaderSize + round_up_8(fixed.fields_length) + uint64_t(fixed.body_length);
  if (total > kMaxMessageSize)
    return fail(error, "the message would be %" G_GUINT64_FORMAT " bytes long, at most %zu are allowed", total,
                kMaxMessageSize);
  *out = fixed;
  return true;
}

bool parse_header(const uint8_t* bytes, size_t length, MessageHeader* out, GError** error) {
  if (length < kFixedHeaderSize)
    return fail(error, "the header is cut short: %zu bytes, a fixed header takes %zu", length, kFixedHeaderSize);
  MessageHeader header;
  if (!parse_fixed_header(bytes, &header.fixed, error)) return false;
  size_t header_size = header.fixed.header_size();
  if (length < header_size)
    return fail(error, "the header is cut short: %zu bytes, the fixed header announces %zu", length, header_size);

  Walker walker(bytes, header_size, header.fixed.little_endian, "header", UINT64_MAX, error);
  walker.set_pos(kFixedHeaderSize);
  size_t fields_end = kFixedHeaderSize + header.fixed.fields_length;
  walker.set_limit(fields_end, "header fields array");
  if (!walker.count()) return false;  // the array

  bool seen[256] = {};
  while (walker.pos() < fields_end) {
    if (!walker.align(8)) return false;
    size_t field_start = walker.pos();
    uint8_t code = 0;
    if (!walker.byte("a header field's code", &code)) return false;
    if (code == kFieldInvalid) return walker.fail_at(field_start, "header field code 0 (INVALID)");
    if (seen[code]) {
      if (code > kLastKnownField) return walker.fail_at(field_start, "header field %u appears twice", code);
      return walker.fail_at(field_start, "header field %s (%u) appears twice", kKnownFields[code].name, code);
    }
    seen[code] = true;
    std::string_view sig;
    if (!walker.string_like('g', &sig, "header field's type")) return false;  // the variant's signature
    if (!walker.count(3)) return false;                // entry, code, variant

    if (code > kLastKnownField) {
      // Unknown: skipped, but it must still be a valid value.
      const char* why = nullptr;
      if (!check_signature(sig, true, &why))
        return walker.fail_at(field_start, "unknown header field %u: variant signature %s is not valid: %s", code,
                              quote(sig).c_str(), why);
      size_t sig_pos = 0;
      if (!walker.value(sig, &sig_pos, kHeaderFieldValueDepth)) return false;
      continue;
    }

    const KnownField& known = kKnownFields[code];
    if (sig.size() != 1 || sig[0] != known.type)
      return walker.fail_at(field_start, "header field %s has type %s, not “%c”", known.name, quote(sig).c_str(),
                            known.type);
    if (!walker.count()) return false;  // the value
    size_t value_start = walker.pos();
    if (known.type == 'u') {
      uint32_t number = 0;
      if (!walker.uint32("a header field's value", &number)) return false;
      if (code == kFieldReplySerial) {
        header.has_reply_serial = true;
        header.reply_serial = number;
      } else {
        header.unix_fds = number;
      }
      continue;
    }
    g_autofree char* label = g_strdup_printf("header field %s", known.name);
    std::string_view text;
    if (!walker.string_like(known.type, &text, label)) return false;
    bool valid = true;
    const char* kind = nullptr;
    switch (code) {
      case kFieldPath:
        header.path = text;
        break;
      case kFieldInterface:
        valid = is_valid_interface_name(text);
        kind = "an interface name";
        header.interface_name = text;
        break;
      case kFieldMember:
        valid = is_valid_member_name(text);
        kind = "a member name";
        header.member = text;
        break;
      case kFieldErrorName:
        valid = is_valid_interface_name(text);
        kind = "an error name";
        header.error_name = text;
        break;
      case kFieldDestination:
        valid = is_valid_bus_name(text);
        kind = "a bus name";
        header.destination = text;
        break;
      case kFieldSender:
        valid = is_valid_bus_name(text);
        kind = "a bus name";
        header.sender = text;
        break;
      case kFieldSignature:
        header.signature = text;
        break;
    }
    if (!valid)
      return walker.fail_at(value_start, "header field %s %s is not %s", known.name, quote(text).c_str(), kind);
  }

  walker.set_limit(header_size, nullptr);
  if (!walker.align(8)) return false;  // to the end of the header

  if (walker.saw_handle() && walker.largest_handle() >= header.unix_fds)
    return fail(error, "a header field holds file descriptor index %u, but the message carries %u (UNIX_FDS)",
                walker.largest_handle(), header.unix_fds);

  const char* missing = nullptr;
  switch (header.fixed.type) {
    case MessageType::MethodCall:
      missing = header.path.empty() ? "PATH" : header.member.empty() ? "MEMBER" : nullptr;
      break;
    case MessageType::Signal:
      missing = header.path.empty()             ? "PATH"
                : header.interface_name.empty() ? "INTERFACE"
                : header.member.empty()         ? "MEMBER"
                                                : nullptr;
      break;
    case MessageType::Error:
      missing = header.error_name.empty() ? "ERROR_NAME" : !header.has_reply_serial ? "REPLY_SERIAL" : nullptr;
      break;
    case MessageType::MethodReturn:
      missing = !header.has_reply_serial ? "REPLY_SERIAL" : nullptr;
      break;
    default:
      break;  // unknown types require nothing
  }
  if (missing != nullptr) {
    static const char* const type_names[] = {"", "a METHOD_CALL", "a METHOD_RETURN", "an ERROR", "a SIGNAL"};
    return fail(error, "%s message needs the %s header field", type_names[static_cast<uint8_t>(header.fixed.type)],
                missing);
  }
  header.field_elements = walker.elements();
  *out = std::move(header);
  return true;
}

bool scan_body(const MessageHeader& header, const uint8_t* body, size_t length, uint64_t max_elements,
               BodyStats* out, GError** error) {
  size_t body_length = header.fixed.body_length;
  if (length < body_length)
    return fail(error, "the body is cut short: %zu bytes, the header announces %zu", length, body_length);
  const std::string& sig = header.signature;
  if (sig.empty()) {
    if (body_length != 0)
      return fail(error, "the body is %zu bytes long, but the message has no signature (so no body)", body_length);
    *out = BodyStats{};
    return true;
  }
  // parse_header() checked it; a header from elsewhere is checked here.
  const char* why = nullptr;
  if (!check_signature(sig, false, &why))
    return fail(error, "body signature %s is not valid: %s", quote(sig).c_str(), why);

  Walker walker(body, body_length, header.fixed.little_endian, "body", max_elements, error);
  walker.check_handles_against(header.unix_fds);
  size_t sig_pos = 0;
  while (sig_pos < sig.size())
    if (!walker.value(sig, &sig_pos, 0)) return false;
  if (walker.pos() != body_length)
    return walker.fail_at(walker.pos(), "%zu bytes follow the last value of signature %s", body_length - walker.pos(),
                          quote(sig).c_str());
  out->elements = walker.elements();
  return true;
}

std::vector<uint8_t> encode_error(uint32_t serial, uint32_t reply_serial, std::string_view destination,
                                  std::string_view error_name, std::string_view message) {
  g_return_val_if_fail(serial != 0, std::vector<uint8_t>());
  Writer w;
  w.u8('l');
  w.u8(static_cast<uint8_t>(MessageType::Error));
  w.u8(kFlagNoReplyExpected);  // nothing answers an error
  w.u8(1);
  w.u32(0);  // body length, patched below
  w.u32(serial);
  w.u32(0);  // header fields length, patched below

  auto field = [&](uint8_t code, const char* type) {
    w.align(8);
    w.u8(code);
    w.signature(type);
  };
  field(kFieldReplySerial, "u");
  w.u32(reply_serial);
  field(kFieldErrorName, "s");
  w.string(is_valid_interface_name(error_name) ? error_name : "org.freedesktop.DBus.Error.Failed");
  if (is_valid_bus_name(destination)) {
    field(kFieldDestination, "s");
    w.string(destination);
  }
  field(kFieldSignature, "g");
  w.signature("s");
  w.patch32(12, uint32_t(w.bytes.size() - kFixedHeaderSize));
  w.align(8);

  size_t body_start = w.bytes.size();
  w.string(make_valid_text(message, kMaxErrorMessageLength));
  w.patch32(4, uint32_t(w.bytes.size() - body_start));
  return std::move(w.bytes);
}

}  // namespace sidebus::wire
