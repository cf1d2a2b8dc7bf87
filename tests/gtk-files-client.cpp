// SPDX-License-Identifier: LGPL-2.1-or-later
// gtk-files-client.cpp — a real GTK 4 application in the guest, for
// test-clipboard: it copies and pastes files exactly as GTK does when a user
// does, through GDK's own content (de)serializers for
// application/vnd.portal.filetransfer (gdk/filetransferportal.c) — only the
// clipboard's transport between two apps is left out (that is the Wayland
// proxy's, docs/clipboard.md): the bytes GTK would put on the clipboard are
// printed, and a paste is fed the bytes another app put there.
//
//   gtk-files-client --runtime-dir DIR --display :N copy FILE…
//       prints the clipboard data (the key) on a line, then keeps the
//       transfer alive (its owner) until SIGTERM;
//   gtk-files-client --runtime-dir DIR --display :N paste KEY
//       prints the paths GTK got for the key, one a line.
// DIR and :N name the broadway display (gtk4-broadwayd) to open: GTK looks
// for the portal when its display opens, with GDK_DEBUG=portals (set here)
// because this is no Flatpak.
#include <glib-unix.h>
#include <gtk/gtk.h>

#include <cstdio>
#include <cstring>

namespace {

struct State {
  GMainLoop* loop = nullptr;
  GOutputStream* out = nullptr;  // copy: where GTK writes the clipboard data
  int status = 1;
};

void on_serialized(GObject*, GAsyncResult* result, gpointer data) {
  auto* state = static_cast<State*>(data);
  g_autoptr(GError) error = nullptr;
  if (!gdk_content_serialize_finish(result, &error)) {
    g_printerr("copy failed: %s\n", error->message);
    g_main_loop_quit(state->loop);
    return;
  }
  GMemoryOutputStream* out = G_MEMORY_OUTPUT_STREAM(state->out);
  gsize size = g_memory_output_stream_get_data_size(out);
  const char* data_bytes = static_cast<const char*>(g_memory_output_stream_get_data(out));
  // GTK writes the key and a NUL.
  g_print("%.*s\n", int(strnlen(data_bytes, size)), data_bytes);
  fflush(stdout);
  state->status = 0;  // and stays, owning the transfer, until SIGTERM
}

void on_deserialized(GObject*, GAsyncResult* result, gpointer data) {
  auto* state = static_cast<State*>(data);
  g_autoptr(GError) error = nullptr;
  GValue value = G_VALUE_INIT;
  g_value_init(&value, GDK_TYPE_FILE_LIST);
  if (!gdk_content_deserialize_finish(result, &value, &error)) {
    g_printerr("paste failed: %s\n", error->message);
  } else {
    GSList* files = gdk_file_list_get_files(static_cast<GdkFileList*>(g_value_get_boxed(&value)));
    for (GSList* l = files; l != nullptr; l = l->next) {
      g_autofree char* path = g_file_get_path(G_FILE(l->data));
      g_print("%s\n", path != nullptr ? path : "(no path)");
    }
    g_slist_free(files);
    state->status = 0;
  }
  g_value_unset(&value);
  g_main_loop_quit(state->loop);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 7 || strcmp(argv[1], "--runtime-dir") != 0 || strcmp(argv[3], "--display") != 0) {
    g_printerr("usage: %s --runtime-dir DIR --display :N copy FILE… | paste KEY\n", argv[0]);
    return 2;
  }
  g_setenv("XDG_RUNTIME_DIR", argv[2], TRUE);
  g_setenv("BROADWAY_DISPLAY", argv[4], TRUE);
  g_setenv("GDK_BACKEND", "broadway", TRUE);
  g_setenv("GDK_DEBUG", "portals", TRUE);
  g_setenv("GSETTINGS_BACKEND", "memory", TRUE);
  if (!gtk_init_check()) {
    g_printerr("cannot open the broadway display %s\n", argv[4]);
    return 2;
  }
  State state;
  state.loop = g_main_loop_new(nullptr, FALSE);
  const char* mode = argv[5];
  if (strcmp(mode, "copy") == 0) {
    GSList* files = nullptr;
    for (int i = argc - 1; i >= 6; i--) files = g_slist_prepend(files, g_file_new_for_path(argv[i]));
    GValue value = G_VALUE_INIT;
    g_value_init(&value, GDK_TYPE_FILE_LIST);
    g_value_take_boxed(&value, gdk_file_list_new_from_list(files));
    g_slist_free_full(files, g_object_unref);
    g_autoptr(GOutputStream) out = g_memory_output_stream_new_resizable();
    state.out = out;
    gdk_content_serialize_async(out, "application/vnd.portal.filetransfer", &value, G_PRIORITY_DEFAULT, nullptr,
                                on_serialized, &state);
    g_value_unset(&value);
    g_unix_signal_add(
        SIGTERM,
        [](gpointer loop) -> gboolean {
          g_main_loop_quit(static_cast<GMainLoop*>(loop));
          return G_SOURCE_REMOVE;
        },
        state.loop);
    g_main_loop_run(state.loop);
  } else if (strcmp(mode, "paste") == 0) {
    g_autoptr(GInputStream) in = g_memory_input_stream_new_from_data(g_strdup(argv[6]), strlen(argv[6]), g_free);
    gdk_content_deserialize_async(in, "application/vnd.portal.filetransfer", GDK_TYPE_FILE_LIST, G_PRIORITY_DEFAULT,
                                  nullptr, on_deserialized, &state);
    g_main_loop_run(state.loop);
  } else {
    g_printerr("unknown mode %s\n", mode);
    return 2;
  }
  g_main_loop_unref(state.loop);
  return state.status;
}
