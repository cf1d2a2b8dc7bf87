// SPDX-License-Identifier: LGPL-2.1-or-later
// print.cpp — org.freedesktop.impl.portal.Print of the test backend:
//  - PreparePrint is recorded and answered as scripted; on success, results
//    the test did not script get defaults: "settings", "page-setup" and a
//    fresh "token" (u), which the app passes to Print;
//  - Print is recorded with the bytes of the document fd it was given
//    ("data"), then answered as scripted.
#include <gio/gunixfdlist.h>
#include <unistd.h>

#include "backend.hpp"
#include "test-impl-portal.h"

namespace sidebus::test_backend {
namespace {

guint32 next_token = 1;

gboolean on_prepare_print(TestImplPrint*, GDBusMethodInvocation* invocation, const char* handle, const char* app_id,
                          const char* parent_window, const char* title, GVariant* settings, GVariant* page_setup,
                          GVariant* options, gpointer user_data) {
  auto* backend = static_cast<Backend*>(user_data);
  g_auto(GVariantBuilder) arguments = G_VARIANT_BUILDER_INIT(G_VARIANT_TYPE_VARDICT);
  g_variant_builder_add(&arguments, "{sv}", "handle", g_variant_new_object_path(handle));
  g_variant_builder_add(&arguments, "{sv}", "app_id", g_variant_new_string(app_id));
  g_variant_builder_add(&arguments, "{sv}", "parent_window", g_variant_new_string(parent_window));
  g_variant_builder_add(&arguments, "{sv}", "title", g_variant_new_string(title));
  g_variant_builder_add(&arguments, "{sv}", "settings", settings);
  g_variant_builder_add(&arguments, "{sv}", "page_setup", page_setup);
  g_variant_builder_add(&arguments, "{sv}", "options", options);
  CallOptions call;
  call.results = [](guint32 response, GVariant* scripted) {
    if (response != kResponseSuccess) return VariantPtr(g_variant_ref(scripted));
    VariantPtr results =
        with_default(scripted, "settings",
                     g_variant_new_parsed(
                         "{'printer': <'sidebus-test-printer'>, 'n-copies': <'1'>, 'output-file-format': <'pdf'>}"));
    results = with_default(results.get(), "page-setup",
                           g_variant_new_parsed("{'PPDName': <'iso_a4'>, 'DisplayName': <'A4'>, 'Width': <210.0>,"
                                                " 'Height': <297.0>, 'Orientation': <'portrait'>}"));
    return with_default(results.get(), "token", g_variant_new_uint32(next_token++));
  };
  backend->handle_call(invocation, "PreparePrint", handle, g_variant_builder_end(&arguments), std::move(call));
  return G_DBUS_METHOD_INVOCATION_HANDLED;
}

gboolean on_print(TestImplPrint*, GDBusMethodInvocation* invocation, GUnixFDList* fds, const char* handle,
                  const char* app_id, const char* parent_window, const char* title, GVariant* fd_handle,
                  GVariant* options, gpointer user_data) {
  auto* backend = static_cast<Backend*>(user_data);
  g_auto(GVariantBuilder) arguments = G_VARIANT_BUILDER_INIT(G_VARIANT_TYPE_VARDICT);
  g_variant_builder_add(&arguments, "{sv}", "handle", g_variant_new_object_path(handle));
  g_variant_builder_add(&arguments, "{sv}", "app_id", g_variant_new_string(app_id));
  g_variant_builder_add(&arguments, "{sv}", "parent_window", g_variant_new_string(parent_window));
  g_variant_builder_add(&arguments, "{sv}", "title", g_variant_new_string(title));
  g_variant_builder_add(&arguments, "{sv}", "options", options);
  const int fd = fds != nullptr ? g_unix_fd_list_get(fds, g_variant_get_handle(fd_handle), nullptr) : -1;
  if (fd >= 0) {
    g_variant_builder_add(&arguments, "{sv}", "data", read_fd_bytes(fd).get());
    close(fd);
  }
  backend->handle_call(invocation, "Print", handle, g_variant_builder_end(&arguments));
  return G_DBUS_METHOD_INVOCATION_HANDLED;
}

}  // namespace

GObjectPtr<GDBusInterfaceSkeleton> print_export(Backend& backend, GDBusConnection* connection, GError** error) {
  GObjectPtr<GDBusInterfaceSkeleton> skeleton(G_DBUS_INTERFACE_SKELETON(test_impl_print_skeleton_new()));
  g_signal_connect(skeleton.get(), "handle-prepare-print", G_CALLBACK(on_prepare_print), &backend);
  g_signal_connect(skeleton.get(), "handle-print", G_CALLBACK(on_print), &backend);
  if (!g_dbus_interface_skeleton_export(skeleton.get(), connection, kPortalPath, error)) return nullptr;
  return skeleton;
}

}  // namespace sidebus::test_backend
