// SPDX-License-Identifier: LGPL-2.1-or-later
// broker.cpp — wires the broker's pieces together and decides link policy.
//
// Start-up order: the listener's sockets are bound first but not accepted
// on (a bad --listen fails before anything starts), then configuration and
// plugins (fail fast on a bad file, a plugin's schema included), host bus,
// the VM's identity toward the host (host-identity.hpp: the move into its
// app scope), the host portal watch, the private bus with its document
// portal (or the VM manager's bus, --private-bus), org.qemu.VMState1 on it
// (vmstate-service.hpp), the debug-access bus; then the listener accepts.
// A migration's destination (--incoming) stops before the document portal:
// Load puts the migrated document table in place first, then serve() starts
// the rest, so the guest is never served a document database it does not
// know; pending requests and sessions of the source are answered (response
// 2, Closed) on the first link's guest bus.
// A guest link that completes its handshake *replaces* the current one: the
// old link's portals are torn down and its connection closed before the new
// link's plugins start. (A guest agent that reconnects after a crash or a VM
// reboot must never be locked out by a half-dead previous link; two agents in
// one guest are prevented in the guest by the agent's own bus name.) A link's
// plugins start, and the guest sees the portal name, once the host portal's
// interfaces are known.
//
// Stopping (destructor): the link's portals first (their host requests and
// sessions are closed), then the host bus is flushed so those Close calls
// leave, pending persistence barriers of exports are waited for (bounded),
// and only then the private bus and its helpers stop.
//
// Reload (reload()): a new Config is read and checked completely before it
// replaces the old one. Plugin contexts borrow their section of the Config
// they started with, so each link keeps a reference to that Config until
// its portals stop.
#include "broker/broker.hpp"

#include <glib/gstdio.h>
#include <unistd.h>

#include <algorithm>

#include "api/host-portal.hpp"
#include "api/portal-link.hpp"
#include "api/request.hpp"
#include "broker/accepted-link.hpp"
#include "broker/config.hpp"
#include "broker/debug-bus.hpp"
#include "broker/document-resolver.hpp"
#include "broker/host-identity.hpp"
#include "broker/plugin-engine.hpp"
#include "broker/vmstate-service.hpp"
#include "documents/app-id.hpp"
#include "documents/document-export.hpp"
#include "documents/forwarded-documents.hpp"
#include "documents/private-bus.hpp"
#include "documents/virtiofsd.hpp"
#include "link/listener.hpp"
#include "wire/handshake-lines.hpp"
#include "util/service-notify.hpp"
#include "sidebus-config.h"

namespace sidebus {

namespace {

// How long a stopping broker waits for exports to reach the disk.
constexpr gint64 kPersistTimeoutUs = 3 * G_USEC_PER_SEC;
// How long a stopping broker waits for host calls still in flight.
constexpr gint64 kHostAnswerTimeoutUs = 3 * G_USEC_PER_SEC;

// Everything that exists only while one guest link is up, torn down in
// reverse order of construction: the portals, then the link.
struct ActiveLink {
  std::unique_ptr<GuestLink> link;
  // What the link's relay mapped guest documents to (fd forwarding); kept
  // for the portals of a reload.
  std::shared_ptr<ForwardedDocuments> forwarded;
  std::unique_ptr<PortalLink> portals;
  HostPortal* host = nullptr;
  guint host_listener = 0;  // waiting for the host portal before the plugins start
  bool serving = false;     // the plugins started
  gint64 up_since = 0;
  std::shared_ptr<const Config> link_config;    // what the relay's limits came from
  std::shared_ptr<const Config> portal_config;  // what the plugins' sections borrow

  ~ActiveLink() {
    if (host_listener != 0) host->remove_listener(host_listener);
    portals.reset();
    link.reset();
  }
};

class BrokerImpl : public Broker {
 public:
  bool init(const BrokerOptions& options, GError** error);
  ~BrokerImpl() override;
  bool reload(ReloadReport* report, GError** error) override;
  BrokerStatus status() const override;

 private:
  auto link_acceptor();
  void on_link_accepted(UniqueFd fd, bool transport_carries_fds, std::string transport);
  void on_link_established(uint64_t serial, std::unique_ptr<GuestLink> link,
                           std::shared_ptr<ForwardedDocuments> forwarded, std::shared_ptr<const Config> config,
                           GError* error);
  void on_link_closed(uint64_t serial);
  void serve(ActiveLink& active);
  void start_portals(ActiveLink& active);
  void restart_portals(ActiveLink& active);
  PortalLinkOptions portal_options(const LinkPeerInfo& peer, std::shared_ptr<ForwardedDocuments> forwarded) const;
  void announce() const;
  void wait_for_persisted_exports();
  void wait_for_host_answers();
  bool serve(GError** error);
  void on_vmstate_loaded(VmState state, std::function<void(GError*)> serving);
  void add_pending_guest_objects(VmState& state);
  void answer_orphans(ActiveLink& active);

  BrokerOptions options_;
  gint64 started_at_ = g_get_monotonic_time();
  std::shared_ptr<const Config> config_;
  unsigned reloads_ = 0;
  std::string last_reload_error_;
  std::unique_ptr<PluginEngine> plugins_;
  GDBusConnection* host_ = nullptr;
  std::unique_ptr<HostPortal> host_portal_;
  std::unique_ptr<PrivateBus> private_bus_;
  std::unique_ptr<DocumentExporter> exporter_;
  std::shared_ptr<ExporterHandle> exporter_handle_;  // what the links' relay threads resolve documents with
  std::unique_ptr<DocumentShare> document_share_;
  std::unique_ptr<Listener> listener_;
  std::unique_ptr<DebugBus> debug_bus_;
  std::unique_ptr<VmStateService> vmstate_;
  // Requests and sessions the migration's source had pending, answered on
  // the first link (they are gone with the source's broker).
  std::vector<std::string> orphan_requests_, orphan_sessions_;
  guint incoming_timeout_ = 0;
  std::unique_ptr<ActiveLink> active_;
  uint64_t active_serial_ = 0;
  uint64_t next_serial_ = 1;
  mutable std::string last_status_line_;  // the last STATUS= sent
  // Callbacks from links outlive nothing: they check this token.
  std::shared_ptr<BrokerImpl*> alive_ = std::make_shared<BrokerImpl*>(this);
};

// The keys of the "broker" section that hold for new calls at once (the
// PortalLink reads them per call); every other one is the relay's, fixed
// for a link when it comes up.
constexpr const char* kLiveBrokerKeys[] = {"max_pending_requests", "max_sessions", "dialog_title_prefix"};

bool is_live_broker_key(const std::string& key) {
  return std::any_of(std::begin(kLiveBrokerKeys), std::end(kLiveBrokerKeys),
                     [&](const char* live) { return key == live; });
}

// The keys whose value differs between two objects (absent counts as a value).
std::vector<std::string> changed_keys(JsonObject* before, JsonObject* after) {
  std::vector<std::string> keys;
  auto collect = [&](JsonObject* object) {
    g_autoptr(GList) members = json_object_get_members(object);
    for (GList* l = members; l != nullptr; l = l->next) {
      std::string key = static_cast<const char*>(l->data);
      if (std::find(keys.begin(), keys.end(), key) != keys.end()) continue;
      JsonNode* a = json_object_get_member(before, key.c_str());
      JsonNode* b = json_object_get_member(after, key.c_str());
      if (a == nullptr || b == nullptr || !json_node_equal(a, b)) keys.push_back(key);
    }
  };
  collect(before);
  collect(after);
  std::sort(keys.begin(), keys.end());
  return keys;
}

bool same_section(JsonObject* a, JsonObject* b) {
  g_autoptr(JsonNode) node_a = json_node_init_object(json_node_alloc(), a);
  g_autoptr(JsonNode) node_b = json_node_init_object(json_node_alloc(), b);
  return json_node_equal(node_a, node_b);
}

std::string with_vm_name(std::string prefix, const std::string& vm_name) {
  for (size_t at = prefix.find("{vm}"); at != std::string::npos; at = prefix.find("{vm}", at + vm_name.size()))
    prefix.replace(at, 4, vm_name);
  return prefix;
}

// What the listener and the debug bus call with each new link.
auto BrokerImpl::link_acceptor() {
  return [alive = alive_](UniqueFd fd, bool carries_fds, std::string transport) {
    if (*alive) (*alive)->on_link_accepted(std::move(fd), carries_fds, std::move(transport));
  };
}

bool BrokerImpl::init(const BrokerOptions& options, GError** error) {
  options_ = options;
  if (handshake::encode_documents_path(options.guest_documents_path).empty()) {
    g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                "--guest-documents-path %s cannot be announced to the agent: it must be an absolute path of at most %zu "
                "bytes, percent-encoded",
                options.guest_documents_path.c_str(), handshake::kMaxDocsFieldLength);
    return false;
  }
  if (!options.listen.empty()) {
    listener_ = Listener::create(options.listen, link_acceptor(), error, /*paused=*/true);
    if (!listener_) {
      g_prefix_error(error, "--listen: ");
      return false;
    }
  }

  auto config_dirs = options.config_dirs.empty() ? Config::default_dirs() : options.config_dirs;
  config_ = Config::load(config_dirs, options.vm_name, error);
  if (!config_) return false;
  for (const std::string& file : config_->files()) g_debug("read configuration %s", file.c_str());

  auto plugin_dirs = options.plugin_dirs.empty() ? std::vector<std::string>{SIDEBUS_PLUGIN_DIR} : options.plugin_dirs;
  plugins_ = PluginEngine::load(plugin_dirs, *config_, error);
  if (!plugins_) return false;

  if (options.host_bus.empty()) {
    host_ = g_bus_get_sync(G_BUS_TYPE_SESSION, nullptr, error);
  } else {
    host_ = g_dbus_connection_new_for_address_sync(
        options.host_bus.c_str(),
        GDBusConnectionFlags(G_DBUS_CONNECTION_FLAGS_AUTHENTICATION_CLIENT |
                             G_DBUS_CONNECTION_FLAGS_MESSAGE_BUS_CONNECTION),
        nullptr, nullptr, error);
  }
  if (host_ == nullptr) {
    g_prefix_error(error, "cannot connect to the host bus %s (--host-bus): ",
                   options.host_bus.empty() ? "(session bus)" : options.host_bus.c_str());
    return false;
  }
  g_dbus_connection_set_exit_on_close(host_, FALSE);
  // Before the first word to the host portal, which caches our app id, and
  // before the private bus, whose helpers then share the scope.
  HostIdentityOptions identity{.mode = config_->host_identity(),
                               .app_id = config_->host_app_id().empty() ? app_id_for_vm(options.vm_name)
                                                                        : config_->host_app_id(),
                               .vm_name = options.vm_name};
  if (!establish_host_identity(host_, identity, error)) return false;
  host_portal_ = std::make_unique<HostPortal>(host_);

  private_bus_ = PrivateBus::start({.runtime_dir = options.runtime_dir,
                                    .state_dir = options.state_dir,
                                    .vm_name = options.vm_name,
                                    .join_address = options.private_bus,
                                    .defer_document_portal = options.incoming},
                                   error);
  if (!private_bus_) return false;
  private_bus_->set_on_restarted([this] {
    if (exporter_) exporter_->reload_index();
    if (vmstate_) vmstate_->on_private_bus_restarted();
  });
  auto alive = alive_;
  vmstate_ = std::make_unique<VmStateService>(
      *private_bus_,
      VmStateService::Options{.id = options.vmstate_id,
                              .key = options.vmstate_key,
                              .app_id = app_id_for_vm(options.vm_name),
                              .incoming = options.incoming},
      [alive](VmState& state) {
        if (*alive) (*alive)->add_pending_guest_objects(state);
      },
      [alive](VmState state, std::function<void(GError*)> serving) {
        if (*alive) (*alive)->on_vmstate_loaded(std::move(state), std::move(serving));
      });
  if (!options.incoming) return serve(error);
  if (options.incoming_timeout_s != 0) {
    incoming_timeout_ = g_timeout_add_seconds(options.incoming_timeout_s, [](gpointer data) -> gboolean {
      auto* self = static_cast<BrokerImpl*>(data);
      self->incoming_timeout_ = 0;
      if (!self->vmstate_->waiting_for_load()) return G_SOURCE_REMOVE;
      g_critical("no migrated state arrived (org.qemu.VMState1.Load) within %u s (--incoming-timeout); stopping",
                 self->options_.incoming_timeout_s);
      if (self->options_.stop) self->options_.stop(3);
      return G_SOURCE_REMOVE;
    }, this);
  }
  g_message("waiting for a migration: the guest is served once QEMU's dbus-vmstate has called "
            "org.qemu.VMState1.Load (Id “%s”) on the private bus %s",
            options.vmstate_id.c_str(), private_bus_->address().c_str());
  return true;
}

// Everything from the document index on: at start-up, or for a migration's
// destination once its state is loaded.
bool BrokerImpl::serve(GError** error) {
  const BrokerOptions& options = options_;
  exporter_ = std::make_unique<DocumentExporter>(*private_bus_, options.vm_name, options.guest_documents_path,
                                                 options.state_dir + "/document-usage");
  exporter_->set_retention(config_->retention());
  exporter_handle_ = std::make_shared<ExporterHandle>(exporter_.get());
  std::string share_hint = "share " + exporter_->guest_view_path();
  if (!options.virtiofsd.empty()) {
    std::string socket = options.runtime_dir + "/virtiofsd.sock";
    document_share_ = DocumentShare::start(options.virtiofsd, exporter_->guest_view_path(), socket, error);
    if (!document_share_) return false;
    share_hint = "point the VMM's vhost-user-fs device at " + socket + ", mount it";
  }

  if (!options.debug_access_dir.empty()) {
    debug_bus_ = DebugBus::start(options.debug_access_dir, options.runtime_dir, link_acceptor(), error);
    if (!debug_bus_) return false;
  }
  if (listener_) listener_->start_accepting();
  g_message("ready: VM %s, portals [%s]; %s into the guest at %s", options.vm_name.c_str(),
            [&] {
              std::string names;
              for (const std::string& name : plugins_->loaded()) names += (names.empty() ? "" : ", ") + name;
              return names;
            }().c_str(),
            share_hint.c_str(), options.guest_documents_path.c_str());
  return true;
}

BrokerImpl::~BrokerImpl() {
  *alive_ = nullptr;
  if (incoming_timeout_ != 0) g_source_remove(incoming_timeout_);
  active_.reset();
  debug_bus_.reset();
  listener_.reset();
  wait_for_host_answers();
  // The host requests and sessions the link closed must leave before we do.
  if (host_ != nullptr) g_dbus_connection_flush_sync(host_, nullptr, nullptr);
  wait_for_persisted_exports();
  document_share_.reset();
  if (exporter_handle_) exporter_handle_->detach();
  exporter_.reset();
  vmstate_.reset();
  private_bus_.reset();
  host_portal_.reset();
  g_clear_object(&host_);
}

// Iterates the main context until @done or @timeout_us; false on timeout.
// Only for the broker's own exit: nothing else is served by then.
bool wait_while_stopping(const std::function<bool()>& done, gint64 timeout_us) {
  gint64 deadline = g_get_monotonic_time() + timeout_us;
  while (!done() && g_get_monotonic_time() < deadline)
    if (!g_main_context_iteration(nullptr, FALSE)) g_usleep(1000);
  return done();
}

void BrokerImpl::wait_for_persisted_exports() {
  if (!exporter_) return;
  if (!wait_while_stopping([this] { return exporter_->unpersisted() == 0; }, kPersistTimeoutUs))
    g_warning("stopping with %zu export(s) the permission store has not confirmed on disk", exporter_->unpersisted());
}

// A host call still in flight may create a host dialog after the link is
// gone; its answer names it, and the retired request closes it then.
void BrokerImpl::wait_for_host_answers() {
  if (!wait_while_stopping([] { return request::host_calls_in_flight() == 0; }, kHostAnswerTimeoutUs))
    g_warning("stopping with %d host portal call(s) unanswered; their dialogs may stay open on the host",
              request::host_calls_in_flight());
}

void BrokerImpl::on_link_accepted(UniqueFd fd, bool transport_carries_fds, std::string transport) {
  uint64_t serial = next_serial_++;
  g_message("guest link %" G_GUINT64_FORMAT " arrived on %s", serial, transport.c_str());
  auto alive = alive_;
  // Byte-only links of protocol 2 forward fds: the agent learns where the
  // documents are, and the relay maps the guest's documents to host files.
  auto forwarded = std::make_shared<ForwardedDocuments>();
  GuestLinkForwarding forwarding;
  forwarding.documents_path = options_.guest_documents_path;
  forwarding.resolver = make_document_resolver(exporter_handle_, forwarded);
  std::shared_ptr<const Config> link_config = config_;
  establish_guest_link(
      std::move(fd), transport_carries_fds, transport,
      [alive, serial, forwarded, link_config](std::unique_ptr<GuestLink> link, GError* error) {
        if (*alive) (*alive)->on_link_established(serial, std::move(link), forwarded, link_config, error);
      },
      [alive, serial]() {
        if (*alive) (*alive)->on_link_closed(serial);
      },
      config_->limits().link, std::move(forwarding));
}

PortalLinkOptions BrokerImpl::portal_options(const LinkPeerInfo& peer,
                                             std::shared_ptr<ForwardedDocuments> forwarded) const {
  PortalLinkOptions options;
  options.vm_name = options_.vm_name;
  options.transport = peer.transport;
  options.fd_transport = !peer.carries_fds ? SIDEBUS_FD_TRANSPORT_NONE
                         : peer.framed    ? SIDEBUS_FD_TRANSPORT_FORWARDED
                                          : SIDEBUS_FD_TRANSPORT_NATIVE;
  options.forwarded_documents = std::move(forwarded);
  options.max_pending_requests = config_->limits().max_pending_requests;
  options.max_sessions = config_->limits().max_sessions;
  options.dialog_title_prefix = with_vm_name(config_->dialog_title_prefix(), options_.vm_name);
  return options;
}

void BrokerImpl::on_link_established(uint64_t serial, std::unique_ptr<GuestLink> link,
                                     std::shared_ptr<ForwardedDocuments> forwarded,
                                     std::shared_ptr<const Config> link_config, GError* error) {
  if (!link) {
    g_warning("guest link %" G_GUINT64_FORMAT " failed: %s", serial, error != nullptr ? error->message : "unknown");
    return;
  }
  const LinkPeerInfo& peer = link->peer();
  if (active_) g_message("guest link %" G_GUINT64_FORMAT " replaces link %" G_GUINT64_FORMAT, serial, active_serial_);
  active_.reset();

  auto active = std::make_unique<ActiveLink>();
  active->link = std::move(link);
  active->host = host_portal_.get();
  active->forwarded = forwarded;
  active->up_since = g_get_monotonic_time();
  active->link_config = std::move(link_config);
  active->portal_config = config_;
  active->portals = std::make_unique<PortalLink>(active->link->connection(), *host_portal_, exporter_.get(),
                                                 portal_options(peer, std::move(forwarded)));
  g_message("guest link %" G_GUINT64_FORMAT " up on %s: protocol %u, agent %s, guest uid %u, fds %s, guest name %s",
            serial, peer.transport.c_str(), peer.protocol_version, peer.agent_version.c_str(), peer.guest_uid,
            !peer.carries_fds ? "not carried" : peer.framed ? "forwarded" : "passed natively",
            g_dbus_connection_get_unique_name(active->link->connection()));
  active_ = std::move(active);
  active_serial_ = serial;
  serve(*active_);
}

// The plugins start, and the guest sees the portal name, once the host
// portal's interfaces and versions are known.
void BrokerImpl::serve(ActiveLink& active) {
  if (host_portal_->ready()) {
    start_portals(active);
    return;
  }
  active.serving = false;
  announce();
  g_message("guest link %" G_GUINT64_FORMAT ": waiting for the host's xdg-desktop-portal before serving the guest",
            active_serial_);
  ActiveLink* waiting = &active;
  waiting->host_listener = host_portal_->add_listener({.on_ready =
                                                           [this, waiting] {
                                                             host_portal_->remove_listener(waiting->host_listener);
                                                             waiting->host_listener = 0;
                                                             start_portals(*waiting);
                                                           },
                                                       .on_gone = nullptr});
}

void BrokerImpl::start_portals(ActiveLink& active) {
  active.portal_config = config_;
  plugins_->start_all(*active.portals, *active.portal_config);
  active.portals->claim_names();
  active.serving = true;
  announce();
  answer_orphans(active);
}

void BrokerImpl::add_pending_guest_objects(VmState& state) {
  if (!active_ || !active_->portals) return;
  state.pending_requests = active_->portals->request_paths();
  state.sessions = active_->portals->session_paths();
}

void BrokerImpl::on_vmstate_loaded(VmState state, std::function<void(GError*)> serving) {
  orphan_requests_ = std::move(state.pending_requests);
  orphan_sessions_ = std::move(state.sessions);
  auto alive = alive_;
  private_bus_->start_document_portal([alive, serving = std::move(serving)](GError* error) {
    BrokerImpl* self = *alive;
    if (self == nullptr) return;
    g_autoptr(GError) serve_error = nullptr;
    if (error == nullptr && !self->serve(&serve_error)) error = serve_error;
    if (error != nullptr) g_warning("cannot serve the migrated VM: %s", error->message);
    serving(error);
  });
}

// The guest's applications still wait for the Response of requests (and
// for the end of sessions) that the source's broker had: they are gone
// with it. Sent right after RequestName on the same connection, so the bus
// delivers them from the new owner of the portal's name.
void BrokerImpl::answer_orphans(ActiveLink& active) {
  if (orphan_requests_.empty() && orphan_sessions_.empty()) return;
  GDBusConnection* guest = active.link->connection();
  // /org/freedesktop/portal/desktop/request/1_42/token → ":1.42", the caller
  // (xdg-desktop-portal's escaping of the sender: no ":", "." as "_").
  auto caller_of = [](const std::string& path) -> std::string {
    g_auto(GStrv) parts = g_strsplit(path.c_str(), "/", -1);
    if (g_strv_length(parts) < 8) return "";
    std::string sender = std::string(":") + parts[6];
    for (char& c : sender)
      if (c == '_') c = '.';
    return g_dbus_is_unique_name(sender.c_str()) ? sender : "";
  };
  for (const std::string& path : orphan_requests_) {
    std::string caller = caller_of(path);
    g_dbus_connection_emit_signal(guest, caller.empty() ? nullptr : caller.c_str(), path.c_str(),
                                  "org.freedesktop.portal.Request", "Response",
                                  g_variant_new("(u@a{sv})", guint32(SIDEBUS_RESPONSE_OTHER),
                                                g_variant_new_array(G_VARIANT_TYPE("{sv}"), nullptr, 0)),
                                  nullptr);
  }
  for (const std::string& path : orphan_sessions_) {
    std::string caller = caller_of(path);
    g_dbus_connection_emit_signal(guest, caller.empty() ? nullptr : caller.c_str(), path.c_str(),
                                  "org.freedesktop.portal.Session", "Closed",
                                  g_variant_new("(@a{sv})", g_variant_new_array(G_VARIANT_TYPE("{sv}"), nullptr, 0)),
                                  nullptr);
  }
  g_message("answered %zu request(s) and closed %zu session(s) the migration's source had pending",
            orphan_requests_.size(), orphan_sessions_.size());
  orphan_requests_.clear();
  orphan_sessions_.clear();
}

// A reload changed portals.*: the link stays, its portals start again.
void BrokerImpl::restart_portals(ActiveLink& active) {
  std::vector<std::string> names_before = active.portals->bus_names();
  active.portals->shutdown_for_restart();
  active.portals.reset();  // before the Config its plugins borrowed from
  active.portals = std::make_unique<PortalLink>(active.link->connection(), *host_portal_, exporter_.get(),
                                                portal_options(active.link->peer(), active.forwarded));
  serve(active);
  // Names only the old portals served (another plugin's interface under its
  // own name) go; the new ones were claimed above.
  const std::vector<std::string>& names_now = active.portals->bus_names();
  for (const std::string& name : names_before)
    if (std::find(names_now.begin(), names_now.end(), name) == names_now.end())
      g_dbus_connection_call(active.link->connection(), "org.freedesktop.DBus", "/org/freedesktop/DBus",
                             "org.freedesktop.DBus", "ReleaseName", g_variant_new("(s)", name.c_str()), nullptr,
                             G_DBUS_CALL_FLAGS_NONE, -1, nullptr, nullptr, nullptr);
}

void BrokerImpl::on_link_closed(uint64_t serial) {
  if (!active_ || serial != active_serial_) return;
  g_message("guest link %" G_GUINT64_FORMAT " closed; waiting for the agent to reconnect", serial);
  active_.reset();
  announce();
}

// The service manager's STATUS= line follows the link.
void BrokerImpl::announce() const {
  std::string line = summary_line(status());
  if (line == last_status_line_) return;
  last_status_line_ = line;
  service_notify::status(line);
}

bool BrokerImpl::reload(ReloadReport* report, GError** error) {
  auto config_dirs = options_.config_dirs.empty() ? Config::default_dirs() : options_.config_dirs;
  g_autoptr(GError) failure = nullptr;
  std::shared_ptr<const Config> fresh = Config::load(config_dirs, options_.vm_name, &failure);
  std::vector<std::string> enabled_before = plugins_->loaded();
  if (!fresh || !plugins_->reload(*fresh, &failure)) {
    g_prefix_error(&failure, "configuration not reloaded, the one in effect stays: ");
    last_reload_error_ = failure->message;
    g_propagate_error(error, g_steal_pointer(&failure));
    return false;
  }
  ReloadReport done;
  done.files = fresh->files();
  done.enabled_portals = plugins_->loaded();
  for (const std::string& key : changed_keys(config_->broker_section(), fresh->broker_section()))
    // Without a link, the next link is the first to see any of them.
    (is_live_broker_key(key) || !active_ ? done.applied : done.next_link).push_back("broker." + key);
  for (const std::string& key : changed_keys(config_->documents_section(), fresh->documents_section()))
    done.applied.push_back("documents." + key);  // the retention policy: set below
  bool portals_changed = done.enabled_portals != enabled_before;
  for (const std::string& name : done.enabled_portals)
    portals_changed = portals_changed || !same_section(config_->portal_section(name), fresh->portal_section(name));

  config_ = std::move(fresh);
  if (exporter_) exporter_->set_retention(config_->retention());
  reloads_++;
  last_reload_error_.clear();
  if (active_) {
    active_->portals->set_limits(config_->limits().max_pending_requests, config_->limits().max_sessions,
                                 with_vm_name(config_->dialog_title_prefix(), options_.vm_name));
    if (portals_changed && active_->serving) {
      g_message("the portals configuration changed: restarting the portals of guest link %" G_GUINT64_FORMAT,
                active_serial_);
      restart_portals(*active_);
      done.portals_restarted = true;
    }
  }
  std::string applied, next_link;
  for (const std::string& key : done.applied) applied += (applied.empty() ? "" : ", ") + key;
  for (const std::string& key : done.next_link) next_link += (next_link.empty() ? "" : ", ") + key;
  g_message("configuration reloaded from %zu file(s)%s%s%s%s%s", done.files.size(),
            applied.empty() ? "" : "; in effect now: ", applied.c_str(),
            next_link.empty() ? "" : "; from the next guest link on: ", next_link.c_str(),
            done.portals_restarted ? "; portals restarted" : "");
  announce();
  if (report != nullptr) *report = std::move(done);
  return true;
}

BrokerStatus BrokerImpl::status() const {
  gint64 now = g_get_monotonic_time();
  BrokerStatus status;
  status.vm_name = options_.vm_name;
  status.version = SIDEBUS_VERSION;
  status.pid = int(getpid());
  status.uptime_seconds = double(now - started_at_) / G_USEC_PER_SEC;
  if (active_) {
    const LinkPeerInfo& peer = active_->link->peer();
    LinkStatus link;
    link.serial = active_serial_;
    link.state = active_->serving ? "serving" : "waiting-for-host-portal";
    link.up_seconds = double(now - active_->up_since) / G_USEC_PER_SEC;
    link.transport = peer.transport;
    link.fd_mode = !peer.carries_fds ? "none" : peer.framed ? "forwarded" : "native";
    link.protocol = peer.protocol_version;
    link.agent_version = peer.agent_version;
    link.guest_uid = peer.guest_uid;
    const char* name = g_dbus_connection_get_unique_name(active_->link->connection());
    link.guest_name = name != nullptr ? name : "";
    status.link = std::move(link);
    for (const PortalLink::PortalInfo& info : active_->portals->portals())
      status.serving.push_back(PortalStatus{info.name, {info.interfaces.begin(), info.interfaces.end()}});
    status.pending_requests = active_->portals->pending_requests();
    status.sessions = active_->portals->active_sessions();
    for (const std::string& key : changed_keys(active_->link_config->broker_section(), config_->broker_section()))
      if (!is_live_broker_key(key)) status.pending_next_link.push_back("broker." + key);
  }
  status.links_accepted = next_serial_ - 1;
  status.host_portal_ready = host_portal_ && host_portal_->ready();
  status.enabled_portals = plugins_ ? plugins_->loaded() : std::vector<std::string>{};
  status.exported_documents = exporter_ ? exporter_->documents() : 0;
  if (private_bus_) {
    PrivateBus::Health health = private_bus_->health();
    status.helper_exits = health.exits;
    status.helper_restarts = health.restarts;
    status.helpers_given_up = health.given_up;
  }
  status.runtime_dir = options_.runtime_dir;
  status.state_dir = options_.state_dir;
  status.config_files = config_->files();
  status.reloads = reloads_;
  status.last_reload_error = last_reload_error_;
  JsonObject* broker = config_->broker_section();
  g_autoptr(GList) members = json_object_get_members(broker);
  for (GList* l = members; l != nullptr; l = l->next) {
    const char* key = static_cast<const char*>(l->data);
    status.broker_settings.emplace_back(key, json_node_copy(json_object_get_member(broker, key)));
  }
  return status;
}

}  // namespace

std::unique_ptr<Broker> Broker::start(const BrokerOptions& options, GError** error) {
  auto broker = std::make_unique<BrokerImpl>();
  if (!broker->init(options, error)) return nullptr;
  return broker;
}

}  // namespace sidebus
