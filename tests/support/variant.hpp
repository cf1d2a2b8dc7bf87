// SPDX-License-Identifier: LGPL-2.1-or-later
// variant.hpp — GVariant helpers for what portals send and answer: GVariant
// text (parse), a{sv} look-ups, the value shapes the portals use (string
// arrays, bytestrings, byte arrays) and one assertion that compares a value
// with GVariant text.
#pragma once

#include <glib.h>

#include <string>
#include <vector>

#include "util/gobject-ptr.hpp"

namespace sidebus::test {

using sidebus::GObjectPtr;
using sidebus::VariantPtr;

// GVariant text of @type (FixtureError if it does not parse), sunk.
VariantPtr parse(const char* type, const std::string& text);

// @key's value in the a{sv} @dict; fails the test (naming the key and the
// dict) when @dict is null or has no @key.
VariantPtr lookup(GVariant* dict, const char* key);
// The same, or nullptr when @dict is null or has no @key.
VariantPtr lookup_optional(GVariant* dict, const char* key);
bool has_key(GVariant* dict, const char* key);
// A string (or object path) value; fails the test when absent or of another type.
std::string lookup_string(GVariant* dict, const char* key);
// The same, or @fallback when absent or of another type.
std::string lookup_string_or(GVariant* dict, const char* key, const std::string& fallback = "");
// An "as" value; empty when absent.
std::vector<std::string> strv(GVariant* dict, const char* key);
// A bytestring ("ay" ending in NUL) value; "(absent)" when absent or not one.
std::string bytestring(GVariant* dict, const char* key);
// The bytes of an "ay" value, NULs included.
std::string bytes_of(GVariant* ay);

// Fails the test unless @got is non-null and equal to @expected_text (of
// @type), printing both.
void assert_same(GVariant* got, const char* type, const std::string& expected_text);

}  // namespace sidebus::test
