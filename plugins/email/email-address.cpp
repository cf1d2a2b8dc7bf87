// email-address.cpp — the address check (see email-address.hpp).
#include "email-address.hpp"

#include <cstring>

namespace sidebus::email {
namespace {

bool is_ascii_alnum(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'); }

// word ([-+.] word)*, word = [A-Za-z0-9_]+
bool is_local_part(const char* begin, const char* end) {
  if (begin == end || end - begin > std::ptrdiff_t(kMaxLocalPartLength)) return false;
  bool after_separator = true;  // at the start, a separator is as wrong as after one
  for (const char* c = begin; c < end; c++) {
    if (is_ascii_alnum(*c) || *c == '_') {
      after_separator = false;
    } else if (*c == '-' || *c == '+' || *c == '.') {
      if (after_separator) return false;
      after_separator = true;
    } else {
      return false;
    }
  }
  return !after_separator;
}

// label (. label)*, label = [A-Za-z0-9] ([A-Za-z0-9-]{0,61} [A-Za-z0-9])?
bool is_domain(const char* begin, const char* end) {
  if (begin == end) return false;
  const char* label = begin;
  for (const char* c = begin; c <= end; c++) {
    if (c < end && *c != '.') {
      if (!is_ascii_alnum(*c) && *c != '-') return false;
      continue;
    }
    std::ptrdiff_t length = c - label;
    if (length < 1 || length > 63 || label[0] == '-' || c[-1] == '-') return false;
    label = c + 1;
  }
  return true;
}

}  // namespace

bool is_valid_address(const char* address) {
  std::size_t length = strnlen(address, kMaxAddressLength + 1);
  if (length == 0 || length > kMaxAddressLength) return false;
  const char* end = address + length;
  const char* at = static_cast<const char*>(memchr(address, '@', length));
  if (at == nullptr) return false;
  return is_local_part(address, at) && is_domain(at + 1, end);
}

}  // namespace sidebus::email
