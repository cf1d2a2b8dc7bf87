// SPDX-License-Identifier: LGPL-2.1-or-later
// guest-clients.hpp — who is still on the guest bus: one bus name watch per
// guest client (unique name), shared by every request, session and plugin
// that needs to know when that client leaves.
#pragma once

#include <gio/gio.h>

#include <functional>
#include <map>
#include <string>

namespace sidebus {

class GuestClients {
 public:
  explicit GuestClients(GDBusConnection* guest);
  ~GuestClients();  // unwatches everything; no callback runs afterwards
  GuestClients(const GuestClients&) = delete;
  GuestClients& operator=(const GuestClients&) = delete;

  using Vanished = std::function<void(const std::string& sender)>;
  // Runs once when @sender leaves the bus (or is not on it: the bus says so
  // right away); returns an id for unwatch(), never 0.
  guint watch(const std::string& sender, Vanished listener);
  void unwatch(guint id);
  // Stops every watch (the link is going away); later calls do nothing.
  void clear();

 private:
  struct Client {
    guint bus_watch = 0;
    std::map<guint, Vanished> listeners;
  };
  static void on_vanished(GDBusConnection*, const char* name, gpointer self);

  GDBusConnection* guest_;
  std::map<std::string, Client> clients_;   // by unique name
  std::map<guint, std::string> sender_of_;  // listener id → unique name
  guint next_id_ = 1;
  bool cleared_ = false;
};

}  // namespace sidebus
