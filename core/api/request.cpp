// request.cpp — the portal Request pattern across the VM boundary.
//
// A guest call returns a request object path at once and later gets a
// Response signal there. We mirror that onto the host portal: the guest's
// request object is exported before the guest call returns; the host call is
// made with our own handle_token, and its Response (host bus) becomes the
// guest's Response (guest bus). Close travels guest → host. A guest caller
// that leaves the bus has its host requests closed. All requests of one link
// live in its RequestTable, which caps how many may be pending.
#include "api/request.hpp"

#include <atomic>
#include <cstring>

#include "api/link-scope.hpp"
#include "portal-request.h"

namespace {

constexpr const char* kRequestInterface = "org.freedesktop.portal.Request";
constexpr gsize kMaxTokenLength = 64;

// ":1.42" → "1_42", the way xdg-desktop-portal names request paths.
std::string escape_sender(const char* sender) {
  std::string escaped(sender[0] == ':' ? sender + 1 : sender);
  for (char& c : escaped)
    if (c == '.') c = '_';
  return escaped;
}

bool is_valid_token(const char* token) {
  gsize length = strlen(token);
  if (length == 0 || length > kMaxTokenLength) return false;
  for (const char* p = token; *p; p++)
    if (!g_ascii_isalnum(*p) && *p != '_') return false;
  return true;
}

// Returns @parameters (a tuple whose last member is a{sv}) with
// handle_token=@token in that dictionary.
GVariant* with_handle_token(GVariant* parameters, const char* token) {
  gsize n = g_variant_n_children(parameters);
  std::vector<GVariant*> children(n);
  for (gsize i = 0; i < n; i++) children[i] = g_variant_get_child_value(parameters, i);

  g_auto(GVariantBuilder) options = G_VARIANT_BUILDER_INIT(G_VARIANT_TYPE_VARDICT);
  GVariantIter iter;
  const char* key;
  GVariant* value;
  g_variant_iter_init(&iter, children[n - 1]);
  while (g_variant_iter_loop(&iter, "{&sv}", &key, &value))
    if (strcmp(key, "handle_token") != 0) g_variant_builder_add(&options, "{sv}", key, value);
  g_variant_builder_add(&options, "{sv}", "handle_token", g_variant_new_string(token));
  g_variant_unref(children[n - 1]);
  children[n - 1] = g_variant_ref_sink(g_variant_builder_end(&options));

  GVariant* result = g_variant_new_tuple(children.data(), n);
  for (GVariant* child : children) g_variant_unref(child);
  return result;
}

std::atomic<guint64> next_host_token{1};

}  // namespace

struct _SidebusRequest {
  gint refcount = 1;
  SidebusContext* context = nullptr;  // null once retired
  std::string sender;
  std::string guest_path;
  std::string host_path;
  GDBusMethodInvocation* invocation = nullptr;  // owned until the guest has its handle
  SidebusGenRequest* skeleton = nullptr;
  GCancellable* cancellable = nullptr;
  guint response_subscription = 0;
  guint sender_watch = 0;
  bool has_pending_response = false;  // Response arrived before the host call returned
  guint32 pending_response = 0;
  GVariant* pending_results = nullptr;
  SidebusResultsFunc on_results = nullptr;
  gpointer user_data = nullptr;
};

static void close_host_request(SidebusRequest* request) {
  if (request->host_path.empty() || request->context == nullptr) return;
  g_dbus_connection_call(request->context->link->host, SIDEBUS_PORTAL_BUS_NAME, request->host_path.c_str(),
                         kRequestInterface, "Close", nullptr, nullptr, G_DBUS_CALL_FLAGS_NONE, -1, nullptr, nullptr,
                         nullptr);
}

// Takes the request out of service: no more signals, no guest object, and
// the table's reference is dropped. Safe to call twice.
static void retire(SidebusRequest* request) {
  SidebusContext* context = request->context;
  if (context == nullptr) return;
  g_cancellable_cancel(request->cancellable);
  if (request->response_subscription != 0)
    g_dbus_connection_signal_unsubscribe(context->link->host, request->response_subscription);
  request->response_subscription = 0;
  if (request->sender_watch != 0) g_bus_unwatch_name(request->sender_watch);
  request->sender_watch = 0;
  if (request->skeleton != nullptr)
    g_dbus_interface_skeleton_unexport(G_DBUS_INTERFACE_SKELETON(request->skeleton));
  if (request->invocation != nullptr) {
    g_dbus_method_invocation_return_error(request->invocation, SIDEBUS_ERROR, SIDEBUS_ERROR_FAILED,
                                          "the request was closed before the host answered");
    request->invocation = nullptr;
  }
  request->context = nullptr;
  context->link->requests->erase(request->guest_path);
  sidebus_request_unref(request);
}

static void deliver_response(SidebusRequest* request, guint32 response, GVariant* results) {
  if (request->on_results != nullptr)
    request->on_results(request, response, results, request->user_data);
  else
    sidebus_request_respond(request, response, results);
}

static void on_host_response(GDBusConnection*, const char*, const char*, const char*, const char*, GVariant* parameters,
                             gpointer user_data) {
  auto* request = static_cast<SidebusRequest*>(user_data);
  if (request->context == nullptr || !g_variant_is_of_type(parameters, G_VARIANT_TYPE("(ua{sv})"))) return;
  guint32 response;
  g_autoptr(GVariant) results = nullptr;
  g_variant_get(parameters, "(u@a{sv})", &response, &results);
  // Only one Response per request.
  g_dbus_connection_signal_unsubscribe(request->context->link->host, request->response_subscription);
  request->response_subscription = 0;
  if (request->invocation != nullptr) {
    request->has_pending_response = true;
    request->pending_response = response;
    request->pending_results = g_steal_pointer(&results);
    return;
  }
  sidebus_request_ref(request);
  deliver_response(request, response, results);
  sidebus_request_unref(request);
}

static void subscribe_host_response(SidebusRequest* request) {
  request->response_subscription = g_dbus_connection_signal_subscribe(
      request->context->link->host, SIDEBUS_PORTAL_BUS_NAME, kRequestInterface, "Response",
      request->host_path.c_str(), nullptr, G_DBUS_SIGNAL_FLAGS_NO_MATCH_RULE, on_host_response, request, nullptr);
}

static void on_host_call_done(GObject* source, GAsyncResult* result, gpointer user_data) {
  auto* request = static_cast<SidebusRequest*>(user_data);
  g_autoptr(GError) error = nullptr;
  g_autoptr(GVariant) reply = g_dbus_connection_call_finish(G_DBUS_CONNECTION(source), result, &error);
  if (request->context == nullptr) {  // retired meanwhile; the host request may still exist
    if (reply != nullptr) {
      const char* host_path;
      g_variant_get(reply, "(&o)", &host_path);
      g_dbus_connection_call(G_DBUS_CONNECTION(source), SIDEBUS_PORTAL_BUS_NAME, host_path, kRequestInterface, "Close",
                             nullptr, nullptr, G_DBUS_CALL_FLAGS_NONE, -1, nullptr, nullptr, nullptr);
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
    // A host portal that ignores handle_token: follow the path it chose.
    g_dbus_connection_signal_unsubscribe(context->link->host, request->response_subscription);
    request->host_path = host_path;
    subscribe_host_response(request);
  }
  g_dbus_method_invocation_return_value(request->invocation, g_variant_new("(o)", request->guest_path.c_str()));
  request->invocation = nullptr;
  if (request->has_pending_response) {
    g_autoptr(GVariant) results = g_steal_pointer(&request->pending_results);
    request->has_pending_response = false;
    deliver_response(request, request->pending_response, results);
  }
  sidebus_request_unref(request);
}

static gboolean on_guest_close(SidebusGenRequest* skeleton, GDBusMethodInvocation* invocation, gpointer user_data) {
  auto* request = static_cast<SidebusRequest*>(user_data);
  if (request->context == nullptr) {
    g_dbus_method_invocation_return_error(invocation, SIDEBUS_ERROR, SIDEBUS_ERROR_NOT_FOUND, "no such request");
    return TRUE;
  }
  // A guest client may only close its own requests.
  if (g_strcmp0(g_dbus_method_invocation_get_sender(invocation), request->sender.c_str()) != 0) {
    sidebus_context_reject(request->context, invocation,
                           g_error_new(SIDEBUS_ERROR, SIDEBUS_ERROR_NOT_ALLOWED, "%s is not the caller that owns %s",
                                       g_dbus_method_invocation_get_sender(invocation), request->guest_path.c_str()));
    return TRUE;
  }
  sidebus_context_log(request->context, G_LOG_LEVEL_DEBUG, "guest closed %s", request->guest_path.c_str());
  close_host_request(request);
  sidebus_gen_request_complete_close(skeleton, invocation);
  retire(request);
  return TRUE;
}

static void on_sender_vanished(GDBusConnection*, const char* name, gpointer user_data) {
  auto* request = static_cast<SidebusRequest*>(user_data);
  if (request->context == nullptr) return;
  sidebus_context_log(request->context, G_LOG_LEVEL_DEBUG, "%s left the guest bus; closing %s on the host", name,
                      request->guest_path.c_str());
  close_host_request(request);
  retire(request);
}

extern "C" SidebusRequest* sidebus_request_new(SidebusContext* context, GDBusMethodInvocation* invocation,
                                               GVariant* options, GError** error) {
  sidebus::LinkScope* link = context->link;
  const char* sender = g_dbus_method_invocation_get_sender(invocation);
  if (sender == nullptr) {
    g_set_error(error, SIDEBUS_ERROR, SIDEBUS_ERROR_INVALID_ARGUMENT, "the call has no sender");
    return nullptr;
  }

  g_autofree char* token = nullptr;
  g_autoptr(GVariant) token_value =
      options != nullptr ? g_variant_lookup_value(options, "handle_token", nullptr) : nullptr;
  if (token_value != nullptr) {
    if (!g_variant_is_of_type(token_value, G_VARIANT_TYPE_STRING) ||
        !is_valid_token(g_variant_get_string(token_value, nullptr))) {
      g_set_error(error, SIDEBUS_ERROR, SIDEBUS_ERROR_INVALID_ARGUMENT,
                  "handle_token must be a string of 1 to %zu characters of [A-Za-z0-9_]", kMaxTokenLength);
      return nullptr;
    }
    token = g_variant_dup_string(token_value, nullptr);
  } else {
    token = g_strdup_printf("sidebus%" G_GUINT64_FORMAT, next_host_token.fetch_add(1));
  }

  std::string guest_path =
      std::string(SIDEBUS_PORTAL_OBJECT_PATH "/request/") + escape_sender(sender) + "/" + token;
  if (link->requests->contains(guest_path)) {
    g_set_error(error, SIDEBUS_ERROR, SIDEBUS_ERROR_EXISTS, "a request with handle_token '%s' is already pending",
                token);
    return nullptr;
  }
  if (link->requests->size() >= link->requests->max_pending()) {
    g_set_error(error, G_DBUS_ERROR, G_DBUS_ERROR_LIMITS_EXCEEDED,
                "too many pending portal requests from this VM (limit %u, broker.max_pending_requests)",
                link->requests->max_pending());
    return nullptr;
  }

  auto* request = new _SidebusRequest();
  request->context = context;
  request->sender = sender;
  request->guest_path = guest_path;
  request->invocation = invocation;
  request->cancellable = g_cancellable_new();
  request->skeleton = sidebus_gen_request_skeleton_new();
  g_signal_connect(request->skeleton, "handle-close", G_CALLBACK(on_guest_close), request);
  if (!g_dbus_interface_skeleton_export(G_DBUS_INTERFACE_SKELETON(request->skeleton), link->guest,
                                        guest_path.c_str(), error)) {
    request->invocation = nullptr;
    request->context = nullptr;
    sidebus_request_unref(request);
    return nullptr;
  }
  request->sender_watch = g_bus_watch_name_on_connection(link->guest, sender, G_BUS_NAME_WATCHER_FLAGS_NONE, nullptr,
                                                         on_sender_vanished, request, nullptr);
  link->requests->insert(guest_path, request);  // the table's reference
  return request;
}

// The one implementation of both entry points; @fd_list may be NULL. GDBus
// lets on_host_call_done() finish either kind of call with
// g_dbus_connection_call_finish(): the fd list only matters on send.
extern "C" void sidebus_request_call_host_with_fds(SidebusRequest* request, const char* interface_name,
                                                   const char* method_name, GVariant* parameters,
                                                   GUnixFDList* fd_list, SidebusResultsFunc on_results,
                                                   gpointer user_data) {
  g_autoptr(GVariant) owned_parameters = g_variant_ref_sink(parameters);
  SidebusContext* context = request->context;
  g_return_if_fail(context != nullptr && request->invocation != nullptr);
  request->on_results = on_results;
  request->user_data = user_data;

  g_autofree char* host_token = g_strdup_printf("sidebus%" G_GUINT64_FORMAT, next_host_token.fetch_add(1));
  request->host_path = std::string(SIDEBUS_PORTAL_OBJECT_PATH "/request/") +
                       escape_sender(g_dbus_connection_get_unique_name(context->link->host)) + "/" + host_token;
  subscribe_host_response(request);

  GVariant* host_parameters = with_handle_token(owned_parameters, host_token);
  sidebus_context_log(context, G_LOG_LEVEL_DEBUG, "%s.%s for %s → host %s (%d fds)", interface_name, method_name,
                      request->guest_path.c_str(), request->host_path.c_str(),
                      fd_list != nullptr ? g_unix_fd_list_get_length(fd_list) : 0);
  g_dbus_connection_call_with_unix_fd_list(context->link->host, SIDEBUS_PORTAL_BUS_NAME, SIDEBUS_PORTAL_OBJECT_PATH,
                                           interface_name, method_name, host_parameters, G_VARIANT_TYPE("(o)"),
                                           G_DBUS_CALL_FLAGS_NONE, -1, fd_list, request->cancellable,
                                           on_host_call_done, sidebus_request_ref(request));
}

extern "C" void sidebus_request_call_host(SidebusRequest* request, const char* interface_name,
                                          const char* method_name, GVariant* parameters,
                                          SidebusResultsFunc on_results, gpointer user_data) {
  sidebus_request_call_host_with_fds(request, interface_name, method_name, parameters, nullptr, on_results,
                                     user_data);
}

extern "C" void sidebus_request_respond(SidebusRequest* request, guint32 response, GVariant* results) {
  g_autoptr(GVariant) owned_results =
      results != nullptr ? g_variant_ref_sink(results) : g_variant_ref_sink(g_variant_new("a{sv}", nullptr));
  if (request->context == nullptr) return;
  // Unicast to the caller, as xdg-desktop-portal does: other guest clients
  // have no business seeing which files were chosen.
  g_dbus_connection_emit_signal(request->context->link->guest, request->sender.c_str(), request->guest_path.c_str(),
                                kRequestInterface, "Response", g_variant_new("(u@a{sv})", response, owned_results),
                                nullptr);
  retire(request);
}

extern "C" SidebusRequest* sidebus_request_ref(SidebusRequest* request) {
  g_atomic_int_inc(&request->refcount);
  return request;
}

extern "C" void sidebus_request_unref(SidebusRequest* request) {
  if (!g_atomic_int_dec_and_test(&request->refcount)) return;
  g_clear_object(&request->skeleton);
  g_clear_object(&request->cancellable);
  g_clear_pointer(&request->pending_results, g_variant_unref);
  delete request;
}

extern "C" const char* sidebus_request_get_guest_path(SidebusRequest* request) { return request->guest_path.c_str(); }
extern "C" const char* sidebus_request_get_sender(SidebusRequest* request) { return request->sender.c_str(); }
extern "C" SidebusContext* sidebus_request_get_context(SidebusRequest* request) { return request->context; }

namespace sidebus {

RequestTable::~RequestTable() {
  // retire() erases from the map, so walk a copy.
  auto pending = by_path_;
  for (auto& [path, request] : pending) {
    close_host_request(request);
    retire(request);
  }
}

}  // namespace sidebus
