// print-options.cpp — what a guest may put in a print request.
//
// One table per dictionary, as org.freedesktop.portal.Print (version 4)
// documents it: the options of PreparePrint and Print, and the print
// settings and page setup PreparePrint takes as the dialog's starting point.
// sidebus_filter_options() drops every key a table does not name and refuses
// wrong types; the validators bound sizes and check the values the interface
// enumerates, so the host's print dialog only ever starts from settings it
// documents.
//
// One setting never crosses: "output-uri", where print-to-file writes. A
// guest's path means nothing on the host, and a host path chosen by the VM
// would let it pick which host file the dialog overwrites; the host's own
// answer is removed from the guest's results for the same reason the other
// way (it names the host user's folders). "output-basename" (a file name in
// the folder the host user picks) passes.
#include <cmath>
#include <cstring>
#include <initializer_list>
#include <string>

#include "guest-text.hpp"
#include "print.hpp"

namespace sidebus::print {
namespace {

using sidebus::common::check_guest_text;
using sidebus::common::TextLines;

constexpr gsize kMaxSettingLength = 256;
constexpr gsize kMaxNameLength = 128;   // printers, paper names, media types
constexpr gsize kMaxNumberLength = 32;  // numbers travel as strings
constexpr gsize kMaxPageRangesLength = 1024;
constexpr double kMaxMillimetres = 10000;  // 10 m: larger is no paper
constexpr gsize kMaxFormats = 8;

gboolean invalid(GError** error, const char* message) {
  g_set_error_literal(error, SIDEBUS_ERROR, SIDEBUS_ERROR_INVALID_ARGUMENT, message);
  return FALSE;
}

// ---- validators --------------------------------------------------------------

gboolean one_of(GVariant* value, std::initializer_list<const char*> allowed, GError** error) {
  const char* text = g_variant_get_string(value, nullptr);
  std::string list;
  for (const char* candidate : allowed) {
    if (strcmp(text, candidate) == 0) return TRUE;
    list += std::string(list.empty() ? "" : ", ") + candidate;
  }
  g_set_error(error, SIDEBUS_ERROR, SIDEBUS_ERROR_INVALID_ARGUMENT, "must be one of %s", list.c_str());
  return FALSE;
}

#define ONE_OF(name, ...)                                                                  \
  gboolean name(SidebusContext*, const char*, GVariant* value, GError** error) {           \
    return one_of(value, {__VA_ARGS__}, error);                                            \
  }

ONE_OF(validate_orientation, "landscape", "portrait", "reverse_landscape", "reverse_portrait")
ONE_OF(validate_page_orientation, "portrait", "landscape", "reverse-portrait", "reverse-landscape")
ONE_OF(validate_quality, "normal", "high", "low", "draft")
ONE_OF(validate_boolean_text, "true", "false")
ONE_OF(validate_duplex, "simplex", "horizontal", "vertical")
ONE_OF(validate_dither, "fine", "none", "coarse", "lineart", "grayscale", "error-diffusion")
ONE_OF(validate_print_pages, "all", "selection", "current", "ranges")
ONE_OF(validate_page_set, "all", "even", "odd")
ONE_OF(validate_number_up_layout, "lrtb", "lrbt", "rltb", "rlbt", "tblr", "tbrl", "btlr", "btrl")
#undef ONE_OF

gboolean validate_text(SidebusContext*, const char*, GVariant* value, GError** error) {
  return check_guest_text(g_variant_get_string(value, nullptr), kMaxSettingLength, TextLines::kOne, "the value",
                          error);
}

// Printer, paper and media names: short, printable, no spaces at either end.
gboolean validate_name(SidebusContext*, const char*, GVariant* value, GError** error) {
  const char* text = g_variant_get_string(value, nullptr);
  if (!check_guest_text(text, kMaxNameLength, TextLines::kOne, "the name", error)) return FALSE;
  if (*text == '\0') return invalid(error, "is empty");
  return TRUE;
}

// A non-negative decimal number, as the settings carry them ("210", "2.5").
gboolean validate_number(SidebusContext*, const char*, GVariant* value, GError** error) {
  const char* text = g_variant_get_string(value, nullptr);
  gsize length = strlen(text);
  if (length == 0 || length > kMaxNumberLength) return invalid(error, "is not a number");
  bool dot = false;
  for (const char* c = text; *c != '\0'; c++) {
    if (*c == '.' && !dot && c != text) {
      dot = true;
      continue;
    }
    if (!g_ascii_isdigit(*c)) return invalid(error, "is not a non-negative decimal number");
  }
  return TRUE;
}

// A whole number of copies (or pages per sheet): 1 to 1000.
gboolean validate_count(SidebusContext*, const char*, GVariant* value, GError** error) {
  const char* text = g_variant_get_string(value, nullptr);
  guint64 n = 0;
  if (!g_ascii_string_to_unsigned(text, 10, 1, 1000, &n, nullptr)) return invalid(error, "is not a number from 1 to 1000");
  return TRUE;
}

// "0-2,4,9-11": digits, commas and dashes.
gboolean validate_page_ranges(SidebusContext*, const char*, GVariant* value, GError** error) {
  const char* text = g_variant_get_string(value, nullptr);
  if (strlen(text) > kMaxPageRangesLength) return invalid(error, "is too long");
  for (const char* c = text; *c != '\0'; c++)
    if (!g_ascii_isdigit(*c) && *c != ',' && *c != '-' && *c != ' ')
      return invalid(error, "is not a list of page ranges such as 0-2,4,9-11");
  return TRUE;
}

// A file name for print-to-file, in the folder the host user picks.
gboolean validate_basename(SidebusContext*, const char*, GVariant* value, GError** error) {
  const char* text = g_variant_get_string(value, nullptr);
  if (!check_guest_text(text, 255, TextLines::kOne, "the file name", error)) return FALSE;
  if (*text == '\0' || strchr(text, '/') != nullptr || strcmp(text, ".") == 0 || strcmp(text, "..") == 0)
    return invalid(error, "is not a file name (no “/”, not empty, not “.” or “..”)");
  return TRUE;
}

gboolean validate_file_format(SidebusContext*, const char*, GVariant* value, GError** error) {
  const char* text = g_variant_get_string(value, nullptr);
  for (const char* format : {"pdf", "ps", "svg"})
    if (g_ascii_strcasecmp(text, format) == 0) return TRUE;
  return invalid(error, "must be one of pdf, ps, svg");
}

gboolean validate_file_formats(SidebusContext*, const char*, GVariant* value, GError** error) {
  gsize n = 0;
  g_autofree const char** formats = g_variant_get_strv(value, &n);
  if (n == 0) return invalid(error, "is empty");
  if (n > kMaxFormats) return invalid(error, "lists too many formats");
  for (gsize i = 0; i < n; i++)
    if (strcmp(formats[i], "pdf") != 0 && strcmp(formats[i], "ps") != 0 && strcmp(formats[i], "svg") != 0) {
      g_set_error(error, SIDEBUS_ERROR, SIDEBUS_ERROR_INVALID_ARGUMENT, "[%zu] must be one of pdf, ps, svg", i);
      return FALSE;
    }
  return TRUE;
}

gboolean check_millimetres(GVariant* value, bool positive, GError** error) {
  double mm = g_variant_get_double(value);
  if (!std::isfinite(mm) || mm < 0 || (positive && mm == 0) || mm > kMaxMillimetres) {
    g_set_error(error, SIDEBUS_ERROR, SIDEBUS_ERROR_INVALID_ARGUMENT, "must be a length in millimetres, %s to %g",
                positive ? "above 0" : "0", kMaxMillimetres);
    return FALSE;
  }
  return TRUE;
}
gboolean validate_size(SidebusContext*, const char*, GVariant* value, GError** error) {
  return check_millimetres(value, true, error);
}
gboolean validate_margin(SidebusContext*, const char*, GVariant* value, GError** error) {
  return check_millimetres(value, false, error);
}

gboolean validate_label(SidebusContext*, const char*, GVariant* value, GError** error) {
  return check_guest_text(g_variant_get_string(value, nullptr), kMaxSettingLength, TextLines::kOne, "the label",
                          error);
}

// ---- the tables ----------------------------------------------------------------

const SidebusOption kPreparePrintOptions[] = {
    {"modal", "b", nullptr, {}},
    {"accept_label", "s", validate_label, {}},                    // version 2
    {"supported_output_file_formats", "as", validate_file_formats, {}},  // version 3
    {"has_current_page", "b", nullptr, {}},                       // version 4
    {"has_selected_pages", "b", nullptr, {}},                     // version 4
};

// "token" is checked by print.cpp: only a token this guest client got.
const SidebusOption kPrintOptions[] = {
    {"token", "u", nullptr, {}},
    {"modal", "b", nullptr, {}},
    {"supported_output_file_formats", "as", validate_file_formats, {}},  // version 3
};

const SidebusOption kSettings[] = {
    {"orientation", "s", validate_orientation, {}},
    {"paper-format", "s", validate_name, {}},
    {"paper-width", "s", validate_number, {}},
    {"paper-height", "s", validate_number, {}},
    {"n-copies", "s", validate_count, {}},
    {"default-source", "s", validate_text, {}},
    {"quality", "s", validate_quality, {}},
    {"resolution", "s", validate_number, {}},
    {"use-color", "s", validate_boolean_text, {}},
    {"duplex", "s", validate_duplex, {}},
    {"collate", "s", validate_boolean_text, {}},
    {"reverse", "s", validate_boolean_text, {}},
    {"media-type", "s", validate_name, {}},
    {"dither", "s", validate_dither, {}},
    {"scale", "s", validate_number, {}},
    {"print-pages", "s", validate_print_pages, {}},
    {"page-ranges", "s", validate_page_ranges, {}},
    {"page-set", "s", validate_page_set, {}},
    {"finishings", "s", validate_text, {}},
    {"number-up", "s", validate_count, {}},
    {"number-up-layout", "s", validate_number_up_layout, {}},
    {"output-bin", "s", validate_text, {}},
    {"resolution-x", "s", validate_number, {}},
    {"resolution-y", "s", validate_number, {}},
    {"printer-lpi", "s", validate_number, {}},
    {"output-basename", "s", validate_basename, {}},
    {"output-file-format", "s", validate_file_format, {}},
    // Not in the interface's list, but what GTK's print settings carry to
    // preselect the printer the application used last.
    {"printer", "s", validate_name, {}},
};

const SidebusOption kPageSetup[] = {
    {"PPDName", "s", validate_name, {}},
    {"Name", "s", validate_name, {}},
    {"DisplayName", "s", validate_text, {}},
    {"Width", "d", validate_size, {}},
    {"Height", "d", validate_size, {}},
    {"MarginTop", "d", validate_margin, {}},
    {"MarginBottom", "d", validate_margin, {}},
    {"MarginLeft", "d", validate_margin, {}},
    {"MarginRight", "d", validate_margin, {}},
    {"Orientation", "s", validate_page_orientation, {}},
};

// Settings the host's answer must not show the guest: where print-to-file
// writes on the host.
constexpr const char* kHostOnlySettings[] = {"output-uri", "output-dir"};

GVariant* filtered(SidebusContext* context, GVariant* dict, const SidebusOption* table, gsize n, const char* what,
                   GError** error) {
  GVariant* result = sidebus_filter_options(context, dict, table, n, error);
  if (result == nullptr) g_prefix_error(error, "%s: ", what);
  return result;
}

}  // namespace

GVariant* prepare_print_options(SidebusContext* context, GVariant* options, GError** error) {
  return filtered(context, options, kPreparePrintOptions, G_N_ELEMENTS(kPreparePrintOptions), "options", error);
}

GVariant* print_options(SidebusContext* context, GVariant* options, GError** error) {
  return filtered(context, options, kPrintOptions, G_N_ELEMENTS(kPrintOptions), "options", error);
}

GVariant* print_settings(SidebusContext* context, GVariant* settings, GError** error) {
  return filtered(context, settings, kSettings, G_N_ELEMENTS(kSettings), "settings", error);
}

GVariant* page_setup(SidebusContext* context, GVariant* page_setup, GError** error) {
  return filtered(context, page_setup, kPageSetup, G_N_ELEMENTS(kPageSetup), "page_setup", error);
}

GVariant* guest_prepare_results(GVariant* host_results) {
  g_auto(GVariantBuilder) results = G_VARIANT_BUILDER_INIT(G_VARIANT_TYPE_VARDICT);
  g_autoptr(GVariant) settings = g_variant_lookup_value(host_results, "settings", G_VARIANT_TYPE_VARDICT);
  if (settings != nullptr) {
    g_auto(GVariantBuilder) kept = G_VARIANT_BUILDER_INIT(G_VARIANT_TYPE_VARDICT);
    GVariantIter iter;
    const char* key;
    GVariant* value;
    g_variant_iter_init(&iter, settings);
    while (g_variant_iter_loop(&iter, "{&sv}", &key, &value)) {
      bool host_only = false;
      for (const char* hidden : kHostOnlySettings) host_only = host_only || strcmp(key, hidden) == 0;
      if (!host_only) g_variant_builder_add(&kept, "{sv}", key, value);
    }
    g_variant_builder_add(&results, "{sv}", "settings", g_variant_builder_end(&kept));
  }
  g_autoptr(GVariant) setup = g_variant_lookup_value(host_results, "page-setup", G_VARIANT_TYPE_VARDICT);
  if (setup != nullptr) g_variant_builder_add(&results, "{sv}", "page-setup", setup);
  guint32 token = 0;
  if (g_variant_lookup(host_results, "token", "u", &token))
    g_variant_builder_add(&results, "{sv}", "token", g_variant_new_uint32(token));
  return g_variant_builder_end(&results);
}

}  // namespace sidebus::print
