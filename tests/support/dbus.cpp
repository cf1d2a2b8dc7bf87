// SPDX-License-Identifier: LGPL-2.1-or-later
// dbus.cpp — the D-Bus helpers and PortalRequest of dbus.hpp.
#include "support/dbus.hpp"

#include <gio/gunixfdlist.h>

namespace sidebus::test {

GObjectPtr<GDBusConnection> connect(const std::string& address) {
  g_autoptr(GError) error = nullptr;
  GDBusConnection* connection = g_dbus_connection_new_for_address_sync(
      address.c_str(),
      static_cast<GDBusConnectionFlags>(G_DBUS_CONNECTION_FLAGS_AUTHENTICATION_CLIENT |
                                        G_DBUS_CONNECTION_FLAGS_MESSAGE_BUS_CONNECTION),
      nullptr, nullptr, &error);
  if (!connection) throw FixtureError("cannot connect to " + address + ": " + error->message);
  return GObjectPtr<GDBusConnection>(connection);
}

bool name_has_owner(GDBusConnection* connection, const char* name) {
  g_autoptr(GVariant) reply = g_dbus_connection_call_sync(
      connection, "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus", "NameHasOwner",
      g_variant_new("(s)", name), G_VARIANT_TYPE("(b)"), G_DBUS_CALL_FLAGS_NONE, 5000, nullptr, nullptr);
  gboolean owned = FALSE;
  if (reply) g_variant_get(reply, "(b)", &owned);
  return owned;
}

std::string remote_error_name(const GError* error) {
  if (error == nullptr) return "(no error)";
  g_autofree char* name = g_dbus_error_get_remote_error(error);
  return name != nullptr ? name : std::string("(local) ") + error->message;
}

std::string introspect(GDBusConnection* connection, const char* name, const char* path) {
  g_autoptr(GError) error = nullptr;
  g_autoptr(GVariant) reply = g_dbus_connection_call_sync(
      connection, name, path, "org.freedesktop.DBus.Introspectable", "Introspect", nullptr, G_VARIANT_TYPE("(s)"),
      G_DBUS_CALL_FLAGS_NONE, 10000, nullptr, &error);
  if (!reply) throw FixtureError(std::string("cannot introspect ") + path + " at " + name + ": " + error->message);
  const char* xml = nullptr;
  g_variant_get(reply, "(&s)", &xml);
  return xml;
}

VariantPtr portal_property(GDBusConnection* connection, const char* interface, const char* name) {
  g_autoptr(GError) error = nullptr;
  g_autoptr(GVariant) reply = g_dbus_connection_call_sync(
      connection, kPortalBusName, kPortalPath, "org.freedesktop.DBus.Properties", "Get",
      g_variant_new("(ss)", interface, name), G_VARIANT_TYPE("(v)"), G_DBUS_CALL_FLAGS_NONE, 30000, nullptr, &error);
  g_assert_no_error(error);
  GVariant* value = nullptr;
  g_variant_get(reply, "(v)", &value);
  return VariantPtr(value);
}

std::string unique_token() {
  static int counter = 0;
  return "t" + std::to_string(++counter);
}

// ---- PortalRequest ----------------------------------------------------------

PortalRequest::PortalRequest(GDBusConnection* connection, const char* bus_name, const char* interface_name,
                             const char* method, GVariant* parameters, const std::vector<int>& fds)
    : connection_(G_DBUS_CONNECTION(g_object_ref(connection))), bus_name_(bus_name) {
  g_autoptr(GUnixFDList) fd_list = fds.empty() ? nullptr : g_unix_fd_list_new();
  for (int fd : fds)
    if (g_unix_fd_list_append(fd_list, fd, nullptr) < 0) throw FixtureError("cannot add fd " + std::to_string(fd));
  // Subscribed before the call, so no Response can be missed.
  subscription_ = g_dbus_connection_signal_subscribe(connection, bus_name, "org.freedesktop.portal.Request",
                                                     "Response", nullptr, nullptr, G_DBUS_SIGNAL_FLAGS_NONE,
                                                     on_response, this, nullptr);
  g_autoptr(GVariant) reply = g_dbus_connection_call_with_unix_fd_list_sync(
      connection, bus_name, kPortalPath, interface_name, method, parameters, G_VARIANT_TYPE("(o)"),
      G_DBUS_CALL_FLAGS_NONE, 30000, fd_list, nullptr, nullptr, &error_);
  if (reply) {
    const char* handle = nullptr;
    g_variant_get(reply, "(&o)", &handle);
    handle_ = handle;
  }
}

PortalRequest::~PortalRequest() {
  g_dbus_connection_signal_unsubscribe(connection_.get(), subscription_);
  g_clear_error(&error_);
}

void PortalRequest::on_response(GDBusConnection*, const char*, const char* path, const char*, const char*,
                                GVariant* parameters, gpointer user_data) {
  auto* self = static_cast<PortalRequest*>(user_data);
  if (!g_variant_is_of_type(parameters, G_VARIANT_TYPE("(ua{sv})"))) {
    g_test_fail_printf("Request::Response at %s has the signature %s", path, g_variant_get_type_string(parameters));
    return;
  }
  guint32 response = 0;
  GVariant* results = nullptr;
  g_variant_get(parameters, "(u@a{sv})", &response, &results);
  self->responses_[path] = {response, VariantPtr(results)};
}

bool PortalRequest::wait_for_response(Timeout timeout) {
  if (handle_.empty()) return false;
  return wait_until(
      [this] {
        auto found = responses_.find(handle_);
        if (found == responses_.end()) return false;
        response_ = found->second.first;
        results_.reset(g_variant_ref(found->second.second.get()));
        return true;
      },
      timeout);
}

bool PortalRequest::close(GError** error) {
  g_autoptr(GVariant) reply = g_dbus_connection_call_sync(connection_.get(), bus_name_.c_str(), handle_.c_str(),
                                                          "org.freedesktop.portal.Request", "Close", nullptr,
                                                          nullptr, G_DBUS_CALL_FLAGS_NONE, 30000, nullptr, error);
  return reply != nullptr;
}

}  // namespace sidebus::test
