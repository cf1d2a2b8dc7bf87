// handoff-client.cpp — the libportal (0.6) application in the guest for
// test-print, test-email and test-wallpaper: run as the guest user with the
// guest session bus as its DBUS_SESSION_BUS_ADDRESS, it makes one call as an
// application does and prints what it saw as one GVariant (text format) on
// stdout:
//
//   {'outcome': <'ok' | 'cancelled' | 'failed'>, 'error': <message>,
//    'results': <a{sv}: PreparePrint's results (prepare, print --prepare)>}
//
// Usage:
//   desktop-client prepare [--title T]
//   desktop-client print FILE [--title T] [--prepare] [--token N]
//       --prepare: PreparePrint first, then print with the token it gave
//   desktop-client email [--address A]… [--cc A]… [--bcc A]… [--subject S]
//       [--body B] [--attach FILE]…
//   desktop-client wallpaper URI [--preview] [--target background|lockscreen|both]
// libportal opens every file it sends with O_PATH.
#include <libportal/portal.h>

#include <cstdio>
#include <cstring>
#include <string>

namespace {

struct State {
  GMainLoop* loop = nullptr;
  XdpPortal* portal = nullptr;
  std::string mode;
  std::string title;
  std::string file;
  bool print_after_prepare = false;
  bool ok = false;
  GVariant* results = nullptr;
  GError* error = nullptr;
};

void on_printed(GObject* source, GAsyncResult* result, gpointer user_data) {
  auto* state = static_cast<State*>(user_data);
  state->ok = xdp_portal_print_file_finish(XDP_PORTAL(source), result, &state->error);
  g_main_loop_quit(state->loop);
}

void on_prepared(GObject* source, GAsyncResult* result, gpointer user_data) {
  auto* state = static_cast<State*>(user_data);
  state->results = xdp_portal_prepare_print_finish(XDP_PORTAL(source), result, &state->error);
  state->ok = state->results != nullptr;
  if (!state->ok || !state->print_after_prepare) {
    g_main_loop_quit(state->loop);
    return;
  }
  guint32 token = 0;
  g_variant_lookup(state->results, "token", "u", &token);
  xdp_portal_print_file(state->portal, nullptr, state->title.c_str(), token, state->file.c_str(),
                        XDP_PRINT_FLAG_NONE, nullptr, on_printed, state);
}

void on_emailed(GObject* source, GAsyncResult* result, gpointer user_data) {
  auto* state = static_cast<State*>(user_data);
  state->ok = xdp_portal_compose_email_finish(XDP_PORTAL(source), result, &state->error);
  g_main_loop_quit(state->loop);
}

void on_wallpaper_set(GObject* source, GAsyncResult* result, gpointer user_data) {
  auto* state = static_cast<State*>(user_data);
  state->ok = xdp_portal_set_wallpaper_finish(XDP_PORTAL(source), result, &state->error);
  g_main_loop_quit(state->loop);
}

}  // namespace

int main(int argc, char** argv) {
  char* title = nullptr;
  gboolean prepare = FALSE;
  gint token = 0;
  char** addresses = nullptr;
  char** cc = nullptr;
  char** bcc = nullptr;
  char* subject = nullptr;
  char* body = nullptr;
  char** attachments = nullptr;
  gboolean preview = FALSE;
  char* target = nullptr;
  const GOptionEntry entries[] = {
      {"title", 0, 0, G_OPTION_ARG_STRING, &title, "print, prepare: the dialog title", "T"},
      {"prepare", 0, 0, G_OPTION_ARG_NONE, &prepare, "print: PreparePrint first, print with its token", nullptr},
      {"token", 0, 0, G_OPTION_ARG_INT, &token, "print: this token", "N"},
      {"address", 0, 0, G_OPTION_ARG_STRING_ARRAY, &addresses, "email: a recipient (repeatable)", "A"},
      {"cc", 0, 0, G_OPTION_ARG_STRING_ARRAY, &cc, "email: a cc recipient (repeatable)", "A"},
      {"bcc", 0, 0, G_OPTION_ARG_STRING_ARRAY, &bcc, "email: a bcc recipient (repeatable)", "A"},
      {"subject", 0, 0, G_OPTION_ARG_STRING, &subject, "email: the subject", "S"},
      {"body", 0, 0, G_OPTION_ARG_STRING, &body, "email: the body", "B"},
      {"attach", 0, 0, G_OPTION_ARG_FILENAME_ARRAY, &attachments, "email: a file to attach (repeatable)", "FILE"},
      {"preview", 0, 0, G_OPTION_ARG_NONE, &preview, "wallpaper: ask for a preview", nullptr},
      {"target", 0, 0, G_OPTION_ARG_STRING, &target, "wallpaper: background, lockscreen or both", "T"},
      {},
  };
  g_autoptr(GOptionContext) context = g_option_context_new("prepare | print FILE | email | wallpaper URI");
  g_option_context_add_main_entries(context, entries, nullptr);
  g_autoptr(GError) error = nullptr;
  if (!g_option_context_parse(context, &argc, &argv, &error) || argc < 2) {
    g_printerr("desktop-client: %s\n", error ? error->message : "say prepare, print, email or wallpaper");
    return 2;
  }

  // libportal 0.6: connects to the session bus, i.e. the guest's.
  g_autoptr(XdpPortal) portal = xdp_portal_new();
  g_autoptr(GMainLoop) loop = g_main_loop_new(nullptr, FALSE);
  State state;
  state.loop = loop;
  state.portal = portal;
  state.mode = argv[1];
  state.title = title != nullptr ? title : "sidebus test";
  if (state.mode == "prepare" || (state.mode == "print" && prepare)) {
    if (state.mode == "print") {
      if (argc != 3) return g_printerr("desktop-client: print FILE\n"), 2;
      state.file = argv[2];
      state.print_after_prepare = true;
    }
    xdp_portal_prepare_print(portal, nullptr, state.title.c_str(), g_variant_new_parsed("@a{sv} {}"),
                             g_variant_new_parsed("@a{sv} {}"), XDP_PRINT_FLAG_NONE, nullptr, on_prepared, &state);
  } else if (state.mode == "print") {
    if (argc != 3) return g_printerr("desktop-client: print FILE\n"), 2;
    xdp_portal_print_file(portal, nullptr, state.title.c_str(), guint(token), argv[2], XDP_PRINT_FLAG_NONE, nullptr,
                          on_printed, &state);
  } else if (state.mode == "email") {
    xdp_portal_compose_email(portal, nullptr, addresses, cc, bcc, subject, body, attachments, XDP_EMAIL_FLAG_NONE,
                             nullptr, on_emailed, &state);
  } else if (state.mode == "wallpaper") {
    if (argc != 3) return g_printerr("desktop-client: wallpaper URI\n"), 2;
    int flags = preview ? XDP_WALLPAPER_FLAG_PREVIEW : 0;
    if (target == nullptr || strcmp(target, "both") == 0)
      flags |= XDP_WALLPAPER_FLAG_BACKGROUND | XDP_WALLPAPER_FLAG_LOCKSCREEN;
    else if (strcmp(target, "background") == 0)
      flags |= XDP_WALLPAPER_FLAG_BACKGROUND;
    else
      flags |= XDP_WALLPAPER_FLAG_LOCKSCREEN;
    xdp_portal_set_wallpaper(portal, nullptr, argv[2], XdpWallpaperFlags(flags), nullptr, on_wallpaper_set, &state);
  } else {
    g_printerr("desktop-client: unknown mode %s\n", state.mode.c_str());
    return 2;
  }
  g_main_loop_run(loop);

  g_auto(GVariantBuilder) report = G_VARIANT_BUILDER_INIT(G_VARIANT_TYPE_VARDICT);
  g_autoptr(GVariant) results = state.results;
  g_autoptr(GError) call_error = state.error;
  const char* outcome = state.ok                                                        ? "ok"
                        : g_error_matches(call_error, G_IO_ERROR, G_IO_ERROR_CANCELLED) ? "cancelled"
                                                                                        : "failed";
  g_variant_builder_add(&report, "{sv}", "outcome", g_variant_new_string(outcome));
  if (call_error != nullptr) g_variant_builder_add(&report, "{sv}", "error", g_variant_new_string(call_error->message));
  if (results != nullptr) g_variant_builder_add(&report, "{sv}", "results", results);
  g_autoptr(GVariant) printed = g_variant_ref_sink(g_variant_builder_end(&report));
  g_autofree char* text = g_variant_print(printed, TRUE);
  printf("%s\n", text);
  return 0;
}
