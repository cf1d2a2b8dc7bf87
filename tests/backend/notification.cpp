// SPDX-License-Identifier: LGPL-2.1-or-later
// notification.cpp — org.freedesktop.impl.portal.Notification of the test
// backend: AddNotification and RemoveNotification are recorded (app_id, id
// and the whole notification dict as the portal passed it on); a test makes
// "the user" click with EmitActionInvoked, which emits ActionInvoked. The
// calls answer at once, or fail if SetReply scripted 0xFFFFFFFE for them.
#include "backend.hpp"
#include "test-backend-control.h"
#include "test-impl-portal.h"

namespace sidebus::test_backend {
namespace {

struct NotificationState {
  Backend* backend = nullptr;
  TestImplNotification* skeleton = nullptr;  // borrowed: the state lives as long as it
  gulong emit_handler = 0;

  ~NotificationState() { g_signal_handler_disconnect(backend->control(), emit_handler); }
};

// False (and the call failed) if the test scripted a D-Bus error for @method.
bool scripted_ok(Backend* backend, GDBusMethodInvocation* invocation, const char* method) {
  if (backend->scripted_response(method) != kResponseDBusError) return true;
  g_dbus_method_invocation_return_dbus_error(invocation, "org.freedesktop.DBus.Error.Failed",
                                             "failure scripted by the test");
  return false;
}

gboolean on_add_notification(TestImplNotification* object, GDBusMethodInvocation* invocation, const char* app_id,
                             const char* id, GVariant* notification, gpointer user_data) {
  auto* state = static_cast<NotificationState*>(user_data);
  g_auto(GVariantBuilder) arguments = G_VARIANT_BUILDER_INIT(G_VARIANT_TYPE_VARDICT);
  g_variant_builder_add(&arguments, "{sv}", "app_id", g_variant_new_string(app_id));
  g_variant_builder_add(&arguments, "{sv}", "id", g_variant_new_string(id));
  g_variant_builder_add(&arguments, "{sv}", "notification", notification);
  state->backend->record_call("AddNotification", g_variant_builder_end(&arguments));
  if (scripted_ok(state->backend, invocation, "AddNotification"))
    test_impl_notification_complete_add_notification(object, invocation);
  return G_DBUS_METHOD_INVOCATION_HANDLED;
}

gboolean on_remove_notification(TestImplNotification* object, GDBusMethodInvocation* invocation, const char* app_id,
                                const char* id, gpointer user_data) {
  auto* state = static_cast<NotificationState*>(user_data);
  state->backend->record_call("RemoveNotification", g_variant_new_parsed("{'app_id': <%s>, 'id': <%s>}", app_id, id));
  if (scripted_ok(state->backend, invocation, "RemoveNotification"))
    test_impl_notification_complete_remove_notification(object, invocation);
  return G_DBUS_METHOD_INVOCATION_HANDLED;
}

gboolean on_emit_action_invoked(TestControlBackend* control, GDBusMethodInvocation* invocation, const char* app_id,
                                const char* id, const char* action, GVariant* parameter, gpointer user_data) {
  auto* state = static_cast<NotificationState*>(user_data);
  test_impl_notification_emit_action_invoked(state->skeleton, app_id, id, action, parameter);
  test_control_backend_complete_emit_action_invoked(control, invocation);
  return G_DBUS_METHOD_INVOCATION_HANDLED;
}

}  // namespace

GObjectPtr<GDBusInterfaceSkeleton> notification_export(Backend& backend, GDBusConnection* connection, GError** error) {
  GObjectPtr<GDBusInterfaceSkeleton> skeleton(G_DBUS_INTERFACE_SKELETON(test_impl_notification_skeleton_new()));
  auto owned = std::make_unique<NotificationState>();
  owned->backend = &backend;
  owned->skeleton = TEST_IMPL_NOTIFICATION(skeleton.get());
  NotificationState* state = attach_state(skeleton.get(), std::move(owned));
  state->emit_handler =
      g_signal_connect(backend.control(), "handle-emit-action-invoked", G_CALLBACK(on_emit_action_invoked), state);
  g_signal_connect(skeleton.get(), "handle-add-notification", G_CALLBACK(on_add_notification), state);
  g_signal_connect(skeleton.get(), "handle-remove-notification", G_CALLBACK(on_remove_notification), state);
  if (!g_dbus_interface_skeleton_export(skeleton.get(), connection, kPortalPath, error)) return nullptr;
  return skeleton;
}

}  // namespace sidebus::test_backend
