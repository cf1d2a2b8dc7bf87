// SPDX-License-Identifier: LGPL-2.1-or-later
// file-chooser.cpp — org.freedesktop.impl.portal.FileChooser of the test
// backend: OpenFile, SaveFile and SaveFiles are recorded with their arguments
// and answered as the test scripted (Backend::handle_call).
#include "backend.hpp"
#include "test-impl-portal.h"

namespace sidebus::test_backend {
namespace {

// The three methods share one signature: (handle, app_id, parent_window, title, options).
template <const char* kMethod>
gboolean on_file_chooser_call(TestImplFileChooser*, GDBusMethodInvocation* invocation, const char* handle,
                              const char* app_id, const char* parent_window, const char* title, GVariant* options,
                              gpointer user_data) {
  auto* backend = static_cast<Backend*>(user_data);
  g_auto(GVariantBuilder) arguments = G_VARIANT_BUILDER_INIT(G_VARIANT_TYPE_VARDICT);
  g_variant_builder_add(&arguments, "{sv}", "handle", g_variant_new_object_path(handle));
  g_variant_builder_add(&arguments, "{sv}", "app_id", g_variant_new_string(app_id));
  g_variant_builder_add(&arguments, "{sv}", "parent_window", g_variant_new_string(parent_window));
  g_variant_builder_add(&arguments, "{sv}", "title", g_variant_new_string(title));
  g_variant_builder_add(&arguments, "{sv}", "options", options);
  backend->handle_call(invocation, kMethod, handle, g_variant_builder_end(&arguments));
  return G_DBUS_METHOD_INVOCATION_HANDLED;
}

constexpr char kOpenFile[] = "OpenFile";
constexpr char kSaveFile[] = "SaveFile";
constexpr char kSaveFiles[] = "SaveFiles";

}  // namespace

GObjectPtr<GDBusInterfaceSkeleton> file_chooser_export(Backend& backend, GDBusConnection* connection,
                                                       GError** error) {
  GObjectPtr<GDBusInterfaceSkeleton> skeleton(G_DBUS_INTERFACE_SKELETON(test_impl_file_chooser_skeleton_new()));
  g_signal_connect(skeleton.get(), "handle-open-file", G_CALLBACK(on_file_chooser_call<kOpenFile>), &backend);
  g_signal_connect(skeleton.get(), "handle-save-file", G_CALLBACK(on_file_chooser_call<kSaveFile>), &backend);
  g_signal_connect(skeleton.get(), "handle-save-files", G_CALLBACK(on_file_chooser_call<kSaveFiles>), &backend);
  if (!g_dbus_interface_skeleton_export(skeleton.get(), connection, kPortalPath, error)) return nullptr;
  return skeleton;
}

}  // namespace sidebus::test_backend
