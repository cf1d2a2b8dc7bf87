// guest-text.hpp — strings from the guest that a host dialog shows or a host
// program receives (titles, labels, e-mail subjects and bodies, print
// settings): bounded, UTF-8, and free of what makes text display as
// something it is not. Shared by the plugins (plugins/common/).
#pragma once

#include <sidebus-plugin.h>

namespace sidebus::common {

enum class TextLines {
  kOne,    // a title, a label, an address: no control characters at all
  kMany,   // a body: tab, line feed and carriage return allowed
};

// Checks @text: at most @max_bytes bytes, valid UTF-8, no ASCII or C1 control
// characters (but those kMany allows), no bidirectional overrides or
// isolates (U+202A–U+202E, U+2066–U+2069), which let text read differently
// from what it is. @what names the string in the error (INVALID_ARGUMENT).
bool check_guest_text(const char* text, gsize max_bytes, TextLines lines, const char* what, GError** error);

// An SidebusOptionValidator-shaped check for a one-line string option of at
// most 1024 bytes.
gboolean validate_one_line(SidebusContext* context, const char* key, GVariant* value, GError** error);

// An activation token (XDG activation, X11 startup id): it ends up in a host
// program's environment — printable ASCII, at most 1024 bytes.
gboolean validate_activation_token(SidebusContext* context, const char* key, GVariant* value, GError** error);

}  // namespace sidebus::common
