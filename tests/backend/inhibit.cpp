// SPDX-License-Identifier: LGPL-2.1-or-later
// inhibit.cpp — org.freedesktop.impl.portal.Inhibit of the test backend:
//  - Inhibit returns at once (or fails, as scripted) and keeps its Request
//    exported until the portal closes it: the inhibition lasts that long,
//    and "closed" in its record says it ended;
//  - CreateMonitor exports an org.freedesktop.impl.portal.Session at the
//    session handle and answers the scripted response; a test sends
//    StateChanged for it with EmitStateChanged;
//  - QueryEndResponse is recorded.
#include "backend.hpp"
#include "test-backend-control.h"
#include "test-impl-portal.h"

namespace sidebus::test_backend {
namespace {

struct InhibitState {
  Backend* backend = nullptr;
  TestImplInhibit* skeleton = nullptr;  // borrowed: the state lives as long as it
  gulong emit_handler = 0;

  ~InhibitState() { g_signal_handler_disconnect(backend->control(), emit_handler); }
};

gboolean on_inhibit(TestImplInhibit*, GDBusMethodInvocation* invocation, const char* handle, const char* app_id,
                    const char* window, guint32 flags, GVariant* options, gpointer user_data) {
  auto* state = static_cast<InhibitState*>(user_data);
  g_auto(GVariantBuilder) arguments = G_VARIANT_BUILDER_INIT(G_VARIANT_TYPE_VARDICT);
  g_variant_builder_add(&arguments, "{sv}", "handle", g_variant_new_object_path(handle));
  g_variant_builder_add(&arguments, "{sv}", "app_id", g_variant_new_string(app_id));
  g_variant_builder_add(&arguments, "{sv}", "window", g_variant_new_string(window));
  g_variant_builder_add(&arguments, "{sv}", "flags", g_variant_new_uint32(flags));
  g_variant_builder_add(&arguments, "{sv}", "options", options);
  state->backend->handle_call(invocation, "Inhibit", handle, g_variant_builder_end(&arguments),
                              CallOptions{.shape = ReplyShape::kNothing, .request_outlives_answer = true});
  return G_DBUS_METHOD_INVOCATION_HANDLED;
}

gboolean on_create_monitor(TestImplInhibit*, GDBusMethodInvocation* invocation, const char* handle,
                           const char* session_handle, const char* app_id, const char* window, gpointer user_data) {
  auto* state = static_cast<InhibitState*>(user_data);
  g_auto(GVariantBuilder) arguments = G_VARIANT_BUILDER_INIT(G_VARIANT_TYPE_VARDICT);
  g_variant_builder_add(&arguments, "{sv}", "handle", g_variant_new_object_path(handle));
  g_variant_builder_add(&arguments, "{sv}", "session_handle", g_variant_new_object_path(session_handle));
  g_variant_builder_add(&arguments, "{sv}", "app_id", g_variant_new_string(app_id));
  g_variant_builder_add(&arguments, "{sv}", "window", g_variant_new_string(window));
  // The session exists from the call on, as in real backends; the portal
  // closes it if the answer is not 0.
  g_autoptr(GError) error = nullptr;
  if (!state->backend->export_session(session_handle, nullptr, &error)) {
    state->backend->record_call("CreateMonitor", g_variant_builder_end(&arguments));
    g_dbus_method_invocation_return_gerror(invocation, error);
    return G_DBUS_METHOD_INVOCATION_HANDLED;
  }
  state->backend->handle_call(invocation, "CreateMonitor", handle, g_variant_builder_end(&arguments),
                              CallOptions{.shape = ReplyShape::kResponse});
  return G_DBUS_METHOD_INVOCATION_HANDLED;
}

gboolean on_query_end_response(TestImplInhibit* object, GDBusMethodInvocation* invocation, const char* session_handle,
                               gpointer user_data) {
  auto* state = static_cast<InhibitState*>(user_data);
  state->backend->record_call("QueryEndResponse", g_variant_new_parsed("{'session_handle': <%o>}", session_handle));
  test_impl_inhibit_complete_query_end_response(object, invocation);
  return G_DBUS_METHOD_INVOCATION_HANDLED;
}

gboolean on_emit_state_changed(TestControlBackend* control, GDBusMethodInvocation* invocation,
                               const char* session_handle, GVariant* inhibit_state, gpointer user_data) {
  auto* state = static_cast<InhibitState*>(user_data);
  test_impl_inhibit_emit_state_changed(state->skeleton, session_handle, inhibit_state);
  test_control_backend_complete_emit_state_changed(control, invocation);
  return G_DBUS_METHOD_INVOCATION_HANDLED;
}

}  // namespace

GObjectPtr<GDBusInterfaceSkeleton> inhibit_export(Backend& backend, GDBusConnection* connection, GError** error) {
  GObjectPtr<GDBusInterfaceSkeleton> skeleton(G_DBUS_INTERFACE_SKELETON(test_impl_inhibit_skeleton_new()));
  auto owned = std::make_unique<InhibitState>();
  owned->backend = &backend;
  owned->skeleton = TEST_IMPL_INHIBIT(skeleton.get());
  InhibitState* state = attach_state(skeleton.get(), std::move(owned));
  state->emit_handler =
      g_signal_connect(backend.control(), "handle-emit-state-changed", G_CALLBACK(on_emit_state_changed), state);
  g_signal_connect(skeleton.get(), "handle-inhibit", G_CALLBACK(on_inhibit), state);
  g_signal_connect(skeleton.get(), "handle-create-monitor", G_CALLBACK(on_create_monitor), state);
  g_signal_connect(skeleton.get(), "handle-query-end-response", G_CALLBACK(on_query_end_response), state);
  if (!g_dbus_interface_skeleton_export(skeleton.get(), connection, kPortalPath, error)) return nullptr;
  return skeleton;
}

}  // namespace sidebus::test_backend
