// SPDX-License-Identifier: LGPL-2.1-or-later
// vmstate-service.hpp — the broker as one of QEMU's D-Bus helpers:
// org.qemu.VMState1 at /org/qemu/VMState1 on the VM's private bus (QEMU's
// docs/interop/dbus-vmstate.rst). QEMU's dbus-vmstate object lists the
// queued owners of the name org.qemu.VMState1, reads each one's Id, and
// calls Save on the migration's source (the VM stopped, the reply within
// D-Bus's 25 s default and at most 1 MiB) and Load on its destination, with
// the bytes Save gave.
//
// Save: this VM's document table (read from the permission store,
// asynchronously) and the guest requests and sessions that were pending, as
// the blob of documents/vmstate-blob.hpp. Load, only on a broker started
// with --incoming and only once: the blob is checked as a whole before
// anything is touched (vmstate-blob.hpp), the directory device and inode
// of each document are taken again on this host, the table replaces this
// VM's own atomically (documents/document-table.hpp), and only then is the
// broker told to start serving (on_loaded); Load answers when that is done,
// so a destination that cannot serve fails the migration and the source VM
// runs on. A Load from another uid than the broker's needs --vmstate-key
// (QEMU is then less trusted than the broker: an unauthenticated blob could
// make the broker share any of its user's files with the VM).
#pragma once

#include <gio/gio.h>

#include <functional>
#include <memory>
#include <string>

#include "documents/vmstate-blob.hpp"
#include "util/gobject-ptr.hpp"

namespace sidebus {

class PrivateBus;

class VmStateService {
 public:
  static constexpr char kDefaultId[] = "sidebus";
  struct Options {
    std::string id = kDefaultId;  // the Id property: unique among the VM's helpers
    std::string key;              // the --vmstate-key secret; empty: none
    std::string app_id;           // the VM's documents are granted to it
    bool incoming = false;        // a migration's destination: waits for Load
  };
  // What the broker adds to Save: the guest requests and sessions pending
  // now (paths only).
  using PendingGuestObjects = std::function<void(VmState& state)>;
  // Load's table is in place: start serving; @serving(error) once the
  // broker serves the guest (or could not: error borrowed).
  using Loaded = std::function<void(VmState state, std::function<void(GError* error)> serving)>;

  VmStateService(PrivateBus& private_bus, Options options, PendingGuestObjects pending, Loaded on_loaded);
  ~VmStateService();
  VmStateService(const VmStateService&) = delete;
  VmStateService& operator=(const VmStateService&) = delete;

  // The private bus was restarted: its connection() is a new one.
  void on_private_bus_restarted();
  bool waiting_for_load() const { return options_.incoming && !loaded_; }
  const std::string& id() const { return options_.id; }

  // An Id QEMU accepts (1 to 255 bytes) that can stand in its comma-separated
  // id-list: printable ASCII, no ',' or space.
  static bool is_valid_id(const std::string& id);

 private:
  void export_on(GDBusConnection* connection);
  void unexport();
  static void on_method_call(GDBusConnection*, const char* sender, const char* path, const char* interface_name,
                             const char* method, GVariant* parameters, GDBusMethodInvocation* invocation,
                             gpointer self);
  static GVariant* on_get_property(GDBusConnection*, const char* sender, const char* path, const char* interface_name,
                                   const char* property, GError** error, gpointer self);
  void save(GDBusMethodInvocation* invocation);
  void load(GDBusMethodInvocation* invocation, GVariant* parameters);
  void apply(GDBusMethodInvocation* invocation, VmState state);

  PrivateBus& private_bus_;
  Options options_;
  PendingGuestObjects pending_;
  Loaded on_loaded_;
  GDBusConnection* exported_on_ = nullptr;  // borrowed: the private bus's connection
  guint registration_ = 0;
  guint name_owner_ = 0;
  bool loading_ = false;
  bool loaded_ = false;
  bool cannot_serve_ = false;
  GObjectPtr<GCancellable> cancellable_;    // cancelled with the service: no store callback outlives it
  std::shared_ptr<VmStateService*> alive_;  // the same, for the other callbacks
};

}  // namespace sidebus
