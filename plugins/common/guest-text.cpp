// guest-text.cpp — checks of strings from the guest (see guest-text.hpp).
#include "guest-text.hpp"

#include <cstring>

namespace sidebus::common {
namespace {

constexpr gsize kMaxOneLine = 1024;
constexpr gsize kMaxActivationTokenLength = 1024;

bool is_bidi_control(gunichar c) {
  return (c >= 0x202a && c <= 0x202e) || (c >= 0x2066 && c <= 0x2069);
}

}  // namespace

bool check_guest_text(const char* text, gsize max_bytes, TextLines lines, const char* what, GError** error) {
  gsize length = strnlen(text, max_bytes + 1);
  if (length > max_bytes) {
    g_set_error(error, SIDEBUS_ERROR, SIDEBUS_ERROR_INVALID_ARGUMENT, "%s is longer than %zu bytes", what, max_bytes);
    return false;
  }
  const char* end = nullptr;
  if (!g_utf8_validate(text, gssize(length), &end)) {
    g_set_error(error, SIDEBUS_ERROR, SIDEBUS_ERROR_INVALID_ARGUMENT, "%s is not valid UTF-8 (at byte %zu)", what,
                gsize(end - text));
    return false;
  }
  for (const char* p = text; *p != '\0'; p = g_utf8_next_char(p)) {
    gunichar c = g_utf8_get_char(p);
    bool allowed_control = lines == TextLines::kMany && (c == '\t' || c == '\n' || c == '\r');
    if ((c < 0x20 || c == 0x7f || (c >= 0x80 && c <= 0x9f)) && !allowed_control) {
      g_set_error(error, SIDEBUS_ERROR, SIDEBUS_ERROR_INVALID_ARGUMENT,
                  "%s contains the control character U+%04X at byte %zu", what, c, gsize(p - text));
      return false;
    }
    if (is_bidi_control(c)) {
      g_set_error(error, SIDEBUS_ERROR, SIDEBUS_ERROR_INVALID_ARGUMENT,
                  "%s contains the bidirectional formatting character U+%04X at byte %zu", what, c, gsize(p - text));
      return false;
    }
  }
  return true;
}

gboolean validate_one_line(SidebusContext*, const char*, GVariant* value, GError** error) {
  return check_guest_text(g_variant_get_string(value, nullptr), kMaxOneLine, TextLines::kOne, "the text", error);
}

gboolean validate_activation_token(SidebusContext*, const char*, GVariant* value, GError** error) {
  gsize length;
  const char* token = g_variant_get_string(value, &length);
  if (length > kMaxActivationTokenLength) {
    g_set_error(error, SIDEBUS_ERROR, SIDEBUS_ERROR_INVALID_ARGUMENT, "longer than %zu bytes",
                kMaxActivationTokenLength);
    return FALSE;
  }
  for (const char* c = token; *c != '\0'; c++) {
    if (*c < 0x20 || *c > 0x7e) {
      g_set_error(error, SIDEBUS_ERROR, SIDEBUS_ERROR_INVALID_ARGUMENT, "not printable ASCII");
      return FALSE;
    }
  }
  return TRUE;
}

}  // namespace sidebus::common
