// SPDX-License-Identifier: LGPL-2.1-or-later
// networkmonitor.cpp — org.freedesktop.portal.NetworkMonitor for the guest:
// what a VM's applications are told about their network.
//
// Why it must exist: with GTK_USE_PORTAL=1 (what GTK 3, GIO and Firefox need
// to use portals outside Flatpak) GIO picks GNetworkMonitorPortal, which
// starts out "no network, local connectivity" and believes the portal's
// GetStatus. A VM whose portal does not answer has applications that think
// they are offline.
//
// What is honest: the question is about the guest's network, and the broker
// runs on the host — it cannot see the VM's interfaces, routes or DNS. So
// it answers one of two things, as portals.networkmonitor.source says:
//  - "static" (the default): what the administrator states about this VM's
//    network (available, metered, connectivity; by default available,
//    not metered, full connectivity — the usual NAT network of a VMM). No
//    host state crosses. CanReach answers "available", without probing:
//    the broker must not resolve or connect to names the guest chooses.
//    Apps then try for real and see what the VM's network does.
//  - "host": the host's own NetworkMonitor, for VMs whose traffic leaves
//    through the host's network (user-mode or NAT networking): the host
//    going offline is the VM going offline. Every call is forwarded,
//    CanReach included (the host resolves the name), and the host's
//    "changed" reaches every guest application.
// The guest's own network measured in the guest would be better still; it
// needs a measurement from the guest side of the link, which the plugin API
// does not offer (docs/networkmonitor.md).
//
// version: 3 (GetStatus, CanReach) for "static"; min(host, 3) for "host".
#include <libpeas/peas.h>
#include <sidebus-plugin.h>

#include <cstring>
#include <memory>
#include <string>

#include "networkmonitor-dbus.h"
#include "portal-module.hpp"

namespace sidebus::networkmonitor {
namespace {

constexpr char kInterface[] = "org.freedesktop.portal.NetworkMonitor";
// Version 2 added GetAvailable/GetMetered/GetConnectivity/CanReach, 3 GetStatus.
constexpr guint32 kImplementedVersion = 3;
constexpr std::size_t kMaxHostnameLength = 255;

struct GObjectUnref {
  void operator()(gpointer object) const { g_object_unref(object); }
};
template <typename T>
using GObjectPtr = std::unique_ptr<T, GObjectUnref>;

// ---- Configuration -------------------------------------------------------------

// GNetworkConnectivity's values, by the names the configuration uses.
struct ConnectivityName {
  const char* name;
  guint32 value;
};
constexpr ConnectivityName kConnectivities[] = {
    {"local", G_NETWORK_CONNECTIVITY_LOCAL},
    {"limited", G_NETWORK_CONNECTIVITY_LIMITED},
    {"captive-portal", G_NETWORK_CONNECTIVITY_PORTAL},
    {"full", G_NETWORK_CONNECTIVITY_FULL},
};

gboolean validate_source(const char*, JsonNode* value, GError** error) {
  const char* source = json_node_get_string(value);
  if (strcmp(source, "static") == 0 || strcmp(source, "host") == 0) return TRUE;
  g_autofree char* shown = g_strescape(source, nullptr);
  g_set_error(error, SIDEBUS_ERROR, SIDEBUS_ERROR_INVALID_ARGUMENT,
              "\"%s\" is neither \"static\" (what available, metered and connectivity say) nor \"host\" (the host's "
              "own network state)",
              shown);
  return FALSE;
}

gboolean validate_connectivity(const char*, JsonNode* value, GError** error) {
  const char* name = json_node_get_string(value);
  for (const auto& connectivity : kConnectivities)
    if (strcmp(name, connectivity.name) == 0) return TRUE;
  g_autofree char* shown = g_strescape(name, nullptr);
  g_set_error(error, SIDEBUS_ERROR, SIDEBUS_ERROR_INVALID_ARGUMENT,
              "\"%s\" is not one of \"local\", \"limited\", \"captive-portal\", \"full\"", shown);
  return FALSE;
}

const SidebusConfigKey kConfigKeys[] = {
    {"source", SIDEBUS_CONFIG_STRING, 0, 0, validate_source, {}},
    {"available", SIDEBUS_CONFIG_BOOLEAN, 0, 0, nullptr, {}},
    {"metered", SIDEBUS_CONFIG_BOOLEAN, 0, 0, nullptr, {}},
    {"connectivity", SIDEBUS_CONFIG_STRING, 0, 0, validate_connectivity, {}},
};

struct Config {
  bool from_host = false;
  bool available = true;
  bool metered = false;
  guint32 connectivity = G_NETWORK_CONNECTIVITY_FULL;

  static Config from(JsonObject* object) {
    Config config;
    config.from_host = g_strcmp0(json_object_get_string_member_with_default(object, "source", "static"), "host") == 0;
    config.available = json_object_get_boolean_member_with_default(object, "available", config.available);
    config.metered = json_object_get_boolean_member_with_default(object, "metered", config.metered);
    const char* name = json_object_get_string_member_with_default(object, "connectivity", "full");
    for (const auto& connectivity : kConnectivities)
      if (strcmp(name, connectivity.name) == 0) config.connectivity = connectivity.value;
    return config;
  }
  std::string describe() const {
    if (from_host) return "the host's network state";
    const char* name = "?";
    for (const auto& c : kConnectivities)
      if (c.value == connectivity) name = c.name;
    return std::string("static: ") + (available ? "available" : "unavailable") + ", " +
           (metered ? "metered" : "not metered") + ", connectivity " + name;
  }
};

// ---- The portal ----------------------------------------------------------------

class NetworkMonitor {
 public:
  static std::unique_ptr<NetworkMonitor> start(SidebusContext* context, GError** error);
  ~NetworkMonitor();
  NetworkMonitor(const NetworkMonitor&) = delete;
  NetworkMonitor& operator=(const NetworkMonitor&) = delete;

 private:
  NetworkMonitor(SidebusContext* context, Config config, guint32 version);

  static gboolean on_get_available(SidebusNetworkMonitorGenNetworkMonitor* skeleton, GDBusMethodInvocation* invocation,
                                   gpointer user_data);
  static gboolean on_get_metered(SidebusNetworkMonitorGenNetworkMonitor* skeleton, GDBusMethodInvocation* invocation,
                                 gpointer user_data);
  static gboolean on_get_connectivity(SidebusNetworkMonitorGenNetworkMonitor* skeleton,
                                      GDBusMethodInvocation* invocation, gpointer user_data);
  static gboolean on_get_status(SidebusNetworkMonitorGenNetworkMonitor* skeleton, GDBusMethodInvocation* invocation,
                                gpointer user_data);
  static gboolean on_can_reach(SidebusNetworkMonitorGenNetworkMonitor* skeleton, GDBusMethodInvocation* invocation,
                               const char* hostname, guint32 port, gpointer user_data);
  static void on_host_changed(SidebusContext* context, const char* object_path, const char* signal_name,
                              GVariant* parameters, gpointer user_data);

  // In "host" mode: @method forwarded, true; otherwise false.
  bool forwarded(GDBusMethodInvocation* invocation, const char* method, GVariant* parameters = nullptr);

  SidebusContext* context_;
  Config config_;
  GObjectPtr<SidebusNetworkMonitorGenNetworkMonitor> skeleton_;
};

std::unique_ptr<NetworkMonitor> NetworkMonitor::start(SidebusContext* context, GError** error) {
  Config config = Config::from(sidebus_context_get_config(context));
  guint32 version = kImplementedVersion;
  if (config.from_host) {
    guint32 host_version = sidebus_context_get_host_version(context, kInterface);
    if (host_version == 0) {
      g_set_error(error, SIDEBUS_ERROR, SIDEBUS_ERROR_NOT_SUPPORTED,
                  "portals.networkmonitor.source is \"host\", but the host portal has no NetworkMonitor");
      return nullptr;
    }
    version = MIN(host_version, kImplementedVersion);
  }
  std::unique_ptr<NetworkMonitor> self(new NetworkMonitor(context, config, version));
  if (!sidebus_context_export(context, G_DBUS_INTERFACE_SKELETON(self->skeleton_.get()), error)) return nullptr;
  if (config.from_host)
    sidebus_context_subscribe_host_signal(context, kInterface, "changed", SIDEBUS_PORTAL_OBJECT_PATH, on_host_changed,
                                          self.get(), nullptr);
  sidebus_context_log(context, G_LOG_LEVEL_DEBUG, "NetworkMonitor version %u; the guest is told %s", version,
                      config.describe().c_str());
  return self;
}

NetworkMonitor::NetworkMonitor(SidebusContext* context, Config config, guint32 version)
    : context_(context), config_(config), skeleton_(sidebus_network_monitor_gen_network_monitor_skeleton_new()) {
  sidebus_network_monitor_gen_network_monitor_set_version(skeleton_.get(), version);
  g_signal_connect(skeleton_.get(), "handle-get-available", G_CALLBACK(on_get_available), this);
  g_signal_connect(skeleton_.get(), "handle-get-metered", G_CALLBACK(on_get_metered), this);
  g_signal_connect(skeleton_.get(), "handle-get-connectivity", G_CALLBACK(on_get_connectivity), this);
  g_signal_connect(skeleton_.get(), "handle-get-status", G_CALLBACK(on_get_status), this);
  g_signal_connect(skeleton_.get(), "handle-can-reach", G_CALLBACK(on_can_reach), this);
}

NetworkMonitor::~NetworkMonitor() { g_signal_handlers_disconnect_by_data(skeleton_.get(), this); }

bool NetworkMonitor::forwarded(GDBusMethodInvocation* invocation, const char* method, GVariant* parameters) {
  if (!config_.from_host) return false;
  sidebus_context_forward_call(context_, invocation, kInterface, method, parameters, nullptr, nullptr, nullptr,
                               nullptr);
  return true;
}

gboolean NetworkMonitor::on_get_available(SidebusNetworkMonitorGenNetworkMonitor* skeleton,
                                          GDBusMethodInvocation* invocation, gpointer user_data) {
  auto* self = static_cast<NetworkMonitor*>(user_data);
  if (!self->forwarded(invocation, "GetAvailable"))
    sidebus_network_monitor_gen_network_monitor_complete_get_available(skeleton, invocation, self->config_.available);
  return G_DBUS_METHOD_INVOCATION_HANDLED;
}

gboolean NetworkMonitor::on_get_metered(SidebusNetworkMonitorGenNetworkMonitor* skeleton,
                                        GDBusMethodInvocation* invocation, gpointer user_data) {
  auto* self = static_cast<NetworkMonitor*>(user_data);
  if (!self->forwarded(invocation, "GetMetered"))
    sidebus_network_monitor_gen_network_monitor_complete_get_metered(skeleton, invocation, self->config_.metered);
  return G_DBUS_METHOD_INVOCATION_HANDLED;
}

gboolean NetworkMonitor::on_get_connectivity(SidebusNetworkMonitorGenNetworkMonitor* skeleton,
                                             GDBusMethodInvocation* invocation, gpointer user_data) {
  auto* self = static_cast<NetworkMonitor*>(user_data);
  if (!self->forwarded(invocation, "GetConnectivity"))
    sidebus_network_monitor_gen_network_monitor_complete_get_connectivity(skeleton, invocation,
                                                                          self->config_.connectivity);
  return G_DBUS_METHOD_INVOCATION_HANDLED;
}

gboolean NetworkMonitor::on_get_status(SidebusNetworkMonitorGenNetworkMonitor* skeleton,
                                       GDBusMethodInvocation* invocation, gpointer user_data) {
  auto* self = static_cast<NetworkMonitor*>(user_data);
  if (self->forwarded(invocation, "GetStatus")) return G_DBUS_METHOD_INVOCATION_HANDLED;
  g_auto(GVariantBuilder) status = G_VARIANT_BUILDER_INIT(G_VARIANT_TYPE_VARDICT);
  g_variant_builder_add(&status, "{sv}", "available", g_variant_new_boolean(self->config_.available));
  g_variant_builder_add(&status, "{sv}", "metered", g_variant_new_boolean(self->config_.metered));
  g_variant_builder_add(&status, "{sv}", "connectivity", g_variant_new_uint32(self->config_.connectivity));
  sidebus_network_monitor_gen_network_monitor_complete_get_status(skeleton, invocation, g_variant_builder_end(&status));
  return G_DBUS_METHOD_INVOCATION_HANDLED;
}

// A host name or address literal as GNetworkAddress gives it: 1 to 255
// bytes, no spaces, control characters, '/' or '@' (nothing URI-like).
bool is_hostname(const char* hostname) {
  std::size_t length = strlen(hostname);
  if (length == 0 || length > kMaxHostnameLength) return false;
  for (const char* c = hostname; *c != '\0'; c++) {
    auto byte = static_cast<unsigned char>(*c);
    if (byte <= 0x20 || byte == 0x7f || *c == '/' || *c == '@' || *c == '\\') return false;
  }
  return true;
}

gboolean NetworkMonitor::on_can_reach(SidebusNetworkMonitorGenNetworkMonitor* skeleton,
                                      GDBusMethodInvocation* invocation, const char* hostname, guint32 port,
                                      gpointer user_data) {
  auto* self = static_cast<NetworkMonitor*>(user_data);
  if (!is_hostname(hostname)) {
    g_autofree char* shown = g_strescape(hostname, nullptr);
    sidebus_context_reject(self->context_, invocation,
                           g_error_new(SIDEBUS_ERROR, SIDEBUS_ERROR_INVALID_ARGUMENT,
                                       "\"%.64s\" is not a host name (1 to %zu bytes, no spaces, '/', '@' or '\\')",
                                       shown, kMaxHostnameLength));
    return G_DBUS_METHOD_INVOCATION_HANDLED;
  }
  if (port > 65535) {
    sidebus_context_reject(self->context_, invocation,
                           g_error_new(SIDEBUS_ERROR, SIDEBUS_ERROR_INVALID_ARGUMENT, "port %u is not 0..65535", port));
    return G_DBUS_METHOD_INVOCATION_HANDLED;
  }
  if (!self->forwarded(invocation, "CanReach", g_variant_new("(su)", hostname, port)))
    sidebus_network_monitor_gen_network_monitor_complete_can_reach(skeleton, invocation, self->config_.available);
  return G_DBUS_METHOD_INVOCATION_HANDLED;
}

void NetworkMonitor::on_host_changed(SidebusContext* context, const char*, const char*, GVariant*, gpointer) {
  // Always the argument-less version 2+ form: GIO asks GetStatus on it.
  sidebus_context_emit_guest_signal(context, nullptr, nullptr, kInterface, "changed", nullptr);
}

}  // namespace
}  // namespace sidebus::networkmonitor

// ---- The libpeas extension -------------------------------------------------

SIDEBUS_PORTAL_MODULE(SidebusNetworkmonitorPortal, sidebus_networkmonitor_portal, sidebus::networkmonitor::NetworkMonitor,
                      std::span<const SidebusConfigKey>(sidebus::networkmonitor::kConfigKeys))
