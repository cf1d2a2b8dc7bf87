// SPDX-License-Identifier: LGPL-2.1-or-later
// context.hpp — what stands behind the opaque SidebusContext of the plugin
// API: one per plugin instance on one link, owned by its PortalLink. It keeps
// a list of what the plugin started through it, so that teardown can release
// all of it (context.cpp: release()).
#pragma once

#include <gio/gio.h>
#include <json-glib/json-glib.h>

#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "sidebus-plugin.h"
#include "util/gobject-ptr.hpp"

namespace sidebus {

class PortalLink;

// Work a plugin started through its context that completes later (a
// forwarded call, an export). At teardown the context orphans each one: its
// user data is released at once, and its completion, when it comes, finds
// context == nullptr and does nothing but free itself.
struct PendingWork {
  SidebusContext* context = nullptr;
  gpointer user_data = nullptr;
  GDestroyNotify destroy_notify = nullptr;

  virtual ~PendingWork() { release_user_data(); }
  void release_user_data() {
    if (destroy_notify != nullptr) std::exchange(destroy_notify, nullptr)(user_data);
  }
  // The completion's first step: false if orphaned. Otherwise the work is
  // no longer pending (its context forgets it).
  bool complete();
};

// A guest client may only close (or use) what it created: false, with the
// caller answered NotAllowed, when @invocation comes from anyone but @owner.
bool reject_unless_owner(SidebusContext* context, GDBusMethodInvocation* invocation, const std::string& owner,
                         const std::string& what);

}  // namespace sidebus

struct _SidebusContext {
  sidebus::PortalLink* link = nullptr;  // null once released
  std::string portal_name;
  JsonObject* config = nullptr;  // borrowed from the broker's Config
  sidebus::GObjectPtr<GObject> extension;  // the plugin instance (a SidebusPortal)
  bool started = false;                    // start() succeeded: stop() is owed
  sidebus::GObjectPtr<GCancellable> lifetime;  // cancelled at release(): host calls in flight
  std::vector<sidebus::GObjectPtr<GDBusInterfaceSkeleton>> exported;
  std::map<guint, guint> host_signals;  // our id → GDBus subscription id
  std::map<guint, guint> client_watches;  // our id → GuestClients id
  guint next_id = 1;
  std::map<sidebus::PendingWork*, std::shared_ptr<sidebus::PendingWork>> pending;

  _SidebusContext() = default;
  _SidebusContext(const _SidebusContext&) = delete;
  _SidebusContext& operator=(const _SidebusContext&) = delete;
  ~_SidebusContext() { release(); }

  // Stops the plugin (if started) and drops everything it holds through
  // the context; afterwards every API entry point on it is a no-op.
  void release();
  // Keeps @work pending until it completes or the context is released.
  void add_pending(std::shared_ptr<sidebus::PendingWork> work);
};
