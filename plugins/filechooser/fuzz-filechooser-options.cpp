// SPDX-License-Identifier: LGPL-2.1-or-later
// fuzz-filechooser-options.cpp — libFuzzer target for host_options_for()
// (filechooser-options.cpp, filechooser-paths.cpp; corpus:
// tests/fuzz/filechooser-options/; docs/testing.md, "Fuzzing").
//
// Each input is what a guest sends as FileChooser options: the first byte
// picks the method (OpenFile, SaveFile, SaveFiles: byte % 3), the rest is a
// serialized a{sv}, taken as untrusted bytes (g_variant_new_from_bytes(),
// trusted = FALSE; not necessarily in normal form) and also in its normal
// form (what GDBus hands a handler). The options go through the plugin's
// real tables and validators (sidebus_filter_options(), core/api/options.cpp)
// on a SidebusContext without a link, as a released one: paths cannot be
// translated there. Whatever the input:
//  - more than SIDEBUS_MAX_OPTIONS keys always fails;
//  - a failure is SIDEBUS_ERROR_INVALID_ARGUMENT whose message starts with
//    "option '<key>'" for a key of the method's table that the input holds
//    (or is the count's message, "<n> options, at most …");
//  - a success is exactly the input's entries, in order, whose key is in the
//    method's table (kTables: key and type, as filechooser-options.cpp
//    documents them), each of its declared type, minus current_folder and
//    current_file (guest paths never pass untranslated: without a link there
//    is nothing to translate them to); never handle_token or
//    session_handle_token;
//  - a success respects the caps: every string at most 1024 bytes; filters
//    (at most 256) each named, with 1 to 256 patterns of type 0 or 1;
//    current_filter one of the filters if those are not empty; choices (at
//    most 64) with at most 256 options; files (at most 4096) plain names,
//    NUL-terminated, at most NAME_MAX bytes;
//  - filtering is idempotent: a result, filtered again, comes back equal;
//  - the untrusted bytes and their normal form get the same verdict: equal
//    results, or the same error message.
//
// LeakSanitizer only sees what GLib allocates with G_SLICE=always-malloc in
// the environment (else g_slice keeps it reachable): that is how the leak of
// every refused option (crash-e756d8c9…, fixed in options.cpp) showed.
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "api/context.hpp"
#include "filechooser.hpp"

using filechooser::Method;

namespace {

struct Option {
  const char* key;
  const char* type;
};
struct Table {
  const char* method;
  std::vector<Option> options;
};
// The tables of filechooser-options.cpp, by org.freedesktop.portal.FileChooser (version 4).
const Table kTables[] = {
    {"OpenFile",
     {{"accept_label", "s"},
      {"modal", "b"},
      {"multiple", "b"},
      {"directory", "b"},
      {"filters", "a(sa(us))"},
      {"current_filter", "(sa(us))"},
      {"choices", "a(ssa(ss)s)"},
      {"current_folder", "ay"}}},
    {"SaveFile",
     {{"accept_label", "s"},
      {"modal", "b"},
      {"filters", "a(sa(us))"},
      {"current_filter", "(sa(us))"},
      {"choices", "a(ssa(ss)s)"},
      {"current_name", "s"},
      {"current_folder", "ay"},
      {"current_file", "ay"}}},
    {"SaveFiles",
     {{"accept_label", "s"},
      {"modal", "b"},
      {"choices", "a(ssa(ss)s)"},
      {"current_folder", "ay"},
      {"files", "aay"}}},
};

std::string current_input;

[[noreturn]] void fail(const std::string& what, GVariant* options) {
  g_autofree char* shown = options != nullptr ? g_variant_print(options, TRUE) : g_strdup("(none)");
  if (strlen(shown) > 4096) strcpy(shown + 4093, "...");
  fprintf(stderr, "fuzz-filechooser-options: %s, for the %zu-byte input (method byte %u) %s\n", what.c_str(),
          current_input.size(), current_input.empty() ? 0u : unsigned(guint8(current_input[0])), shown);
  abort();
}

void check(bool condition, const std::string& what, GVariant* options) {
  if (!condition) fail(what, options);
}

GLogWriterOutput log_writer(GLogLevelFlags level, const GLogField* fields, gsize n_fields, gpointer) {
  if (level & (G_LOG_LEVEL_CRITICAL | G_LOG_LEVEL_ERROR)) {
    g_log_writer_standard_streams(level, fields, n_fields, nullptr);
    fail("a critical was logged", nullptr);
  }
  return G_LOG_WRITER_HANDLED;  // the plugin's debug and "dropping option" lines
}

const char* declared_type(const Table& table, const char* key) {
  for (const Option& option : table.options)
    if (strcmp(option.key, key) == 0) return option.type;
  return nullptr;
}

bool is_path_option(const char* key) { return strcmp(key, "current_folder") == 0 || strcmp(key, "current_file") == 0; }

bool input_has_key(GVariant* options, const std::string& key) {
  GVariantIter iter;
  const char* name;
  g_variant_iter_init(&iter, options);
  while (g_variant_iter_next(&iter, "{&sv}", &name, nullptr))
    if (key == name) return true;
  return false;
}

// What a success must be: the input's entries that the table names, in
// order, but the guest paths.
GVariant* expected_result(const Table& table, GVariant* options) {
  GVariantBuilder builder;
  g_variant_builder_init(&builder, G_VARIANT_TYPE_VARDICT);
  GVariantIter iter;
  const char* key;
  GVariant* value;
  g_variant_iter_init(&iter, options);
  while (g_variant_iter_loop(&iter, "{&sv}", &key, &value))
    if (declared_type(table, key) != nullptr && !is_path_option(key))
      g_variant_builder_add(&builder, "{sv}", key, value);
  return g_variant_ref_sink(g_variant_builder_end(&builder));
}

bool all_strings_capped(GVariant* value) {
  if (g_variant_is_of_type(value, G_VARIANT_TYPE_STRING)) {
    gsize length;
    g_variant_get_string(value, &length);
    return length <= 1024;
  }
  if (!g_variant_is_container(value)) return true;
  for (gsize i = 0; i < g_variant_n_children(value); i++) {
    g_autoptr(GVariant) child = g_variant_get_child_value(value, i);
    if (!all_strings_capped(child)) return false;
  }
  return true;
}

bool filter_ok(GVariant* filter) {
  const char* name;
  g_autoptr(GVariant) patterns = nullptr;
  g_variant_get(filter, "(&s@a(us))", &name, &patterns);
  gsize n = g_variant_n_children(patterns);
  if (name[0] == '\0' || n == 0 || n > 256) return false;
  for (gsize i = 0; i < n; i++) {
    guint32 type;
    const char* pattern;
    g_variant_get_child(patterns, i, "(u&s)", &type, &pattern);
    if (type > 1 || pattern[0] == '\0') return false;
  }
  return true;
}

void check_caps(GVariant* result) {
  check(all_strings_capped(result), "a string of the result is longer than 1024 bytes", result);
  g_autoptr(GVariant) filters = g_variant_lookup_value(result, "filters", G_VARIANT_TYPE("a(sa(us))"));
  g_autoptr(GVariant) current = g_variant_lookup_value(result, "current_filter", G_VARIANT_TYPE("(sa(us))"));
  g_autoptr(GVariant) choices = g_variant_lookup_value(result, "choices", G_VARIANT_TYPE("a(ssa(ss)s)"));
  g_autoptr(GVariant) files = g_variant_lookup_value(result, "files", G_VARIANT_TYPE("aay"));
  if (filters != nullptr) {
    check(g_variant_n_children(filters) <= 256, "more than 256 filters passed", result);
    bool listed = g_variant_n_children(filters) == 0;
    for (gsize i = 0; i < g_variant_n_children(filters); i++) {
      g_autoptr(GVariant) filter = g_variant_get_child_value(filters, i);
      check(filter_ok(filter), "a bad filter passed", result);
      listed = listed || (current != nullptr && g_variant_equal(filter, current));
    }
    check(current == nullptr || listed, "current_filter passed without being one of the filters", result);
  }
  if (current != nullptr) check(filter_ok(current), "a bad current_filter passed", result);
  if (choices != nullptr) {
    check(g_variant_n_children(choices) <= 64, "more than 64 choices passed", result);
    for (gsize i = 0; i < g_variant_n_children(choices); i++) {
      g_autoptr(GVariant) choice = g_variant_get_child_value(choices, i);
      g_autoptr(GVariant) options = g_variant_get_child_value(choice, 2);
      check(g_variant_n_children(options) <= 256, "a choice with more than 256 options passed", result);
    }
  }
  if (files != nullptr) {
    check(g_variant_n_children(files) <= 4096, "more than 4096 files passed", result);
    for (gsize i = 0; i < g_variant_n_children(files); i++) {
      g_autoptr(GVariant) file = g_variant_get_child_value(files, i);
      gsize length;
      const char* bytes = static_cast<const char*>(g_variant_get_fixed_array(file, &length, 1));
      check(length >= 2 && length - 1 <= NAME_MAX && memchr(bytes, '\0', length) == bytes + length - 1,
            "a file name passed that is empty, too long or not one NUL-terminated string", result);
      check(strchr(bytes, '/') == nullptr && strcmp(bytes, ".") != 0 && strcmp(bytes, "..") != 0,
            "a file name passed that is not a plain name", result);
    }
  }
}

struct Verdict {
  GVariant* result = nullptr;  // owned
  std::string error;
  ~Verdict() {
    if (result != nullptr) g_variant_unref(result);
  }
};

void filter(SidebusContext* context, Method method, GVariant* options, Verdict& verdict) {
  const Table& table = kTables[guint(method)];
  GError* error = nullptr;
  verdict.result = filechooser::host_options_for(context, method, options, &error);
  check((verdict.result == nullptr) == (error != nullptr), "an error is set exactly when the options are refused",
        options);
  gsize n_options = g_variant_n_children(options);
  if (verdict.result == nullptr) {
    verdict.error = error->message;
    check(g_error_matches(error, SIDEBUS_ERROR, SIDEBUS_ERROR_INVALID_ARGUMENT),
          "a refusal is SIDEBUS_ERROR_INVALID_ARGUMENT: " + verdict.error, options);
    g_error_free(error);
    if (n_options > SIDEBUS_MAX_OPTIONS) {
      check(verdict.error.rfind(std::to_string(n_options) + " options, at most ", 0) == 0,
            "too many options are refused as such: " + verdict.error, options);
      return;
    }
    bool named = false;
    for (const Option& option : table.options) {
      std::string prefix = std::string("option '") + option.key + "'";
      if (verdict.error.rfind(prefix, 0) == 0 && input_has_key(options, option.key)) named = true;
    }
    check(named, std::string("a refusal names an option of ") + table.method + " that the guest sent: " + verdict.error,
          options);
    return;
  }
  check(n_options <= SIDEBUS_MAX_OPTIONS, "more than SIDEBUS_MAX_OPTIONS options passed", options);
  GVariant* result = verdict.result;
  check(!g_variant_is_floating(result) && g_variant_is_of_type(result, G_VARIANT_TYPE_VARDICT),
        "the result is a non-floating a{sv}", options);
  GVariantIter iter;
  const char* key;
  GVariant* value;
  g_variant_iter_init(&iter, result);
  while (g_variant_iter_loop(&iter, "{&sv}", &key, &value)) {
    check(strcmp(key, "handle_token") != 0 && strcmp(key, "session_handle_token") != 0,
          std::string("the result holds ") + key, options);
    const char* type = declared_type(table, key);
    check(type != nullptr, std::string("the result holds '") + key + "', not an option of " + table.method, options);
    check(strcmp(g_variant_get_type_string(value), type) == 0,
          std::string("the result's '") + key + "' is not of type " + type, options);
    check(!is_path_option(key), std::string("the guest path '") + key + "' passed without a link", options);
  }
  g_autoptr(GVariant) expected = expected_result(table, options);
  check(g_variant_equal(result, expected), "the result is not the input's entries of the table, in order", options);
  check_caps(result);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const bool writer_set = (g_log_set_writer_func(log_writer, nullptr, nullptr), true);
  (void)writer_set;
  static SidebusContext* const context = [] {
    auto* released = new SidebusContext;  // no link: as after release()
    released->portal_name = "filechooser";
    return released;
  }();
  if (size == 0) return 0;
  current_input.assign(reinterpret_cast<const char*>(data), size);
  auto method = Method(data[0] % 3);

  // An exact-size copy, so that a read past the end is caught.
  g_autoptr(GBytes) bytes = g_bytes_new(data + 1, size - 1);
  g_autoptr(GVariant) options = g_variant_ref_sink(g_variant_new_from_bytes(G_VARIANT_TYPE_VARDICT, bytes, FALSE));
  g_autoptr(GVariant) normal = g_variant_get_normal_form(options);
  check(g_variant_is_normal_form(normal), "g_variant_get_normal_form() is in normal form", normal);

  Verdict untrusted, trusted;
  filter(context, method, options, untrusted);
  filter(context, method, normal, trusted);
  check((untrusted.result == nullptr) == (trusted.result == nullptr) && untrusted.error == trusted.error,
        "the bytes and their normal form get different verdicts: \"" + untrusted.error + "\" and \"" + trusted.error +
            "\"",
        normal);
  if (trusted.result == nullptr) return 0;
  check(g_variant_equal(untrusted.result, trusted.result), "the bytes and their normal form give different results",
        normal);

  Verdict again;
  filter(context, method, trusted.result, again);
  check(again.result != nullptr && g_variant_equal(again.result, trusted.result),
        "a result, filtered again, does not come back equal: " + again.error, trusted.result);
  return 0;
}
