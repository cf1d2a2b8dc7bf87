// SPDX-License-Identifier: LGPL-2.1-or-later
// session.cpp — portal sessions across the VM boundary (see the Sessions
// part of sidebus-plugin.h).
//
// A session is reserved on its link when its CreateSession-style request is
// made (so its path is taken), becomes active when that request succeeds —
// the guest's org.freedesktop.portal.Session is exported then, the host
// session's Closed is routed to it and its caller is watched — and ends once,
// through end(), which decides per cause whether the guest hears Closed and
// whether the host session is closed.
#include "api/session.hpp"

#include <atomic>

#include "api/context.hpp"
#include "api/object-path.hpp"
#include "api/portal-link.hpp"
#include "portal-request.h"

namespace {

constexpr const char* kSessionInterface = "org.freedesktop.portal.Session";
constexpr guint32 kSessionVersion = 1;

std::atomic<guint64> next_host_token{1};

}  // namespace

struct _SidebusSession {
  gint refcount = 1;
  SidebusContext* context = nullptr;  // both null once ended
  sidebus::PortalLink* link = nullptr;
  std::string sender;
  std::string guest_path;
  std::string host_token;
  std::string host_path;  // once active (or predicted, for closing an abandoned one)
  bool active = false;
  SidebusGenSession* skeleton = nullptr;
  guint client_watch = 0;
  gpointer data = nullptr;
  GDestroyNotify data_destroy = nullptr;
  SidebusSessionClosedFunc closed_func = nullptr;
  gpointer closed_data = nullptr;
  GDestroyNotify closed_destroy = nullptr;
};

namespace {

struct EndHow {
  bool tell_guest;  // emit Closed to the guest (with @details)
  bool close_host;  // Session.Close on the host
};

void end(SidebusSession* session, EndHow how, GVariant* details) {
  g_autoptr(GVariant) owned_details =
      details != nullptr ? g_variant_ref_sink(details) : g_variant_ref_sink(g_variant_new("a{sv}", nullptr));
  sidebus::PortalLink* link = session->link;
  if (link == nullptr) return;
  sidebus_session_ref(session);
  if (session->active) {
    g_signal_handlers_disconnect_by_data(session->skeleton, session);
    if (how.tell_guest)
      g_dbus_connection_emit_signal(link->guest(), session->sender.c_str(), session->guest_path.c_str(),
                                    kSessionInterface, "Closed", g_variant_new("(@a{sv})", owned_details), nullptr);
    g_dbus_interface_skeleton_unexport(G_DBUS_INTERFACE_SKELETON(session->skeleton));
    link->unroute_host_session(session->host_path);
  }
  if (how.close_host && !session->host_path.empty())
    g_dbus_connection_call(link->host(), SIDEBUS_PORTAL_BUS_NAME, session->host_path.c_str(), kSessionInterface,
                           "Close", nullptr, nullptr, G_DBUS_CALL_FLAGS_NO_AUTO_START, -1, nullptr, nullptr, nullptr);
  if (session->client_watch != 0) link->clients().unwatch(session->client_watch);
  session->client_watch = 0;
  bool was_active = session->active;
  SidebusContext* context = session->context;
  session->active = false;
  session->link = nullptr;
  session->context = nullptr;
  link->remove_session(session);  // drops the link's reference
  if (was_active)
    sidebus_context_log(context, G_LOG_LEVEL_DEBUG, "session %s ended", session->guest_path.c_str());
  if (session->closed_func != nullptr) session->closed_func(session, session->closed_data);
  if (session->closed_destroy != nullptr) std::exchange(session->closed_destroy, nullptr)(session->closed_data);
  session->closed_func = nullptr;
  if (session->data_destroy != nullptr) std::exchange(session->data_destroy, nullptr)(session->data);
  session->data = nullptr;
  sidebus_session_unref(session);
}

gboolean on_guest_close(SidebusGenSession* skeleton, GDBusMethodInvocation* invocation, gpointer user_data) {
  auto* session = static_cast<SidebusSession*>(user_data);
  if (!sidebus::reject_unless_owner(session->context, invocation, session->sender, session->guest_path)) return TRUE;
  sidebus_gen_session_complete_close(skeleton, invocation);
  end(session, {.tell_guest = false, .close_host = true}, nullptr);
  return TRUE;
}

}  // namespace

namespace sidebus::session {

SidebusSession* create(SidebusContext* context, const std::string& sender, const std::string& token,
                       GError** error) {
  PortalLink* link = context->link;
  std::string guest_path = portal_object_path("session", sender.c_str(), token.c_str());
  if (link->has_session(guest_path)) {
    g_set_error(error, SIDEBUS_ERROR, SIDEBUS_ERROR_EXISTS, "a session with session_handle_token '%s' exists already",
                token.c_str());
    return nullptr;
  }
  if (link->active_sessions() >= link->options().max_sessions) {
    g_set_error(error, G_DBUS_ERROR, G_DBUS_ERROR_LIMITS_EXCEEDED,
                "too many portal sessions from this VM (limit %u, broker.max_sessions)", link->options().max_sessions);
    return nullptr;
  }
  auto* session = new _SidebusSession();
  session->context = context;
  session->link = link;
  session->sender = sender;
  session->guest_path = guest_path;
  session->host_token = "sidebus" + std::to_string(next_host_token.fetch_add(1));
  session->host_path = portal_object_path("session", g_dbus_connection_get_unique_name(link->host()),
                                          session->host_token.c_str());
  session->skeleton = sidebus_gen_session_skeleton_new();
  sidebus_gen_session_set_version(session->skeleton, kSessionVersion);
  link->add_session(session);  // the link's reference
  return session;  // borrowed by the request, which takes its own reference
}

const char* host_token(SidebusSession* session) { return session->host_token.c_str(); }

void activate(SidebusSession* session, const std::string& host_path) {
  PortalLink* link = session->link;
  if (link == nullptr || session->active) return;
  g_autoptr(GError) error = nullptr;
  if (!g_dbus_interface_skeleton_export(G_DBUS_INTERFACE_SKELETON(session->skeleton), link->guest(),
                                        session->guest_path.c_str(), &error)) {
    sidebus_context_log(session->context, G_LOG_LEVEL_WARNING, "cannot export the session %s: %s",
                        session->guest_path.c_str(), error->message);
    session->host_path = host_path;
    end(session, {.tell_guest = false, .close_host = true}, nullptr);
    return;
  }
  session->active = true;
  session->host_path = host_path;
  g_signal_connect(session->skeleton, "handle-close", G_CALLBACK(on_guest_close), session);
  link->route_host_session(host_path, session);
  session->client_watch = link->clients().watch(session->sender, [session](const std::string&) {
    session->client_watch = 0;
    end(session, {.tell_guest = false, .close_host = true}, nullptr);
  });
  sidebus_context_log(session->context, G_LOG_LEVEL_DEBUG, "session %s started (host %s)",
                      session->guest_path.c_str(), host_path.c_str());
}

void abandon(SidebusSession* session) {
  if (session->active) return;
  end(session, {.tell_guest = false, .close_host = true}, nullptr);
}

void on_host_closed(SidebusSession* session, GVariant* parameters) {
  g_autoptr(GVariant) details = nullptr;
  if (g_variant_is_of_type(parameters, G_VARIANT_TYPE("(a{sv})"))) g_variant_get(parameters, "(@a{sv})", &details);
  end(session, {.tell_guest = true, .close_host = false}, g_steal_pointer(&details));
}

void on_host_gone(SidebusSession* session) { end(session, {.tell_guest = true, .close_host = false}, nullptr); }

void on_link_gone(SidebusSession* session) { end(session, {.tell_guest = false, .close_host = true}, nullptr); }

void on_portals_restart(SidebusSession* session) { end(session, {.tell_guest = true, .close_host = true}, nullptr); }

}  // namespace sidebus::session

extern "C" {

SidebusSession* sidebus_context_lookup_session(SidebusContext* context, GDBusMethodInvocation* invocation,
                                               const char* session_handle, GError** error) {
  SidebusSession* session =
      context->link != nullptr && session_handle != nullptr ? context->link->find_session(session_handle) : nullptr;
  if (session == nullptr || !session->active) {
    g_set_error(error, SIDEBUS_ERROR, SIDEBUS_ERROR_NOT_FOUND, "no session %s", session_handle ? session_handle : "");
    return nullptr;
  }
  if (session->sender != g_dbus_method_invocation_get_sender(invocation)) {
    g_set_error(error, SIDEBUS_ERROR, SIDEBUS_ERROR_NOT_ALLOWED, "the session %s belongs to another client",
                session_handle);
    return nullptr;
  }
  return session;
}

SidebusSession* sidebus_session_ref(SidebusSession* session) {
  g_atomic_int_inc(&session->refcount);
  return session;
}

void sidebus_session_unref(SidebusSession* session) {
  if (!g_atomic_int_dec_and_test(&session->refcount)) return;
  if (session->data_destroy != nullptr) session->data_destroy(session->data);
  if (session->closed_destroy != nullptr) session->closed_destroy(session->closed_data);
  g_clear_object(&session->skeleton);
  delete session;
}

const char* sidebus_session_get_guest_path(SidebusSession* session) { return session->guest_path.c_str(); }
const char* sidebus_session_get_host_path(SidebusSession* session) { return session->host_path.c_str(); }
const char* sidebus_session_get_sender(SidebusSession* session) { return session->sender.c_str(); }
SidebusContext* sidebus_session_get_context(SidebusSession* session) { return session->context; }
gboolean sidebus_session_is_active(SidebusSession* session) { return session->active; }

void sidebus_session_set_data(SidebusSession* session, gpointer data, GDestroyNotify destroy) {
  if (session->data_destroy != nullptr) std::exchange(session->data_destroy, nullptr)(session->data);
  session->data = data;
  session->data_destroy = destroy;
  if (session->link == nullptr && destroy != nullptr) {  // ended already: nothing will hold it
    std::exchange(session->data_destroy, nullptr)(data);
    session->data = nullptr;
  }
}

gpointer sidebus_session_get_data(SidebusSession* session) { return session->data; }

void sidebus_session_set_closed_func(SidebusSession* session, SidebusSessionClosedFunc func, gpointer user_data,
                                     GDestroyNotify destroy_notify) {
  if (session->closed_destroy != nullptr) std::exchange(session->closed_destroy, nullptr)(session->closed_data);
  session->closed_func = func;
  session->closed_data = user_data;
  session->closed_destroy = destroy_notify;
}

void sidebus_session_close(SidebusSession* session, GVariant* details) {
  end(session, {.tell_guest = true, .close_host = true}, details);
}

}  // extern "C"
