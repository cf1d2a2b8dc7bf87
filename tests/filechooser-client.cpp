// SPDX-License-Identifier: LGPL-2.1-or-later
// filechooser-client.cpp — the application in the guest for
// test-filechooser: a libportal client, run as the guest user with the guest
// session bus as its DBUS_SESSION_BUS_ADDRESS, that asks for a file dialog
// and then does with the answer what an application does — reads the files
// it was given, or writes to them — and prints what happened as one GVariant
// (text format) on stdout, so the test asserts on what the application saw:
//
//   {'outcome': <'ok' | 'cancelled' | 'failed'>, 'error': <message>,
//    'results': <a{sv} from libportal>, 'contents': <aay, one per URI (--read)>,
//    'written': <as, paths written (--write)>, 'write_errors': <as>}
//
// Usage:
//   filechooser-client open [--multiple] [common options] [--read]
//   filechooser-client save [--current-name N] [--current-folder P] [--current-file P] [common] [--write TEXT]
//   filechooser-client save-files --file NAME… [--current-folder P] [common] [--write TEXT]
// common: --title T, --filters V, --current-filter V, --choices V (GVariant
// text), --cancel-after-ms N (cancel the GCancellable: libportal closes the
// request), --replace (write as editors do: temporary file + rename).
#include <glib/gstdio.h>
#include <libportal/portal.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

namespace {

struct Options {
  std::string mode;
  std::string title = "sidebus test";
  gboolean multiple = FALSE;
  gboolean read = FALSE;
  gboolean replace = FALSE;
  char* write = nullptr;
  char* current_name = nullptr;
  char* current_folder = nullptr;
  char* current_file = nullptr;
  char* filters = nullptr;
  char* current_filter = nullptr;
  char* choices = nullptr;
  char** files = nullptr;
  int cancel_after_ms = -1;
};

struct State {
  GMainLoop* loop = nullptr;
  std::string mode;
  GVariant* results = nullptr;
  GError* error = nullptr;
};

GVariant* parse_or_die(const char* text, const char* type, const char* what) {
  if (text == nullptr) return nullptr;
  g_autoptr(GError) error = nullptr;
  GVariant* value = g_variant_parse(G_VARIANT_TYPE(type), text, nullptr, nullptr, &error);
  if (value == nullptr) {
    g_printerr("filechooser-client: %s: %s\n", what, error->message);
    exit(2);
  }
  return value;
}

void on_done(GObject* source, GAsyncResult* result, gpointer user_data) {
  auto* state = static_cast<State*>(user_data);
  XdpPortal* portal = XDP_PORTAL(source);
  if (state->mode == "open")
    state->results = xdp_portal_open_file_finish(portal, result, &state->error);
  else if (state->mode == "save")
    state->results = xdp_portal_save_file_finish(portal, result, &state->error);
  else
    state->results = xdp_portal_save_files_finish(portal, result, &state->error);
  g_main_loop_quit(state->loop);
}

// What an application does with a file it was given: open(2) and read(2).
GVariant* read_contents(const char* const* uris) {
  g_auto(GVariantBuilder) contents = G_VARIANT_BUILDER_INIT(G_VARIANT_TYPE("aay"));
  for (const char* const* uri = uris; *uri != nullptr; uri++) {
    g_autofree char* path = g_filename_from_uri(*uri, nullptr, nullptr);
    g_autofree char* bytes = nullptr;
    gsize length = 0;
    g_autoptr(GError) error = nullptr;
    if (path == nullptr || !g_file_get_contents(path, &bytes, &length, &error)) {
      g_autofree char* failure = g_strdup_printf("<unreadable: %s>", error ? error->message : "not a file URI");
      g_variant_builder_add_value(&contents, g_variant_new_bytestring(failure));
      continue;
    }
    g_variant_builder_add_value(&contents, g_variant_new_fixed_array(G_VARIANT_TYPE_BYTE, bytes, length, 1));
  }
  return g_variant_builder_end(&contents);
}

bool write_file(const char* path, const char* text, bool replace, GError** error) {
  if (replace) return g_file_set_contents(path, text, -1, error);
  FILE* file = fopen(path, "w");
  if (file == nullptr) {
    int saved_errno = errno;
    g_set_error(error, G_FILE_ERROR, g_file_error_from_errno(saved_errno), "%s: %s", path, g_strerror(saved_errno));
    return false;
  }
  bool ok = fputs(text, file) >= 0;
  ok = fclose(file) == 0 && ok;
  if (!ok) g_set_error(error, G_FILE_ERROR, G_FILE_ERROR_IO, "%s: write failed", path);
  return ok;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  char* title = nullptr;
  const GOptionEntry entries[] = {
      {"title", 0, 0, G_OPTION_ARG_STRING, &title, "Dialog title", "T"},
      {"multiple", 0, 0, G_OPTION_ARG_NONE, &o.multiple, "open: allow several files", nullptr},
      {"read", 0, 0, G_OPTION_ARG_NONE, &o.read, "Read every returned file", nullptr},
      {"write", 0, 0, G_OPTION_ARG_STRING, &o.write, "Write TEXT to every returned file", "TEXT"},
      {"replace", 0, 0, G_OPTION_ARG_NONE, &o.replace, "Write through a temporary file and rename", nullptr},
      {"current-name", 0, 0, G_OPTION_ARG_STRING, &o.current_name, "save: suggested name", "N"},
      {"current-folder", 0, 0, G_OPTION_ARG_FILENAME, &o.current_folder, "save: suggested folder", "P"},
      {"current-file", 0, 0, G_OPTION_ARG_FILENAME, &o.current_file, "save: the file being saved", "P"},
      {"filters", 0, 0, G_OPTION_ARG_STRING, &o.filters, "a(sa(us)) as GVariant text", "V"},
      {"current-filter", 0, 0, G_OPTION_ARG_STRING, &o.current_filter, "(sa(us)) as GVariant text", "V"},
      {"choices", 0, 0, G_OPTION_ARG_STRING, &o.choices, "a(ssa(ss)s) as GVariant text", "V"},
      {"file", 0, 0, G_OPTION_ARG_FILENAME_ARRAY, &o.files, "save-files: a file name (repeatable)", "NAME"},
      {"cancel-after-ms", 0, 0, G_OPTION_ARG_INT, &o.cancel_after_ms, "Cancel the call after N ms", "N"},
      {},
  };
  g_autoptr(GOptionContext) context = g_option_context_new("open|save|save-files");
  g_option_context_add_main_entries(context, entries, nullptr);
  g_autoptr(GError) error = nullptr;
  if (!g_option_context_parse(context, &argc, &argv, &error) || argc != 2) {
    g_printerr("filechooser-client: %s\n", error ? error->message : "say open, save or save-files");
    return 2;
  }
  o.mode = argv[1];
  if (title != nullptr) o.title = title;

  g_autoptr(GVariant) filters = parse_or_die(o.filters, "a(sa(us))", "--filters");
  g_autoptr(GVariant) current_filter = parse_or_die(o.current_filter, "(sa(us))", "--current-filter");
  g_autoptr(GVariant) choices = parse_or_die(o.choices, "a(ssa(ss)s)", "--choices");

  // libportal 0.6: connects to the session bus, i.e. the guest's.
  g_autoptr(XdpPortal) portal = xdp_portal_new();
  g_autoptr(GMainLoop) loop = g_main_loop_new(nullptr, FALSE);
  g_autoptr(GCancellable) cancellable = g_cancellable_new();
  State state{loop, o.mode};
  if (o.mode == "open") {
    xdp_portal_open_file(portal, nullptr, o.title.c_str(), filters, current_filter, choices,
                         o.multiple ? XDP_OPEN_FILE_FLAG_MULTIPLE : XDP_OPEN_FILE_FLAG_NONE, cancellable, on_done,
                         &state);
  } else if (o.mode == "save") {
    xdp_portal_save_file(portal, nullptr, o.title.c_str(), o.current_name, o.current_folder, o.current_file, filters,
                         current_filter, choices, XDP_SAVE_FILE_FLAG_NONE, cancellable, on_done, &state);
  } else if (o.mode == "save-files") {
    g_auto(GVariantBuilder) files = G_VARIANT_BUILDER_INIT(G_VARIANT_TYPE("aay"));
    for (char** file = o.files; file != nullptr && *file != nullptr; file++)
      g_variant_builder_add_value(&files, g_variant_new_bytestring(*file));
    xdp_portal_save_files(portal, nullptr, o.title.c_str(), o.current_name, o.current_folder,
                          g_variant_builder_end(&files), choices, XDP_SAVE_FILE_FLAG_NONE, cancellable, on_done,
                          &state);
  } else {
    g_printerr("filechooser-client: unknown mode %s\n", o.mode.c_str());
    return 2;
  }
  if (o.cancel_after_ms >= 0)
    g_timeout_add(o.cancel_after_ms, [](gpointer data) -> gboolean {
      g_cancellable_cancel(G_CANCELLABLE(data));
      return G_SOURCE_REMOVE;
    }, cancellable);
  g_main_loop_run(loop);

  g_auto(GVariantBuilder) report = G_VARIANT_BUILDER_INIT(G_VARIANT_TYPE_VARDICT);
  g_autoptr(GVariant) results = state.results;
  g_autoptr(GError) call_error = state.error;
  const char* outcome = results != nullptr                                                      ? "ok"
                        : g_error_matches(call_error, G_IO_ERROR, G_IO_ERROR_CANCELLED) ? "cancelled"
                                                                                        : "failed";
  g_variant_builder_add(&report, "{sv}", "outcome", g_variant_new_string(outcome));
  if (call_error != nullptr) g_variant_builder_add(&report, "{sv}", "error", g_variant_new_string(call_error->message));
  if (results != nullptr) {
    g_variant_builder_add(&report, "{sv}", "results", results);
    g_autofree const char** uris = nullptr;
    if (!g_variant_lookup(results, "uris", "^a&s", &uris)) uris = g_new0(const char*, 1);
    if (o.read) g_variant_builder_add(&report, "{sv}", "contents", read_contents(uris));
    if (o.write != nullptr) {
      g_auto(GVariantBuilder) written = G_VARIANT_BUILDER_INIT(G_VARIANT_TYPE_STRING_ARRAY);
      g_auto(GVariantBuilder) failures = G_VARIANT_BUILDER_INIT(G_VARIANT_TYPE_STRING_ARRAY);
      for (const char** uri = uris; *uri != nullptr; uri++) {
        g_autofree char* path = g_filename_from_uri(*uri, nullptr, nullptr);
        g_autoptr(GError) write_error = nullptr;
        if (path != nullptr && write_file(path, o.write, o.replace, &write_error))
          g_variant_builder_add(&written, "s", path);
        else
          g_variant_builder_add(&failures, "s", write_error ? write_error->message : *uri);
      }
      g_variant_builder_add(&report, "{sv}", "written", g_variant_builder_end(&written));
      g_variant_builder_add(&report, "{sv}", "write_errors", g_variant_builder_end(&failures));
    }
  }
  g_autofree char* text = g_variant_print(g_variant_builder_end(&report), TRUE);
  g_print("%s\n", text);
  return 0;
}
