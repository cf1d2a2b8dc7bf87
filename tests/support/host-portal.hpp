// SPDX-License-Identifier: LGPL-2.1-or-later
// host-portal.hpp — the host side of every integration test: a host session
// bus with the real /usr/libexec/xdg-desktop-portal and the project's test
// backend (tests/backend), which plays the user: a test tells it what to
// answer (set_reply) and reads what the portal asked it (backend_calls).
//
// The bus is a dbus-daemon of the test's own (dbus-daemon.hpp);
// xdg-desktop-portal runs with XDG_DESKTOP_PORTAL_DIR = tests/portals,
// XDG_CURRENT_DESKTOP = sidebus-test, XDG_* and HOME in the temp dir, no
// system bus. xdg-permission-store is D-Bus activatable on it (OpenURI keeps
// choices there); the document portal is not needed: xdg-desktop-portal only
// registers documents for sandboxed callers, and the broker is a host client.
// The constructor returns when org.freedesktop.portal.Desktop is owned.
// With HostPortalOptions::document_portal the host's xdg-document-portal runs
// too (its own FUSE mount in the temp dir), as on a desktop where
// FileTransfer is the host document portal's.
// $SIDEBUS_XDG_DESKTOP_PORTAL overrides the daemon's path. The video portals
// also need a PipeWire daemon: host-pipewire.hpp.
#pragma once

#include <gio/gio.h>

#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "support/dbus.hpp"
#include "support/process.hpp"
#include "support/temp-dir.hpp"

namespace sidebus::test {

// Backend-only: never answer until the request is closed (then answer 2).
inline constexpr guint32 kResponseWaitForClose = 0xFFFFFFFF;
// Backend-only: fail the backend call with a D-Bus error.
inline constexpr guint32 kResponseDBusError = 0xFFFFFFFE;

// One call the test backend received (dev.sidebus.test.Backend.GetCalls).
struct BackendCall {
  std::string method;         // "OpenFile", "SaveFile", "SaveFiles", "ChooseApplication", "UpdateChoices", …
  std::string handle;
  std::string app_id;
  std::string parent_window;
  std::string title;          // FileChooser methods
  VariantPtr options;         // a{sv} as xdg-desktop-portal sent it (empty for UpdateChoices)
  bool closed = false;        // Request.Close reached the backend
  bool answered = false;
  guint32 response = 0;       // when answered
  VariantPtr record;          // the whole a{sv} record (e.g. "choices" for AppChooser)
};

struct HostPortalOptions {
  // Written under the temp dir before anything starts, path → contents.
  // XDG_DATA_HOME is "data", so "data/applications/<id>.desktop" gives
  // OpenURI an application to offer and launch (GLib finds handlers for a
  // type only through "data/applications/mimeinfo.cache": write it too).
  std::vector<std::pair<std::string, std::string>> files;
  // Extra environment of the test backend and xdg-desktop-portal (on top of
  // the support library's), e.g. HostPipeWire::env().
  std::map<std::string, std::string> env;
  // Also run the host's real xdg-document-portal (and through it the
  // permission store) on the host bus, its FUSE mount at
  // runtime/doc (document_mount()): what FileTransfer needs. The
  // constructor returns once org.freedesktop.portal.Documents is owned.
  bool document_portal = false;
};

class HostPortal {
 public:
  explicit HostPortal(HostPortalOptions options = {});
  ~HostPortal();
  HostPortal(const HostPortal&) = delete;
  HostPortal& operator=(const HostPortal&) = delete;

  const std::string& bus_address() const { return bus_address_; }
  GDBusConnection* connection() const { return connection_.get(); }  // the test's own, borrowed
  const TempDir& dir() const { return dir_; }
  ChildProcess& portal() { return *portal_; }
  // SIGKILL to xdg-desktop-portal, until its name left the bus (a host
  // portal crashing); start_portal() brings a new one up, as activation would.
  void kill_portal();
  void start_portal();
  ChildProcess& backend() { return *backend_; }
  // With HostPortalOptions::document_portal: the host document portal and
  // its mount (<dir>/runtime/doc), as a host app sees them.
  ChildProcess& document_portal();
  std::string document_mount() const { return dir_ / "runtime/doc"; }

  // Every later call of backend @method ("OpenFile", …) answers @response
  // with @results (a{sv}, floating is fine; NULL: empty) after @delay_ms.
  void set_reply(const char* method, guint32 response, GVariant* results = nullptr, guint32 delay_ms = 0);
  // The same with @results as GVariant text.
  void set_reply(const char* method, guint32 response, const std::string& results);
  std::vector<BackendCall> backend_calls();
  bool wait_for_backend_calls(size_t count, Timeout timeout = kDefaultTimeout);
  void reset_backend();
  // Any control method of the test backend (dev.sidebus.test.Backend):
  // the reply (FixtureError on failure).
  VariantPtr call_backend(const char* method, GVariant* parameters, const GVariantType* reply_type = nullptr);

 private:
  TempDir dir_;
  std::unique_ptr<ChildProcess> bus_;
  std::string bus_address_;
  GObjectPtr<GDBusConnection> connection_;
  std::unique_ptr<ChildProcess> backend_;
  std::unique_ptr<ChildProcess> portal_;
  std::unique_ptr<ChildProcess> document_portal_;
  std::string portal_program_;
  std::map<std::string, std::string> portal_env_;
};

}  // namespace sidebus::test
