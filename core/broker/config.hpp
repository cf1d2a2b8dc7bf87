// SPDX-License-Identifier: LGPL-2.1-or-later
// config.hpp — the merged JSON configuration.
//
// Drop-ins in systemd style: for each config directory in order (default
// <datadir>/sidebus/sidebus.d < /etc/sidebus.d < /run/sidebus.d; --config-dir
// replaces the list), every *.json file in lexical order, then for each
// directory vm/<vm-name>.json. Objects merge key by key, later files win;
// anything else (strings, numbers, arrays) is replaced whole, and null deletes
// the key. A malformed file stops loading with its path, line, column and
// reason, and nothing of it is applied. docs/configuration.md is the user's
// description of the format and of every key.
#pragma once

#include <json-glib/json-glib.h>

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "broker/accepted-link.hpp"
#include "broker/host-identity.hpp"
#include "documents/document-retention.hpp"
#include "sidebus-plugin.h"

namespace sidebus {

class Config {
 public:
  static std::vector<std::string> default_dirs();
  // vm_name selects vm/<vm_name>.json in every directory; empty means no
  // per-VM files. A name that is not is_valid_vm_name() is an error
  // (G_IO_ERROR_INVALID_ARGUMENT); a file that cannot be read, parsed or
  // validated is an error (G_IO_ERROR_INVALID_DATA, or the G_FILE_ERROR of
  // the read) whose message starts with the file's path.
  static std::unique_ptr<Config> load(const std::vector<std::string>& dirs, const std::string& vm_name,
                                      GError** error);
  virtual ~Config() = default;

  // "portals": { "<name>": { "enabled": true, ... } }; absent means disabled.
  virtual bool portal_enabled(const std::string& name) const = 0;
  // That portal's section; an empty object if absent. Borrowed.
  virtual JsonObject* portal_section(const std::string& name) const = 0;
  // The names of the portals whose "enabled" is true, sorted (byte order).
  virtual std::vector<std::string> enabled_portals() const = 0;
  // The files that were read, in the order applied (for --verbose logs).
  virtual const std::vector<std::string>& files() const = 0;
  // Checks portals.<name> in every file against a plugin's schema: an
  // unknown key, a wrong type or a value the key's validator refuses is an
  // error "path:line:column: portals.<name>.<key>: problem".
  virtual bool check_portal(const std::string& name, const SidebusConfigKey* keys, std::size_t n_keys,
                            GError** error) const = 0;
  // Every portals.<name> that some file configures (enabled or not), sorted.
  virtual std::vector<std::string> configured_portals() const = 0;

  // "broker": { ... }: what one VM may make the broker hold. The defaults are
  // BrokerLimits' initializers; every key, its range and what it bounds:
  // docs/configuration.md.
  struct BrokerLimits {
    unsigned max_pending_requests = 64;  // portal requests in flight at once
    unsigned max_sessions = 16;          // portal sessions held at once
    GuestLinkLimits link;                // what the link's relay lets through
  };
  virtual const BrokerLimits& limits() const = 0;
  // "broker": { "dialog_title_prefix": "…" }: put before every dialog title a
  // guest sends, "{vm}" standing for the VM's name; "" for none.
  static constexpr const char* kDefaultDialogTitlePrefix = "[{vm}] ";
  virtual const std::string& dialog_title_prefix() const = 0;
  // "documents": { "max_documents": M, "max_unused_days": N }: the
  // retention policy of the VM's document store (0: no limit).
  virtual const RetentionPolicy& retention() const = 0;
  // The merged "documents" object (empty if no file sets it), borrowed.
  virtual JsonObject* documents_section() const = 0;
  // The merged "broker" object (empty if no file sets it), borrowed: what a
  // reload compares key by key.
  virtual JsonObject* broker_section() const = 0;
  // "broker": { "host_identity": "off" | "auto" | "required" }: whether the
  // broker moves into its VM's app scope for the host portal (host-identity.hpp).
  virtual HostIdentityMode host_identity() const = 0;
  // "broker": { "host_app_id": "org.example.Vm" }: the VM's app id toward the
  // host; "" (the default) means the app id of its documents (app-id.hpp).
  virtual const std::string& host_app_id() const = 0;

  // 1..kMaxVmNameLength bytes of [A-Za-z0-9._-], not starting with '.', so
  // that vm/<name>.json stays one file name inside vm/.
  static constexpr std::size_t kMaxVmNameLength = 128;
  static bool is_valid_vm_name(std::string_view name);
};

}  // namespace sidebus
