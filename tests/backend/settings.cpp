// SPDX-License-Identifier: LGPL-2.1-or-later
// settings.cpp — org.freedesktop.impl.portal.Settings (version 1) of the test
// backend: ReadAll and Read answer from a table of values the tests set with
// SetSetting (which also emits SettingChanged); both calls are recorded. The
// defaults hold the appearance keys the portal documents and one "private"
// namespace a guest must not read (org.gnome.desktop.privacy).
#include <map>
#include <string>

#include "backend.hpp"
#include "test-backend-control.h"
#include "test-impl-portal.h"

namespace sidebus::test_backend {
namespace {

struct SettingsState {
  Backend* backend = nullptr;
  TestImplSettings* skeleton = nullptr;                             // borrowed: the state lives as long as it
  std::map<std::string, std::map<std::string, VariantPtr>> values;  // namespace → key → value
  gulong set_setting_handler = 0;

  ~SettingsState() {
    g_signal_handler_disconnect(backend->control(), set_setting_handler);
    backend->remove_reset_hooks(this);
  }

  void set(const std::string& name_space, const std::string& key, GVariant* value) {
    values[name_space][key] = VariantPtr(g_variant_ref_sink(value));
  }
  void set_defaults() {
    values.clear();
    set("org.freedesktop.appearance", "color-scheme", g_variant_new_uint32(1));
    set("org.freedesktop.appearance", "accent-color", g_variant_new("(ddd)", 0.2, 0.4, 0.8));
    set("org.freedesktop.appearance", "contrast", g_variant_new_uint32(0));
    set("org.gnome.desktop.privacy", "remember-recent-files", g_variant_new_boolean(TRUE));
  }
};

// ReadAll's filter: an empty list or "" matches all; "org.example.*" every
// namespace under org.example; anything else itself.
bool namespace_matches(const char* const* patterns, const std::string& name_space) {
  if (patterns == nullptr || patterns[0] == nullptr) return true;
  for (const char* const* pattern = patterns; *pattern != nullptr; pattern++) {
    const std::string p = *pattern;
    if (p.empty() || p == name_space) return true;
    if (p.size() >= 2 && p.ends_with(".*") && name_space.starts_with(p.substr(0, p.size() - 1))) return true;
  }
  return false;
}

gboolean on_read_all(TestImplSettings* object, GDBusMethodInvocation* invocation, const char* const* namespaces,
                     gpointer user_data) {
  auto* state = static_cast<SettingsState*>(user_data);
  state->backend->record_call("ReadAll", g_variant_new_parsed("{'namespaces': <%^as>}", namespaces));
  if (state->backend->scripted_response("ReadAll") == kResponseDBusError) {
    g_dbus_method_invocation_return_dbus_error(invocation, "org.freedesktop.DBus.Error.Failed",
                                               "failure scripted by the test");
    return G_DBUS_METHOD_INVOCATION_HANDLED;
  }
  g_auto(GVariantBuilder) all = G_VARIANT_BUILDER_INIT(G_VARIANT_TYPE("a{sa{sv}}"));
  for (const auto& [name_space, keys] : state->values) {
    if (!namespace_matches(namespaces, name_space)) continue;
    g_auto(GVariantBuilder) entries = G_VARIANT_BUILDER_INIT(G_VARIANT_TYPE_VARDICT);
    for (const auto& [key, value] : keys) g_variant_builder_add(&entries, "{sv}", key.c_str(), value.get());
    g_variant_builder_add(&all, "{s@a{sv}}", name_space.c_str(), g_variant_builder_end(&entries));
  }
  test_impl_settings_complete_read_all(object, invocation, g_variant_builder_end(&all));
  return G_DBUS_METHOD_INVOCATION_HANDLED;
}

gboolean on_read(TestImplSettings* object, GDBusMethodInvocation* invocation, const char* name_space, const char* key,
                 gpointer user_data) {
  auto* state = static_cast<SettingsState*>(user_data);
  state->backend->record_call("Read", g_variant_new_parsed("{'namespace': <%s>, 'key': <%s>}", name_space, key));
  auto found_namespace = state->values.find(name_space);
  if (found_namespace != state->values.end()) {
    auto found = found_namespace->second.find(key);
    if (found != found_namespace->second.end()) {
      test_impl_settings_complete_read(object, invocation, g_variant_new_variant(found->second.get()));
      return G_DBUS_METHOD_INVOCATION_HANDLED;
    }
  }
  g_dbus_method_invocation_return_dbus_error(invocation, "org.freedesktop.portal.Error.NotFound",
                                             "Requested setting not found");
  return G_DBUS_METHOD_INVOCATION_HANDLED;
}

gboolean on_set_setting(TestControlBackend* control, GDBusMethodInvocation* invocation, const char* name_space,
                        const char* key, GVariant* value, gpointer user_data) {
  auto* state = static_cast<SettingsState*>(user_data);
  // gdbus-codegen hands a "v" argument over boxed.
  g_autoptr(GVariant) unboxed =
      g_variant_is_of_type(value, G_VARIANT_TYPE_VARIANT) ? g_variant_get_variant(value) : g_variant_ref(value);
  state->set(name_space, key, unboxed);
  test_impl_settings_emit_setting_changed(state->skeleton, name_space, key, g_variant_new_variant(unboxed));
  test_control_backend_complete_set_setting(control, invocation);
  return G_DBUS_METHOD_INVOCATION_HANDLED;
}

}  // namespace

GObjectPtr<GDBusInterfaceSkeleton> settings_export(Backend& backend, GDBusConnection* connection, GError** error) {
  GObjectPtr<GDBusInterfaceSkeleton> skeleton(G_DBUS_INTERFACE_SKELETON(test_impl_settings_skeleton_new()));
  test_impl_settings_set_version(TEST_IMPL_SETTINGS(skeleton.get()), 1);
  auto owned = std::make_unique<SettingsState>();
  owned->backend = &backend;
  owned->skeleton = TEST_IMPL_SETTINGS(skeleton.get());
  owned->set_defaults();
  SettingsState* state = attach_state(skeleton.get(), std::move(owned));
  state->set_setting_handler =
      g_signal_connect(backend.control(), "handle-set-setting", G_CALLBACK(on_set_setting), state);
  backend.add_reset_hook(state, [state] { state->set_defaults(); });
  g_signal_connect(skeleton.get(), "handle-read-all", G_CALLBACK(on_read_all), state);
  g_signal_connect(skeleton.get(), "handle-read", G_CALLBACK(on_read), state);
  if (!g_dbus_interface_skeleton_export(skeleton.get(), connection, kPortalPath, error)) return nullptr;
  return skeleton;
}

}  // namespace sidebus::test_backend
