// SPDX-License-Identifier: LGPL-2.1-or-later
// email.cpp — org.freedesktop.impl.portal.Email of the test backend:
// ComposeEmail is recorded with its options and the bytes of every
// attachment, and answered as scripted. xdg-desktop-portal 1.16 turns the
// app's "attachment_fds" (ah) into "attachments" (as, the files' paths)
// before it calls the backend; an "attachment_fds" option is read from the
// message's fds as well, for portals that pass them on.
#include <gio/gunixfdlist.h>
#include <unistd.h>

#include "backend.hpp"
#include "test-impl-portal.h"

namespace sidebus::test_backend {
namespace {

// "attachment_data" (aay): the bytes of each attachment, paths first, then fds.
GVariant* attachment_data(GDBusMethodInvocation* invocation, GVariant* options) {
  g_auto(GVariantBuilder) data = G_VARIANT_BUILDER_INIT(G_VARIANT_TYPE("aay"));
  g_autofree const char** paths = nullptr;
  if (g_variant_lookup(options, "attachments", "^a&s", &paths))
    for (const char** path = paths; *path != nullptr; path++)
      g_variant_builder_add_value(&data, read_file_bytes(*path).get());
  g_autoptr(GVariant) handles = g_variant_lookup_value(options, "attachment_fds", G_VARIANT_TYPE("ah"));
  GUnixFDList* fds = g_dbus_message_get_unix_fd_list(g_dbus_method_invocation_get_message(invocation));
  if (handles != nullptr && fds != nullptr) {
    for (gsize i = 0; i < g_variant_n_children(handles); i++) {
      gint32 index = 0;
      g_variant_get_child(handles, i, "h", &index);
      const int fd = g_unix_fd_list_get(fds, index, nullptr);
      if (fd < 0) continue;
      g_variant_builder_add_value(&data, read_fd_bytes(fd).get());
      close(fd);
    }
  }
  return g_variant_builder_end(&data);
}

gboolean on_compose_email(TestImplEmail*, GDBusMethodInvocation* invocation, const char* handle, const char* app_id,
                          const char* parent_window, GVariant* options, gpointer user_data) {
  auto* backend = static_cast<Backend*>(user_data);
  g_auto(GVariantBuilder) arguments = G_VARIANT_BUILDER_INIT(G_VARIANT_TYPE_VARDICT);
  g_variant_builder_add(&arguments, "{sv}", "handle", g_variant_new_object_path(handle));
  g_variant_builder_add(&arguments, "{sv}", "app_id", g_variant_new_string(app_id));
  g_variant_builder_add(&arguments, "{sv}", "parent_window", g_variant_new_string(parent_window));
  g_variant_builder_add(&arguments, "{sv}", "options", options);
  g_variant_builder_add(&arguments, "{sv}", "attachment_data", attachment_data(invocation, options));
  backend->handle_call(invocation, "ComposeEmail", handle, g_variant_builder_end(&arguments));
  return G_DBUS_METHOD_INVOCATION_HANDLED;
}

}  // namespace

GObjectPtr<GDBusInterfaceSkeleton> email_export(Backend& backend, GDBusConnection* connection, GError** error) {
  GObjectPtr<GDBusInterfaceSkeleton> skeleton(G_DBUS_INTERFACE_SKELETON(test_impl_email_skeleton_new()));
  g_signal_connect(skeleton.get(), "handle-compose-email", G_CALLBACK(on_compose_email), &backend);
  if (!g_dbus_interface_skeleton_export(skeleton.get(), connection, kPortalPath, error)) return nullptr;
  return skeleton;
}

}  // namespace sidebus::test_backend
