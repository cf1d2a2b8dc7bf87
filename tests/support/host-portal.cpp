// SPDX-License-Identifier: LGPL-2.1-or-later
// host-portal.cpp — HostPortal (host-portal.hpp): the host bus, the test
// backend and xdg-desktop-portal, started in that order and each waited for;
// the backend's control interface.
#include "support/host-portal.hpp"

#include <signal.h>
#include <sys/mount.h>
#include <unistd.h>

#include "sidebus-config.h"
#include "support/dbus-daemon.hpp"

namespace sidebus::test {
namespace {

constexpr char kBackendBusName[] = "org.freedesktop.impl.portal.Test";
constexpr char kBackendPath[] = "/dev/sidebus/test/Backend";
constexpr char kBackendInterface[] = "dev.sidebus.test.Backend";

}  // namespace

HostPortal::HostPortal(HostPortalOptions options) : dir_("sidebus-test-host") {
  const char* portal_program = g_getenv("SIDEBUS_XDG_DESKTOP_PORTAL");
  if (!portal_program) portal_program = "/usr/libexec/xdg-desktop-portal";

  // Shared by the bus (and so what it activates), the backend and the portal.
  std::map<std::string, std::string> env = {
      {"XDG_RUNTIME_DIR", dir_.make_dir("runtime", 0700)},
      {"XDG_DATA_HOME", dir_.make_dir("data")},
      {"XDG_CONFIG_HOME", dir_.make_dir("config")},
      {"XDG_CACHE_HOME", dir_.make_dir("cache")},
      {"HOME", dir_.make_dir("home")},
      {"DBUS_SYSTEM_BUS_ADDRESS", "unix:path=" + (dir_ / "no-system-bus")},
      {"GSETTINGS_BACKEND", "memory"},
      {"GIO_USE_VFS", "local"},
  };
  for (const auto& [path, contents] : options.files) dir_.write_file(path, contents);
  dir_.write_file("services/org.freedesktop.impl.portal.PermissionStore.service",
                  "[D-BUS Service]\n"
                  "Name=org.freedesktop.impl.portal.PermissionStore\n"
                  "Exec=" XDG_PERMISSION_STORE "\n");
  bus_ = start_dbus_daemon(dir_, "host-bus", bus_config(dir_ / "bus", dir_ / "services", ""), std::nullopt, env,
                           &bus_address_);
  env["DBUS_SESSION_BUS_ADDRESS"] = bus_address_;
  connection_ = connect(bus_address_);
  for (const auto& [name, value] : options.env) env[name] = value;

  backend_ = std::make_unique<ChildProcess>(SpawnOptions{
      .name = "test-backend",
      .argv = {env_path("SIDEBUS_TEST_BACKEND")},
      .env = env,
      .cwd = dir_.path(),
      .stdout_path = dir_ / "test-backend.log",
  });
  if (!wait_until([&] { return name_has_owner(connection(), kBackendBusName) || !backend_->running(); }) ||
      !backend_->running())
    throw FixtureError("the test backend did not come up (its log is printed below)");

  if (options.document_portal) {
    document_portal_ = std::make_unique<ChildProcess>(SpawnOptions{
        .name = "xdg-document-portal",
        .argv = {XDG_DOCUMENT_PORTAL, "--verbose"},
        .env = env,
        .unset_env = {"G_DEBUG"},
        .cwd = dir_.path(),
        .stdout_path = dir_ / "xdg-document-portal.log",
    });
    if (!wait_until([&] {
          return name_has_owner(connection(), "org.freedesktop.portal.Documents") || !document_portal_->running();
        }) ||
        !document_portal_->running())
      throw FixtureError("the host's xdg-document-portal did not come up (is /dev/fuse there? its log is below)");
  }

  env["XDG_DESKTOP_PORTAL_DIR"] = env_path("SIDEBUS_SOURCE_ROOT") + "/tests/portals";
  env["XDG_CURRENT_DESKTOP"] = "sidebus-test";
  portal_program_ = portal_program;
  portal_env_ = env;
  start_portal();
}

void HostPortal::start_portal() {
  portal_ = std::make_unique<ChildProcess>(SpawnOptions{
      .name = "xdg-desktop-portal",
      .argv = {portal_program_, "--verbose"},
      .env = portal_env_,
      .unset_env = {"G_DEBUG"},  // its own criticals are not what we test
      .cwd = dir_.path(),
      .stdout_path = dir_ / "xdg-desktop-portal.log",
  });
  if (!wait_until([&] { return name_has_owner(connection(), kPortalBusName) || !portal_->running(); }) ||
      !portal_->running())
    throw FixtureError("xdg-desktop-portal did not come up (its log is printed below)");
}

void HostPortal::kill_portal() {
  portal_->send_signal(SIGKILL);
  portal_->wait_for_exit(10s);
  if (!wait_until([&] { return !name_has_owner(connection(), kPortalBusName); }))
    throw FixtureError("xdg-desktop-portal's name stayed on the host bus after it was killed");
}

ChildProcess& HostPortal::document_portal() {
  if (!document_portal_) throw FixtureError("this host runs no document portal (HostPortalOptions::document_portal)");
  return *document_portal_;
}

HostPortal::~HostPortal() {
  portal_.reset();
  if (document_portal_) {
    document_portal_.reset();
    // A document portal that did not get to unmount leaves its mount behind.
    if (geteuid() == 0) (void)umount2(document_mount().c_str(), MNT_DETACH);
  }
  backend_.reset();
  if (connection_) g_dbus_connection_close_sync(connection_.get(), nullptr, nullptr);
  connection_.reset();
  bus_.reset();
}

VariantPtr HostPortal::call_backend(const char* method, GVariant* parameters, const GVariantType* reply_type) {
  g_autoptr(GError) error = nullptr;
  GVariant* reply = g_dbus_connection_call_sync(connection(), kBackendBusName, kBackendPath, kBackendInterface,
                                                method, parameters, reply_type, G_DBUS_CALL_FLAGS_NONE, 10000,
                                                nullptr, &error);
  if (!reply) throw FixtureError(std::string("test backend ") + method + ": " + error->message);
  return VariantPtr(reply);
}

void HostPortal::set_reply(const char* method, guint32 response, GVariant* results, guint32 delay_ms) {
  g_autoptr(GVariant) owned_results =
      g_variant_ref_sink(results ? results : g_variant_new_array(G_VARIANT_TYPE("{sv}"), nullptr, 0));
  call_backend("SetReply", g_variant_new("(su@a{sv}u)", method, response, owned_results, delay_ms),
               nullptr);
}

void HostPortal::set_reply(const char* method, guint32 response, const std::string& results) {
  VariantPtr parsed = parse("a{sv}", results);
  set_reply(method, response, parsed.get());
}

std::vector<BackendCall> HostPortal::backend_calls() {
  VariantPtr reply = call_backend("GetCalls", nullptr, G_VARIANT_TYPE("(aa{sv})"));
  g_autoptr(GVariant) records = g_variant_get_child_value(reply.get(), 0);
  std::vector<BackendCall> calls;
  for (gsize i = 0; i < g_variant_n_children(records); i++) {
    BackendCall call;
    call.record.reset(g_variant_get_child_value(records, i));
    GVariant* record = call.record.get();
    call.method = lookup_string_or(record, "method");
    call.handle = lookup_string_or(record, "handle");
    call.app_id = lookup_string_or(record, "app_id");
    call.parent_window = lookup_string_or(record, "parent_window");
    call.title = lookup_string_or(record, "title");
    GVariant* options = g_variant_lookup_value(record, "options", G_VARIANT_TYPE_VARDICT);
    call.options.reset(options ? options : g_variant_ref_sink(g_variant_new_array(G_VARIANT_TYPE("{sv}"), nullptr, 0)));
    gboolean flag = FALSE;
    if (g_variant_lookup(record, "closed", "b", &flag)) call.closed = flag;
    if (g_variant_lookup(record, "answered", "b", &flag)) call.answered = flag;
    g_variant_lookup(record, "response", "u", &call.response);
    calls.push_back(std::move(call));
  }
  return calls;
}

bool HostPortal::wait_for_backend_calls(size_t count, Timeout timeout) {
  return wait_until([&] { return backend_calls().size() >= count; }, timeout);
}

void HostPortal::reset_backend() { call_backend("Reset", nullptr, nullptr); }

}  // namespace sidebus::test
