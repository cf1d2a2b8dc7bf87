// SPDX-License-Identifier: LGPL-2.1-or-later
// host-portal.cpp — see host-portal.hpp. Every call is asynchronous; a
// callback that finds its cancellable cancelled (the portal left, or the
// HostPortal is gone) returns without touching anything.
#include "api/host-portal.hpp"

#include <cstring>
#include <vector>

namespace sidebus {
namespace {

constexpr const char* kPortalName = "org.freedesktop.portal.Desktop";
constexpr const char* kPortalPath = "/org/freedesktop/portal/desktop";
constexpr const char* kPortalInterfacePrefix = "org.freedesktop.portal.";
constexpr guint kMaxStartDelaySeconds = 30;
constexpr int kCallTimeoutMs = 10 * 1000;

bool cancelled(const GError* error) { return g_error_matches(error, G_IO_ERROR, G_IO_ERROR_CANCELLED); }

struct PropertiesCall {
  HostPortal* self;
  std::string interface_name;
};

}  // namespace

HostPortal::HostPortal(GDBusConnection* host_bus)
    : connection_(retain(host_bus)), lifetime_(adopt(g_cancellable_new())) {
  watch_ = g_bus_watch_name_on_connection(connection_.get(), kPortalName, G_BUS_NAME_WATCHER_FLAGS_AUTO_START,
                                          on_appeared, on_vanished, this, nullptr);
}

HostPortal::~HostPortal() {
  g_bus_unwatch_name(watch_);
  if (reading_) g_cancellable_cancel(reading_.get());
  g_cancellable_cancel(lifetime_.get());
  if (start_source_ != 0) g_source_remove(start_source_);
  if (retry_source_ != 0) g_source_remove(retry_source_);
}

guint32 HostPortal::version(const std::string& interface_name) const {
  VariantPtr value = property(interface_name, "version");
  return value && g_variant_is_of_type(value.get(), G_VARIANT_TYPE_UINT32) ? g_variant_get_uint32(value.get()) : 0;
}

VariantPtr HostPortal::property(const std::string& interface_name, const std::string& property_name) const {
  auto interface = interfaces_.find(interface_name);
  if (interface == interfaces_.end()) return nullptr;
  auto value = interface->second.find(property_name);
  if (value == interface->second.end()) return nullptr;
  return VariantPtr(g_variant_ref(value->second.get()));
}

guint HostPortal::add_listener(Listener listener) {
  guint id = next_listener_++;
  listeners_.emplace(id, std::move(listener));
  return id;
}

void HostPortal::remove_listener(guint id) { listeners_.erase(id); }

void HostPortal::on_appeared(GDBusConnection*, const char*, const char* owner, gpointer data) {
  auto* self = static_cast<HostPortal*>(data);
  if (self->owner_ == owner) return;
  self->owner_ = owner;
  self->start_delay_s_ = 1;
  g_debug("host portal %s appeared as %s; reading its interfaces", kPortalName, owner);
  self->read_properties();
}

void HostPortal::on_vanished(GDBusConnection*, const char*, gpointer data) {
  auto* self = static_cast<HostPortal*>(data);
  bool was_there = !self->owner_.empty();
  self->owner_.clear();
  self->ready_ = false;
  if (self->reading_) g_cancellable_cancel(self->reading_.get());
  self->reading_.reset();
  if (was_there) {
    g_warning("the host's xdg-desktop-portal (%s) left the host bus; pending portal requests are answered "
              "\"other\" (2) and new ones refused until it is back",
              kPortalName);
    // A copy: a listener may remove itself.
    std::vector<std::function<void()>> calls;
    for (auto& [id, listener] : self->listeners_)
      if (listener.on_gone) calls.push_back(listener.on_gone);
    for (auto& call : calls) call();
  } else {
    g_message("waiting for the host's xdg-desktop-portal (%s) on the host bus", kPortalName);
  }
  self->schedule_start();
}

// Asks the bus to start the portal again (D-Bus or systemd activation); a
// portal that cannot be activated is waited for, with a growing delay.
void HostPortal::schedule_start() {
  if (start_source_ != 0) return;
  start_source_ = g_timeout_add_seconds(start_delay_s_, [](gpointer data) -> gboolean {
    auto* self = static_cast<HostPortal*>(data);
    self->start_source_ = 0;
    if (!self->owner_.empty()) return G_SOURCE_REMOVE;
    g_dbus_connection_call(
        self->connection_.get(), "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus",
        "StartServiceByName", g_variant_new("(su)", kPortalName, 0u), G_VARIANT_TYPE("(u)"), G_DBUS_CALL_FLAGS_NONE,
        kCallTimeoutMs, self->lifetime_.get(),
        [](GObject* source, GAsyncResult* result, gpointer data) {
          g_autoptr(GError) error = nullptr;
          g_autoptr(GVariant) reply = g_dbus_connection_call_finish(G_DBUS_CONNECTION(source), result, &error);
          if (cancelled(error)) return;
          auto* self = static_cast<HostPortal*>(data);
          if (reply != nullptr || !self->owner_.empty()) return;  // the watch sees it appear
          g_dbus_error_strip_remote_error(error);
          g_debug("cannot start %s on the host bus: %s; trying again in %u s", kPortalName, error->message,
                  self->start_delay_s_);
          self->start_delay_s_ = MIN(self->start_delay_s_ * 2, kMaxStartDelaySeconds);
          self->schedule_start();
        },
        self);
    return G_SOURCE_REMOVE;
  }, this);
}

void HostPortal::read_properties() {
  if (reading_) g_cancellable_cancel(reading_.get());
  reading_ = adopt(g_cancellable_new());
  reading_interfaces_.clear();
  reads_pending_ = 0;
  g_dbus_connection_call(connection_.get(), owner_.c_str(), kPortalPath, "org.freedesktop.DBus.Introspectable",
                         "Introspect", nullptr, G_VARIANT_TYPE("(s)"), G_DBUS_CALL_FLAGS_NONE, kCallTimeoutMs,
                         reading_.get(), on_introspected, this);
}

void HostPortal::on_introspected(GObject* source, GAsyncResult* result, gpointer data) {
  g_autoptr(GError) error = nullptr;
  g_autoptr(GVariant) reply = g_dbus_connection_call_finish(G_DBUS_CONNECTION(source), result, &error);
  if (cancelled(error)) return;
  auto* self = static_cast<HostPortal*>(data);
  g_autoptr(GDBusNodeInfo) node = nullptr;
  if (reply != nullptr) {
    const char* xml;
    g_variant_get(reply, "(&s)", &xml);
    node = g_dbus_node_info_new_for_xml(xml, &error);
  }
  if (node == nullptr) {
    g_dbus_error_strip_remote_error(error);
    g_warning("cannot read the interfaces of the host portal (%s); trying again in 1 s", error->message);
    if (self->retry_source_ != 0) g_source_remove(self->retry_source_);
    self->retry_source_ = g_timeout_add_seconds(1, [](gpointer data) -> gboolean {
      auto* self = static_cast<HostPortal*>(data);
      self->retry_source_ = 0;
      if (!self->owner_.empty() && !self->ready_) self->read_properties();
      return G_SOURCE_REMOVE;
    }, self);
    return;
  }
  for (GDBusInterfaceInfo** interface = node->interfaces; interface != nullptr && *interface != nullptr;
       interface++) {
    const char* name = (*interface)->name;
    if (!g_str_has_prefix(name, kPortalInterfacePrefix)) continue;
    self->reading_interfaces_[name];  // present even without properties
    self->reads_pending_++;
    g_dbus_connection_call(G_DBUS_CONNECTION(source), self->owner_.c_str(), kPortalPath,
                           "org.freedesktop.DBus.Properties", "GetAll", g_variant_new("(s)", name),
                           G_VARIANT_TYPE("(a{sv})"), G_DBUS_CALL_FLAGS_NONE, kCallTimeoutMs, self->reading_.get(),
                           on_properties, new PropertiesCall{self, name});
  }
  if (self->reads_pending_ == 0) self->finish_reading();
}

void HostPortal::on_properties(GObject* source, GAsyncResult* result, gpointer data) {
  std::unique_ptr<PropertiesCall> call(static_cast<PropertiesCall*>(data));
  g_autoptr(GError) error = nullptr;
  g_autoptr(GVariant) reply = g_dbus_connection_call_finish(G_DBUS_CONNECTION(source), result, &error);
  if (cancelled(error)) return;
  HostPortal* self = call->self;
  if (reply == nullptr) {
    g_dbus_error_strip_remote_error(error);
    g_warning("cannot read the properties of %s on the host portal: %s", call->interface_name.c_str(),
              error->message);
  } else {
    g_autoptr(GVariant) properties = g_variant_get_child_value(reply, 0);
    GVariantIter iter;
    const char* name;
    GVariant* value;
    g_variant_iter_init(&iter, properties);
    auto& target = self->reading_interfaces_[call->interface_name];
    while (g_variant_iter_next(&iter, "{&sv}", &name, &value)) target[name] = VariantPtr(value);
  }
  if (--self->reads_pending_ == 0) self->finish_reading();
}

void HostPortal::finish_reading() {
  interfaces_ = std::move(reading_interfaces_);
  reading_interfaces_.clear();
  reading_.reset();
  ready_ = true;
  std::string names;
  for (const auto& [name, properties] : interfaces_)
    names += (names.empty() ? "" : ", ") + name.substr(strlen(kPortalInterfacePrefix)) + " " +
             std::to_string(version(name));
  g_message("host portal ready: %s", names.empty() ? "no portal interfaces" : names.c_str());
  std::vector<std::function<void()>> calls;
  for (auto& [id, listener] : listeners_)
    if (listener.on_ready) calls.push_back(listener.on_ready);
  for (auto& call : calls) call();
}

}  // namespace sidebus
