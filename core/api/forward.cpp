// SPDX-License-Identifier: LGPL-2.1-or-later
// forward.cpp — the forwarding helpers of the plugin API: a plain method
// call to the host portal with fds both ways, host signal subscriptions,
// guest signals and guest client watches. Each ties what it starts to the
// plugin's context, so the context's release() ends it.
#include <memory>

#include "api/context.hpp"
#include "api/portal-link.hpp"

namespace {

struct ForwardedCall : sidebus::PendingWork {
  sidebus::GObjectPtr<GDBusMethodInvocation> invocation;
  SidebusReplyFunc on_reply = nullptr;
};

// Answers @invocation with the host's error, under the host's error name
// (the guest asked the same portal).
void return_host_error(GDBusMethodInvocation* invocation, GError* error) {
  g_autofree char* remote_name = g_dbus_error_get_remote_error(error);
  if (remote_name != nullptr) {
    g_dbus_error_strip_remote_error(error);
    g_dbus_method_invocation_return_dbus_error(invocation, remote_name, error->message);
  } else {
    g_dbus_method_invocation_return_error(invocation, SIDEBUS_ERROR, SIDEBUS_ERROR_FAILED, "the host portal failed: %s",
                                          error->message);
  }
}

void on_forwarded_reply(GObject* source, GAsyncResult* result, gpointer data) {
  std::unique_ptr<std::shared_ptr<ForwardedCall>> holder(static_cast<std::shared_ptr<ForwardedCall>*>(data));
  ForwardedCall& call = **holder;
  GUnixFDList* host_fds_raw = nullptr;
  g_autoptr(GError) error = nullptr;
  g_autoptr(GVariant) reply =
      g_dbus_connection_call_with_unix_fd_list_finish(G_DBUS_CONNECTION(source), &host_fds_raw, result, &error);
  g_autoptr(GUnixFDList) host_fds = host_fds_raw;
  GDBusMethodInvocation* invocation = G_DBUS_METHOD_INVOCATION(g_object_ref(call.invocation.get()));
  if (!call.complete()) {  // the link is going away
    g_dbus_method_invocation_return_error(invocation, SIDEBUS_ERROR, SIDEBUS_ERROR_FAILED, "the VM's link is closing");
    return;
  }
  SidebusContext* context = call.context;
  if (reply == nullptr) {
    sidebus_context_log(context, G_LOG_LEVEL_DEBUG, "host %s.%s failed: %s",
                        g_dbus_method_invocation_get_interface_name(invocation),
                        g_dbus_method_invocation_get_method_name(invocation), error->message);
    return_host_error(invocation, error);
    return;
  }
  g_autoptr(GVariant) guest_reply = nullptr;
  g_autoptr(GUnixFDList) guest_fds = nullptr;
  if (call.on_reply != nullptr) {
    GUnixFDList* rewritten_fds = nullptr;
    GVariant* rewritten = call.on_reply(context, reply, host_fds, &rewritten_fds, call.user_data, &error);
    guest_fds = rewritten_fds;
    if (rewritten == nullptr) {
      sidebus_context_reject(context, invocation, g_steal_pointer(&error));
      return;
    }
    guest_reply = g_variant_ref_sink(rewritten);
  } else {
    guest_reply = g_variant_ref(reply);
    guest_fds = host_fds != nullptr ? G_UNIX_FD_LIST(g_object_ref(host_fds)) : nullptr;
  }
  if (guest_fds != nullptr && g_unix_fd_list_get_length(guest_fds) > 0 && !sidebus_context_require_fds(context, &error)) {
    sidebus_context_reject(context, invocation, g_steal_pointer(&error));
    return;
  }
  g_dbus_method_invocation_return_value_with_unix_fd_list(invocation, guest_reply, guest_fds);
}

struct HostSignal {
  SidebusContext* context;
  SidebusHostSignalFunc func;
  gpointer user_data;
  GDestroyNotify destroy_notify;
  ~HostSignal() {
    if (destroy_notify != nullptr) destroy_notify(user_data);
  }
};

// A guest client watch's user data, released when the watch ends (the
// std::function holding it is dropped by GuestClients).
struct ClientWatch {
  SidebusContext* context = nullptr;
  guint id = 0;
  SidebusClientVanishedFunc func = nullptr;
  gpointer user_data = nullptr;
  GDestroyNotify destroy_notify = nullptr;
  ~ClientWatch() {
    if (destroy_notify != nullptr) destroy_notify(user_data);
  }
};

}  // namespace

extern "C" {

void sidebus_context_forward_call(SidebusContext* context, GDBusMethodInvocation* invocation,
                                  const char* interface_name, const char* method_name, GVariant* parameters,
                                  GUnixFDList* fd_list, SidebusReplyFunc on_reply, gpointer user_data,
                                  GDestroyNotify destroy_notify) {
  g_autoptr(GVariant) owned_parameters = parameters != nullptr ? g_variant_ref_sink(parameters) : nullptr;
  auto call = std::make_shared<ForwardedCall>();
  call->invocation = sidebus::retain(invocation);
  call->on_reply = on_reply;
  call->user_data = user_data;
  call->destroy_notify = destroy_notify;
  g_autoptr(GError) error = nullptr;
  if (context->link == nullptr || context->link->closing()) {
    g_dbus_method_invocation_return_error(invocation, SIDEBUS_ERROR, SIDEBUS_ERROR_FAILED, "the VM's link is closing");
    return;
  }
  if (!context->link->require_host_portal(&error)) {
    sidebus_context_reject(context, invocation, g_steal_pointer(&error));
    return;
  }
  context->add_pending(call);
  g_dbus_connection_call_with_unix_fd_list(context->link->host(), SIDEBUS_PORTAL_BUS_NAME, SIDEBUS_PORTAL_OBJECT_PATH,
                                           interface_name, method_name, owned_parameters, nullptr,
                                           G_DBUS_CALL_FLAGS_NO_AUTO_START, -1, fd_list, context->lifetime.get(),
                                           on_forwarded_reply, new std::shared_ptr<ForwardedCall>(call));
}

guint sidebus_context_subscribe_host_signal(SidebusContext* context, const char* interface_name,
                                            const char* signal_name, const char* object_path,
                                            SidebusHostSignalFunc func, gpointer user_data,
                                            GDestroyNotify destroy_notify) {
  auto* signal = new HostSignal{context, func, user_data, destroy_notify};
  if (context->link == nullptr) {
    delete signal;
    return 0;
  }
  guint subscription = g_dbus_connection_signal_subscribe(
      context->link->host(), SIDEBUS_PORTAL_BUS_NAME, interface_name, signal_name, object_path, nullptr,
      G_DBUS_SIGNAL_FLAGS_NONE,
      [](GDBusConnection*, const char*, const char* path, const char*, const char* name, GVariant* parameters,
         gpointer data) {
        auto* signal = static_cast<HostSignal*>(data);
        signal->func(signal->context, path, name, parameters, signal->user_data);
      },
      signal, [](gpointer data) { delete static_cast<HostSignal*>(data); });
  guint id = context->next_id++;
  context->host_signals[id] = subscription;
  return id;
}

void sidebus_context_unsubscribe_host_signal(SidebusContext* context, guint subscription_id) {
  auto found = context->host_signals.find(subscription_id);
  if (found == context->host_signals.end() || context->link == nullptr) return;
  g_dbus_connection_signal_unsubscribe(context->link->host(), found->second);
  context->host_signals.erase(found);
}

void sidebus_context_emit_guest_signal(SidebusContext* context, const char* destination, const char* object_path,
                                       const char* interface_name, const char* signal_name, GVariant* parameters) {
  g_autoptr(GVariant) owned = parameters != nullptr ? g_variant_ref_sink(parameters) : nullptr;
  if (context->link == nullptr || context->link->closing()) return;
  g_dbus_connection_emit_signal(context->link->guest(), destination,
                                object_path != nullptr ? object_path : SIDEBUS_PORTAL_OBJECT_PATH, interface_name,
                                signal_name, owned, nullptr);
}

guint sidebus_context_watch_guest_client(SidebusContext* context, const char* sender, SidebusClientVanishedFunc func,
                                         gpointer user_data, GDestroyNotify destroy_notify) {
  auto watch = std::make_shared<ClientWatch>();
  watch->context = context;
  watch->func = func;
  watch->user_data = user_data;
  watch->destroy_notify = destroy_notify;
  if (context->link == nullptr) return 0;  // @watch releases the user data
  guint id = context->next_id++;
  watch->id = id;
  guint clients_id = context->link->clients().watch(sender, [watch](const std::string& name) {
    watch->context->client_watches.erase(watch->id);
    watch->func(watch->context, name.c_str(), watch->user_data);
  });
  context->client_watches[id] = clients_id;
  return id;
}

void sidebus_context_unwatch_guest_client(SidebusContext* context, guint watch_id) {
  auto found = context->client_watches.find(watch_id);
  if (found == context->client_watches.end() || context->link == nullptr) return;
  context->link->clients().unwatch(found->second);
  context->client_watches.erase(found);
}

}  // extern "C"
