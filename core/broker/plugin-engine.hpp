// SPDX-License-Identifier: LGPL-2.1-or-later
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

  // A configuration reload: the directories are scanned again (new plugins
  // are found), the plugins @config enables or configures are loaded and
  // their sections checked as in load(). On error nothing changes; on
  // success loaded() is what @config enables. Modules stay loaded until the
  // broker exits (GType registrations cannot be undone).
  bool reload(const Config& config, GError** error);

  // The module names of the enabled plugins, sorted.
  std::vector<std::string> loaded() const;

  // Starts every enabled plugin on a link. A plugin whose start() fails is
  // logged and left out; the others still serve.
  void start_all(PortalLink& link, const Config& config);

 private:
  // The plugins @config enables, after loading and checking every plugin it
  // enables or configures.
  bool select(const Config& config, std::vector<PeasPluginInfo*>* enabled, GError** error);

  PeasEngine* engine_ = nullptr;          // owned
  std::vector<std::string> dirs_;
  std::vector<PeasPluginInfo*> plugins_;  // the enabled ones, owned by engine_
  std::vector<PeasPluginInfo*> loaded_;   // every plugin loaded, enabled or not
};

}  // namespace sidebus
