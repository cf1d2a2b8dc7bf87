// backend.hpp — the shared core of sidebus-test-backend, the portal backend
// (org.freedesktop.impl.portal.*) that the real xdg-desktop-portal calls in
// the integration tests. Tests script its answers and read back what it was
// asked through dev.sidebus.test.Backend (see dev.sidebus.test.Backend.xml).
//
// Every portal method with a Request handle goes the same way, so it lives
// here once: record the call, export org.freedesktop.impl.portal.Request at
// the handle (so the portal's Close reaches us), answer as scripted. A portal
// file (file-chooser.cpp, app-chooser.cpp) only turns its method's arguments
// into a call record.
#pragma once

#include <gio/gio.h>

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

// Special responses for SetReply (besides 0, 1, 2).
inline constexpr guint32 kResponseWaitForClose = 0xFFFFFFFF;
inline constexpr guint32 kResponseDBusError = 0xFFFFFFFE;
inline constexpr guint32 kResponseOther = 2;

using sidebus::GObjectPtr;
using sidebus::VariantPtr;

class Backend {
 public:
  explicit Backend(GDBusConnection* connection);
  ~Backend();
  Backend(const Backend&) = delete;
  Backend& operator=(const Backend&) = delete;

  // A portal method call with a Request @handle: records @arguments (a{sv},
  // floating is fine), exports the Request at @handle and answers
  // @invocation with (u response, a{sv} results) as scripted for @method.
  void handle_call(GDBusMethodInvocation* invocation, const char* method, const char* handle, GVariant* arguments);
  // A call that needs no scripted answer (UpdateChoices): only recorded.
  void record_call(const char* method, GVariant* arguments);

 private:
  struct Reply {
    guint32 response = kResponseOther;
    VariantPtr results;  // a{sv}
    guint32 delay_ms = 0;
  };
  struct CallRecord {
    VariantPtr arguments;  // a{sv}: method, handle and the method's arguments
    bool closed = false;
    bool answered = false;
    guint32 response = 0;
  };
  struct Pending;

  void answer(const std::string& handle, guint32 response, GVariant* results);
  static gboolean on_delay_elapsed(gpointer user_data);
  static gboolean on_close(GDBusInterfaceSkeleton* request, GDBusMethodInvocation* invocation, gpointer user_data);
  static gboolean on_set_reply(GDBusInterfaceSkeleton* control, GDBusMethodInvocation* invocation, const char* method,
                               guint32 response, GVariant* results, guint32 delay_ms, gpointer user_data);
  static gboolean on_get_calls(GDBusInterfaceSkeleton* control, GDBusMethodInvocation* invocation, gpointer user_data);
  static gboolean on_reset(GDBusInterfaceSkeleton* control, GDBusMethodInvocation* invocation, gpointer user_data);

  GObjectPtr<GDBusConnection> connection_;
  GObjectPtr<GDBusInterfaceSkeleton> control_;
  std::map<std::string, Reply> replies_;                       // by method name
  std::vector<CallRecord> calls_;                              // oldest first
  std::map<std::string, std::unique_ptr<Pending>> pending_;    // by handle
};

// The portal interfaces, exported at kPortalPath; each returns its skeleton.
GObjectPtr<GDBusInterfaceSkeleton> file_chooser_export(Backend& backend, GDBusConnection* connection, GError** error);
GObjectPtr<GDBusInterfaceSkeleton> app_chooser_export(Backend& backend, GDBusConnection* connection, GError** error);

}  // namespace sidebus::test_backend
