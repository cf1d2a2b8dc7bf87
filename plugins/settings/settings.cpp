// SPDX-License-Identifier: LGPL-2.1-or-later
// settings.cpp — org.freedesktop.portal.Settings for the guest: the VM's
// applications follow the host's dark mode, accent colour and contrast, and
// learn nothing else of the host's settings.
//
// Every answer comes from the host's xdg-desktop-portal; what this file adds
// is the namespace allow-list (portals.settings.namespaces, namespaces.hpp):
//  - Read / ReadOne of a namespace outside it answers
//    org.freedesktop.portal.Error.NotFound ("Requested setting not found"),
//    exactly what the host portal answers for a setting that does not exist,
//    without asking the host; a VM cannot tell "private" from "absent";
//  - ReadAll asks the host for the allow-list's namespaces only (the guest's
//    filters never reach the host) and answers what also matches the guest's
//    filters; so a filter of "" or "*" gives the VM the allowed namespaces;
//  - SettingChanged from the host reaches the guest (broadcast, as the host
//    portal sends it) for allowed namespaces only.
// Shapes follow xdg-desktop-portal: Read answers the value inside two
// variants (its historical bug, kept for compatibility), ReadOne inside one.
// A host older than version 2 has no ReadOne: the guest's ReadOne is the
// host's Read, unwrapped once (the same value). The version property is
// min(host, 2), so on such a host clients see version 1.
#include <libpeas/peas.h>
#include <sidebus-plugin.h>

#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "namespaces.hpp"
#include "settings-dbus.h"
#include "portal-module.hpp"

namespace sidebus::settings {
namespace {

constexpr char kInterface[] = "org.freedesktop.portal.Settings";
// Version 2 added ReadOne.
constexpr guint32 kImplementedVersion = 2;

struct GObjectUnref {
  void operator()(gpointer object) const { g_object_unref(object); }
};
template <typename T>
using GObjectPtr = std::unique_ptr<T, GObjectUnref>;

// ---- Configuration -----------------------------------------------------------

gboolean validate_namespaces(const char*, JsonNode* value, GError** error) {
  JsonArray* array = json_node_get_array(value);
  for (guint i = 0; i < json_array_get_length(array); i++) {
    const char* pattern = json_array_get_string_element(array, i);
    std::string why = check_allow_pattern(pattern);
    if (!why.empty()) {
      g_autofree char* shown = g_strescape(pattern, nullptr);
      g_set_error(error, SIDEBUS_ERROR, SIDEBUS_ERROR_INVALID_ARGUMENT, "[%u] \"%s\" %s", i, shown, why.c_str());
      return FALSE;
    }
  }
  return TRUE;
}

const SidebusConfigKey kConfigKeys[] = {
    {"namespaces", SIDEBUS_CONFIG_STRING_ARRAY, 0, 0, validate_namespaces, {}},
};

AllowList allow_list_from(JsonObject* config) {
  JsonNode* node = json_object_get_member(config, "namespaces");
  if (node == nullptr || !JSON_NODE_HOLDS_ARRAY(node)) return AllowList(kDefaultNamespaces);
  std::vector<std::string> patterns;
  JsonArray* array = json_node_get_array(node);
  for (guint i = 0; i < json_array_get_length(array); i++)
    patterns.emplace_back(json_array_get_string_element(array, i));
  return AllowList(std::move(patterns));
}

// ---- Guest input ---------------------------------------------------------------

GError* invalid(const char* format, const char* what, std::size_t length) {
  return g_error_new(SIDEBUS_ERROR, SIDEBUS_ERROR_INVALID_ARGUMENT, format, what, length, kMaxNameLength);
}

// A namespace or key from the guest: non-empty, at most kMaxNameLength bytes.
GError* check_name(const char* what, const char* name) {
  std::size_t length = strlen(name);
  if (length == 0) return g_error_new(SIDEBUS_ERROR, SIDEBUS_ERROR_INVALID_ARGUMENT, "the %s is empty", what);
  if (length > kMaxNameLength) return invalid("the %s is %zu bytes long, at most %zu are accepted", what, length);
  return nullptr;
}

// What the host portal answers for a setting it does not have.
GError* not_found() {
  return g_error_new_literal(SIDEBUS_ERROR, SIDEBUS_ERROR_NOT_FOUND, "Requested setting not found");
}

// ---- The portal ----------------------------------------------------------------

class Settings {
 public:
  static std::unique_ptr<Settings> start(SidebusContext* context, GError** error);
  ~Settings();
  Settings(const Settings&) = delete;
  Settings& operator=(const Settings&) = delete;

 private:
  Settings(SidebusContext* context, AllowList allowed, guint32 host_version);

  static gboolean on_read_all(SidebusSettingsGenSettings*, GDBusMethodInvocation* invocation,
                              const char* const* filters, gpointer user_data);
  static gboolean on_read(SidebusSettingsGenSettings*, GDBusMethodInvocation* invocation, const char* name_space,
                          const char* key, gpointer user_data);
  static gboolean on_read_one(SidebusSettingsGenSettings*, GDBusMethodInvocation* invocation, const char* name_space,
                              const char* key, gpointer user_data);
  static void on_host_setting_changed(SidebusContext* context, const char* object_path, const char* signal_name,
                                      GVariant* parameters, gpointer user_data);

  // Checks a Read/ReadOne and answers the guest if it must not reach the
  // host; true if the host may be asked.
  bool readable(GDBusMethodInvocation* invocation, const char* name_space, const char* key);
  void reject(GDBusMethodInvocation* invocation, GError* error) { sidebus_context_reject(context_, invocation, error); }

  SidebusContext* context_;
  AllowList allowed_;
  guint32 host_version_;
  GObjectPtr<SidebusSettingsGenSettings> skeleton_;
};

std::unique_ptr<Settings> Settings::start(SidebusContext* context, GError** error) {
  guint32 host_version = sidebus_context_get_host_version(context, kInterface);
  if (host_version == 0) {
    g_set_error(error, SIDEBUS_ERROR, SIDEBUS_ERROR_NOT_SUPPORTED,
                "the host portal has no Settings (xdg-desktop-portal offers it only with a Settings backend)");
    return nullptr;
  }
  std::unique_ptr<Settings> self(
      new Settings(context, allow_list_from(sidebus_context_get_config(context)), host_version));
  if (!sidebus_context_export(context, G_DBUS_INTERFACE_SKELETON(self->skeleton_.get()), error)) return nullptr;
  sidebus_context_subscribe_host_signal(context, kInterface, "SettingChanged", SIDEBUS_PORTAL_OBJECT_PATH,
                                        on_host_setting_changed, self.get(), nullptr);
  sidebus_context_log(context, G_LOG_LEVEL_DEBUG, "Settings version %u (host %u); namespaces the VM may read: %s",
                      MIN(host_version, kImplementedVersion), host_version, self->allowed_.describe().c_str());
  return self;
}

Settings::Settings(SidebusContext* context, AllowList allowed, guint32 host_version)
    : context_(context),
      allowed_(std::move(allowed)),
      host_version_(host_version),
      skeleton_(sidebus_settings_gen_settings_skeleton_new()) {
  sidebus_settings_gen_settings_set_version(skeleton_.get(), MIN(host_version_, kImplementedVersion));
  g_signal_connect(skeleton_.get(), "handle-read-all", G_CALLBACK(on_read_all), this);
  g_signal_connect(skeleton_.get(), "handle-read", G_CALLBACK(on_read), this);
  g_signal_connect(skeleton_.get(), "handle-read-one", G_CALLBACK(on_read_one), this);
}

// The core unsubscribes the host signal and unexports the skeleton after
// stop(); nothing of ours runs then.
Settings::~Settings() { g_signal_handlers_disconnect_by_data(skeleton_.get(), this); }

bool Settings::readable(GDBusMethodInvocation* invocation, const char* name_space, const char* key) {
  if (GError* error = check_name("namespace", name_space)) return reject(invocation, error), false;
  if (GError* error = check_name("key", key)) return reject(invocation, error), false;
  if (!allowed_.allows(name_space)) {
    // Not a warning: toolkits read namespaces they do not need all the time.
    sidebus_context_log(context_, G_LOG_LEVEL_DEBUG, "Read %s %s: not in portals.settings.namespaces, not found",
                        name_space, key);
    g_autoptr(GError) error = not_found();
    g_dbus_method_invocation_return_gerror(invocation, error);
    return false;
  }
  return true;
}

gboolean Settings::on_read(SidebusSettingsGenSettings*, GDBusMethodInvocation* invocation, const char* name_space,
                           const char* key, gpointer user_data) {
  auto* self = static_cast<Settings*>(user_data);
  if (!self->readable(invocation, name_space, key)) return G_DBUS_METHOD_INVOCATION_HANDLED;
  // The host's answer as it is: its error (NotFound) or <<value>>.
  sidebus_context_forward_call(self->context_, invocation, kInterface, "Read", g_variant_new("(ss)", name_space, key),
                               nullptr, nullptr, nullptr, nullptr);
  return G_DBUS_METHOD_INVOCATION_HANDLED;
}

// Read's (<<value>>) → ReadOne's (<value>).
GVariant* unwrap_read_reply(SidebusContext*, GVariant* host_reply, GUnixFDList*, GUnixFDList**, gpointer,
                            GError** error) {
  if (!g_variant_is_of_type(host_reply, G_VARIANT_TYPE("(v)"))) {
    g_set_error(error, SIDEBUS_ERROR, SIDEBUS_ERROR_FAILED, "the host portal answered Read with %s",
                g_variant_get_type_string(host_reply));
    return nullptr;
  }
  g_autoptr(GVariant) outer = nullptr;
  g_variant_get(host_reply, "(v)", &outer);
  // A host that (against its documentation) answers one layer only.
  if (!g_variant_is_of_type(outer, G_VARIANT_TYPE_VARIANT)) return g_variant_new("(v)", outer);
  return g_variant_new_tuple(&outer, 1);
}

gboolean Settings::on_read_one(SidebusSettingsGenSettings*, GDBusMethodInvocation* invocation, const char* name_space,
                               const char* key, gpointer user_data) {
  auto* self = static_cast<Settings*>(user_data);
  if (!self->readable(invocation, name_space, key)) return G_DBUS_METHOD_INVOCATION_HANDLED;
  if (self->host_version_ >= 2)
    sidebus_context_forward_call(self->context_, invocation, kInterface, "ReadOne",
                                 g_variant_new("(ss)", name_space, key), nullptr, nullptr, nullptr, nullptr);
  else
    sidebus_context_forward_call(self->context_, invocation, kInterface, "Read", g_variant_new("(ss)", name_space, key),
                                 nullptr, unwrap_read_reply, nullptr, nullptr);
  return G_DBUS_METHOD_INVOCATION_HANDLED;
}

// What the guest asked ReadAll for, kept until the host answers.
struct ReadAllCall {
  const AllowList* allowed;
  std::vector<std::string> filters;
  static void destroy(gpointer call) { delete static_cast<ReadAllCall*>(call); }
};

// The host's (a{sa{sv}}) without the namespaces the VM may not read or did
// not ask for.
GVariant* filter_read_all_reply(SidebusContext* context, GVariant* host_reply, GUnixFDList*, GUnixFDList**,
                                gpointer user_data, GError** error) {
  auto* call = static_cast<ReadAllCall*>(user_data);
  if (!g_variant_is_of_type(host_reply, G_VARIANT_TYPE("(a{sa{sv}})"))) {
    g_set_error(error, SIDEBUS_ERROR, SIDEBUS_ERROR_FAILED, "the host portal answered ReadAll with %s",
                g_variant_get_type_string(host_reply));
    return nullptr;
  }
  g_autoptr(GVariant) all = g_variant_get_child_value(host_reply, 0);
  g_auto(GVariantBuilder) kept = G_VARIANT_BUILDER_INIT(G_VARIANT_TYPE("a{sa{sv}}"));
  gsize dropped = 0;
  GVariantIter iter;
  const char* name_space;
  GVariant* values;
  g_variant_iter_init(&iter, all);
  while (g_variant_iter_loop(&iter, "{&s@a{sv}}", &name_space, &values)) {
    if (call->allowed->allows(name_space) && filters_match(call->filters, name_space))
      g_variant_builder_add(&kept, "{s@a{sv}}", name_space, values);
    else
      dropped++;
  }
  if (dropped > 0)
    sidebus_context_log(context, G_LOG_LEVEL_DEBUG, "ReadAll: dropped %zu namespace%s the host sent", dropped,
                        dropped == 1 ? "" : "s");
  return g_variant_new("(@a{sa{sv}})", g_variant_builder_end(&kept));
}

gboolean Settings::on_read_all(SidebusSettingsGenSettings* skeleton, GDBusMethodInvocation* invocation,
                               const char* const* filters, gpointer user_data) {
  auto* self = static_cast<Settings*>(user_data);
  auto call = std::make_unique<ReadAllCall>();
  call->allowed = &self->allowed_;
  for (const char* const* filter = filters; *filter != nullptr; filter++) {
    if (call->filters.size() == kMaxFilters) {
      self->reject(invocation, g_error_new(SIDEBUS_ERROR, SIDEBUS_ERROR_INVALID_ARGUMENT,
                                           "more than %zu namespace filters", kMaxFilters));
      return G_DBUS_METHOD_INVOCATION_HANDLED;
    }
    std::size_t length = strlen(*filter);
    if (length > kMaxNameLength) {
      self->reject(invocation, invalid("a %s is %zu bytes long, at most %zu are accepted", "namespace filter", length));
      return G_DBUS_METHOD_INVOCATION_HANDLED;
    }
    call->filters.emplace_back(*filter);
  }
  if (self->allowed_.patterns().empty()) {
    sidebus_settings_gen_settings_complete_read_all(skeleton, invocation, g_variant_new("a{sa{sv}}", nullptr));
    return G_DBUS_METHOD_INVOCATION_HANDLED;
  }
  // The host is asked for what the VM may read, never for what it asked.
  std::vector<const char*> host_filters;
  for (const std::string& pattern : self->allowed_.patterns()) host_filters.push_back(pattern.c_str());
  host_filters.push_back(nullptr);  // ^as reads a NULL-terminated array
  sidebus_context_forward_call(self->context_, invocation, kInterface, "ReadAll",
                               g_variant_new("(^as)", host_filters.data()), nullptr, filter_read_all_reply,
                               call.release(), ReadAllCall::destroy);
  return G_DBUS_METHOD_INVOCATION_HANDLED;
}

void Settings::on_host_setting_changed(SidebusContext* context, const char*, const char*, GVariant* parameters,
                                       gpointer user_data) {
  auto* self = static_cast<Settings*>(user_data);
  if (!g_variant_is_of_type(parameters, G_VARIANT_TYPE("(ssv)"))) return;
  const char* name_space;
  const char* key;
  g_variant_get(parameters, "(&s&s@v)", &name_space, &key, nullptr);
  if (!self->allowed_.allows(name_space)) return;
  sidebus_context_log(context, G_LOG_LEVEL_DEBUG, "SettingChanged %s %s → guest", name_space, key);
  sidebus_context_emit_guest_signal(context, nullptr, nullptr, kInterface, "SettingChanged", parameters);
}

}  // namespace
}  // namespace sidebus::settings

// ---- The libpeas extension -------------------------------------------------

SIDEBUS_PORTAL_MODULE(SidebusSettingsPortal, sidebus_settings_portal, sidebus::settings::Settings,
                      std::span<const SidebusConfigKey>(sidebus::settings::kConfigKeys))
