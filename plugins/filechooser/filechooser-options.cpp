// SPDX-License-Identifier: LGPL-2.1-or-later
// filechooser-options.cpp — what a guest may ask of the host's file chooser.
//
// One table per method, as documented in org.freedesktop.portal.FileChooser
// (version 4): key, type, validator. sidebus_filter_options() drops every key
// a table does not name and rejects wrong types, so adding an option is one
// line here. The validators cap sizes (the guest is untrusted and the host
// dialog has to render all of it) and apply the same rules the host portal
// applies, so a malformed call is refused here with a clear message instead
// of half-way through on the host. Options that carry guest paths are then
// translated (filechooser-paths.cpp); parent_window never gets here: a guest
// window handle means nothing on the host.
#include <climits>
#include <cstdarg>
#include <cstring>
#include <span>

#include "filechooser.hpp"

namespace filechooser {

namespace {

constexpr gsize kMaxTextLength = 1024;    // labels, names, patterns
constexpr gsize kMaxFilters = 256;
constexpr gsize kMaxFilterPatterns = 256;
constexpr gsize kMaxChoices = 64;
constexpr gsize kMaxChoiceOptions = 256;
constexpr gsize kMaxFiles = 4096;         // SaveFiles: names to save
constexpr gsize kMaxFileNameLength = NAME_MAX;

gboolean invalid(GError** error, const char* format, ...) G_GNUC_PRINTF(2, 3);
gboolean invalid(GError** error, const char* format, ...) {
  va_list args;
  va_start(args, format);
  g_autofree char* message = g_strdup_vprintf(format, args);
  va_end(args);
  g_set_error_literal(error, SIDEBUS_ERROR, SIDEBUS_ERROR_INVALID_ARGUMENT, message);
  return FALSE;
}

bool check_count(GVariant* array, gsize limit, const char* what, GError** error) {
  if (g_variant_n_children(array) <= limit) return true;
  invalid(error, "too many %s (%zu, at most %zu)", what, g_variant_n_children(array), limit);
  return false;
}

// @what names the string in the error. Strings from the bus are UTF-8
// already; checking again costs nothing and keeps this safe for any caller.
bool check_text(const char* text, bool may_be_empty, const char* what, GError** error) {
  if (!may_be_empty && text[0] == '\0') return invalid(error, "%s is empty", what);
  if (strlen(text) > kMaxTextLength) return invalid(error, "%s is longer than %zu bytes", what, kMaxTextLength);
  if (!g_utf8_validate(text, -1, nullptr)) return invalid(error, "%s is not UTF-8", what);
  return true;
}

// A byte string the XML says is "expected to be null-terminated": exactly one
// NUL, at the end, so C code on the host reads the same path we checked.
bool check_bytestring(GVariant* value, gsize max_length, const char* what, GError** error) {
  gsize length;
  const char* bytes = static_cast<const char*>(g_variant_get_fixed_array(value, &length, 1));
  if (length == 0 || bytes[length - 1] != '\0') return invalid(error, "%s is not NUL-terminated", what);
  if (memchr(bytes, '\0', length - 1) != nullptr) return invalid(error, "%s contains a NUL byte", what);
  if (length - 1 > max_length) return invalid(error, "%s is longer than %zu bytes", what, max_length);
  return true;
}

// (sa(us)): a name and at least one glob (0) or MIME type (1).
bool check_filter(GVariant* filter, GError** error) {
  const char* name;
  g_autoptr(GVariant) patterns = nullptr;
  g_variant_get(filter, "(&s@a(us))", &name, &patterns);
  if (!check_text(name, false, "filter name", error)) return false;
  if (g_variant_n_children(patterns) == 0) return invalid(error, "filter '%s' has no patterns", name);
  if (!check_count(patterns, kMaxFilterPatterns, "patterns in one filter", error)) return false;
  GVariantIter iter;
  guint32 type;
  const char* pattern;
  g_variant_iter_init(&iter, patterns);
  while (g_variant_iter_next(&iter, "(u&s)", &type, &pattern)) {
    if (type > 1) return invalid(error, "filter '%s': pattern type %u is neither 0 (glob) nor 1 (MIME type)", name, type);
    if (!check_text(pattern, false, type == 0 ? "glob pattern" : "MIME type", error)) return false;
  }
  return true;
}

// (sidebus_filter_options() prefixes every message with the option's name.)
gboolean validate_text(SidebusContext*, const char*, GVariant* value, GError** error) {
  return check_text(g_variant_get_string(value, nullptr), true, "the text", error);
}

gboolean validate_filters(SidebusContext*, const char*, GVariant* value, GError** error) {
  if (!check_count(value, kMaxFilters, "filters", error)) return FALSE;
  for (gsize i = 0; i < g_variant_n_children(value); i++) {
    g_autoptr(GVariant) filter = g_variant_get_child_value(value, i);
    if (!check_filter(filter, error)) return FALSE;
  }
  return TRUE;
}

gboolean validate_current_filter(SidebusContext*, const char*, GVariant* value, GError** error) {
  return check_filter(value, error);
}

// (ssa(ss)s): id, label, options (empty: a boolean check box), initial choice.
bool check_choice(GVariant* choice, GError** error) {
  const char *id, *label, *selected;
  g_autoptr(GVariant) options = nullptr;
  g_variant_get(choice, "(&s&s@a(ss)&s)", &id, &label, &options, &selected);
  if (!check_text(id, false, "choice id", error) || !check_text(label, false, "choice label", error) ||
      !check_text(selected, true, "initial choice", error))
    return false;
  if (!check_count(options, kMaxChoiceOptions, "options in one choice", error)) return false;
  if (g_variant_n_children(options) == 0) {
    if (*selected != '\0' && strcmp(selected, "true") != 0 && strcmp(selected, "false") != 0)
      return invalid(error, "choice '%s' is a check box; its initial value '%s' is not \"true\" or \"false\"", id,
                     selected);
    return true;
  }
  bool seen = *selected == '\0';
  GVariantIter iter;
  const char *option_id, *option_label;
  g_variant_iter_init(&iter, options);
  while (g_variant_iter_next(&iter, "(&s&s)", &option_id, &option_label)) {
    if (!check_text(option_id, false, "choice option id", error) ||
        !check_text(option_label, false, "choice option label", error))
      return false;
    seen = seen || strcmp(option_id, selected) == 0;
  }
  if (!seen) return invalid(error, "choice '%s': the initial choice '%s' is not one of its options", id, selected);
  return true;
}

gboolean validate_choices(SidebusContext*, const char*, GVariant* value, GError** error) {
  if (!check_count(value, kMaxChoices, "choices", error)) return FALSE;
  for (gsize i = 0; i < g_variant_n_children(value); i++) {
    g_autoptr(GVariant) choice = g_variant_get_child_value(value, i);
    if (!check_choice(choice, error)) return FALSE;
  }
  return TRUE;
}

gboolean validate_path(SidebusContext*, const char*, GVariant* value, GError** error) {
  return check_bytestring(value, PATH_MAX - 1, "the path", error);
}

// SaveFiles names files to create inside the chosen folder: plain names only.
gboolean validate_files(SidebusContext*, const char*, GVariant* value, GError** error) {
  if (!check_count(value, kMaxFiles, "files", error)) return FALSE;
  for (gsize i = 0; i < g_variant_n_children(value); i++) {
    g_autoptr(GVariant) file = g_variant_get_child_value(value, i);
    if (!check_bytestring(file, kMaxFileNameLength, "a file name", error)) return FALSE;
    const char* name = g_variant_get_bytestring(file);
    if (name[0] == '\0' || strchr(name, '/') != nullptr || strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
      return invalid(error, "'%s' is not a plain file name", name);
  }
  return TRUE;
}

// The tables, as documented for each method (version 4).
constexpr SidebusOption kOpenFileOptions[] = {
    {"accept_label", "s", validate_text},
    {"modal", "b", nullptr},
    {"multiple", "b", nullptr},
    {"directory", "b", nullptr},
    {"filters", "a(sa(us))", validate_filters},
    {"current_filter", "(sa(us))", validate_current_filter},
    {"choices", "a(ssa(ss)s)", validate_choices},
    {"current_folder", "ay", validate_path},
};

constexpr SidebusOption kSaveFileOptions[] = {
    {"accept_label", "s", validate_text},
    {"modal", "b", nullptr},
    {"filters", "a(sa(us))", validate_filters},
    {"current_filter", "(sa(us))", validate_current_filter},
    {"choices", "a(ssa(ss)s)", validate_choices},
    {"current_name", "s", validate_text},
    {"current_folder", "ay", validate_path},
    {"current_file", "ay", validate_path},
};

constexpr SidebusOption kSaveFilesOptions[] = {
    {"accept_label", "s", validate_text},
    {"modal", "b", nullptr},
    {"choices", "a(ssa(ss)s)", validate_choices},
    {"current_folder", "ay", validate_path},
    {"files", "aay", validate_files},
};

std::span<const SidebusOption> table_for(Method method) {
  switch (method) {
    case Method::OpenFile: return kOpenFileOptions;
    case Method::SaveFile: return kSaveFileOptions;
    case Method::SaveFiles: return kSaveFilesOptions;
  }
  g_assert_not_reached();
}

bool is_path_option(const char* key) { return strcmp(key, "current_folder") == 0 || strcmp(key, "current_file") == 0; }

// As the host portal requires: with a non-empty filter list, current_filter
// must be one of them. (A validator sees one key; this needs two.)
bool check_current_filter_is_listed(GVariant* options, GError** error) {
  g_autoptr(GVariant) current = g_variant_lookup_value(options, "current_filter", G_VARIANT_TYPE("(sa(us))"));
  g_autoptr(GVariant) filters = g_variant_lookup_value(options, "filters", G_VARIANT_TYPE("a(sa(us))"));
  if (current == nullptr || filters == nullptr || g_variant_n_children(filters) == 0) return true;
  for (gsize i = 0; i < g_variant_n_children(filters); i++) {
    g_autoptr(GVariant) filter = g_variant_get_child_value(filters, i);
    if (g_variant_equal(filter, current)) return true;
  }
  return invalid(error, "option 'current_filter' must be one of 'filters' when that list is not empty");
}

}  // namespace

GVariant* host_options_for(SidebusContext* context, Method method, GVariant* guest_options, GError** error) {
  std::span<const SidebusOption> table = table_for(method);
  g_autoptr(GVariant) filtered = sidebus_filter_options(context, guest_options, table.data(), table.size(), error);
  if (filtered == nullptr || !check_current_filter_is_listed(filtered, error)) return nullptr;

  g_auto(GVariantBuilder) host_options = G_VARIANT_BUILDER_INIT(G_VARIANT_TYPE_VARDICT);
  GVariantIter iter;
  const char* key;
  GVariant* value;
  g_variant_iter_init(&iter, filtered);
  while (g_variant_iter_loop(&iter, "{&sv}", &key, &value)) {
    if (!is_path_option(key)) {
      g_variant_builder_add(&host_options, "{sv}", key, value);
      continue;
    }
    g_autofree char* host_path = host_path_for_guest_path(context, key, g_variant_get_bytestring(value));
    if (host_path != nullptr) g_variant_builder_add(&host_options, "{sv}", key, g_variant_new_bytestring(host_path));
  }
  return g_variant_ref_sink(g_variant_builder_end(&host_options));
}

}  // namespace filechooser
