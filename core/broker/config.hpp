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

#include "sidebus-plugin.h"

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

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

  // "broker": { "max_pending_requests": N }: portal requests one VM may have
  // in flight at once (1..10000).
  static constexpr unsigned kDefaultMaxPendingRequests = 64;
  static constexpr unsigned kMinPendingRequests = 1;
  static constexpr unsigned kMaxPendingRequests = 10000;
  virtual unsigned max_pending_requests() const = 0;
  // "broker": { "max_message_size": BYTES }: the largest D-Bus message
  // accepted from the guest (4 KiB..128 MiB, the D-Bus maximum).
  static constexpr std::size_t kDefaultMaxMessageSize = 16 * 1024 * 1024;
  static constexpr std::size_t kMinMessageSize = 4096;
  static constexpr std::size_t kMaxMessageSize = 128 * 1024 * 1024;
  virtual std::size_t max_message_size() const = 0;
  // "broker": { "max_messages_per_second": N }: D-Bus messages per second
  // read from the guest, burst as many (10..1000000); above it the broker
  // reads the link more slowly.
  static constexpr unsigned kDefaultMaxMessagesPerSecond = 1000;
  static constexpr unsigned kMinMessagesPerSecond = 10;
  static constexpr unsigned kMaxMessagesPerSecond = 1000000;
  virtual unsigned max_messages_per_second() const = 0;

  // "broker": { "max_sessions": N }: portal sessions (screen casts, monitors,
  // …) one VM may hold at once (1..1000).
  static constexpr unsigned kDefaultMaxSessions = 16;
  static constexpr unsigned kMinSessions = 1;
  static constexpr unsigned kMaxSessions = 1000;
  virtual unsigned max_sessions() const = 0;

  // 1..kMaxVmNameLength bytes of [A-Za-z0-9._-], not starting with '.', so
  // that vm/<name>.json stays one file name inside vm/.
  static constexpr std::size_t kMaxVmNameLength = 128;
  static bool is_valid_vm_name(std::string_view name);
};

}  // namespace sidebus
