// SPDX-License-Identifier: LGPL-2.1-or-later
// screencast.cpp — org.freedesktop.portal.ScreenCast for a VM: an app in
// the guest shares the host's screen (a monitor, a window), chosen by the
// user in the host's own dialog.
//
// A screen cast is a session (the core's SidebusSession): CreateSession
// makes the guest's org.freedesktop.portal.Session and the host's together;
// every later call names the guest's session, which only the guest client
// that created it may use (others get NotAllowed, unknown ones NotFound),
// and the session ends on both sides however it ends — the guest's Close,
// the host's Closed (the user stopped sharing), the app leaving its bus, the
// link going. This file keeps each session's state on top of that
// (SessionState), in the order the portal prescribes:
//
//   CreateSession → SelectSources → Start → OpenPipeWireRemote (any number)
//
// so a call out of order is refused here with the reason, before it reaches
// the host. SelectSources' options are checked against what the host offers
// (screencast-options.cpp); a restore token only passes for the guest
// client allowed to use it (restore-tokens.cpp). Start's answer carries the
// granted streams and maybe a restore token; which node ids the guest is
// told, and what OpenPipeWireRemote gives it, is the link's stream route
// (stream-route.cpp): the host's PipeWire fd as it is on an fd-capable
// link, a clear NotSupported on a byte-only one.
//
// parent_window is always "" on the host (a guest window handle names a
// window on the guest's display). No method carries text the host shows,
// so the host's dialog cannot name the VM.
//
// Properties: version = min(host's, 5); AvailableSourceTypes and
// AvailableCursorModes are the host's, kept current (host-properties.hpp).
#include <libpeas/peas.h>

#include <atomic>
#include <cstring>
#include <memory>
#include <utility>

#include "host-properties.hpp"
#include "pipewire-remote.hpp"
#include "screencast-portal.h"
#include "screencast.hpp"

using sidebus::plugins::HostProperties;

namespace screencast {
namespace {

std::atomic<guint64> next_link_serial{1};

enum class Phase { kCreated, kSelecting, kSelected, kStarting, kStarted };

const char* phase_refusal(Phase phase, const char* method) {
  switch (phase) {
    case Phase::kCreated: return "SelectSources has not been called on this session";
    case Phase::kSelecting: return "SelectSources is still waiting for its answer";
    case Phase::kSelected: return g_str_equal(method, "SelectSources") ? "sources were selected already"
                                                                       : "the session has not been started";
    case Phase::kStarting: return "Start is still waiting for its answer";
    case Phase::kStarted: return g_str_equal(method, "Start") ? "the session was started already"
                                                              : "sources can only be selected before Start";
  }
  return "the session is in the wrong state";
}

// What the plugin knows of one session, as its SidebusSession data.
struct SessionState {
  Phase phase = Phase::kCreated;
  guint32 persist_mode = kPersistNone;  // asked in SelectSources
  std::vector<Stream> streams;           // as the guest was told, once started
  static void destroy(gpointer data) { delete static_cast<SessionState*>(data); }
};

SessionState* state_of(SidebusSession* session) { return static_cast<SessionState*>(sidebus_session_get_data(session)); }

}  // namespace
}  // namespace screencast

using namespace screencast;

#define SC_TYPE_PORTAL (sc_portal_get_type())
G_DECLARE_FINAL_TYPE(ScPortal, sc_portal, SC, PORTAL, SidebusScScreenCastSkeleton)

struct _ScPortal {
  SidebusScScreenCastSkeleton parent_instance;
  // All valid between start() and stop():
  SidebusContext* context;           // borrowed
  StreamRoute* route;                // owned
  HostProperties* host_properties;  // owned
  guint64 link_serial;
  guint32 version;
};

static void sc_portal_portal_iface_init(SidebusPortalInterface* iface);

// The methods are the skeleton's handle-* signals (connected in init): a
// dynamic type cannot re-implement the interface its generated parent has.
G_DEFINE_DYNAMIC_TYPE_EXTENDED(ScPortal, sc_portal, SIDEBUS_SC_TYPE_SCREEN_CAST_SKELETON, 0,
                               G_IMPLEMENT_INTERFACE_DYNAMIC(SIDEBUS_TYPE_PORTAL, sc_portal_portal_iface_init))

namespace {

// A SelectSources or Start request's user data: the session it moves on.
// If the request ends unanswered (the host call failed, the guest closed
// it), the session goes back to where it was, as the host's does.
struct SessionCall {
  ScPortal* portal;          // borrowed: requests are retired before stop()
  SidebusSession* session;   // a reference
  Phase before;              // the phase to go back to, unanswered
  Phase during;
  bool answered = false;
  static void destroy(gpointer data) {
    auto* call = static_cast<SessionCall*>(data);
    SessionState* state = sidebus_session_is_active(call->session) ? state_of(call->session) : nullptr;
    if (!call->answered && state != nullptr && state->phase == call->during) state->phase = call->before;
    sidebus_session_unref(call->session);
    delete call;
  }
};

bool link_closing(ScPortal* self, GDBusMethodInvocation* invocation) {
  if (self->context != nullptr) return false;
  g_dbus_method_invocation_return_error(invocation, SIDEBUS_ERROR, SIDEBUS_ERROR_FAILED, "the VM link is closing");
  return true;
}

// The caller's session @handle, in @expected phase; nullptr (the guest
// answered) otherwise.
SidebusSession* session_for_call(ScPortal* self, GDBusMethodInvocation* invocation, const char* handle,
                                 Phase expected, const char* method) {
  GError* error = nullptr;
  SidebusSession* session = sidebus_context_lookup_session(self->context, invocation, handle, &error);
  if (session == nullptr) {
    sidebus_context_reject(self->context, invocation, error);
    return nullptr;
  }
  SessionState* state = state_of(session);
  if (state == nullptr || state->phase != expected) {
    sidebus_context_reject(self->context, invocation,
                           g_error_new(SIDEBUS_ERROR, SIDEBUS_ERROR_FAILED, "%s: %s", method,
                                       phase_refusal(state != nullptr ? state->phase : Phase::kCreated, method)));
    return nullptr;
  }
  return session;
}

HostOffer host_offer(ScPortal* self) {
  return {self->host_properties->get_uint32("AvailableSourceTypes"),
          self->host_properties->get_uint32("AvailableCursorModes")};
}

// ---- CreateSession ---------------------------------------------------------------

void on_session_closed(SidebusSession* session, gpointer user_data) {
  auto* self = static_cast<ScPortal*>(user_data);
  if (self->route != nullptr) self->route->session_ended(session);
}

gboolean handle_create_session(SidebusScScreenCast* object, GDBusMethodInvocation* invocation, GVariant* options,
                               gpointer) {
  ScPortal* self = SC_PORTAL(object);
  if (link_closing(self, invocation)) return G_DBUS_METHOD_INVOCATION_HANDLED;
  GError* error = nullptr;
  // No options of its own: the tokens are the core's.
  g_autoptr(GVariant) host_options = sidebus_filter_options(self->context, options, nullptr, 0, &error);
  SidebusSession* session = nullptr;
  SidebusRequest* request =
      host_options != nullptr ? sidebus_request_new_with_session(self->context, invocation, options, &session, &error)
                              : nullptr;
  if (request == nullptr) {
    sidebus_context_reject(self->context, invocation, error);
    return G_DBUS_METHOD_INVOCATION_HANDLED;
  }
  sidebus_session_set_data(session, new SessionState(), SessionState::destroy);
  sidebus_session_set_closed_func(session, on_session_closed, self, nullptr);
  // The Response passes as it is; the core puts the guest's session path in it.
  sidebus_request_call_host(request, kInterface, "CreateSession", g_variant_new("(@a{sv})", host_options),
                            nullptr, nullptr);
  return G_DBUS_METHOD_INVOCATION_HANDLED;
}

// ---- SelectSources ---------------------------------------------------------------

void on_select_results(SidebusRequest* request, guint32 response, GVariant*, gpointer user_data) {
  auto* call = static_cast<SessionCall*>(user_data);
  call->answered = true;
  // On anything but success the host closes the session; its Closed ends ours.
  if (response == SIDEBUS_RESPONSE_SUCCESS && sidebus_session_is_active(call->session))
    state_of(call->session)->phase = Phase::kSelected;
  sidebus_request_respond(request, response, nullptr);  // SelectSources has no results
}

// @options without "restore_token" (a new reference).
GVariant* without_restore_token(GVariant* options) {
  g_auto(GVariantBuilder) builder = G_VARIANT_BUILDER_INIT(G_VARIANT_TYPE_VARDICT);
  GVariantIter iter;
  const char* key;
  GVariant* value;
  g_variant_iter_init(&iter, options);
  while (g_variant_iter_loop(&iter, "{&sv}", &key, &value))
    if (!g_str_equal(key, "restore_token")) g_variant_builder_add(&builder, "{sv}", key, value);
  return g_variant_ref_sink(g_variant_builder_end(&builder));
}

gboolean handle_select_sources(SidebusScScreenCast* object, GDBusMethodInvocation* invocation,
                               const char* session_handle, GVariant* options, gpointer) {
  ScPortal* self = SC_PORTAL(object);
  if (link_closing(self, invocation)) return G_DBUS_METHOD_INVOCATION_HANDLED;
  SidebusContext* context = self->context;
  SidebusSession* session = session_for_call(self, invocation, session_handle, Phase::kCreated, "SelectSources");
  if (session == nullptr) return G_DBUS_METHOD_INVOCATION_HANDLED;
  GError* error = nullptr;
  g_autoptr(GVariant) host_options = select_sources_options(context, options, host_offer(self), self->version, &error);
  if (host_options == nullptr) {
    sidebus_context_reject(context, invocation, error);
    return G_DBUS_METHOD_INVOCATION_HANDLED;
  }
  const char* token = nullptr;
  if (g_variant_lookup(host_options, "restore_token", "&s", &token) &&
      !restore_token_usable(token, {self->link_serial, g_dbus_method_invocation_get_sender(invocation)})) {
    // As for a token the host does not know: the user is asked again.
    sidebus_context_log(context, G_LOG_LEVEL_MESSAGE,
                        "SelectSources: %s offered a restore token another guest client got for a transient "
                        "session; not passing it on (the host will ask the user)",
                        g_dbus_method_invocation_get_sender(invocation));
    GVariant* stripped = without_restore_token(host_options);
    g_variant_unref(host_options);
    host_options = stripped;
  }
  SidebusRequest* request = sidebus_request_new(context, invocation, options, &error);
  if (request == nullptr) {
    sidebus_context_reject(context, invocation, error);
    return G_DBUS_METHOD_INVOCATION_HANDLED;
  }
  SessionState* state = state_of(session);
  guint32 persist_mode = kPersistNone;
  g_variant_lookup(host_options, "persist_mode", "u", &persist_mode);
  state->persist_mode = persist_mode;
  state->phase = Phase::kSelecting;
  sidebus_request_call_host_full(
      request, kInterface, "SelectSources",
      g_variant_new("(o@a{sv})", sidebus_session_get_host_path(session), host_options), nullptr,
      on_select_results, new SessionCall{self, sidebus_session_ref(session), Phase::kCreated, Phase::kSelecting},
      SessionCall::destroy);
  return G_DBUS_METHOD_INVOCATION_HANDLED;
}

// ---- Start -------------------------------------------------------------------------

// Start's answer while the route publishes the streams.
struct Publishing {
  SidebusRequest* request;  // a reference
  SidebusSession* session;  // a reference
  std::string restore_token;
  ~Publishing() {
    sidebus_request_unref(request);
    sidebus_session_unref(session);
  }
};

// The restore token of a Start answer the guest may have ("" for none).
std::string restore_token_for_guest(ScPortal* self, SidebusRequest* request, SessionState* state,
                                    GVariant* host_results) {
  const char* token = nullptr;
  if (!g_variant_lookup(host_results, "restore_token", "&s", &token)) return "";
  if (strlen(token) != kRestoreTokenLength || !g_uuid_string_is_valid(token)) {
    sidebus_context_log(self->context, G_LOG_LEVEL_WARNING, "Start: the host's restore token is not a UUID; dropped");
    return "";
  }
  if (!record_restore_token(token, state->persist_mode, {self->link_serial, sidebus_request_get_sender(request)})) {
    sidebus_context_log(self->context, G_LOG_LEVEL_WARNING,
                        "Start: too many restore tokens for this VM; this session cannot be restored later");
    return "";
  }
  return token;
}

void on_start_results(SidebusRequest* request, guint32 response, GVariant* host_results, gpointer user_data) {
  auto* call = static_cast<SessionCall*>(user_data);
  call->answered = true;
  ScPortal* self = call->portal;
  SidebusSession* session = call->session;
  if (response != SIDEBUS_RESPONSE_SUCCESS || !sidebus_session_is_active(session)) {
    // The host closes the session itself after a refused Start.
    sidebus_request_respond(request, response, nullptr);
    return;
  }
  SessionState* state = state_of(session);
  std::vector<Stream> host_streams;
  g_autoptr(GError) error = nullptr;
  if (!streams_from_results(self->context, host_results, &host_streams, &error)) {
    sidebus_context_log(self->context, G_LOG_LEVEL_WARNING, "Start: %s; closing the session, answering 'other' (2)",
                        error->message);
    sidebus_request_respond(request, SIDEBUS_RESPONSE_OTHER, nullptr);
    sidebus_session_close(session, nullptr);  // the host's is streaming: end it
    return;
  }
  auto* publishing = new Publishing{sidebus_request_ref(request), sidebus_session_ref(session),
                                    restore_token_for_guest(self, request, state, host_results)};
  self->route->publish(session, host_streams, [publishing](std::vector<Stream> guest_streams, GError* publish_error) {
    std::unique_ptr<Publishing> owned(publishing);
    SidebusContext* context = sidebus_session_get_context(owned->session);
    if (context == nullptr) return;  // the session ended meanwhile
    if (publish_error != nullptr) {
      sidebus_context_log(context, G_LOG_LEVEL_WARNING, "Start: %s; closing the session, answering 'other' (2)",
                          publish_error->message);
      sidebus_request_respond(owned->request, SIDEBUS_RESPONSE_OTHER, nullptr);
      sidebus_session_close(owned->session, nullptr);
      return;
    }
    SessionState* state = state_of(owned->session);
    state->streams = std::move(guest_streams);
    state->phase = Phase::kStarted;
    g_auto(GVariantBuilder) results = G_VARIANT_BUILDER_INIT(G_VARIANT_TYPE_VARDICT);
    g_variant_builder_add(&results, "{sv}", "streams", streams_variant(state->streams));
    if (!owned->restore_token.empty())
      g_variant_builder_add(&results, "{sv}", "restore_token", g_variant_new_string(owned->restore_token.c_str()));
    sidebus_context_log(context, G_LOG_LEVEL_DEBUG, "Start: %s shares %zu stream(s)%s",
                        sidebus_session_get_guest_path(owned->session), state->streams.size(),
                        owned->restore_token.empty() ? "" : ", restorable");
    sidebus_request_respond(owned->request, SIDEBUS_RESPONSE_SUCCESS, g_variant_builder_end(&results));
  });
}

gboolean handle_start(SidebusScScreenCast* object, GDBusMethodInvocation* invocation, const char* session_handle,
                      const char*, GVariant* options, gpointer) {
  ScPortal* self = SC_PORTAL(object);
  if (link_closing(self, invocation)) return G_DBUS_METHOD_INVOCATION_HANDLED;
  SidebusContext* context = self->context;
  SidebusSession* session = session_for_call(self, invocation, session_handle, Phase::kSelected, "Start");
  if (session == nullptr) return G_DBUS_METHOD_INVOCATION_HANDLED;
  GError* error = nullptr;
  g_autoptr(GVariant) host_options = sidebus_filter_options(context, options, nullptr, 0, &error);
  SidebusRequest* request =
      host_options != nullptr ? sidebus_request_new(context, invocation, options, &error) : nullptr;
  if (request == nullptr) {
    sidebus_context_reject(context, invocation, error);
    return G_DBUS_METHOD_INVOCATION_HANDLED;
  }
  state_of(session)->phase = Phase::kStarting;
  sidebus_request_call_host_full(
      request, kInterface, "Start",
      g_variant_new("(os@a{sv})", sidebus_session_get_host_path(session), "", host_options), nullptr,
      on_start_results, new SessionCall{self, sidebus_session_ref(session), Phase::kSelected, Phase::kStarting},
      SessionCall::destroy);
  return G_DBUS_METHOD_INVOCATION_HANDLED;
}

// ---- OpenPipeWireRemote ------------------------------------------------------------

gboolean handle_open_pipewire_remote(SidebusScScreenCast* object, GDBusMethodInvocation* invocation, GUnixFDList*,
                                     const char* session_handle, GVariant* options, gpointer) {
  ScPortal* self = SC_PORTAL(object);
  if (link_closing(self, invocation)) return G_DBUS_METHOD_INVOCATION_HANDLED;
  SidebusSession* session =
      session_for_call(self, invocation, session_handle, Phase::kStarted, "OpenPipeWireRemote");
  if (session == nullptr) return G_DBUS_METHOD_INVOCATION_HANDLED;
  GError* error = nullptr;
  g_autoptr(GVariant) host_options = sidebus_filter_options(self->context, options, nullptr, 0, &error);
  if (host_options == nullptr) {
    sidebus_context_reject(self->context, invocation, error);
    return G_DBUS_METHOD_INVOCATION_HANDLED;
  }
  self->route->open_remote(session, invocation, host_options);
  return G_DBUS_METHOD_INVOCATION_HANDLED;
}

}  // namespace

// ---- SidebusPortal -------------------------------------------------------------------

static void sc_portal_stop(SidebusPortal* portal);

static gboolean sc_portal_start(SidebusPortal* portal, SidebusContext* context, GError** error) {
  ScPortal* self = SC_PORTAL(portal);
  guint32 host_version = sidebus_context_get_host_version(context, kInterface);
  if (host_version == 0) {
    g_set_error(error, SIDEBUS_ERROR, SIDEBUS_ERROR_NOT_SUPPORTED, "the host portal has no ScreenCast");
    return FALSE;
  }
  self->context = context;
  self->link_serial = next_link_serial.fetch_add(1);
  self->version = MIN(host_version, kImplementedVersion);
  self->route = stream_route_for(context).release();
  SidebusScScreenCast* skeleton = SIDEBUS_SC_SCREEN_CAST(self);
  sidebus_sc_screen_cast_set_version(skeleton, self->version);
  self->host_properties = new HostProperties(
      context, kInterface, {{"AvailableSourceTypes", "u"}, {"AvailableCursorModes", "u"}},
      [skeleton](const std::string& name, GVariant* value) {
        if (name == "AvailableSourceTypes") sidebus_sc_screen_cast_set_available_source_types(skeleton, g_variant_get_uint32(value));
        if (name == "AvailableCursorModes") sidebus_sc_screen_cast_set_available_cursor_modes(skeleton, g_variant_get_uint32(value));
      });
  const HostOffer offer = host_offer(self);
  sidebus_sc_screen_cast_set_available_source_types(skeleton, offer.source_types);
  sidebus_sc_screen_cast_set_available_cursor_modes(skeleton, offer.cursor_modes);
  sidebus_context_log(context, G_LOG_LEVEL_DEBUG,
                      "host ScreenCast version %u (source types 0x%x, cursor modes 0x%x); the guest sees %u; "
                      "PipeWire remotes %s",
                      host_version, offer.source_types, offer.cursor_modes, self->version,
                      sidebus::plugins::pipewire_route(context) == sidebus::plugins::PipeWireRoute::kNative
                          ? "pass as they are"
                      : sidebus::plugins::pipewire_route(context) == sidebus::plugins::PipeWireRoute::kRelay
                          ? "are relayed to the guest's PipeWire"
                          : "cannot reach the guest on this link");
  if (sidebus_context_export(context, G_DBUS_INTERFACE_SKELETON(self), error)) return TRUE;
  sc_portal_stop(portal);  // a failed start() is never stopped
  return FALSE;
}

static void sc_portal_stop(SidebusPortal* portal) {
  ScPortal* self = SC_PORTAL(portal);
  delete std::exchange(self->host_properties, nullptr);
  delete std::exchange(self->route, nullptr);
  self->context = nullptr;
}

// No keys besides "enabled": declaring none still has a typo in the
// section (portals.<name>.enabeld) stop the broker with the place to fix.
static const SidebusConfigKey* sc_portal_get_config_schema(SidebusPortal*, gsize* n_keys) {
  *n_keys = 0;
  return nullptr;
}

static void sc_portal_portal_iface_init(SidebusPortalInterface* iface) {
  iface->start = sc_portal_start;
  iface->stop = sc_portal_stop;
  iface->get_config_schema = sc_portal_get_config_schema;
}

static void sc_portal_init(ScPortal* self) {
  g_signal_connect(self, "handle-create-session", G_CALLBACK(handle_create_session), nullptr);
  g_signal_connect(self, "handle-select-sources", G_CALLBACK(handle_select_sources), nullptr);
  g_signal_connect(self, "handle-start", G_CALLBACK(handle_start), nullptr);
  g_signal_connect(self, "handle-open-pipewire-remote", G_CALLBACK(handle_open_pipewire_remote), nullptr);
}
static void sc_portal_class_init(ScPortalClass*) {}
static void sc_portal_class_finalize(ScPortalClass*) {}

extern "C" G_MODULE_EXPORT void peas_register_types(PeasObjectModule* module) {
  sc_portal_register_type(G_TYPE_MODULE(module));
  peas_object_module_register_extension_type(module, SIDEBUS_TYPE_PORTAL, SC_TYPE_PORTAL);
}
