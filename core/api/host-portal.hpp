// SPDX-License-Identifier: LGPL-2.1-or-later
// host-portal.hpp — the host's xdg-desktop-portal as the broker sees it: one
// per broker, shared by every link.
//
// It watches org.freedesktop.portal.Desktop on the host bus (activating it if
// it can be activated), and each time the portal appears it reads, without
// blocking, what the plugins may ask: the interfaces at
// /org/freedesktop/portal/desktop and all their properties (Introspect, then
// one GetAll per portal interface). Until that is done the portal is not
// ready(); links wait for it before their plugins start and the guest sees
// the portal name. When the portal exits, every listener hears it at once
// (pending requests are answered 2 and sessions end, in PortalLink), and the
// broker asks the bus to start it again, with backoff.
#pragma once

#include <gio/gio.h>

#include <functional>
#include <map>
#include <memory>
#include <string>

#include "util/gobject-ptr.hpp"

namespace sidebus {

class HostPortal {
 public:
  explicit HostPortal(GDBusConnection* host_bus);
  ~HostPortal();
  HostPortal(const HostPortal&) = delete;
  HostPortal& operator=(const HostPortal&) = delete;

  GDBusConnection* connection() const { return connection_.get(); }
  // The portal runs and its properties have been read.
  bool ready() const { return ready_; }
  // "version" of @interface_name; 0 if the host portal has no such interface.
  guint32 version(const std::string& interface_name) const;
  // A property read when the portal last appeared; nullptr if there is none.
  VariantPtr property(const std::string& interface_name, const std::string& property_name) const;

  // on_ready: the portal (re)appeared and its properties are read; on_gone:
  // it left the bus. Both run on the main context; remove before the
  // listener goes away.
  struct Listener {
    std::function<void()> on_ready;
    std::function<void()> on_gone;
  };
  guint add_listener(Listener listener);
  void remove_listener(guint id);

 private:
  static void on_appeared(GDBusConnection*, const char* name, const char* owner, gpointer self);
  static void on_vanished(GDBusConnection*, const char* name, gpointer self);
  static void on_introspected(GObject* source, GAsyncResult* result, gpointer self);
  static void on_properties(GObject* source, GAsyncResult* result, gpointer data);
  void read_properties();
  void finish_reading();
  void schedule_start();

  GObjectPtr<GDBusConnection> connection_;
  GObjectPtr<GCancellable> lifetime_;  // cancelled on destruction
  guint watch_ = 0;
  guint retry_source_ = 0;            // reading again after a failed Introspect
  GObjectPtr<GCancellable> reading_;  // the Introspect/GetAll of the current owner
  std::string owner_;                 // unique name of the portal, "" when gone
  bool ready_ = false;
  int reads_pending_ = 0;
  using Properties = std::map<std::string, VariantPtr>;  // property name → value
  std::map<std::string, Properties> interfaces_;         // interface name → its properties
  std::map<std::string, Properties> reading_interfaces_;
  guint start_source_ = 0;
  guint start_delay_s_ = 1;  // doubled per failed start, at most kMaxStartDelay
  std::map<guint, Listener> listeners_;
  guint next_listener_ = 1;
};

}  // namespace sidebus
