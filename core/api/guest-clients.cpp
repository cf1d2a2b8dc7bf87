// SPDX-License-Identifier: LGPL-2.1-or-later
// guest-clients.cpp — see guest-clients.hpp. A client's bus watch (AddMatch
// and GetNameOwner, both asynchronous in GDBus) is made when its first
// listener comes and dropped when its last one goes.
#include "api/guest-clients.hpp"

#include <vector>

namespace sidebus {

GuestClients::GuestClients(GDBusConnection* guest) : guest_(guest) {}

GuestClients::~GuestClients() { clear(); }

void GuestClients::clear() {
  cleared_ = true;
  for (auto& [name, client] : clients_) g_bus_unwatch_name(client.bus_watch);
  clients_.clear();
  sender_of_.clear();
}

guint GuestClients::watch(const std::string& sender, Vanished listener) {
  guint id = next_id_++;
  if (cleared_) return id;
  auto [client, inserted] = clients_.try_emplace(sender);
  client->second.listeners.emplace(id, std::move(listener));
  sender_of_.emplace(id, sender);
  if (inserted)
    client->second.bus_watch = g_bus_watch_name_on_connection(guest_, sender.c_str(), G_BUS_NAME_WATCHER_FLAGS_NONE,
                                                              nullptr, on_vanished, this, nullptr);
  return id;
}

void GuestClients::unwatch(guint id) {
  auto sender = sender_of_.find(id);
  if (sender == sender_of_.end()) return;
  auto client = clients_.find(sender->second);
  sender_of_.erase(sender);
  if (client == clients_.end()) return;
  client->second.listeners.erase(id);
  if (!client->second.listeners.empty()) return;
  g_bus_unwatch_name(client->second.bus_watch);
  clients_.erase(client);
}

void GuestClients::on_vanished(GDBusConnection*, const char* name, gpointer data) {
  auto* self = static_cast<GuestClients*>(data);
  const std::string sender = name;  // @name belongs to the watch dropped below
  auto client = self->clients_.find(sender);
  if (client == self->clients_.end()) return;
  // Unique names are never reused: the watch and every listener are done.
  g_bus_unwatch_name(client->second.bus_watch);
  std::vector<Vanished> calls;
  for (auto& [id, listener] : client->second.listeners) {
    calls.push_back(std::move(listener));
    self->sender_of_.erase(id);
  }
  self->clients_.erase(client);
  for (auto& call : calls) {
    if (self->cleared_) return;
    call(sender);
  }
}

}  // namespace sidebus
