// SPDX-License-Identifier: LGPL-2.1-or-later
// request.cpp — the portal Request pattern across the VM boundary.
//
// A guest call returns a request object path at once and later gets a
// Response signal there. We mirror that onto the host portal: the guest's
// request object is exported before the guest call returns; the host call is
// made with our own handle_token, and its Response (host bus, routed here by
// the link's one subscription) becomes the guest's Response (guest bus,
// unicast to the caller). Close travels guest → host.
//
// A request has one owner, its PortalLink, which holds a reference from
// sidebus_request_new() until the request is retired. It is retired exactly
// once, by whichever comes first: the Response delivered, the guest's Close,
// its caller leaving the guest bus, the host call failing, the host portal
// leaving, the link going away. retire() undoes everything the request set
// up (guest object, signal handler, client watch, host route), so no
// callback of this file ever sees a freed request or context; anything still
// in flight (the host call) holds its own reference and finds the request
// retired.
#include "api/request.hpp"

#include <atomic>
#include <cstring>
#include <vector>

#include "api/context.hpp"
#include "api/object-path.hpp"
#include "api/portal-link.hpp"
#include "api/session.hpp"
#include "util/gobject-ptr.hpp"
#include "portal-request.h"

namespace {

constexpr const char* kRequestInterface = "org.freedesktop.portal.Request";

std::atomic<guint64> next_host_token{1};
// Host calls made and not answered yet, across all links (see
// sidebus::request::host_calls_in_flight).
int host_calls_in_flight = 0;

std::string new_host_token() { return "sidebus" + std::to_string(next_host_token.fetch_add(1)); }

// @parameters (a tuple whose last member is a{sv}) with the core's tokens
// in that dictionary instead of the guest's.
GVariant* with_tokens(GVariant* parameters, const std::string& handle_token, const char* session_token) {
  gsize n = g_variant_n_children(parameters);
  std::vector<GVariant*> children(n);
  for (gsize i = 0; i < n; i++) children[i] = g_variant_get_child_value(parameters, i);

  g_auto(GVariantBuilder) options = G_VARIANT_BUILDER_INIT(G_VARIANT_TYPE_VARDICT);
  GVariantIter iter;
  const char* key;
  GVariant* value;
  g_variant_iter_init(&iter, children[n - 1]);
  while (g_variant_iter_loop(&iter, "{&sv}", &key, &value))
    if (strcmp(key, "handle_token") != 0 && strcmp(key, "session_handle_token") != 0)
      g_variant_builder_add(&options, "{sv}", key, value);
  g_variant_builder_add(&options, "{sv}", "handle_token", g_variant_new_string(handle_token.c_str()));
  if (session_token != nullptr)
    g_variant_builder_add(&options, "{sv}", "session_handle_token", g_variant_new_string(session_token));
  g_variant_unref(children[n - 1]);
  children[n - 1] = g_variant_ref_sink(g_variant_builder_end(&options));

  GVariant* result = g_variant_new_tuple(children.data(), n);
  for (GVariant* child : children) g_variant_unref(child);
  return result;
}

// The guest's token for @key in @options: absent → a fresh one of ours;
// present but malformed → false with an error naming the key.
bool guest_token(GVariant* options, const char* key, std::string* token, GError** error) {
  g_autoptr(GVariant) value = options != nullptr ? g_variant_lookup_value(options, key, nullptr) : nullptr;
  if (value == nullptr) {
    *token = new_host_token();
    return true;
  }
  if (!g_variant_is_of_type(value, G_VARIANT_TYPE_STRING) ||
      !sidebus::is_valid_token(g_variant_get_string(value, nullptr))) {
    g_set_error(error, SIDEBUS_ERROR, SIDEBUS_ERROR_INVALID_ARGUMENT,
                "%s must be a string of 1 to %zu characters of [A-Za-z0-9_]", key, sidebus::kMaxTokenLength);
    return false;
  }
  *token = g_variant_get_string(value, nullptr);
  return true;
}

// Closes the host's request at @host_path (its dialog goes away). A Close
// can fail while the host is still setting the request up: xdg-desktop-portal
// answers our call before its backend has exported the dialog's Request, and
// then passes the backend's "no such object" back. A dialog left open on the
// host for a VM that is gone is worse than a few extra calls, so a failed
// Close is tried again, a bounded number of times, unless the host portal
// itself has gone.
struct HostClose {
  sidebus::GObjectPtr<GDBusConnection> host;
  std::string path;
  int attempt = 0;
};

constexpr int kCloseAttempts = 4;
constexpr guint kCloseRetryMs[kCloseAttempts - 1] = {100, 400, 1600};

void send_host_close(HostClose* close);

void on_host_close_done(GObject* source, GAsyncResult* result, gpointer data) {
  auto* close = static_cast<HostClose*>(data);
  g_autoptr(GError) error = nullptr;
  g_autoptr(GVariant) reply = g_dbus_connection_call_finish(G_DBUS_CONNECTION(source), result, &error);
  const bool host_gone = error != nullptr && (g_error_matches(error, G_DBUS_ERROR, G_DBUS_ERROR_SERVICE_UNKNOWN) ||
                                              g_error_matches(error, G_DBUS_ERROR, G_DBUS_ERROR_NAME_HAS_NO_OWNER) ||
                                              g_error_matches(error, G_IO_ERROR, G_IO_ERROR_CLOSED));
  if (reply != nullptr || host_gone || close->attempt + 1 >= kCloseAttempts) {
    if (reply == nullptr)
      g_debug("host request %s: Close failed %d times, last: %s", close->path.c_str(), close->attempt + 1,
              error->message);
    delete close;
    return;
  }
  g_debug("host request %s: Close: %s; trying again", close->path.c_str(), error->message);
  g_timeout_add(
      kCloseRetryMs[close->attempt++],
      [](gpointer data) -> gboolean {
        send_host_close(static_cast<HostClose*>(data));
        return G_SOURCE_REMOVE;
      },
      close);
}

void send_host_close(HostClose* close) {
  g_dbus_connection_call(close->host.get(), SIDEBUS_PORTAL_BUS_NAME, close->path.c_str(), kRequestInterface, "Close", nullptr,
                         nullptr, G_DBUS_CALL_FLAGS_NO_AUTO_START, -1, nullptr, on_host_close_done, close);
}

void close_host_request(GDBusConnection* host, const std::string& host_path) {
  if (host_path.empty()) return;
  g_debug("closing host request %s", host_path.c_str());
  send_host_close(new HostClose{sidebus::retain(host), host_path});
}

}  // namespace

struct _SidebusRequest {
  gint refcount = 1;
  SidebusContext* context = nullptr;  // both null once retired
  sidebus::PortalLink* link = nullptr;
  std::string sender;
  std::string guest_path;
  std::string host_path;
  GDBusMethodInvocation* invocation = nullptr;  // owned until the guest has its handle
  SidebusGenRequest* skeleton = nullptr;
  guint client_watch = 0;
  bool host_call_made = false;
  bool host_call_returned = false;    // until then a Close is left to on_host_call_done()
  bool has_pending_response = false;  // Response arrived before the host call returned
  guint32 pending_response = 0;
  GVariant* pending_results = nullptr;
  SidebusResultsFunc on_results = nullptr;
  gpointer user_data = nullptr;
  GDestroyNotify destroy_notify = nullptr;
  SidebusSession* session = nullptr;  // a reference; the session this request creates
};

namespace {

// Takes the request out of service: no more signals, no guest object, no
// route, and the link's reference is dropped. Safe to call twice.
void retire(SidebusRequest* request) {
  sidebus::PortalLink* link = request->link;
  if (link == nullptr) return;
  request->link = nullptr;
  request->context = nullptr;
  g_signal_handlers_disconnect_by_data(request->skeleton, request);
  g_dbus_interface_skeleton_unexport(G_DBUS_INTERFACE_SKELETON(request->skeleton));
  if (request->client_watch != 0) link->clients().unwatch(request->client_watch);
  request->client_watch = 0;
  if (!request->host_path.empty()) link->unroute_host_request(request->host_path);
  if (request->invocation != nullptr) {
    g_dbus_method_invocation_return_error(request->invocation, SIDEBUS_ERROR, SIDEBUS_ERROR_FAILED,
                                          "the request was closed before the host answered");
    request->invocation = nullptr;
  }
  if (request->session != nullptr) sidebus::session::abandon(request->session);  // no-op once active
  link->remove_request(request);                                                 // drops the link's reference
}

// The host side of @request goes away. While the host call is in flight the
// host's request may not exist yet: on_host_call_done() closes it then.
void close_host_side(SidebusRequest* request) {
  if (request->host_call_made && !request->host_call_returned) return;
  close_host_request(request->link->host(), request->host_path);
}

void deliver_response(SidebusRequest* request, guint32 response, GVariant* results) {
  sidebus_request_ref(request);
  if (request->on_results != nullptr)
    request->on_results(request, response, results, request->user_data);
  else
    sidebus_request_respond(request, response, results);
  sidebus_request_unref(request);
}

gboolean on_guest_close(SidebusGenRequest* skeleton, GDBusMethodInvocation* invocation, gpointer user_data) {
  auto* request = static_cast<SidebusRequest*>(user_data);
  if (!sidebus::reject_unless_owner(request->context, invocation, request->sender, request->guest_path)) return TRUE;
  sidebus_context_log(request->context, G_LOG_LEVEL_DEBUG, "guest closed %s", request->guest_path.c_str());
  close_host_side(request);
  sidebus_gen_request_complete_close(skeleton, invocation);
  retire(request);
  return TRUE;
}

void on_host_call_done(GObject* source, GAsyncResult* result, gpointer user_data) {
  auto* request = static_cast<SidebusRequest*>(user_data);
  host_calls_in_flight--;
  request->host_call_returned = true;
  g_autoptr(GError) error = nullptr;
  g_autoptr(GVariant) reply = g_dbus_connection_call_finish(G_DBUS_CONNECTION(source), result, &error);
  if (request->link == nullptr) {  // retired meanwhile; the host request may exist all the same
    if (reply != nullptr) {
      const char* host_path;
      g_variant_get(reply, "(&o)", &host_path);
      close_host_request(G_DBUS_CONNECTION(source), host_path);
    }
    sidebus_request_unref(request);
    return;
  }
  SidebusContext* context = request->context;
  if (reply == nullptr) {
    // Pass the host's error name through: the guest asked the same portal.
    g_autofree char* remote_name = g_dbus_error_get_remote_error(error);
    if (remote_name != nullptr) g_dbus_error_strip_remote_error(error);
    sidebus_context_log(context, G_LOG_LEVEL_WARNING, "host portal call failed: %s", error->message);
    if (remote_name != nullptr)
      g_dbus_method_invocation_return_dbus_error(request->invocation, remote_name, error->message);
    else
      g_dbus_method_invocation_return_error(request->invocation, SIDEBUS_ERROR, SIDEBUS_ERROR_FAILED,
                                            "the host portal failed: %s", error->message);
    request->invocation = nullptr;
    retire(request);
    sidebus_request_unref(request);
    return;
  }
  const char* host_path;
  g_variant_get(reply, "(&o)", &host_path);
  if (request->host_path != host_path) {
    // A host portal that did not follow our handle_token: follow the path it
    // chose.
    request->link->unroute_host_request(request->host_path);
    request->host_path = host_path;
    request->link->route_host_request(request->host_path, request);
  }
  g_dbus_method_invocation_return_value(request->invocation, g_variant_new("(o)", request->guest_path.c_str()));
  request->invocation = nullptr;
  if (request->has_pending_response) {
    g_autoptr(GVariant) results = std::exchange(request->pending_results, nullptr);
    request->has_pending_response = false;
    deliver_response(request, request->pending_response, results);
  }
  sidebus_request_unref(request);
}

SidebusRequest* new_request(SidebusContext* context, GDBusMethodInvocation* invocation, GVariant* options,
                            bool with_session, GError** error) {
  sidebus::PortalLink* link = context->link;
  if (link == nullptr || link->closing()) {
    g_set_error(error, SIDEBUS_ERROR, SIDEBUS_ERROR_FAILED, "the VM's link is closing");
    return nullptr;
  }
  const char* sender = g_dbus_method_invocation_get_sender(invocation);
  if (sender == nullptr || !g_dbus_is_unique_name(sender)) {
    g_set_error(error, SIDEBUS_ERROR, SIDEBUS_ERROR_INVALID_ARGUMENT, "the call has no unique sender name");
    return nullptr;
  }
  if (!link->require_host_portal(error)) return nullptr;
  std::string token;
  if (!guest_token(options, "handle_token", &token, error)) return nullptr;
  std::string session_token;
  if (with_session && !guest_token(options, "session_handle_token", &session_token, error)) return nullptr;

  std::string guest_path = sidebus::portal_object_path("request", sender, token.c_str());
  if (link->has_request(guest_path)) {
    g_set_error(error, SIDEBUS_ERROR, SIDEBUS_ERROR_EXISTS, "a request with handle_token '%s' is already pending",
                token.c_str());
    return nullptr;
  }
  if (link->pending_requests() >= link->options().max_pending_requests) {
    g_set_error(error, G_DBUS_ERROR, G_DBUS_ERROR_LIMITS_EXCEEDED,
                "too many pending portal requests from this VM (limit %u, "
                "broker.max_pending_requests)",
                link->options().max_pending_requests);
    return nullptr;
  }
  SidebusSession* session = nullptr;
  if (with_session) {
    session = sidebus::session::create(context, sender, session_token, error);
    if (session == nullptr) return nullptr;
  }

  auto* request = new _SidebusRequest();
  request->sender = sender;
  request->guest_path = guest_path;
  request->skeleton = sidebus_gen_request_skeleton_new();
  request->session = session != nullptr ? sidebus_session_ref(session) : nullptr;
  if (!g_dbus_interface_skeleton_export(G_DBUS_INTERFACE_SKELETON(request->skeleton), link->guest(), guest_path.c_str(),
                                        error)) {
    if (session != nullptr) sidebus::session::abandon(session);
    sidebus_request_unref(request);
    return nullptr;
  }
  g_signal_connect(request->skeleton, "handle-close", G_CALLBACK(on_guest_close), request);
  request->context = context;
  request->link = link;
  request->invocation = invocation;
  link->add_request(request);  // the link's reference
  request->client_watch = link->clients().watch(sender, [request](const std::string& name) {
    request->client_watch = 0;
    sidebus_context_log(request->context, G_LOG_LEVEL_DEBUG, "%s left the guest bus; closing %s on the host",
                        name.c_str(), request->guest_path.c_str());
    close_host_side(request);
    retire(request);
  });
  return request;
}

}  // namespace

namespace sidebus::request {

void on_host_response(SidebusRequest* request, GVariant* parameters) {
  if (request->link == nullptr || !g_variant_is_of_type(parameters, G_VARIANT_TYPE("(ua{sv})"))) return;
  guint32 response;
  g_autoptr(GVariant) results = nullptr;
  g_variant_get(parameters, "(u@a{sv})", &response, &results);
  // Only one Response per request.
  request->link->unroute_host_request(request->host_path);
  if (request->invocation != nullptr) {
    request->has_pending_response = true;
    request->pending_response = response;
    request->pending_results = g_steal_pointer(&results);
    return;
  }
  deliver_response(request, response, results);
}

void on_host_gone(SidebusRequest* request) {
  if (request->link == nullptr) return;
  if (request->invocation != nullptr) {
    retire(request);  // the guest's call itself fails
    return;
  }
  sidebus_request_respond(request, SIDEBUS_RESPONSE_OTHER, nullptr);
}

void on_link_gone(SidebusRequest* request) {
  if (request->link == nullptr) return;
  close_host_side(request);
  retire(request);
}

void on_portals_restart(SidebusRequest* request) {
  if (request->link == nullptr) return;
  close_host_side(request);
  if (request->invocation != nullptr) {
    retire(request);  // the guest's call fails: "closed before the host answered"
    return;
  }
  // Straight to the guest: a plugin's result hook has nothing to map.
  sidebus_request_respond(request, SIDEBUS_RESPONSE_OTHER, nullptr);
}

int host_calls_in_flight() { return ::host_calls_in_flight; }

}  // namespace sidebus::request

extern "C" {

SidebusRequest* sidebus_request_new(SidebusContext* context, GDBusMethodInvocation* invocation, GVariant* options,
                                    GError** error) {
  return new_request(context, invocation, options, false, error);
}

SidebusRequest* sidebus_request_new_with_session(SidebusContext* context, GDBusMethodInvocation* invocation,
                                                 GVariant* options, SidebusSession** session, GError** error) {
  SidebusRequest* request = new_request(context, invocation, options, true, error);
  if (session != nullptr) *session = request != nullptr ? request->session : nullptr;
  return request;
}

void sidebus_request_call_host_full(SidebusRequest* request, const char* interface_name, const char* method_name,
                                    GVariant* parameters, GUnixFDList* fd_list, SidebusResultsFunc on_results,
                                    gpointer user_data, GDestroyNotify destroy_notify) {
  g_autoptr(GVariant) owned_parameters = g_variant_ref_sink(parameters);
  request->on_results = on_results;
  request->user_data = user_data;
  request->destroy_notify = destroy_notify;
  if (request->link == nullptr || request->invocation == nullptr || request->host_call_made) {
    g_critical(
        "sidebus_request_call_host: the request %s is retired or "
        "already called the host",
        request->guest_path.c_str());
    return;
  }
  request->host_call_made = true;
  sidebus::PortalLink* link = request->link;
  std::string host_token = new_host_token();
  request->host_path =
      sidebus::portal_object_path("request", g_dbus_connection_get_unique_name(link->host()), host_token.c_str());
  link->route_host_request(request->host_path, request);

  const char* session_token = request->session != nullptr ? sidebus::session::host_token(request->session) : nullptr;
  GVariant* host_parameters = with_tokens(owned_parameters, host_token, session_token);
  sidebus_context_log(request->context, G_LOG_LEVEL_DEBUG, "%s.%s for %s → host %s (%d fds)", interface_name,
                      method_name, request->guest_path.c_str(), request->host_path.c_str(),
                      fd_list != nullptr ? g_unix_fd_list_get_length(fd_list) : 0);
  host_calls_in_flight++;
  g_dbus_connection_call_with_unix_fd_list(link->host(), SIDEBUS_PORTAL_BUS_NAME, SIDEBUS_PORTAL_OBJECT_PATH,
                                           interface_name, method_name, host_parameters, G_VARIANT_TYPE("(o)"),
                                           // Never cancelled: a request retired before the host
                                           // answered still has to close what the host made.
                                           G_DBUS_CALL_FLAGS_NO_AUTO_START, -1, fd_list, nullptr, on_host_call_done,
                                           sidebus_request_ref(request));
}

void sidebus_request_call_host(SidebusRequest* request, const char* interface_name, const char* method_name,
                               GVariant* parameters, SidebusResultsFunc on_results, gpointer user_data) {
  sidebus_request_call_host_full(request, interface_name, method_name, parameters, nullptr, on_results, user_data,
                                 nullptr);
}

void sidebus_request_respond(SidebusRequest* request, guint32 response, GVariant* results) {
  g_autoptr(GVariant) owned_results =
      results != nullptr ? g_variant_ref_sink(results) : g_variant_ref_sink(g_variant_new("a{sv}", nullptr));
  if (request->link == nullptr) return;
  g_autoptr(GVariant) guest_results = g_variant_ref(owned_results);
  if (request->session != nullptr) {
    g_autofree char* host_session = nullptr;
    if (response == SIDEBUS_RESPONSE_SUCCESS && g_variant_lookup(owned_results, "session_handle", "s", &host_session) &&
        g_variant_is_object_path(host_session)) {
      sidebus::session::activate(request->session, host_session);
      // The guest is told its own session path, never the host's.
      g_auto(GVariantBuilder) builder = G_VARIANT_BUILDER_INIT(G_VARIANT_TYPE_VARDICT);
      GVariantIter iter;
      const char* key;
      GVariant* value;
      g_variant_iter_init(&iter, owned_results);
      while (g_variant_iter_loop(&iter, "{&sv}", &key, &value))
        if (strcmp(key, "session_handle") != 0) g_variant_builder_add(&builder, "{sv}", key, value);
      g_variant_builder_add(&builder, "{sv}", "session_handle",
                            g_variant_new_string(sidebus_session_get_guest_path(request->session)));
      g_variant_unref(guest_results);
      guest_results = g_variant_ref_sink(g_variant_builder_end(&builder));
    } else {
      if (response == SIDEBUS_RESPONSE_SUCCESS) response = SIDEBUS_RESPONSE_OTHER;  // no session to give
      sidebus::session::abandon(request->session);
    }
  }
  // Unicast to the caller, as xdg-desktop-portal does: other guest clients
  // have no business seeing which files were chosen.
  g_dbus_connection_emit_signal(request->link->guest(), request->sender.c_str(), request->guest_path.c_str(),
                                kRequestInterface, "Response", g_variant_new("(u@a{sv})", response, guest_results),
                                nullptr);
  retire(request);
}

SidebusRequest* sidebus_request_ref(SidebusRequest* request) {
  g_atomic_int_inc(&request->refcount);
  return request;
}

void sidebus_request_unref(SidebusRequest* request) {
  if (!g_atomic_int_dec_and_test(&request->refcount)) return;
  if (request->destroy_notify != nullptr) request->destroy_notify(request->user_data);
  g_clear_object(&request->skeleton);
  g_clear_pointer(&request->pending_results, g_variant_unref);
  g_clear_pointer(&request->session, sidebus_session_unref);
  delete request;
}

const char* sidebus_request_get_guest_path(SidebusRequest* request) { return request->guest_path.c_str(); }
const char* sidebus_request_get_sender(SidebusRequest* request) { return request->sender.c_str(); }
SidebusContext* sidebus_request_get_context(SidebusRequest* request) { return request->context; }
SidebusSession* sidebus_request_get_session(SidebusRequest* request) { return request->session; }

}  // extern "C"
