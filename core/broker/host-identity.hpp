// SPDX-License-Identifier: LGPL-2.1-or-later
// host-identity.hpp — the VM's identity toward the host's portals.
//
// The host's xdg-desktop-portal sees the broker as an unsandboxed host
// client, and names such a client after its systemd unit (app-unit-name.hpp
// says which versions do and how). So the broker moves itself into a
// transient scope of the systemd user manager, "app-sidebus-<app id>-<pid>
// .scope", and the host portal stores this VM's permission store grants,
// remembered choices and notifications under the VM's own app id instead of
// '' (shared with every host application and every other VM).
//
// When: once, at start, before the broker talks to the host portal (which
// caches a client's app id at its first call) and before it spawns its
// private bus, so the helpers share the scope (nothing of theirs reaches the
// host portal, but the whole VM is one app in systemd's and the desktop's
// views). Nothing is served yet then, so the start waits for the manager's
// answer, bounded by kHostIdentityTimeoutUs, on a main context of its own: no other
// source is dispatched meanwhile.
//
// Only the broker's pid moves: children spawned later inherit the scope; a
// service unit running the broker keeps it as its main process (signals and
// sd_notify go by pid), its cgroup is left empty.
#pragma once

#include <gio/gio.h>

#include <string>
#include <string_view>

namespace sidebus {

// broker.host_identity: "off" (never move), "auto" (move when a systemd user
// manager is on the host bus, else go on as app id ''), "required" (fail the
// start unless the move worked).
enum class HostIdentityMode { kOff, kAuto, kRequired };
inline bool parse_host_identity_mode(std::string_view word, HostIdentityMode* mode) {
  if (word == "off")
    *mode = HostIdentityMode::kOff;
  else if (word == "auto")
    *mode = HostIdentityMode::kAuto;
  else if (word == "required")
    *mode = HostIdentityMode::kRequired;
  else
    return false;
  return true;
}

struct HostIdentityOptions {
  HostIdentityMode mode = HostIdentityMode::kAuto;
  std::string app_id;   // the VM's app id toward the host
  std::string vm_name;  // for the scope's description
};

// How long the start waits for the user manager, per step (bounded, see
// above; systemd answers within milliseconds when it answers at all).
inline constexpr gint64 kHostIdentityTimeoutUs = 5 * G_USEC_PER_SEC;

// Moves this process into the app's scope on the systemd manager at
// org.freedesktop.systemd1 on @host_bus (the host session bus is the user
// bus, where the user manager serves it), unless it is in such a unit
// already. Logs what the host portal will see. In kAuto mode every failure
// is a warning and the result true; in kRequired mode a failure is false
// with @error naming broker.host_identity, the cause and what to do.
bool establish_host_identity(GDBusConnection* host_bus, const HostIdentityOptions& options, GError** error);

}  // namespace sidebus
