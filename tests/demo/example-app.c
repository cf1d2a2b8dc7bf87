/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* example-app.c — a guest-side application, as any Flatpak-era desktop app
 * is written: it asks the portal on *its own* session bus for a file and
 * reads what it gets. It knows nothing about sidebus. Run it with
 * DBUS_SESSION_BUS_ADDRESS pointing at the guest bus (or at a broker's
 * --debug-access DIR/vm.sock).
 *
 *   sidebus-example-app            open a file and print it
 */
#include <gio/gio.h>
#include <libportal/portal.h>
#include <stdio.h>

static GMainLoop *loop;
static int exit_status = 1;

static void
on_file_chosen (GObject *source, GAsyncResult *result, gpointer user_data)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(GVariant) results = xdp_portal_open_file_finish (XDP_PORTAL (source), result, &error);
  g_autofree const char **uris = NULL;

  if (results == NULL)
    {
      g_printerr ("example-app: the file chooser failed: %s\n", error->message);
      g_main_loop_quit (loop);
      return;
    }
  g_variant_lookup (results, "uris", "^a&s", &uris);
  for (gsize i = 0; uris != NULL && uris[i] != NULL; i++)
    {
      g_autoptr(GFile) file = g_file_new_for_uri (uris[i]);
      g_autofree char *contents = NULL;
      gsize length = 0;

      g_print ("example-app: the portal gave me %s\n", uris[i]);
      if (!g_file_load_contents (file, NULL, &contents, &length, NULL, &error))
        {
          g_printerr ("example-app: cannot read it: %s\n", error->message);
          g_main_loop_quit (loop);
          return;
        }
      g_print ("example-app: it holds %zu bytes:\n%s\n", length, contents);
      exit_status = 0;
    }
  g_main_loop_quit (loop);
}

int
main (void)
{
  g_autoptr(XdpPortal) portal = xdp_portal_new ();

  loop = g_main_loop_new (NULL, FALSE);
  g_print ("example-app: asking org.freedesktop.portal.FileChooser for a file...\n");
  xdp_portal_open_file (portal, NULL, "Open a file from the host", NULL, NULL, NULL, XDP_OPEN_FILE_FLAG_NONE, NULL,
                        on_file_chosen, NULL);
  g_main_loop_run (loop);
  g_main_loop_unref (loop);
  return exit_status;
}
