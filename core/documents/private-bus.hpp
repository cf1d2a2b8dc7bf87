// SPDX-License-Identifier: LGPL-2.1-or-later
// private-bus.hpp — the per-VM private D-Bus: a dbus-daemon the broker spawns
// (generated config, socket in the runtime dir) with the real
// xdg-permission-store and xdg-document-portal on it, XDG_RUNTIME_DIR =
// runtime dir and XDG_DATA_HOME = state dir, so the document FUSE mount is
// <runtime-dir>/doc and the document database persists in the state dir.
// Children that die are restarted (logged); destruction stops them all and
// leaves no mount, socket or process behind.
//
// Files in the runtime dir: private-bus.conf (the generated dbus-daemon
// config), private-bus.sock (the bus) and doc/ (the FUSE mount). In the state
// dir: flatpak/db/documents (the document database, written by the
// permission store). Each VM needs its own pair of directories; a second
// PrivateBus on a runtime dir whose bus still answers is refused.
//
// Or the bus is the VM manager's (Options::join_address, the broker's
// --private-bus): a dbus-daemon it started for QEMU and the VM's other
// helpers (QEMU's dbus-vmstate, seed 003). Then no dbus-daemon is spawned
// and the runtime dir holds no socket; the two helpers are still the
// broker's children, started directly (never activated: that bus's service
// directories are not ours, so start() refuses a bus on which either name
// is activatable or already owned).
#pragma once

#include <gio/gio.h>

#include <functional>
#include <map>
#include <memory>
#include <string>

namespace sidebus {

class PrivateBus {
 public:
  struct Options {
    std::string runtime_dir;
    std::string state_dir;
    std::string vm_name;  // for logs
    // Non-empty: join this bus instead of spawning one.
    std::string join_address;
    // Start without the document portal; start_document_portal() later. A
    // migration's destination: its document database arrives (Load) first,
    // and the document portal reads it only when it starts.
    bool defer_document_portal = false;
  };
  // Blocks until the bus is up and the document portal's FUSE mount answers
  // (bounded; the error says which child failed and how). Call it from the
  // thread that runs the default main context: the helpers are watched there,
  // and they get SIGTERM if that thread ends (PR_SET_PDEATHSIG).
  static std::unique_ptr<PrivateBus> start(const Options& options, GError** error);
  virtual ~PrivateBus() = default;

  // The broker's client connection, borrowed. If the dbus-daemon itself died
  // and was restarted this is a new object: fetch it on every use (or again
  // in on_restarted), never keep it.
  virtual GDBusConnection* connection() = 0;
  virtual const std::string& address() = 0;          // D-Bus address of the private bus
  virtual const std::string& documents_mount() = 0;  // <runtime-dir>/doc

  // Runs on the default main context each time a helper that died has been
  // restarted and answers again (after a dbus-daemon restart, connection()
  // has changed). Must not destroy the PrivateBus.
  virtual void set_on_restarted(std::function<void()> on_restarted) = 0;

  // What `sidebusctl status` reports about the helpers: how often each one
  // died ("dbus-daemon", "xdg-permission-store", "xdg-document-portal"), how
  // many restarts succeeded, and whether the broker gave up restarting.
  struct Health {
    std::map<std::string, unsigned> exits;
    unsigned restarts = 0;
    bool given_up = false;
  };
  virtual Health health() const = 0;
  // Starts the document portal of a bus started with defer_document_portal
  // (asynchronously; @done on the main context, error borrowed); from then
  // on it is supervised like the rest.
  virtual void start_document_portal(std::function<void(GError* error)> done) = 0;
  virtual bool document_portal_started() = 0;
  // Where the permission store keeps its tables: <state-dir>/flatpak/db.
  virtual std::string database_dir() = 0;
  // Whether the bus is the VM manager's (join_address) rather than ours.
  virtual bool joined() = 0;
};

}  // namespace sidebus
