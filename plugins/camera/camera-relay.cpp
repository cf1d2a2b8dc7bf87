// SPDX-License-Identifier: LGPL-2.1-or-later
// camera-relay.cpp — see camera-relay.hpp.
#include "camera-relay.hpp"

#include "stream-relay.hpp"

namespace camera {

struct CameraRelays::Client {
  std::unique_ptr<sidebus::plugins::StreamRelay> relay;
  bool started = false;
  std::vector<GDBusMethodInvocation*> waiting;  // references, answered once started
  guint watch = 0;
};

CameraRelays::CameraRelays(SidebusContext* context) : context_(context) {}

CameraRelays::~CameraRelays() {
  for (auto& [sender, client] : clients_) {
    sidebus_context_unwatch_guest_client(context_, client->watch);
    for (GDBusMethodInvocation* invocation : client->waiting)
      g_dbus_method_invocation_return_error_literal(invocation, SIDEBUS_ERROR, SIDEBUS_ERROR_FAILED,
                                                    "the VM link is closing");
  }
}

void CameraRelays::client_left(const std::string& sender) {
  auto found = clients_.find(sender);
  if (found == clients_.end()) return;
  for (GDBusMethodInvocation* invocation : found->second->waiting) g_object_unref(invocation);
  clients_.erase(found);
}

void CameraRelays::open_remote(GDBusMethodInvocation* invocation) {
  const std::string sender = g_dbus_method_invocation_get_sender(invocation);
  auto found = clients_.find(sender);
  if (found != clients_.end()) {
    Client& client = *found->second;
    if (client.started)
      client.relay->open_remote(invocation);
    else
      client.waiting.push_back(G_DBUS_METHOD_INVOCATION(g_object_ref(invocation)));
    return;
  }
  if (clients_.size() >= kMaxClients) {
    sidebus_context_reject(context_, invocation,
                           g_error_new(SIDEBUS_ERROR, SIDEBUS_ERROR_LIMITS_EXCEEDED,
                                       "%zu apps of this VM use the camera already", kMaxClients));
    return;
  }
  auto client = std::make_unique<Client>();
  client->relay = std::make_unique<sidebus::plugins::StreamRelay>(
      context_, "org.freedesktop.portal.Camera",
      g_variant_new("(@a{sv})", g_variant_new_array(G_VARIANT_TYPE("{sv}"), nullptr, 0)), "Camera");
  client->waiting.push_back(G_DBUS_METHOD_INVOCATION(g_object_ref(invocation)));
  client->watch = sidebus_context_watch_guest_client(
      context_, sender.c_str(),
      [](SidebusContext*, const char* who, gpointer data) { static_cast<CameraRelays*>(data)->client_left(who); }, this,
      nullptr);
  Client* made = client.get();
  clients_[sender] = std::move(client);
  made->relay->start_discovering([this, sender, made](std::vector<uint32_t>, GError* error) {
    std::vector<GDBusMethodInvocation*> waiting = std::move(made->waiting);
    if (error != nullptr) {
      for (GDBusMethodInvocation* call : waiting) {
        sidebus_context_reject(context_, call, g_error_copy(error));
        g_object_unref(call);
      }
      // Gone from an idle: we are inside the relay's callback. The next call starts afresh.
      auto found_client = clients_.find(sender);
      if (found_client != clients_.end()) {
        sidebus_context_unwatch_guest_client(context_, found_client->second->watch);
        Client* dying = found_client->second.release();
        clients_.erase(found_client);
        g_idle_add_full(
            G_PRIORITY_DEFAULT,
            [](gpointer data) -> gboolean {
              delete static_cast<Client*>(data);
              return G_SOURCE_REMOVE;
            },
            dying, nullptr);
      }
      return;
    }
    made->started = true;
    for (GDBusMethodInvocation* call : waiting) {
      made->relay->open_remote(call);
      g_object_unref(call);
    }
  });
}

}  // namespace camera
