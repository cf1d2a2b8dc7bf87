// SPDX-License-Identifier: LGPL-2.1-or-later
// dbus.hpp — the D-Bus helpers every test needs, once: connecting to a bus
// by address, asking the bus about a name, the error name of a failed call,
// introspection and portal properties, handle tokens, and PortalRequest, a
// portal call that answers through a Request object.
#pragma once

#include <gio/gio.h>

#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "support/process.hpp"
#include "support/variant.hpp"

namespace sidebus::test {

inline constexpr char kPortalBusName[] = "org.freedesktop.portal.Desktop";
inline constexpr char kPortalPath[] = "/org/freedesktop/portal/desktop";

// Errors of the portal frontends (and so of the broker) a guest gets.
inline constexpr char kInvalidArgument[] = "org.freedesktop.portal.Error.InvalidArgument";
inline constexpr char kNotAllowed[] = "org.freedesktop.portal.Error.NotAllowed";

// org.freedesktop.portal.Request::Response codes.
inline constexpr guint32 kResponseSuccess = 0;
inline constexpr guint32 kResponseCancelled = 1;
inline constexpr guint32 kResponseOther = 2;

// A new client connection to the message bus at @address (FixtureError on failure).
GObjectPtr<GDBusConnection> connect(const std::string& address);
// org.freedesktop.DBus.NameHasOwner; false if the bus does not answer.
bool name_has_owner(GDBusConnection* connection, const char* name);
// The D-Bus error name of @error, "(local) <message>" for an error that did
// not come from the peer, "(no error)" for none.
std::string remote_error_name(const GError* error);
// Introspection XML of @path at @name (FixtureError on failure).
std::string introspect(GDBusConnection* connection, const char* name = kPortalBusName,
                       const char* path = kPortalPath);
// Property @name of portal @interface at kPortalBusName (asserts the call succeeds).
VariantPtr portal_property(GDBusConnection* connection, const char* interface, const char* name);
// A handle token no other call of this test process used ("t1", "t2", …).
std::string unique_token();

// ---- PortalRequest ----------------------------------------------------------
// One call of a portal method that answers through a Request object: makes
// the call (with @fds as its fd list, if any) and collects the
// Request::Response signal, on any bus (host or guest). @parameters
// (floating is fine) carry the options with a handle_token, as clients send
// them. Responses are matched by the handle the call returns, so the request
// path convention is not assumed.
class PortalRequest {
 public:
  PortalRequest(GDBusConnection* connection, const char* bus_name, const char* interface_name, const char* method,
                GVariant* parameters, const std::vector<int>& fds = {});
  ~PortalRequest();
  PortalRequest(const PortalRequest&) = delete;
  PortalRequest& operator=(const PortalRequest&) = delete;

  const GError* error() const { return error_; }  // the call failed (then no handle)
  const std::string& handle() const { return handle_; }
  bool wait_for_response(Timeout timeout = kDefaultTimeout);
  bool responded() const { return response_.has_value(); }
  guint32 response() const { return response_.value_or(G_MAXUINT32); }
  GVariant* results() const { return results_.get(); }  // a{sv}, borrowed
  // org.freedesktop.portal.Request.Close on the handle; false with @error set on failure.
  bool close(GError** error = nullptr);

 private:
  static void on_response(GDBusConnection*, const char*, const char* path, const char*, const char*,
                          GVariant* parameters, gpointer user_data);
  GObjectPtr<GDBusConnection> connection_;
  std::string bus_name_;
  guint subscription_ = 0;
  GError* error_ = nullptr;
  std::string handle_;
  std::map<std::string, std::pair<guint32, VariantPtr>> responses_;  // by request path
  std::optional<guint32> response_;
  VariantPtr results_;
};

}  // namespace sidebus::test
