// email-address.hpp — which e-mail addresses a VM may hand to the host's
// mail composer.
//
// xdg-desktop-portal checks addresses against a pattern (1.16: word
// characters joined by - + or .; newer: the WHATWG "valid e-mail address",
// which allows ! # $ % & ' * / = ? ^ ` { | } ~ in the local part). Its
// backends then put them into a mailto: URI or a command line without
// escaping them (xdg-desktop-portal-gtk: "mailto:<addresses>?cc=…&
// attachment=<path>"), so "a?attachment=/home/u/.ssh/id_rsa&b@example.com",
// valid for the newer pattern, would attach a host file. A VM gets the
// intersection, which is what real addresses use: the local part is ASCII
// letters, digits and _, in runs joined by one of - + . (no leading,
// trailing or doubled separator); the domain is LDH labels of 1 to 63
// characters joined by dots; at most 64 bytes before the @ and 254 in all
// (RFC 5321). Kept apart so it is fuzzed on its own (fuzz-email-address.cpp).
#pragma once

#include <cstddef>

namespace sidebus::email {

inline constexpr std::size_t kMaxAddressLength = 254;
inline constexpr std::size_t kMaxLocalPartLength = 64;

bool is_valid_address(const char* address);

}  // namespace sidebus::email
