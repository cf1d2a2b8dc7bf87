// SPDX-License-Identifier: LGPL-2.1-or-later
// portal-link.hpp — everything the portals of one guest link share, and the
// one owner of all of it: the plugin instances and their contexts, every
// guest request and session, the host signal routes, the guest client
// watches, the guest bus names. The broker makes one when a link is up and
// destroys it when the link goes; the portals never outlive it.
//
// Teardown (shutdown(), also from the destructor) runs in one fixed order,
// whatever ended the link (agent gone, VM reboot, a replacing link, the
// broker stopping):
//   1. guest side: every request and session is retired — its guest object
//      unexported, its callbacks disconnected;
//   2. host side: pending host requests and active host sessions are closed
//      (asynchronous calls; nothing waits for the host);
//   3. the plugins' stop(), in reverse start order, then their contexts go
//      (skeletons unexported, host signal subscriptions and guest client
//      watches dropped, pending forwarded calls and exports released);
//   4. the owner then closes the guest connection (GuestLink). No
//      ReleaseName: closing the connection releases the names, and a dead
//      link must never be waited on.
#pragma once

#include <gio/gio.h>
#include <json-glib/json-glib.h>

#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "api/guest-clients.hpp"
#include "sidebus-plugin.h"
#include "util/gobject-ptr.hpp"

namespace sidebus {

class DocumentExporter;
class ForwardedDocuments;
class HostPortal;

struct PortalLinkOptions {
  std::string vm_name;
  std::string transport;  // for messages: "unix:/run/…", "vsock:1234"
  SidebusFdTransport fd_transport = SIDEBUS_FD_TRANSPORT_NONE;
  // FORWARDED: the host files the guest's documents arrived as.
  std::shared_ptr<ForwardedDocuments> forwarded_documents;
  unsigned max_pending_requests = 64;  // broker.max_pending_requests
  unsigned max_sessions = 16;          // broker.max_sessions
  std::string dialog_title_prefix;     // broker.dialog_title_prefix, the VM's name filled in
};

class PortalLink {
 public:
  // @guest: the broker's connection to the guest bus, borrowed (the owner
  // closes it after shutdown()). @exporter may be null (no documents).
  PortalLink(GDBusConnection* guest, HostPortal& host, DocumentExporter* exporter, PortalLinkOptions options);
  ~PortalLink();
  PortalLink(const PortalLink&) = delete;
  PortalLink& operator=(const PortalLink&) = delete;

  // Starts one plugin instance (@extension: a SidebusPortal, reference taken
  // over). A failing start() is logged and the instance dropped.
  void start_portal(GObject* extension, const std::string& name, JsonObject* config);
  // Claims SIDEBUS_PORTAL_BUS_NAME and the names plugins exported under
  // (asynchronous RequestName; never released: see above).
  void claim_names();
  void shutdown();
  // shutdown() for a configuration reload that restarts the portals on a
  // link that stays up: the guest is told first — each pending request
  // gets Response 2, each session Closed — then the host side is closed and
  // the plugins are stopped as in shutdown().
  void shutdown_for_restart();

  // A reload's new broker.* values for new calls: requests and sessions
  // already held stay.
  void set_limits(unsigned max_pending_requests, unsigned max_sessions, std::string dialog_title_prefix);

  // The portals that started on this link and what they serve the guest:
  // each exported interface with its "version" property (0 if it has none).
  struct PortalInfo {
    std::string name;
    std::vector<std::pair<std::string, guint32>> interfaces;
  };
  std::vector<PortalInfo> portals() const;
  const std::vector<std::string>& bus_names() const { return bus_names_; }

  GDBusConnection* guest() const { return guest_; }
  GDBusConnection* host() const;
  HostPortal& host_portal() const { return host_; }
  DocumentExporter* exporter() const { return exporter_; }
  const PortalLinkOptions& options() const { return options_; }
  GuestClients& clients() { return clients_; }
  bool closing() const { return closing_; }
  // False (with a clear error) while the host portal is not running: new
  // requests and forwarded calls are refused then.
  bool require_host_portal(GError** error) const;
  void add_bus_name(const std::string& name);

  // ---- what request.cpp and session.cpp register ----
  size_t pending_requests() const { return requests_.size(); }
  // Guest object paths of the pending requests and the open sessions: what
  // a migration's destination answers for this link (broker/vmstate-service).
  std::vector<std::string> request_paths() const {
    std::vector<std::string> paths;
    for (const auto& entry : requests_) paths.push_back(entry.first);
    return paths;
  }
  std::vector<std::string> session_paths() const {
    std::vector<std::string> paths;
    for (const auto& entry : sessions_) paths.push_back(entry.first);
    return paths;
  }
  bool has_request(const std::string& guest_path) const { return requests_.count(guest_path) != 0; }
  void add_request(SidebusRequest* request);  // adopts the creator's reference
  void remove_request(SidebusRequest* request);  // drops it
  void route_host_request(const std::string& host_path, SidebusRequest* request);  // "" to unroute
  void unroute_host_request(const std::string& host_path);

  size_t active_sessions() const { return sessions_.size(); }
  bool has_session(const std::string& guest_path) const { return sessions_.count(guest_path) != 0; }
  SidebusSession* find_session(const std::string& guest_path) const;
  void add_session(SidebusSession* session);
  void remove_session(SidebusSession* session);
  void route_host_session(const std::string& host_path, SidebusSession* session);
  void unroute_host_session(const std::string& host_path);

 private:
  static void on_host_signal(GDBusConnection*, const char* sender, const char* path, const char* interface_name,
                             const char* signal_name, GVariant* parameters, gpointer self);
  void on_host_portal_gone();

  GDBusConnection* guest_;
  HostPortal& host_;
  DocumentExporter* exporter_;
  PortalLinkOptions options_;
  GuestClients clients_;
  bool closing_ = false;
  std::vector<std::unique_ptr<_SidebusContext>> contexts_;  // in start order
  std::vector<std::string> bus_names_;
  std::map<std::string, SidebusRequest*> requests_;           // guest path → (a reference)
  std::map<std::string, SidebusRequest*> requests_by_host_;   // host path → (borrowed)
  std::map<std::string, SidebusSession*> sessions_;           // guest path → (a reference)
  std::map<std::string, SidebusSession*> sessions_by_host_;   // host path → (borrowed)
  guint response_subscription_ = 0;  // host Request.Response, one for the link
  guint closed_subscription_ = 0;    // host Session.Closed, one for the link
  guint host_listener_ = 0;
};

}  // namespace sidebus
