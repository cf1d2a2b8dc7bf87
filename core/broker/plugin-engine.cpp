// plugin-engine.cpp — libpeas glue. A plugin declares the plugin API version
// it was built for with `X-Sidebus-API=1` in its .plugin file, so a broker
// never loads a module compiled against an incompatible header.
#include "broker/plugin-engine.hpp"

#include <algorithm>

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

}  // namespace

PortalInstance::~PortalInstance() {
  SidebusPortalInterface* iface = SIDEBUS_PORTAL_GET_IFACE(extension_);
  if (iface->stop != nullptr) iface->stop(SIDEBUS_PORTAL(extension_));
  g_object_unref(extension_);
  // context_ goes next: its skeletons are unexported.
}

std::unique_ptr<PluginEngine> PluginEngine::load(const std::vector<std::string>& dirs, const Config& config,
                                                 GError** error) {
  auto self = std::unique_ptr<PluginEngine>(new PluginEngine());
  self->engine_ = peas_engine_new();
  for (const std::string& dir : dirs) peas_engine_add_search_path(self->engine_, dir.c_str(), dir.c_str());
  peas_engine_rescan_plugins(self->engine_);

  std::vector<std::string> found;
  for (const GList* l = peas_engine_get_plugin_list(self->engine_); l != nullptr; l = l->next) {
    auto* info = static_cast<PeasPluginInfo*>(l->data);
    std::string name = peas_plugin_info_get_module_name(info);
    found.push_back(name);
    if (!config.portal_enabled(name)) {
      g_debug("plugin %s found in %s, not enabled", name.c_str(), peas_plugin_info_get_module_dir(info));
      continue;
    }
    if (!api_version_matches(info, error)) return nullptr;
    if (!peas_engine_load_plugin(self->engine_, info)) {
      g_autoptr(GError) load_error = nullptr;
      peas_plugin_info_is_available(info, &load_error);
      g_set_error(error, G_IO_ERROR, G_IO_ERROR_FAILED, "plugin '%s' in %s failed to load: %s", name.c_str(),
                  peas_plugin_info_get_module_dir(info), load_error != nullptr ? load_error->message : "unknown error");
      return nullptr;
    }
    if (!peas_engine_provides_extension(self->engine_, info, SIDEBUS_TYPE_PORTAL)) {
      g_set_error(error, G_IO_ERROR, G_IO_ERROR_FAILED,
                  "plugin '%s' in %s does not register a SidebusPortal type (peas_object_module_register_extension_type)",
                  name.c_str(), peas_plugin_info_get_module_dir(info));
      return nullptr;
    }
    g_message("loaded portal plugin %s from %s", name.c_str(), peas_plugin_info_get_module_dir(info));
    self->plugins_.push_back(info);
  }
  std::string dir_list;
  for (const std::string& dir : dirs) dir_list += (dir_list.empty() ? "" : ", ") + dir;
  for (const std::string& name : config.enabled_portals())
    if (std::find(found.begin(), found.end(), name) == found.end())
      g_warning("portals.%s is enabled in the configuration, but no %s.plugin was found in %s; is the plugin "
                "installed?",
                name.c_str(), name.c_str(), dir_list.c_str());
  if (self->plugins_.empty()) g_warning("no portal is enabled: the guest will see an empty portal object");
  return self;
}

PluginEngine::~PluginEngine() {
  for (PeasPluginInfo* info : plugins_) peas_engine_unload_plugin(engine_, info);
  g_clear_object(&engine_);
}

std::vector<std::string> PluginEngine::loaded() const {
  std::vector<std::string> names;
  for (PeasPluginInfo* info : plugins_) names.emplace_back(peas_plugin_info_get_module_name(info));
  std::sort(names.begin(), names.end());
  return names;
}

std::vector<std::unique_ptr<PortalInstance>> PluginEngine::start_all(LinkScope& link, const Config& config) {
  std::vector<std::unique_ptr<PortalInstance>> instances;
  for (PeasPluginInfo* info : plugins_) {
    const char* name = peas_plugin_info_get_module_name(info);
    GObject* extension = G_OBJECT(peas_engine_create_extension(engine_, info, SIDEBUS_TYPE_PORTAL, nullptr));
    if (extension == nullptr) {
      g_warning("plugin %s: could not create its SidebusPortal instance", name);
      continue;
    }
    auto context = std::make_unique<_SidebusContext>();
    context->link = &link;
    context->portal_name = name;
    context->config = config.portal_section(name);
    g_autoptr(GError) error = nullptr;
    SidebusPortalInterface* iface = SIDEBUS_PORTAL_GET_IFACE(extension);
    if (iface->start == nullptr || !iface->start(SIDEBUS_PORTAL(extension), context.get(), &error)) {
      g_warning("plugin %s failed to start on this link: %s", name,
                error != nullptr ? error->message : "no start() implementation");
      g_object_unref(extension);
      continue;
    }
    g_debug("plugin %s started", name);
    instances.push_back(std::make_unique<PortalInstance>(extension, std::move(context)));
  }
  return instances;
}

}  // namespace sidebus
