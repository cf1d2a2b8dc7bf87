// SPDX-License-Identifier: LGPL-2.1-or-later
// variant.cpp — the GVariant helpers of variant.hpp.
#include "support/variant.hpp"

#include "support/process.hpp"

namespace sidebus::test {

VariantPtr parse(const char* type, const std::string& text) {
  g_autoptr(GError) error = nullptr;
  GVariant* value = g_variant_parse(G_VARIANT_TYPE(type), text.c_str(), nullptr, nullptr, &error);
  if (value == nullptr) throw FixtureError("bad GVariant text in the test: " + text + ": " + error->message);
  return VariantPtr(g_variant_ref_sink(value));
}

VariantPtr lookup_optional(GVariant* dict, const char* key) {
  return VariantPtr(dict != nullptr ? g_variant_lookup_value(dict, key, nullptr) : nullptr);
}

VariantPtr lookup(GVariant* dict, const char* key) {
  VariantPtr value = lookup_optional(dict, key);
  if (!value) {
    g_autofree char* text = dict != nullptr ? g_variant_print(dict, TRUE) : g_strdup("(no dict)");
    g_error("no %s in %s", key, text);
  }
  return value;
}

bool has_key(GVariant* dict, const char* key) { return lookup_optional(dict, key) != nullptr; }

namespace {

bool is_string(GVariant* value) {
  return g_variant_is_of_type(value, G_VARIANT_TYPE_STRING) || g_variant_is_of_type(value, G_VARIANT_TYPE_OBJECT_PATH);
}

}  // namespace

std::string lookup_string(GVariant* dict, const char* key) {
  VariantPtr value = lookup(dict, key);
  if (!is_string(value.get())) g_error("%s is of type %s, not a string", key, g_variant_get_type_string(value.get()));
  return g_variant_get_string(value.get(), nullptr);
}

std::string lookup_string_or(GVariant* dict, const char* key, const std::string& fallback) {
  VariantPtr value = lookup_optional(dict, key);
  return value && is_string(value.get()) ? g_variant_get_string(value.get(), nullptr) : fallback;
}

std::vector<std::string> strv(GVariant* dict, const char* key) {
  std::vector<std::string> out;
  g_autofree const char** values = nullptr;
  if (dict != nullptr && g_variant_lookup(dict, key, "^a&s", &values))
    for (const char** value = values; *value != nullptr; value++) out.emplace_back(*value);
  return out;
}

std::string bytestring(GVariant* dict, const char* key) {
  VariantPtr value = lookup_optional(dict, key);
  if (!value || !g_variant_is_of_type(value.get(), G_VARIANT_TYPE_BYTESTRING)) return "(absent)";
  return g_variant_get_bytestring(value.get());
}

std::string bytes_of(GVariant* ay) {
  gsize size = 0;
  const void* data = g_variant_get_fixed_array(ay, &size, 1);
  return std::string(static_cast<const char*>(data), size);
}

void assert_same(GVariant* got, const char* type, const std::string& expected_text) {
  g_assert_nonnull(got);
  VariantPtr expected = parse(type, expected_text);
  if (g_variant_equal(got, expected.get())) return;
  g_autofree char* got_text = g_variant_print(got, TRUE);
  g_autofree char* want_text = g_variant_print(expected.get(), TRUE);
  g_assert_cmpstr(got_text, ==, want_text);
  g_error("got %s, expected %s (of type %s)", got_text, want_text, type);
}

}  // namespace sidebus::test
