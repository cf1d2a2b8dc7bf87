// SPDX-License-Identifier: LGPL-2.1-or-later
// inhibit.cpp — org.freedesktop.portal.Inhibit for the guest: a VM's video
// player keeps the host from going idle or suspending, a VM's editor with
// unsaved work can hold up logout, and a VM's application can watch the
// host's session state (screensaver, "about to end") through a monitor.
//
// Every call is forwarded to the host's xdg-desktop-portal; what this file
// adds is the VM boundary:
//  - Inhibit: flags must be some of 1 (logout), 2 (user switch), 4 (suspend),
//    8 (idle) — 0 is refused too, the host portal would never answer it; the
//    reason (at most 256 characters, as the host portal checks) reaches the
//    host with the VM's name in front, so the host's "what is inhibiting"
//    list says which VM holds it. The host answers the request at once and
//    keeps it: the inhibition lasts until the request is closed. So does the
//    guest's: on success the guest gets its Response, and its request object
//    stays, until the guest closes it, its caller leaves the guest bus or the
//    VM's link goes — then the core closes the host request, which releases
//    the inhibition. (Each held inhibition counts as a pending request,
//    broker.max_pending_requests.)
//  - CreateMonitor: a session (the core's Session helper); the guest's
//    Response names its own session path.
//  - StateChanged: the host sends it to the broker for a host session; it is
//    passed on to the one guest client that owns that session (unicast, as
//    the host portal does), with the guest's session path.
//  - QueryEndResponse: only for the caller's own session (NotFound for an
//    unknown one, NotAllowed for another client's).
//  - window handles are the guest's and mean nothing on the host: "" is sent.
//  - version: min(host, 3).
#include <libpeas/peas.h>
#include <sidebus-plugin.h>

#include <cstring>
#include <map>
#include <memory>
#include <string>

#include "inhibit-dbus.h"
#include "portal-module.hpp"

namespace sidebus::inhibit {
namespace {

constexpr char kInterface[] = "org.freedesktop.portal.Inhibit";
// Version 2 added CreateMonitor and StateChanged, 3 QueryEndResponse.
constexpr guint32 kImplementedVersion = 3;
constexpr guint32 kAllFlags = 1 | 2 | 4 | 8;  // logout, user switch, suspend, idle
// xdg-desktop-portal refuses longer reasons (in characters).
constexpr glong kMaxReasonLength = 256;

struct GObjectUnref {
  void operator()(gpointer object) const { g_object_unref(object); }
};
template <typename T>
using GObjectPtr = std::unique_ptr<T, GObjectUnref>;

gboolean validate_reason(SidebusContext*, const char*, GVariant* value, GError** error) {
  glong length = g_utf8_strlen(g_variant_get_string(value, nullptr), -1);
  if (length <= kMaxReasonLength) return TRUE;
  g_set_error(error, SIDEBUS_ERROR, SIDEBUS_ERROR_INVALID_ARGUMENT, "the reason is %ld characters long, at most %ld",
              length, kMaxReasonLength);
  return FALSE;
}

const SidebusOption kInhibitOptions[] = {
    {"reason", "s", validate_reason},
};

class Inhibit {
 public:
  static std::unique_ptr<Inhibit> start(SidebusContext* context, GError** error);
  ~Inhibit();
  Inhibit(const Inhibit&) = delete;
  Inhibit& operator=(const Inhibit&) = delete;

 private:
  Inhibit(SidebusContext* context, guint32 version);

  static gboolean on_inhibit(SidebusInhibitGenInhibit*, GDBusMethodInvocation* invocation, const char* window,
                             guint32 flags, GVariant* options, gpointer user_data);
  static gboolean on_create_monitor(SidebusInhibitGenInhibit*, GDBusMethodInvocation* invocation, const char* window,
                                    GVariant* options, gpointer user_data);
  static gboolean on_query_end_response(SidebusInhibitGenInhibit*, GDBusMethodInvocation* invocation,
                                        const char* session_handle, gpointer user_data);
  static void on_inhibit_results(SidebusRequest* request, guint32 response, GVariant* results, gpointer user_data);
  static void on_monitor_results(SidebusRequest* request, guint32 response, GVariant* results, gpointer user_data);
  static void on_monitor_closed(SidebusSession* session, gpointer user_data);
  static void on_host_state_changed(SidebusContext* context, const char* object_path, const char* signal_name,
                                    GVariant* parameters, gpointer user_data);

  void reject(GDBusMethodInvocation* invocation, GError* error) { sidebus_context_reject(context_, invocation, error); }
  std::string host_reason(const char* guest_reason);

  SidebusContext* context_;
  GObjectPtr<SidebusInhibitGenInhibit> skeleton_;
  struct Monitor {
    SidebusSession* session;  // a reference
  };
  // Active monitors by host session path; dropped when the session ends
  // (the core ends every session before stop()).
  std::map<std::string, Monitor> monitors_;
};

std::unique_ptr<Inhibit> Inhibit::start(SidebusContext* context, GError** error) {
  guint32 host_version = sidebus_context_get_host_version(context, kInterface);
  if (host_version == 0) {
    g_set_error(error, SIDEBUS_ERROR, SIDEBUS_ERROR_NOT_SUPPORTED,
                "the host portal has no Inhibit (xdg-desktop-portal offers it only with an Inhibit backend)");
    return nullptr;
  }
  guint32 version = MIN(host_version, kImplementedVersion);
  std::unique_ptr<Inhibit> self(new Inhibit(context, version));
  if (!sidebus_context_export(context, G_DBUS_INTERFACE_SKELETON(self->skeleton_.get()), error)) return nullptr;
  sidebus_context_subscribe_host_signal(context, kInterface, "StateChanged", SIDEBUS_PORTAL_OBJECT_PATH,
                                        on_host_state_changed, self.get(), nullptr);
  sidebus_context_log(context, G_LOG_LEVEL_DEBUG, "Inhibit version %u (host %u)", version, host_version);
  return self;
}

Inhibit::Inhibit(SidebusContext* context, guint32 version)
    : context_(context), skeleton_(sidebus_inhibit_gen_inhibit_skeleton_new()) {
  sidebus_inhibit_gen_inhibit_set_version(skeleton_.get(), version);
  g_signal_connect(skeleton_.get(), "handle-inhibit", G_CALLBACK(on_inhibit), this);
  g_signal_connect(skeleton_.get(), "handle-create-monitor", G_CALLBACK(on_create_monitor), this);
  g_signal_connect(skeleton_.get(), "handle-query-end-response", G_CALLBACK(on_query_end_response), this);
}

Inhibit::~Inhibit() {
  g_signal_handlers_disconnect_by_data(skeleton_.get(), this);
  for (auto& [path, monitor] : monitors_) {
    sidebus_session_set_closed_func(monitor.session, nullptr, nullptr, nullptr);
    sidebus_session_unref(monitor.session);
  }
}

// The VM's name first, cut to what the host portal accepts.
std::string Inhibit::host_reason(const char* guest_reason) {
  g_autofree char* titled = sidebus_context_dialog_title(context_, guest_reason != nullptr ? guest_reason : "");
  std::string reason = titled;
  if (guest_reason == nullptr) reason.erase(reason.find_last_not_of(' ') + 1);
  if (g_utf8_strlen(reason.c_str(), -1) > kMaxReasonLength) {
    g_autofree char* cut = g_utf8_substring(reason.c_str(), 0, kMaxReasonLength);
    reason = cut;
  }
  return reason;
}

gboolean Inhibit::on_inhibit(SidebusInhibitGenInhibit*, GDBusMethodInvocation* invocation, const char*, guint32 flags,
                             GVariant* options, gpointer user_data) {
  auto* self = static_cast<Inhibit*>(user_data);
  if ((flags & ~kAllFlags) != 0 || flags == 0) {
    self->reject(invocation, g_error_new(SIDEBUS_ERROR, SIDEBUS_ERROR_INVALID_ARGUMENT,
                                         "invalid flags %u: a combination of 1 (logout), 2 (user switch), "
                                         "4 (suspend) and 8 (idle)",
                                         flags));
    return G_DBUS_METHOD_INVOCATION_HANDLED;
  }
  GError* error = nullptr;
  g_autoptr(GVariant) filtered =
      sidebus_filter_options(self->context_, options, kInhibitOptions, G_N_ELEMENTS(kInhibitOptions), &error);
  if (filtered == nullptr) {
    self->reject(invocation, error);
    return G_DBUS_METHOD_INVOCATION_HANDLED;
  }
  SidebusRequest* request = sidebus_request_new(self->context_, invocation, options, &error);
  if (request == nullptr) {
    self->reject(invocation, error);
    return G_DBUS_METHOD_INVOCATION_HANDLED;
  }
  const char* guest_reason = nullptr;
  g_variant_lookup(filtered, "reason", "&s", &guest_reason);
  std::string reason = self->host_reason(guest_reason);
  g_auto(GVariantBuilder) host_options = G_VARIANT_BUILDER_INIT(G_VARIANT_TYPE_VARDICT);
  if (!reason.empty()) g_variant_builder_add(&host_options, "{sv}", "reason", g_variant_new_string(reason.c_str()));
  sidebus_request_call_host(request, kInterface, "Inhibit",
                            g_variant_new("(su@a{sv})", "", flags, g_variant_builder_end(&host_options)),
                            on_inhibit_results, self);
  return G_DBUS_METHOD_INVOCATION_HANDLED;
}

// The host answered its request, and keeps it (and the inhibition) until it
// is closed. On success the guest gets its Response too, but its request is
// not retired: closing it, or its caller leaving, must still close the host
// request. (sidebus_request_respond() would retire it.) Any other answer
// ends both.
void Inhibit::on_inhibit_results(SidebusRequest* request, guint32 response, GVariant* results, gpointer user_data) {
  auto* self = static_cast<Inhibit*>(user_data);
  if (response != SIDEBUS_RESPONSE_SUCCESS) {
    sidebus_request_respond(request, response, results);
    return;
  }
  sidebus_context_log(self->context_, G_LOG_LEVEL_DEBUG, "inhibition %s held until %s closes it or leaves",
                      sidebus_request_get_guest_path(request), sidebus_request_get_sender(request));
  sidebus_context_emit_guest_signal(self->context_, sidebus_request_get_sender(request),
                                    sidebus_request_get_guest_path(request), "org.freedesktop.portal.Request",
                                    "Response", g_variant_new("(u@a{sv})", response, results));
}

gboolean Inhibit::on_create_monitor(SidebusInhibitGenInhibit*, GDBusMethodInvocation* invocation, const char*,
                                    GVariant* options, gpointer user_data) {
  auto* self = static_cast<Inhibit*>(user_data);
  GError* error = nullptr;
  // No options but the core's tokens: everything else is dropped.
  g_autoptr(GVariant) filtered = sidebus_filter_options(self->context_, options, nullptr, 0, &error);
  if (filtered == nullptr) {
    self->reject(invocation, error);
    return G_DBUS_METHOD_INVOCATION_HANDLED;
  }
  SidebusSession* session = nullptr;
  SidebusRequest* request = sidebus_request_new_with_session(self->context_, invocation, options, &session, &error);
  if (request == nullptr) {
    self->reject(invocation, error);
    return G_DBUS_METHOD_INVOCATION_HANDLED;
  }
  sidebus_request_call_host(request, kInterface, "CreateMonitor", g_variant_new("(s@a{sv})", "", filtered),
                            on_monitor_results, self);
  return G_DBUS_METHOD_INVOCATION_HANDLED;
}

void Inhibit::on_monitor_results(SidebusRequest* request, guint32 response, GVariant* results, gpointer user_data) {
  auto* self = static_cast<Inhibit*>(user_data);
  sidebus_request_respond(request, response, results);  // starts the session on success
  SidebusSession* session = sidebus_request_get_session(request);
  if (session == nullptr || !sidebus_session_is_active(session)) return;
  // The host's Session.Closed reaches the guest through the core.
  self->monitors_[sidebus_session_get_host_path(session)] = {sidebus_session_ref(session)};
  sidebus_session_set_closed_func(session, on_monitor_closed, self, nullptr);
  sidebus_context_log(self->context_, G_LOG_LEVEL_DEBUG, "monitor %s (host %s) of %s",
                      sidebus_session_get_guest_path(session), sidebus_session_get_host_path(session),
                      sidebus_session_get_sender(session));
}

void Inhibit::on_monitor_closed(SidebusSession* session, gpointer user_data) {
  auto* self = static_cast<Inhibit*>(user_data);
  auto found = self->monitors_.find(sidebus_session_get_host_path(session));
  if (found == self->monitors_.end() || found->second.session != session) return;
  self->monitors_.erase(found);
  sidebus_session_unref(session);  // the core holds its own while it ends it
}

void Inhibit::on_host_state_changed(SidebusContext* context, const char*, const char*, GVariant* parameters,
                                    gpointer user_data) {
  auto* self = static_cast<Inhibit*>(user_data);
  if (!g_variant_is_of_type(parameters, G_VARIANT_TYPE("(oa{sv})"))) return;
  const char* host_session;
  g_autoptr(GVariant) state = nullptr;
  g_variant_get(parameters, "(&o@a{sv})", &host_session, &state);
  auto found = self->monitors_.find(host_session);
  if (found == self->monitors_.end() || !sidebus_session_is_active(found->second.session)) return;
  SidebusSession* session = found->second.session;
  sidebus_context_emit_guest_signal(context, sidebus_session_get_sender(session), nullptr, kInterface, "StateChanged",
                                    g_variant_new("(o@a{sv})", sidebus_session_get_guest_path(session), state));
}

gboolean Inhibit::on_query_end_response(SidebusInhibitGenInhibit*, GDBusMethodInvocation* invocation,
                                        const char* session_handle, gpointer user_data) {
  auto* self = static_cast<Inhibit*>(user_data);
  GError* error = nullptr;
  SidebusSession* session = sidebus_context_lookup_session(self->context_, invocation, session_handle, &error);
  if (session == nullptr) {
    self->reject(invocation, error);
    return G_DBUS_METHOD_INVOCATION_HANDLED;
  }
  sidebus_context_forward_call(self->context_, invocation, kInterface, "QueryEndResponse",
                               g_variant_new("(o)", sidebus_session_get_host_path(session)), nullptr, nullptr, nullptr,
                               nullptr);
  return G_DBUS_METHOD_INVOCATION_HANDLED;
}

}  // namespace
}  // namespace sidebus::inhibit

// ---- The libpeas extension -------------------------------------------------

SIDEBUS_PORTAL_MODULE(SidebusInhibitPortal, sidebus_inhibit_portal, sidebus::inhibit::Inhibit,
                      std::span<const SidebusConfigKey>())
