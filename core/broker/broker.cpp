// broker.cpp — wires the broker's pieces together and decides link policy.
//
// Start-up order: configuration and plugins (fail fast on a bad file, a
// plugin's schema included), host bus, the host portal watch, the private
// bus with its document portal (or the VM manager's bus, --private-bus),
// org.qemu.VMState1 on it (vmstate-service.hpp), then the listener (or the
// debug-access bus). A migration's destination (--incoming) stops before the
// document portal: Load puts the migrated document table in place first,
// then serve() starts the rest, so the guest is never served a document
// database it does not know; pending requests and sessions of the source are
// answered (response 2, Closed) on the first link's guest bus.
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
#include "broker/broker.hpp"

#include <glib/gstdio.h>

#include "api/host-portal.hpp"
#include "api/portal-link.hpp"
#include "api/request.hpp"
#include "broker/accepted-link.hpp"
#include "broker/config.hpp"
#include "broker/debug-bus.hpp"
#include "broker/plugin-engine.hpp"
#include "broker/vmstate-service.hpp"
#include "documents/app-id.hpp"
#include "documents/document-export.hpp"
#include "documents/private-bus.hpp"
#include "documents/virtiofsd.hpp"
#include "link/listener.hpp"
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
  std::unique_ptr<PortalLink> portals;
  HostPortal* host = nullptr;
  guint host_listener = 0;  // waiting for the host portal before the plugins start

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

 private:
  void on_link_accepted(UniqueFd fd, bool transport_carries_fds, std::string transport);
  void on_link_established(uint64_t serial, std::unique_ptr<GuestLink> link, GError* error);
  void on_link_closed(uint64_t serial);
  void start_portals(ActiveLink& active);
  void wait_for_persisted_exports();
  void wait_for_host_answers();
  bool serve(GError** error);
  void on_vmstate_loaded(VmState state, std::function<void(GError*)> serving);
  void add_pending_guest_objects(VmState& state);
  void answer_orphans(ActiveLink& active);

  BrokerOptions options_;
  std::unique_ptr<Config> config_;
  std::unique_ptr<PluginEngine> plugins_;
  GDBusConnection* host_ = nullptr;
  std::unique_ptr<HostPortal> host_portal_;
  std::unique_ptr<PrivateBus> private_bus_;
  std::unique_ptr<DocumentExporter> exporter_;
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
  // Callbacks from links outlive nothing: they check this token.
  std::shared_ptr<BrokerImpl*> alive_ = std::make_shared<BrokerImpl*>(this);
};

bool BrokerImpl::init(const BrokerOptions& options, GError** error) {
  options_ = options;
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
  exporter_ = std::make_unique<DocumentExporter>(*private_bus_, options.vm_name, options.guest_documents_path);
  std::string share_hint = "share " + exporter_->guest_view_path();
  if (!options.virtiofsd.empty()) {
    std::string socket = options.runtime_dir + "/virtiofsd.sock";
    document_share_ = DocumentShare::start(options.virtiofsd, exporter_->guest_view_path(), socket, error);
    if (!document_share_) return false;
    share_hint = "point the VMM's vhost-user-fs device at " + socket + ", mount it";
  }

  auto alive = alive_;
  auto accept = [alive](UniqueFd fd, bool carries_fds, std::string transport) {
    if (*alive) (*alive)->on_link_accepted(std::move(fd), carries_fds, std::move(transport));
  };
  if (!options.debug_access_dir.empty()) {
    debug_bus_ = DebugBus::start(options.debug_access_dir, options.runtime_dir, accept, error);
    if (!debug_bus_) return false;
  }
  if (!options.listen.empty()) {
    listener_ = Listener::create(options.listen, accept, error);
    if (!listener_) return false;
  }
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
  establish_guest_link(
      std::move(fd), transport_carries_fds, transport,
      [alive, serial](std::unique_ptr<GuestLink> link, GError* error) {
        if (*alive) (*alive)->on_link_established(serial, std::move(link), error);
      },
      [alive, serial]() {
        if (*alive) (*alive)->on_link_closed(serial);
      },
      config_->limits().link);
}

void BrokerImpl::on_link_established(uint64_t serial, std::unique_ptr<GuestLink> link, GError* error) {
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
  PortalLinkOptions options;
  options.vm_name = options_.vm_name;
  options.transport = peer.transport;
  options.fd_transport = peer.carries_fds ? SIDEBUS_FD_TRANSPORT_NATIVE : SIDEBUS_FD_TRANSPORT_NONE;
  options.max_pending_requests = config_->limits().max_pending_requests;
  options.max_sessions = config_->limits().max_sessions;
  options.dialog_title_prefix = config_->dialog_title_prefix();
  for (size_t at = options.dialog_title_prefix.find("{vm}"); at != std::string::npos;
       at = options.dialog_title_prefix.find("{vm}", at + options_.vm_name.size()))
    options.dialog_title_prefix.replace(at, 4, options_.vm_name);
  active->portals =
      std::make_unique<PortalLink>(active->link->connection(), *host_portal_, exporter_.get(), std::move(options));
  g_message("guest link %" G_GUINT64_FORMAT " up on %s: agent %s, guest uid %u, fds %s, guest name %s", serial,
            peer.transport.c_str(), peer.agent_version.c_str(), peer.guest_uid,
            peer.carries_fds ? "passed natively" : "not carried",
            g_dbus_connection_get_unique_name(active->link->connection()));
  active_ = std::move(active);
  active_serial_ = serial;
  if (host_portal_->ready()) {
    start_portals(*active_);
    return;
  }
  g_message("guest link %" G_GUINT64_FORMAT ": waiting for the host's xdg-desktop-portal before serving the guest",
            serial);
  ActiveLink* waiting = active_.get();
  waiting->host_listener = host_portal_->add_listener({.on_ready =
                                                           [this, waiting] {
                                                             host_portal_->remove_listener(waiting->host_listener);
                                                             waiting->host_listener = 0;
                                                             start_portals(*waiting);
                                                           },
                                                       .on_gone = nullptr});
}

void BrokerImpl::start_portals(ActiveLink& active) {
  plugins_->start_all(*active.portals, *config_);
  active.portals->claim_names();
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

void BrokerImpl::on_link_closed(uint64_t serial) {
  if (!active_ || serial != active_serial_) return;
  g_message("guest link %" G_GUINT64_FORMAT " closed; waiting for the agent to reconnect", serial);
  active_.reset();
}

}  // namespace

std::unique_ptr<Broker> Broker::start(const BrokerOptions& options, GError** error) {
  auto broker = std::make_unique<BrokerImpl>();
  if (!broker->init(options, error)) return nullptr;
  return broker;
}

}  // namespace sidebus
