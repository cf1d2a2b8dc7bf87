// plugin-engine.hpp — finds portal plugins with libpeas, loads the ones the
// configuration enables, and starts one instance of each on every guest link.
#pragma once

#include <libpeas/peas.h>

#include <memory>
#include <string>
#include <vector>

#include "broker/config.hpp"
#include "api/link-scope.hpp"

namespace sidebus {

// One started plugin instance on one link: stopped and dropped on destruction.
class PortalInstance {
 public:
  PortalInstance(GObject* extension, std::unique_ptr<_SidebusContext> context)
      : extension_(extension), context_(std::move(context)) {}
  PortalInstance(const PortalInstance&) = delete;
  PortalInstance& operator=(const PortalInstance&) = delete;
  ~PortalInstance();

 private:
  GObject* extension_;  // owned
  std::unique_ptr<_SidebusContext> context_;
};

class PluginEngine {
 public:
  // Scans dirs for <name>.plugin files and loads every plugin that config
  // enables. An enabled portal with no plugin is logged, not fatal; a plugin
  // that fails to load or was built for another API version is an error.
  static std::unique_ptr<PluginEngine> load(const std::vector<std::string>& dirs, const Config& config,
                                            GError** error);
  ~PluginEngine();

  // The module names of the loaded plugins, sorted.
  std::vector<std::string> loaded() const;

  // Starts every loaded plugin on a link. A plugin whose start() fails is
  // logged and left out; the others still serve.
  std::vector<std::unique_ptr<PortalInstance>> start_all(LinkScope& link, const Config& config);

 private:
  PeasEngine* engine_ = nullptr;  // owned
  std::vector<PeasPluginInfo*> plugins_;  // owned by engine_
};

}  // namespace sidebus
