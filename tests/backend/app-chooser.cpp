// SPDX-License-Identifier: LGPL-2.1-or-later
// app-chooser.cpp — org.freedesktop.impl.portal.AppChooser of the test
// backend, for OpenURI: ChooseApplication answers with the scripted results
// (e.g. {"choice": <"org.example.App">}); UpdateChoices is only recorded.
#include "backend.hpp"
#include "test-impl-portal.h"

namespace sidebus::test_backend {
namespace {

gboolean on_choose_application(TestImplAppChooser*, GDBusMethodInvocation* invocation, const char* handle,
                               const char* app_id, const char* parent_window, const char* const* choices,
                               GVariant* options, gpointer user_data) {
  auto* backend = static_cast<Backend*>(user_data);
  g_auto(GVariantBuilder) arguments = G_VARIANT_BUILDER_INIT(G_VARIANT_TYPE_VARDICT);
  g_variant_builder_add(&arguments, "{sv}", "handle", g_variant_new_object_path(handle));
  g_variant_builder_add(&arguments, "{sv}", "app_id", g_variant_new_string(app_id));
  g_variant_builder_add(&arguments, "{sv}", "parent_window", g_variant_new_string(parent_window));
  g_variant_builder_add(&arguments, "{sv}", "choices", g_variant_new_strv(choices, -1));
  g_variant_builder_add(&arguments, "{sv}", "options", options);
  backend->handle_call(invocation, "ChooseApplication", handle, g_variant_builder_end(&arguments));
  return G_DBUS_METHOD_INVOCATION_HANDLED;
}

gboolean on_update_choices(TestImplAppChooser* object, GDBusMethodInvocation* invocation, const char* handle,
                           const char* const* choices, gpointer user_data) {
  auto* backend = static_cast<Backend*>(user_data);
  g_auto(GVariantBuilder) arguments = G_VARIANT_BUILDER_INIT(G_VARIANT_TYPE_VARDICT);
  g_variant_builder_add(&arguments, "{sv}", "handle", g_variant_new_object_path(handle));
  g_variant_builder_add(&arguments, "{sv}", "choices", g_variant_new_strv(choices, -1));
  backend->record_call("UpdateChoices", g_variant_builder_end(&arguments));
  test_impl_app_chooser_complete_update_choices(object, invocation);
  return G_DBUS_METHOD_INVOCATION_HANDLED;
}

}  // namespace

GObjectPtr<GDBusInterfaceSkeleton> app_chooser_export(Backend& backend, GDBusConnection* connection,
                                                      GError** error) {
  GObjectPtr<GDBusInterfaceSkeleton> skeleton(G_DBUS_INTERFACE_SKELETON(test_impl_app_chooser_skeleton_new()));
  g_signal_connect(skeleton.get(), "handle-choose-application", G_CALLBACK(on_choose_application), &backend);
  g_signal_connect(skeleton.get(), "handle-update-choices", G_CALLBACK(on_update_choices), &backend);
  if (!g_dbus_interface_skeleton_export(skeleton.get(), connection, kPortalPath, error)) return nullptr;
  return skeleton;
}

}  // namespace sidebus::test_backend
