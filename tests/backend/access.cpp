// SPDX-License-Identifier: LGPL-2.1-or-later
// access.cpp — org.freedesktop.impl.portal.Access of the test backend:
// AccessDialog is "the user" granting (0) or denying (1) what the portal
// asks, as scripted; its title, subtitle and body are recorded. In
// xdg-desktop-portal 1.16 Camera.AccessCamera, non-interactive Screenshot
// and Wallpaper without preview ask it when the permission store has no
// answer yet, and store what it answered.
#include "backend.hpp"
#include "test-impl-portal.h"

namespace sidebus::test_backend {
namespace {

gboolean on_access_dialog(TestImplAccess*, GDBusMethodInvocation* invocation, const char* handle, const char* app_id,
                          const char* parent_window, const char* title, const char* subtitle, const char* body,
                          GVariant* options, gpointer user_data) {
  auto* backend = static_cast<Backend*>(user_data);
  g_auto(GVariantBuilder) arguments = G_VARIANT_BUILDER_INIT(G_VARIANT_TYPE_VARDICT);
  g_variant_builder_add(&arguments, "{sv}", "handle", g_variant_new_object_path(handle));
  g_variant_builder_add(&arguments, "{sv}", "app_id", g_variant_new_string(app_id));
  g_variant_builder_add(&arguments, "{sv}", "parent_window", g_variant_new_string(parent_window));
  g_variant_builder_add(&arguments, "{sv}", "title", g_variant_new_string(title));
  g_variant_builder_add(&arguments, "{sv}", "subtitle", g_variant_new_string(subtitle));
  g_variant_builder_add(&arguments, "{sv}", "body", g_variant_new_string(body));
  g_variant_builder_add(&arguments, "{sv}", "options", options);
  backend->handle_call(invocation, "AccessDialog", handle, g_variant_builder_end(&arguments));
  return G_DBUS_METHOD_INVOCATION_HANDLED;
}

}  // namespace

GObjectPtr<GDBusInterfaceSkeleton> access_export(Backend& backend, GDBusConnection* connection, GError** error) {
  GObjectPtr<GDBusInterfaceSkeleton> skeleton(G_DBUS_INTERFACE_SKELETON(test_impl_access_skeleton_new()));
  g_signal_connect(skeleton.get(), "handle-access-dialog", G_CALLBACK(on_access_dialog), &backend);
  if (!g_dbus_interface_skeleton_export(skeleton.get(), connection, kPortalPath, error)) return nullptr;
  return skeleton;
}

}  // namespace sidebus::test_backend
