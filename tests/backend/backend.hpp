// SPDX-License-Identifier: LGPL-2.1-or-later
// backend.hpp — the shared core of sidebus-test-backend, the portal backend
// (org.freedesktop.impl.portal.*) that the real xdg-desktop-portal calls in
// the integration tests. Tests script its answers and read back what it was
// asked through dev.sidebus.test.Backend (see dev.sidebus.test.Backend.xml).
//
// Every portal method with a Request handle goes the same way, so it lives
// here once: record the call, export org.freedesktop.impl.portal.Request at
// the handle (so the portal's Close reaches us), answer as scripted. So do
// the org.freedesktop.impl.portal.Session objects of ScreenCast and Inhibit:
// exported at the session handle, their Close recorded, Closed emitted when a
// test asks (CloseSession). A portal file (file-chooser.cpp, screen-cast.cpp,
// …) only turns its method's arguments into a call record, says how its
// method answers (CallOptions) and adds what only it knows: results computed
// at answer time, its own control methods (connected on control()).
#pragma once

#include <gio/gio.h>

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "util/gobject-ptr.hpp"

namespace sidebus::test_backend {

// The bus name the .portal file in tests/portals names.
inline constexpr char kBusName[] = "org.freedesktop.impl.portal.Test";
inline constexpr char kPortalPath[] = "/org/freedesktop/portal/desktop";
inline constexpr char kControlPath[] = "/dev/sidebus/test/Backend";

// Responses: the portal's 0 (success) and 2 (other), and the special ones
// of SetReply.
inline constexpr guint32 kResponseSuccess = 0;
inline constexpr guint32 kResponseOther = 2;
inline constexpr guint32 kResponseWaitForClose = 0xFFFFFFFF;
inline constexpr guint32 kResponseDBusError = 0xFFFFFFFE;

using sidebus::GObjectPtr;
using sidebus::VariantPtr;

// What a backend method returns: (u response, a{sv} results) for most,
// (u response) for Wallpaper.SetWallpaperURI and Inhibit.CreateMonitor,
// nothing for Inhibit.Inhibit.
enum class ReplyShape { kResponseAndResults, kResponse, kNothing };

struct CallOptions {
  ReplyShape shape = ReplyShape::kResponseAndResults;
  // The Request stays exported after the answer until it is closed
  // (Inhibit: the inhibition lasts as long as the Request).
  bool request_outlives_answer = false;
  // At answer time (not for D-Bus errors): the results to send, given the
  // response and the scripted results (borrowed, never null). Unset: the
  // scripted results as they are.
  std::function<VariantPtr(guint32 response, GVariant* scripted)> results;
};

class Backend {
 public:
  explicit Backend(GDBusConnection* connection);
  ~Backend();
  Backend(const Backend&) = delete;
  Backend& operator=(const Backend&) = delete;

  // A portal method call with a Request @handle: records @arguments (a{sv},
  // floating is fine), exports the Request at @handle and answers
  // @invocation as scripted for @method, in @options' shape.
  void handle_call(GDBusMethodInvocation* invocation, const char* method, const char* handle, GVariant* arguments,
                   CallOptions options = {});
  // A call that needs no scripted answer (UpdateChoices): only recorded.
  void record_call(const char* method, GVariant* arguments);
  // The response scripted for @method (2 if none): for methods without a
  // Request that can only succeed or fail.
  guint32 scripted_response(const char* method) const;

  // Exports org.freedesktop.impl.portal.Session at @session_handle.
  // @on_closed runs once, when the session ends: the portal closed it
  // (Session.Close, recorded as method "Session.Close") or a test did
  // (CloseSession, which emits Closed first).
  bool export_session(const char* session_handle, std::function<void()> on_closed, GError** error);

  // The control interface (a TestControlBackend), for portals' own control
  // methods; and what Reset must also undo, by owner (a portal's state,
  // which removes its hooks when it goes).
  GDBusInterfaceSkeleton* control() const { return control_.get(); }
  void add_reset_hook(const void* owner, std::function<void()> hook) { reset_hooks_.emplace(owner, std::move(hook)); }
  void remove_reset_hooks(const void* owner) { reset_hooks_.erase(owner); }

 private:
  struct Reply {
    guint32 response = kResponseOther;
    VariantPtr results;  // a{sv}
    guint32 delay_ms = 0;
  };
  struct CallRecord {
    VariantPtr arguments;  // a{sv}: method, handle and the method's arguments
    std::vector<std::pair<std::string, VariantPtr>> extra;  // known at answer time: "results"
    bool closed = false;
    bool answered = false;
    guint32 response = 0;
  };
  struct Pending;
  struct Session;

  void answer(const std::string& handle, guint32 response, GVariant* results);
  void end_session(const std::string& session_handle, bool emit_closed);
  static gboolean on_delay_elapsed(gpointer user_data);
  static gboolean on_close(GDBusInterfaceSkeleton* request, GDBusMethodInvocation* invocation, gpointer user_data);
  static gboolean on_session_close(GDBusInterfaceSkeleton* session, GDBusMethodInvocation* invocation,
                                   gpointer user_data);
  static gboolean on_close_session(GDBusInterfaceSkeleton* control, GDBusMethodInvocation* invocation,
                                   const char* session_handle, gpointer user_data);
  static gboolean on_set_reply(GDBusInterfaceSkeleton* control, GDBusMethodInvocation* invocation, const char* method,
                               guint32 response, GVariant* results, guint32 delay_ms, gpointer user_data);
  static gboolean on_get_calls(GDBusInterfaceSkeleton* control, GDBusMethodInvocation* invocation, gpointer user_data);
  static gboolean on_reset(GDBusInterfaceSkeleton* control, GDBusMethodInvocation* invocation, gpointer user_data);

  GObjectPtr<GDBusConnection> connection_;
  GObjectPtr<GDBusInterfaceSkeleton> control_;
  std::map<std::string, Reply> replies_;                      // by method name
  std::vector<CallRecord> calls_;                             // oldest first
  std::map<std::string, std::unique_ptr<Pending>> pending_;   // by handle
  std::map<std::string, std::unique_ptr<Session>> sessions_;  // by session handle
  std::multimap<const void*, std::function<void()>> reset_hooks_;
};

// A portal's state that lives as long as its skeleton (g_object_set_data_full
// on it, see attach_state); its destructor disconnects what it connected.
template <typename State>
State* attach_state(GDBusInterfaceSkeleton* skeleton, std::unique_ptr<State> state) {
  State* raw = state.release();
  g_object_set_data_full(G_OBJECT(skeleton), "sidebus-test-backend-state", raw,
                         [](gpointer data) { delete static_cast<State*>(data); });
  return raw;
}

// Results helpers: whether a{sv} @dict has @key; @dict plus @key = @value
// (floating is fine) unless @dict has @key already (scripted results win).
bool has_key(GVariant* dict, const char* key);
VariantPtr with_default(GVariant* dict, const char* key, GVariant* value);

// Reads up to kMaxRecordedBytes of @fd from its start (regular files) or
// what is there to read now (other fds): what a test checks of the files the
// portals hand over (printed documents, attachments, wallpapers).
inline constexpr size_t kMaxRecordedBytes = 1 << 20;
VariantPtr read_fd_bytes(int fd);
// The same for a path (empty bytes if it cannot be opened).
VariantPtr read_file_bytes(const char* path);

// The portal interfaces, exported at kPortalPath; each returns its skeleton.
using PortalExport = GObjectPtr<GDBusInterfaceSkeleton> (*)(Backend& backend, GDBusConnection* connection,
                                                            GError** error);
GObjectPtr<GDBusInterfaceSkeleton> file_chooser_export(Backend& backend, GDBusConnection* connection, GError** error);
GObjectPtr<GDBusInterfaceSkeleton> app_chooser_export(Backend& backend, GDBusConnection* connection, GError** error);
GObjectPtr<GDBusInterfaceSkeleton> settings_export(Backend& backend, GDBusConnection* connection, GError** error);
GObjectPtr<GDBusInterfaceSkeleton> notification_export(Backend& backend, GDBusConnection* connection, GError** error);
GObjectPtr<GDBusInterfaceSkeleton> inhibit_export(Backend& backend, GDBusConnection* connection, GError** error);
GObjectPtr<GDBusInterfaceSkeleton> screenshot_export(Backend& backend, GDBusConnection* connection, GError** error);
GObjectPtr<GDBusInterfaceSkeleton> access_export(Backend& backend, GDBusConnection* connection, GError** error);
GObjectPtr<GDBusInterfaceSkeleton> screen_cast_export(Backend& backend, GDBusConnection* connection, GError** error);
GObjectPtr<GDBusInterfaceSkeleton> email_export(Backend& backend, GDBusConnection* connection, GError** error);
GObjectPtr<GDBusInterfaceSkeleton> print_export(Backend& backend, GDBusConnection* connection, GError** error);
GObjectPtr<GDBusInterfaceSkeleton> wallpaper_export(Backend& backend, GDBusConnection* connection, GError** error);

}  // namespace sidebus::test_backend
