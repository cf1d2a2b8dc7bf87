// SPDX-License-Identifier: LGPL-2.1-or-later
// wallpaper.cpp — org.freedesktop.impl.portal.Wallpaper of the test backend:
// SetWallpaperURI is recorded with its uri and options, and for a file://
// URI the file's bytes ("file_data"); it answers the scripted response.
// xdg-desktop-portal 1.16 asks the Access backend first unless the app asked
// for a preview ("show-preview") or the permission store already allows it,
// and turns SetWallpaperFile's fd into a file:// URI of its path.
#include "backend.hpp"
#include "test-impl-portal.h"

namespace sidebus::test_backend {
namespace {

gboolean on_set_wallpaper_uri(TestImplWallpaper*, GDBusMethodInvocation* invocation, const char* handle,
                              const char* app_id, const char* parent_window, const char* uri, GVariant* options,
                              gpointer user_data) {
  auto* backend = static_cast<Backend*>(user_data);
  g_auto(GVariantBuilder) arguments = G_VARIANT_BUILDER_INIT(G_VARIANT_TYPE_VARDICT);
  g_variant_builder_add(&arguments, "{sv}", "handle", g_variant_new_object_path(handle));
  g_variant_builder_add(&arguments, "{sv}", "app_id", g_variant_new_string(app_id));
  g_variant_builder_add(&arguments, "{sv}", "parent_window", g_variant_new_string(parent_window));
  g_variant_builder_add(&arguments, "{sv}", "uri", g_variant_new_string(uri));
  g_variant_builder_add(&arguments, "{sv}", "options", options);
  g_autofree char* path = g_filename_from_uri(uri, nullptr, nullptr);
  if (path != nullptr) g_variant_builder_add(&arguments, "{sv}", "file_data", read_file_bytes(path).get());
  backend->handle_call(invocation, "SetWallpaperURI", handle, g_variant_builder_end(&arguments),
                       CallOptions{.shape = ReplyShape::kResponse});
  return G_DBUS_METHOD_INVOCATION_HANDLED;
}

}  // namespace

GObjectPtr<GDBusInterfaceSkeleton> wallpaper_export(Backend& backend, GDBusConnection* connection, GError** error) {
  GObjectPtr<GDBusInterfaceSkeleton> skeleton(G_DBUS_INTERFACE_SKELETON(test_impl_wallpaper_skeleton_new()));
  g_signal_connect(skeleton.get(), "handle-set-wallpaper-uri", G_CALLBACK(on_set_wallpaper_uri), &backend);
  if (!g_dbus_interface_skeleton_export(skeleton.get(), connection, kPortalPath, error)) return nullptr;
  return skeleton;
}

}  // namespace sidebus::test_backend
