// fuzz-email-address.cpp — libFuzzer target for is_valid_address()
// (email-address.hpp; corpus: tests/fuzz/email-address/; docs/testing.md,
// "Fuzzing"). Each input is one address from the guest, up to its first NUL.
// What the check promises, whatever the input: an accepted address is at
// most 254 bytes, has exactly one "@" with at most 64 bytes before it, and
// holds nothing but ASCII letters, digits and "_-+.@" — none of the
// characters that would change the meaning of the mailto: URI or command
// line a host backend puts it into.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "email-address.hpp"

using namespace sidebus::email;

namespace {

void check(bool condition, const char* what, const std::string& address) {
  if (condition) return;
  fprintf(stderr, "fuzz-email-address: %s, for \"%s\"\n", what, address.c_str());
  abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const unsigned char* data, size_t size) {
  std::string address(reinterpret_cast<const char*>(data), strnlen(reinterpret_cast<const char*>(data), size));
  if (!is_valid_address(address.c_str())) return 0;
  check(address.size() <= kMaxAddressLength, "an accepted address is too long", address);
  size_t at = address.find('@');
  check(at != std::string::npos && address.find('@', at + 1) == std::string::npos, "not exactly one @", address);
  check(at >= 1 && at <= kMaxLocalPartLength, "the local part is empty or too long", address);
  check(at + 1 < address.size(), "the domain is empty", address);
  for (char c : address)
    check((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || strchr("_-+.@", c) != nullptr,
          "an accepted address holds a character outside [A-Za-z0-9_-+.@]", address);
  check(address.find("..") == std::string::npos, "doubled dots", address);
  check(address[0] != '.' && address.back() != '.' && address.back() != '-', "a separator at an end", address);
  return 0;
}
