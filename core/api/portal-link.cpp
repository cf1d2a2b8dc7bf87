// portal-link.cpp — see portal-link.hpp for the order of things.
#include "api/portal-link.hpp"

#include <algorithm>

#include "api/context.hpp"
#include "api/host-portal.hpp"
#include "api/request.hpp"
#include "api/session.hpp"

namespace sidebus {

namespace {

// A copy of the values of @map, each with a reference, so that what is
// called on them may remove them from @map.
template <typename Object, Object* (*Ref)(Object*)>
std::vector<Object*> referenced_values(const std::map<std::string, Object*>& map) {
  std::vector<Object*> values;
  for (const auto& [key, value] : map) values.push_back(Ref(value));
  return values;
}

}  // namespace

PortalLink::PortalLink(GDBusConnection* guest, HostPortal& host, DocumentExporter* exporter, PortalLinkOptions options)
    : guest_(guest), host_(host), exporter_(exporter), options_(std::move(options)), clients_(guest) {
  // One route each for every request's Response and every session's Closed,
  // dispatched by path. Response is unicast to us (no match rule needed);
  // xdg-desktop-portal broadcasts Session.Closed (its skeleton's signal).
  response_subscription_ = g_dbus_connection_signal_subscribe(
      host.connection(), SIDEBUS_PORTAL_BUS_NAME, "org.freedesktop.portal.Request", "Response", nullptr, nullptr,
      G_DBUS_SIGNAL_FLAGS_NO_MATCH_RULE, on_host_signal, this, nullptr);
  closed_subscription_ = g_dbus_connection_signal_subscribe(
      host.connection(), SIDEBUS_PORTAL_BUS_NAME, "org.freedesktop.portal.Session", "Closed", nullptr, nullptr,
      G_DBUS_SIGNAL_FLAGS_NONE, on_host_signal, this, nullptr);
  host_listener_ = host.add_listener({.on_ready = nullptr, .on_gone = [this] { on_host_portal_gone(); }});
  bus_names_.push_back(SIDEBUS_PORTAL_BUS_NAME);
}

PortalLink::~PortalLink() { shutdown(); }

GDBusConnection* PortalLink::host() const { return host_.connection(); }

bool PortalLink::require_host_portal(GError** error) const {
  if (host_.ready()) return true;
  g_set_error(error, SIDEBUS_ERROR, SIDEBUS_ERROR_FAILED,
              "the host's xdg-desktop-portal is not running (it is being restarted); try again shortly");
  return false;
}

void PortalLink::start_portal(GObject* extension, const std::string& name, JsonObject* config) {
  auto context = std::make_unique<_SidebusContext>();
  context->link = this;
  context->portal_name = name;
  context->config = config;
  context->extension = adopt(extension);
  context->lifetime = adopt(g_cancellable_new());
  g_autoptr(GError) error = nullptr;
  SidebusPortalInterface* iface = SIDEBUS_PORTAL_GET_IFACE(extension);
  if (iface->start == nullptr || !iface->start(SIDEBUS_PORTAL(extension), context.get(), &error)) {
    g_warning("plugin %s failed to start on this link: %s", name.c_str(),
              error != nullptr ? error->message : "no start() implementation");
    context->release();  // unexports what it may have exported
    return;
  }
  context->started = true;
  g_debug("plugin %s started", name.c_str());
  contexts_.push_back(std::move(context));
}

void PortalLink::add_bus_name(const std::string& name) {
  if (std::find(bus_names_.begin(), bus_names_.end(), name) == bus_names_.end()) bus_names_.push_back(name);
}

void PortalLink::claim_names() {
  for (const std::string& name : bus_names_) {
    // DO_NOT_QUEUE is not used: a competing owner in the guest (say, a
    // guest's own xdg-desktop-portal) is waited for in the queue.
    g_dbus_connection_call(
        guest_, "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus", "RequestName",
        g_variant_new("(su)", name.c_str(), 0u), G_VARIANT_TYPE("(u)"), G_DBUS_CALL_FLAGS_NONE, -1, nullptr,
        [](GObject* source, GAsyncResult* result, gpointer data) {
          g_autofree char* name = static_cast<char*>(data);
          g_autoptr(GError) error = nullptr;
          g_autoptr(GVariant) reply = g_dbus_connection_call_finish(G_DBUS_CONNECTION(source), result, &error);
          if (reply == nullptr) {
            if (!g_dbus_connection_is_closed(G_DBUS_CONNECTION(source)))
              g_warning("cannot own %s on the guest bus: %s", name, error->message);
            return;
          }
          guint32 answer;
          g_variant_get(reply, "(u)", &answer);
          if (answer == 1 /* PRIMARY_OWNER */ || answer == 4 /* ALREADY_OWNER */)
            g_message("owns %s on the guest bus", name);
          else
            g_warning("%s is owned by another process in the guest (is xdg-desktop-portal running in the VM?); "
                      "waiting for it to go away",
                      name);
        },
        g_strdup(name.c_str()));
  }
}

void PortalLink::shutdown() {
  if (closing_) return;
  closing_ = true;
  host_.remove_listener(host_listener_);
  // 1 and 2: requests and sessions, guest objects first, then the host side.
  for (SidebusRequest* request : referenced_values<SidebusRequest, sidebus_request_ref>(requests_)) {
    request::on_link_gone(request);
    sidebus_request_unref(request);
  }
  for (SidebusSession* session : referenced_values<SidebusSession, sidebus_session_ref>(sessions_)) {
    session::on_link_gone(session);
    sidebus_session_unref(session);
  }
  // 3: the plugins, last started first.
  while (!contexts_.empty()) {
    contexts_.back()->release();
    contexts_.pop_back();
  }
  clients_.clear();
  if (response_subscription_ != 0) g_dbus_connection_signal_unsubscribe(host(), response_subscription_);
  if (closed_subscription_ != 0) g_dbus_connection_signal_unsubscribe(host(), closed_subscription_);
  response_subscription_ = closed_subscription_ = 0;
}

void PortalLink::on_host_portal_gone() {
  for (SidebusRequest* request : referenced_values<SidebusRequest, sidebus_request_ref>(requests_)) {
    request::on_host_gone(request);
    sidebus_request_unref(request);
  }
  for (SidebusSession* session : referenced_values<SidebusSession, sidebus_session_ref>(sessions_)) {
    session::on_host_gone(session);
    sidebus_session_unref(session);
  }
}

void PortalLink::on_host_signal(GDBusConnection*, const char*, const char* path, const char* interface_name,
                                const char*, GVariant* parameters, gpointer data) {
  auto* self = static_cast<PortalLink*>(data);
  if (g_str_equal(interface_name, "org.freedesktop.portal.Request")) {
    auto found = self->requests_by_host_.find(path);
    if (found == self->requests_by_host_.end()) return;
    SidebusRequest* request = sidebus_request_ref(found->second);
    request::on_host_response(request, parameters);
    sidebus_request_unref(request);
  } else {
    auto found = self->sessions_by_host_.find(path);
    if (found == self->sessions_by_host_.end()) return;
    SidebusSession* session = sidebus_session_ref(found->second);
    session::on_host_closed(session, parameters);
    sidebus_session_unref(session);
  }
}

void PortalLink::add_request(SidebusRequest* request) {
  requests_.emplace(sidebus_request_get_guest_path(request), request);  // the creator's reference
}

void PortalLink::remove_request(SidebusRequest* request) {
  auto found = requests_.find(sidebus_request_get_guest_path(request));
  if (found == requests_.end() || found->second != request) return;
  requests_.erase(found);
  sidebus_request_unref(request);
}

void PortalLink::route_host_request(const std::string& host_path, SidebusRequest* request) {
  requests_by_host_[host_path] = request;
}

void PortalLink::unroute_host_request(const std::string& host_path) { requests_by_host_.erase(host_path); }

SidebusSession* PortalLink::find_session(const std::string& guest_path) const {
  auto found = sessions_.find(guest_path);
  return found != sessions_.end() ? found->second : nullptr;
}

void PortalLink::add_session(SidebusSession* session) {
  sessions_.emplace(sidebus_session_get_guest_path(session), session);  // the creator's reference
}

void PortalLink::remove_session(SidebusSession* session) {
  auto found = sessions_.find(sidebus_session_get_guest_path(session));
  if (found == sessions_.end() || found->second != session) return;
  sessions_.erase(found);
  sidebus_session_unref(session);
}

void PortalLink::route_host_session(const std::string& host_path, SidebusSession* session) {
  sessions_by_host_[host_path] = session;
}

void PortalLink::unroute_host_session(const std::string& host_path) { sessions_by_host_.erase(host_path); }

}  // namespace sidebus
