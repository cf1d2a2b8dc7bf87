// SPDX-License-Identifier: LGPL-2.1-or-later
// main.cpp — sidebus-test-backend: a portal backend for the integration
// tests. Connects to $DBUS_SESSION_BUS_ADDRESS (the test's host bus), exports
// the portal interfaces (kPortals; tests/portals/sidebus-test.portal lists
// the same) and the control interface, then owns
// org.freedesktop.impl.portal.Test, so once the name is owned everything is
// ready. Exits when the bus goes away or on SIGTERM/SIGINT.
#include <glib-unix.h>

#include "backend.hpp"

using namespace sidebus::test_backend;

namespace {

constexpr PortalExport kPortals[] = {
    file_chooser_export, app_chooser_export, settings_export, notification_export,
    inhibit_export,      screenshot_export,  access_export,   screen_cast_export,
    email_export,        print_export,       wallpaper_export,
};

gboolean quit(gpointer loop) {
  g_main_loop_quit(static_cast<GMainLoop*>(loop));
  return G_SOURCE_REMOVE;
}

void on_name_lost(GDBusConnection*, const char* name, gpointer loop) {
  g_message("lost or could not own %s", name);
  g_main_loop_quit(static_cast<GMainLoop*>(loop));
}

}  // namespace

int main() {
  g_autoptr(GError) error = nullptr;
  g_autoptr(GDBusConnection) connection = g_bus_get_sync(G_BUS_TYPE_SESSION, nullptr, &error);
  if (!connection) {
    g_printerr("sidebus-test-backend: no bus: %s\n", error->message);
    return 1;
  }
  g_autoptr(GMainLoop) loop = g_main_loop_new(nullptr, FALSE);
  g_unix_signal_add(SIGTERM, quit, loop);
  g_unix_signal_add(SIGINT, quit, loop);
  {
    Backend backend(connection);
    std::vector<GObjectPtr<GDBusInterfaceSkeleton>> portals;
    for (PortalExport export_portal : kPortals) {
      portals.push_back(export_portal(backend, connection, &error));
      if (!portals.back()) {
        g_printerr("sidebus-test-backend: cannot export: %s\n", error->message);
        return 1;
      }
    }
    guint owner = g_bus_own_name_on_connection(connection, kBusName, G_BUS_NAME_OWNER_FLAGS_NONE, nullptr,
                                               on_name_lost, loop, nullptr);
    g_main_loop_run(loop);
    g_bus_unown_name(owner);
    // Last exported first; each portal's state goes with its skeleton.
    while (!portals.empty()) {
      g_dbus_interface_skeleton_unexport(portals.back().get());
      portals.pop_back();
    }
  }
  return 0;
}
