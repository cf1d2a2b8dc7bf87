// SPDX-License-Identifier: LGPL-2.1-or-later
// plugin-engine.cpp — libpeas glue. A plugin declares the plugin API version
// it was built for with `X-Sidebus-API=2` in its .plugin file, so a broker
// never loads a module compiled against an incompatible header.
#include "broker/plugin-engine.hpp"

#include <algorithm>

#include "api/portal-link.hpp"

namespace sidebus {

namespace {

bool api_version_matches(PeasPluginInfo* info, GError** error) {
  const char* declared = peas_plugin_info_get_external_data(info, "Sidebus-API");
  g_autofree char* expected = g_strdup_printf("%d", SIDEBUS_PLUGIN_API_VERSION);
  if (g_strcmp0(declared, expected) == 0) return true;
  g_set_error(error, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED,
              "plugin '%s' (%s) declares X-Sidebus-API=%s but this broker provides API %s; rebuild the plugin "
              "against this sidebus-plugin.h",
              peas_plugin_info_get_module_name(info), peas_plugin_info_get_module_dir(info),
              declared != nullptr ? declared : "(missing)", expected);
  return false;
}

bool load_plugin(PeasEngine* engine, PeasPluginInfo* info, GError** error) {
  const char* name = peas_plugin_info_get_module_name(info);
  if (!api_version_matches(info, error)) return false;
  if (!peas_engine_load_plugin(engine, info)) {
    g_autoptr(GError) load_error = nullptr;
    peas_plugin_info_is_available(info, &load_error);
    g_set_error(error, G_IO_ERROR, G_IO_ERROR_FAILED, "plugin '%s' in %s failed to load: %s", name,
                peas_plugin_info_get_module_dir(info), load_error != nullptr ? load_error->message : "unknown error");
    return false;
  }
  if (!peas_engine_provides_extension(engine, info, SIDEBUS_TYPE_PORTAL)) {
    g_set_error(error, G_IO_ERROR, G_IO_ERROR_FAILED,
                "plugin '%s' in %s does not register a SidebusPortal type (peas_object_module_register_extension_type)",
                name, peas_plugin_info_get_module_dir(info));
    return false;
  }
  return true;
}

// Checks the plugin's configuration sections against the schema an unstarted
// instance declares.
bool check_schema(PeasEngine* engine, PeasPluginInfo* info, const Config& config, GError** error) {
  g_autoptr(GObject) probe = G_OBJECT(peas_engine_create_extension(engine, info, SIDEBUS_TYPE_PORTAL, nullptr));
  if (probe == nullptr) return true;  // reported when a link starts it
  SidebusPortalInterface* iface = SIDEBUS_PORTAL_GET_IFACE(probe);
  if (iface->get_config_schema == nullptr) return true;
  gsize n_keys = 0;
  const SidebusConfigKey* keys = iface->get_config_schema(SIDEBUS_PORTAL(probe), &n_keys);
  return config.check_portal(peas_plugin_info_get_module_name(info), keys, n_keys, error);
}

}  // namespace

std::unique_ptr<PluginEngine> PluginEngine::load(const std::vector<std::string>& dirs, const Config& config,
                                                 GError** error) {
  auto self = std::unique_ptr<PluginEngine>(new PluginEngine());
  self->engine_ = peas_engine_new();
  self->dirs_ = dirs;
  for (const std::string& dir : dirs) peas_engine_add_search_path(self->engine_, dir.c_str(), dir.c_str());
  if (!self->reload(config, error)) return nullptr;
  return self;
}

bool PluginEngine::reload(const Config& config, GError** error) {
  // Finds .plugin files added since; the ones already known stay as they are.
  peas_engine_rescan_plugins(engine_);
  std::vector<PeasPluginInfo*> enabled;
  if (!select(config, &enabled, error)) return false;
  for (PeasPluginInfo* info : enabled)
    if (std::find(plugins_.begin(), plugins_.end(), info) == plugins_.end())
      g_message("loaded portal plugin %s from %s", peas_plugin_info_get_module_name(info),
                peas_plugin_info_get_module_dir(info));
  plugins_ = std::move(enabled);
  if (plugins_.empty()) g_warning("no portal is enabled: the guest will see an empty portal object");
  return true;
}

bool PluginEngine::select(const Config& config, std::vector<PeasPluginInfo*>* enabled_plugins, GError** error) {
  std::vector<std::string> configured = config.configured_portals();
  std::vector<std::string> found;
  for (const GList* l = peas_engine_get_plugin_list(engine_); l != nullptr; l = l->next) {
    auto* info = static_cast<PeasPluginInfo*>(l->data);
    std::string name = peas_plugin_info_get_module_name(info);
    found.push_back(name);
    bool enabled = config.portal_enabled(name);
    bool is_configured = std::find(configured.begin(), configured.end(), name) != configured.end();
    if (!enabled && !is_configured) {
      g_debug("plugin %s found in %s, not enabled", name.c_str(), peas_plugin_info_get_module_dir(info));
      continue;
    }
    // A configured but disabled portal is loaded too, so that a typo in its
    // section ("enabeld") is found rather than silently disabling it.
    if (!load_plugin(engine_, info, error) || !check_schema(engine_, info, config, error)) return false;
    if (std::find(loaded_.begin(), loaded_.end(), info) == loaded_.end()) loaded_.push_back(info);
    if (enabled) enabled_plugins->push_back(info);
  }
  std::string dir_list;
  for (const std::string& dir : dirs_) dir_list += (dir_list.empty() ? "" : ", ") + dir;
  for (const std::string& name : configured)
    if (std::find(found.begin(), found.end(), name) == found.end())
      g_warning("portals.%s is %s in the configuration, but no %s.plugin was found in %s; is the plugin "
                "installed?",
                name.c_str(), config.portal_enabled(name) ? "enabled" : "configured", name.c_str(), dir_list.c_str());
  return true;
}

PluginEngine::~PluginEngine() {
  for (PeasPluginInfo* info : loaded_) peas_engine_unload_plugin(engine_, info);
  g_clear_object(&engine_);
}

std::vector<std::string> PluginEngine::loaded() const {
  std::vector<std::string> names;
  for (PeasPluginInfo* info : plugins_) names.emplace_back(peas_plugin_info_get_module_name(info));
  std::sort(names.begin(), names.end());
  return names;
}

void PluginEngine::start_all(PortalLink& link, const Config& config) {
  for (PeasPluginInfo* info : plugins_) {
    const char* name = peas_plugin_info_get_module_name(info);
    GObject* extension = G_OBJECT(peas_engine_create_extension(engine_, info, SIDEBUS_TYPE_PORTAL, nullptr));
    if (extension == nullptr) {
      g_warning("plugin %s: could not create its SidebusPortal instance", name);
      continue;
    }
    link.start_portal(extension, name, config.portal_section(name));
  }
}

}  // namespace sidebus
