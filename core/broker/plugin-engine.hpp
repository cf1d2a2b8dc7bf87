// plugin-engine.hpp — finds portal plugins with libpeas, checks every
// configuration drop-in against each plugin's schema, loads the ones the
// configuration enables, and starts one instance of each on every guest link.
#pragma once

#include <libpeas/peas.h>

#include <memory>
#include <string>
#include <vector>

#include "broker/config.hpp"

namespace sidebus {

class PortalLink;

class PluginEngine {
 public:
  // Scans dirs for <name>.plugin files and loads every plugin that config
  // enables or configures; each configured section is checked against its
  // plugin's schema (a mistake there is an error naming file, line, column
  // and key). An enabled portal with no plugin, or a configured one, is
  // logged, not fatal; a plugin that fails to load or was built for another
  // API version is an error.
  static std::unique_ptr<PluginEngine> load(const std::vector<std::string>& dirs, const Config& config,
                                            GError** error);
  ~PluginEngine();

  // The module names of the enabled plugins, sorted.
  std::vector<std::string> loaded() const;

  // Starts every enabled plugin on a link. A plugin whose start() fails is
  // logged and left out; the others still serve.
  void start_all(PortalLink& link, const Config& config);

 private:
  PeasEngine* engine_ = nullptr;          // owned
  std::vector<PeasPluginInfo*> plugins_;  // the enabled ones, owned by engine_
};

}  // namespace sidebus
