// SPDX-License-Identifier: LGPL-2.1-or-later
// test-host-identity.cpp — each VM is its own app on the host
// (core/broker/host-identity.hpp), with real parts: a real systemd user
// manager on the host bus (support/systemd-user.hpp), the broker's real
// StartTransientUnit, and the host's real xdg-desktop-portal reading the
// broker's unit from /proc/PID/cgroup through libsystemd.
//
// What a user notices:
//  - the host's dialogs are asked for by the VM's app id, not '' (the
//    backend's app_id), and their titles name the VM (on every version);
//  - what the host remembers per app stays with that VM: OpenURI's app
//    choice (the permission store's "desktop-used-apps" table: after three
//    identical choices the host stops asking *that app*) made in one VM does
//    not decide for another; with broker.host_identity "off" it does — the
//    problem this solves;
//    the host's Wallpaper permission granted to one VM is asked again for
//    another, each question naming its VM;
//  - "required" fails clearly where there is no user manager.
// Tests that need the host portal to read app ids from units first check
// that it does, with a control process in an app scope of its own
// (systemd-run --scope): where it does not (xdg-desktop-portal older than
// 1.14 or built without libsystemd) they skip, saying so. Where no user
// manager can run, they skip with SystemdUser::unavailable().
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <optional>
#include <string>
#include <vector>

#include "broker/app-unit-name.hpp"
#include "support/assert.hpp"
#include "support/files.hpp"
#include "support/systemd-user.hpp"
#include "support/vm.hpp"

using namespace sidebus::test;

namespace {

constexpr char kSystemd[] = "org.freedesktop.systemd1";
constexpr char kSystemdPath[] = "/org/freedesktop/systemd1";
constexpr char kManager[] = "org.freedesktop.systemd1.Manager";

std::string unit_of(pid_t pid) {
  return sidebus::unit_name::unit_of_cgroup(read_file("/proc/" + std::to_string(pid) + "/cgroup").value_or(""));
}

std::string expected_scope(const std::string& app_id, pid_t pid) { return sidebus::unit_name::app_scope(app_id, pid); }

// The unit the user manager says @pid belongs to ("" if none).
std::string manager_unit_of(GDBusConnection* bus, pid_t pid) {
  g_autoptr(GVariant) path = g_dbus_connection_call_sync(bus, kSystemd, kSystemdPath, kManager, "GetUnitByPID",
                                                         g_variant_new("(u)", guint32(pid)), G_VARIANT_TYPE("(o)"),
                                                         G_DBUS_CALL_FLAGS_NONE, 5000, nullptr, nullptr);
  if (path == nullptr) return "";
  const char* object = nullptr;
  g_variant_get(path, "(&o)", &object);
  g_autoptr(GVariant) id =
      g_dbus_connection_call_sync(bus, kSystemd, object, "org.freedesktop.DBus.Properties", "Get",
                                  g_variant_new("(ss)", "org.freedesktop.systemd1.Unit", "Id"), G_VARIANT_TYPE("(v)"),
                                  G_DBUS_CALL_FLAGS_NONE, 5000, nullptr, nullptr);
  if (id == nullptr) return "";
  g_autoptr(GVariant) value = nullptr;
  g_variant_get(id, "(v)", &value);
  return g_variant_get_string(value, nullptr);
}

bool manager_has_unit(GDBusConnection* bus, const std::string& unit) {
  g_autoptr(GVariant) path =
      g_dbus_connection_call_sync(bus, kSystemd, kSystemdPath, kManager, "GetUnit", g_variant_new("(s)", unit.c_str()),
                                  G_VARIANT_TYPE("(o)"), G_DBUS_CALL_FLAGS_NONE, 5000, nullptr, nullptr);
  return path != nullptr;
}

// Why a test cannot run here, "" if it can: a user manager, and a host portal
// that reads app ids from units (checked once: a control client in
// app-sidebustest-dev.sidebus.Control-<pid>.scope asks for a file chooser).
std::string identity_unavailable(HostPortal& host, SystemdUser& systemd) {
  static std::optional<std::string> why;
  if (why) return *why;
  host.set_reply("OpenFile", kResponseCancelled);
  std::string unit = "app-sidebustest-dev.sidebus.Control-" + std::to_string(getpid()) + ".scope";
  SpawnOptions control{
      .name = "control client",
      .argv = {"systemd-run", "--user", "--scope", "--quiet", "--unit=" + unit, "gdbus", "call", "--session", "--dest",
               "org.freedesktop.portal.Desktop", "--object-path", "/org/freedesktop/portal/desktop", "--method",
               "org.freedesktop.portal.FileChooser.OpenFile", "", "control", "{}"},
      .env = systemd.client_env(),
      .stdout_path = host.dir() / "control-client.log",
  };
  ChildProcess client(control);
  std::optional<ExitStatus> status = client.wait_for_exit(20s);
  if (!status || !status->success()) throw FixtureError("the control client failed: " + client.log());
  host.wait_for_backend_calls(1);
  std::vector<BackendCall> calls = host.backend_calls();
  if (calls.empty()) throw FixtureError("the control client's call did not reach the backend");
  host.reset_backend();
  if (calls.back().app_id == "dev.sidebus.Control")
    why = "";
  else
    why = "the host's xdg-desktop-portal gives a client in " + unit + " the app id '" + calls.back().app_id +
          "': it does not read app ids from systemd units (older than 1.14, or built without libsystemd)";
  return *why;
}

#define SKIP_UNLESS(reason)                        \
  do {                                             \
    std::string why_ = (reason);                   \
    if (!why_.empty()) {                           \
      g_test_skip(why_.c_str());                   \
      g_printerr("# skipped: %s\n", why_.c_str()); \
      return;                                      \
    }                                              \
  } while (0)

VmOptions vm_named(const std::string& name, HostPortal& host,
                   std::vector<std::pair<std::string, std::string>> config = {}) {
  VmOptions options;
  options.name = name;
  options.portals = {"filechooser", "openuri"};
  options.config = std::move(config);
  options.shared_host = &host;
  return options;
}

// One FileChooser.OpenFile from the guest, cancelled by the "user"; the
// backend's record of it.
BackendCall pick_file(Vm& vm, const char* title = "Pick a file") {
  vm.host().reset_backend();
  vm.host().set_reply("OpenFile", kResponseCancelled);
  auto request = vm.file_chooser("OpenFile", "{'handle_token': <'" + unique_token() + "'>}", title);
  g_assert_no_error(request->error());
  g_assert_true(request->wait_for_response());
  std::vector<BackendCall> calls = vm.host().backend_calls();
  g_assert_cmpuint(calls.size(), ==, 1);
  return std::move(calls[0]);
}

// ---- the scope -----------------------------------------------------------------

// The broker runs in app-sidebus-<app id>-<pid>.scope of the user manager,
// its private bus helpers with it; the host portal names the VM's dialogs
// after it; the scope goes with the broker.
void test_broker_in_its_scope() {
  SKIP_UNLESS(SystemdUser::unavailable());
  HostPortal host;
  SystemdUser systemd(host.bus_address());
  std::string scope;
  {
    Vm vm(vm_named("vm-alpha", host));
    pid_t broker = vm.broker().process().pid();
    scope = expected_scope("dev.sidebus.vm.vm-alpha", broker);
    assert_str_eq(scope, "app-sidebus-dev.sidebus.vm.vm\\x2dalpha-" + std::to_string(broker) + ".scope");
    assert_str_eq(unit_of(broker), scope);
    assert_str_eq(manager_unit_of(host.connection(), broker), scope);
    std::vector<pid_t> helpers = processes_referencing(vm.broker().runtime_dir());
    g_assert_cmpuint(helpers.size(), >=, 3);  // the broker, dbus-daemon, the document portal
    for (pid_t helper : helpers) assert_str_eq(unit_of(helper), scope);
    g_assert_true(vm.broker().process().log().find("host identity: running in " + scope) != std::string::npos);

    SKIP_UNLESS(identity_unavailable(host, systemd));
    BackendCall call = pick_file(vm, "Export the report");
    assert_str_eq(call.app_id, "dev.sidebus.vm.vm-alpha");
    assert_str_eq(call.title, "[vm-alpha] Export the report");
  }
  // Its processes gone, the scope goes too.
  g_assert_true(wait_until([&] { return !manager_has_unit(host.connection(), scope); }));
}

// broker.host_app_id names the VM toward the host; "off" leaves the broker
// where it was started, an unnamed host client.
void test_configured_and_off() {
  SKIP_UNLESS(SystemdUser::unavailable());
  HostPortal host;
  SystemdUser systemd(host.bus_address());
  Vm named(vm_named("vm-named", host, {{"60-id.json", R"({"broker": {"host_app_id": "org.example.Vm1"}})"}}));
  Vm off(vm_named("vm-off", host, {{"60-id.json", R"({"broker": {"host_identity": "off"}})"}}));
  assert_str_eq(unit_of(named.broker().process().pid()),
                expected_scope("org.example.Vm1", named.broker().process().pid()));
  std::string off_unit = unit_of(off.broker().process().pid());
  g_assert_false(g_str_has_prefix(off_unit.c_str(), "app-"));
  g_assert_true(off.broker().process().log().find("host identity: off (broker.host_identity)") != std::string::npos);

  SKIP_UNLESS(identity_unavailable(host, systemd));
  assert_str_eq(pick_file(named).app_id, "org.example.Vm1");
  assert_str_eq(pick_file(off).app_id, "");
}

// Without a user manager: "auto" goes on as app id '' and says so;
// "required" refuses to start, naming the key and what to do.
void test_without_user_manager() {
  HostPortal host;
  Vm automatic(vm_named("vm-auto", host));
  g_assert_true(automatic.broker().process().log().find(
                    "host identity: no systemd user manager (org.freedesktop.systemd1) is on the host bus") !=
                std::string::npos);
  assert_str_eq(pick_file(automatic).app_id, "");

  BrokerOptions options;
  options.host_bus_address = host.bus_address();
  options.vm_name = "vm-required";
  options.config = {{"60-id.json", R"({"broker": {"host_identity": "required"}})"}};
  options.wait_for_listen = false;
  Broker required(options);
  std::optional<ExitStatus> status = required.wait_for_exit(20s);
  g_assert_true(status.has_value());
  g_assert_false(status->success());
  std::string log = required.process().log();
  g_assert_true(log.find("broker.host_identity is \"required\", but no systemd user manager "
                         "(org.freedesktop.systemd1) is on the host bus; run the broker in a systemd user session, "
                         "or set broker.host_identity to \"auto\" or \"off\"") != std::string::npos);
  // It failed before starting anything.
  g_assert_true(processes_referencing(required.runtime_dir()).empty());
}

// ---- what the host remembers per app -------------------------------------------

// Two host applications for the scheme sidebus-grant (so the host portal
// asks which one), each recording its launches.
struct GrantApps {
  TempDir dir{"sidebus-test-grant-apps"};
  HostPortalOptions host_options() {
    HostPortalOptions options;
    std::string cache = "[MIME Cache]\nx-scheme-handler/sidebus-grant=";
    for (const char* app : {"one", "two"}) {
      std::string script =
          dir.write_file(std::string("app-") + app + ".sh", "#!/bin/sh\necho \"$1\" >> \"" + (dir / app) + ".log\"\n");
      chmod(script.c_str(), 0755);
      options.files.emplace_back(std::string("data/applications/sidebus-test-app-") + app + ".desktop",
                                 "[Desktop Entry]\nType=Application\nName=app " + std::string(app) +
                                     "\nExec=" + script +
                                     " %u\nMimeType=x-scheme-handler/sidebus-grant;\n"
                                     "NoDisplay=true\n");
      cache += std::string("sidebus-test-app-") + app + ".desktop;";
    }
    options.files.emplace_back("data/applications/mimeinfo.cache", cache + "\n");
    return options;
  }
  size_t launches(const char* app) const {
    std::string log = read_file(dir / (std::string(app) + ".log")).value_or("");
    return size_t(std::count(log.begin(), log.end(), '\n'));
  }
};

constexpr char kGrantConfig[] = R"({"portals": {"openuri": {"schemes": ["sidebus-grant"]}}})";

// A link opened in @vm: whether the host asked (a ChooseApplication reached
// the backend) before app two ran.
bool open_link_was_asked(Vm& vm, GrantApps& apps, int serial) {
  vm.host().reset_backend();
  vm.host().set_reply("ChooseApplication", kResponseSuccess, "{'choice': <'sidebus-test-app-two'>}");
  size_t before = apps.launches("two");
  auto request = vm.open_uri("sidebus-grant:link-" + std::to_string(serial));
  g_assert_no_error(request->error());
  g_assert_true(request->wait_for_response());
  g_assert_cmpuint(request->response(), ==, kResponseSuccess);
  g_assert_true(wait_until([&] { return apps.launches("two") == before + 1; }));
  std::vector<BackendCall> calls = vm.host().backend_calls();
  for (const BackendCall& call : calls) assert_str_eq(call.method, "ChooseApplication");
  return !calls.empty();
}

// The app ids the host's permission store keeps OpenURI choices for.
std::vector<std::string> choices_stored_for(HostPortal& host) {
  g_autoptr(GError) error = nullptr;
  g_autoptr(GVariant) reply = g_dbus_connection_call_sync(
      host.connection(), "org.freedesktop.impl.portal.PermissionStore", "/org/freedesktop/impl/portal/PermissionStore",
      "org.freedesktop.impl.portal.PermissionStore", "Lookup",
      g_variant_new("(ss)", "desktop-used-apps", "x-scheme-handler/sidebus-grant"), G_VARIANT_TYPE("(a{sas}v)"),
      G_DBUS_CALL_FLAGS_NONE, 5000, nullptr, &error);
  g_assert_no_error(error);
  g_autoptr(GVariant) permissions = g_variant_get_child_value(reply, 0);
  std::vector<std::string> app_ids;
  for (gsize i = 0; i < g_variant_n_children(permissions); i++) {
    const char* app_id = nullptr;
    g_variant_get_child(permissions, i, "{&s@as}", &app_id, nullptr);
    app_ids.emplace_back(app_id);
  }
  std::sort(app_ids.begin(), app_ids.end());
  return app_ids;
}

// Three times the user answers VM alpha's question with app two: the host
// stops asking alpha. VM beta is still asked: alpha's answers are not beta's.
void test_two_vms_never_share_a_choice() {
  SKIP_UNLESS(SystemdUser::unavailable());
  GrantApps apps;
  HostPortal host(apps.host_options());
  SystemdUser systemd(host.bus_address());
  SKIP_UNLESS(identity_unavailable(host, systemd));
  Vm alpha(vm_named("alpha", host, {{"60-openuri.json", kGrantConfig}}));
  Vm beta(vm_named("beta", host, {{"60-openuri.json", kGrantConfig}}));

  for (int i = 0; i < 3; i++) g_assert_true(open_link_was_asked(alpha, apps, i));
  g_assert_false(open_link_was_asked(alpha, apps, 3));  // remembered for alpha
  std::vector<std::string> stored = choices_stored_for(host);
  g_assert_cmpuint(stored.size(), ==, 1);
  assert_str_eq(stored[0], "dev.sidebus.vm.alpha");
  g_assert_true(open_link_was_asked(beta, apps, 4));  // beta is asked
  g_assert_cmpuint(host.backend_calls().size(), ==, 1);
  assert_str_eq(host.backend_calls()[0].app_id, "dev.sidebus.vm.beta");
  stored = choices_stored_for(host);
  g_assert_cmpuint(stored.size(), ==, 2);
  assert_str_eq(stored[1], "dev.sidebus.vm.beta");
}

// The same with broker.host_identity "off": the host keeps alpha's answers
// under '' — every host application's and every VM's — and beta is never
// asked. What each VM having its own app id prevents.
void test_without_identity_vms_share_choices() {
  GrantApps apps;
  HostPortal host(apps.host_options());
  const char* off = R"({"broker": {"host_identity": "off"}})";
  Vm alpha(vm_named("alpha", host, {{"60-openuri.json", kGrantConfig}, {"61-off.json", off}}));
  Vm beta(vm_named("beta", host, {{"60-openuri.json", kGrantConfig}, {"61-off.json", off}}));
  for (int i = 0; i < 3; i++) g_assert_true(open_link_was_asked(alpha, apps, i));
  g_assert_false(open_link_was_asked(beta, apps, 3));
  std::vector<std::string> stored = choices_stored_for(host);
  g_assert_cmpuint(stored.size(), ==, 1);
  assert_str_eq(stored[0], "");
}

// The host's Wallpaper permission ("Allow … to Set Backgrounds?", asked
// when a VM sets a picture without a preview) is one VM's: granted to alpha,
// it is asked again for beta, and each question names its VM — through the
// desktop file named after the VM's app id, which the host portal reads for
// the name (without one, 1.16 asks "Allow (null) …": docs/broker.md).
void test_two_vms_never_share_a_wallpaper_grant() {
  SKIP_UNLESS(SystemdUser::unavailable());
  if (!g_file_test((env_path("SIDEBUS_PLUGIN_DIR") + "/wallpaper").c_str(), G_FILE_TEST_IS_DIR))
    SKIP_UNLESS(std::string("the wallpaper plugin is not built (-Dplugins)"));
  HostPortalOptions host_options;
  for (const char* vm : {"alpha", "beta"})
    host_options.files.emplace_back(
        std::string("data/applications/dev.sidebus.vm.") + vm + ".desktop",
        "[Desktop Entry]\nType=Application\nName=VM " + std::string(vm) + "\nExec=/bin/false\nNoDisplay=true\n");
  HostPortal host(host_options);
  SystemdUser systemd(host.bus_address());
  SKIP_UNLESS(identity_unavailable(host, systemd));
  const std::pair<std::string, std::string> no_preview = {
      "60-wallpaper.json", R"({"portals": {"wallpaper": {"enabled": true, "always_show_preview": false}}})"};
  Vm alpha(vm_named("alpha", host, {no_preview}));
  Vm beta(vm_named("beta", host, {no_preview}));
  HostFiles files;
  std::string picture = files.add("sunset.png", "\x89PNG\r\n\x1a\n a sunset");

  // Sets the picture from @vm without a preview; the Access questions the
  // host asked for it.
  auto set_background = [&](Vm& vm) {
    std::string document = vm.share_document(picture);
    host.reset_backend();
    host.set_reply("AccessDialog", kResponseSuccess);
    host.set_reply("SetWallpaperURI", kResponseSuccess);
    VariantPtr options = with_handle_token("{'show-preview': <false>}");
    PortalRequest request(vm.guest().connection(), kPortalBusName, "org.freedesktop.portal.Wallpaper",
                          "SetWallpaperURI", g_variant_new("(ss@a{sv})", "", uri_for(document).c_str(), options.get()));
    g_assert_no_error(request.error());
    g_assert_true(request.wait_for_response());
    g_assert_cmpuint(request.response(), ==, kResponseSuccess);
    std::vector<BackendCall> asked;
    for (BackendCall& call : host.backend_calls())
      if (call.method == "AccessDialog") asked.push_back(std::move(call));
    return asked;
  };
  std::vector<BackendCall> asked = set_background(alpha);
  g_assert_cmpuint(asked.size(), ==, 1);
  assert_str_eq(asked[0].app_id, "dev.sidebus.vm.alpha");
  assert_str_eq(asked[0].title, "Allow VM alpha to Set Backgrounds?");
  g_assert_cmpuint(set_background(alpha).size(), ==, 0);  // granted to alpha
  asked = set_background(beta);
  g_assert_cmpuint(asked.size(), ==, 1);  // not to beta
  assert_str_eq(asked[0].app_id, "dev.sidebus.vm.beta");
  assert_str_eq(asked[0].title, "Allow VM beta to Set Backgrounds?");
}

// ---- dialog titles ---------------------------------------------------------------

// Every dialog a guest can open on the host says which VM asks, on every
// host portal version: FileChooser's three methods carry the title prefix.
// (OpenURI's chooser has no title from the guest: the host portal names the
// application from its app id, which the scope gives it.)
void test_every_dialog_names_the_vm() {
  HostPortal host;
  Vm vm(vm_named("vm-titles", host));
  for (const char* method : {"OpenFile", "SaveFile", "SaveFiles"}) {
    host.reset_backend();
    host.set_reply(method, kResponseCancelled);
    auto request = vm.file_chooser(method, "{'handle_token': <'" + unique_token() + "'>}", "Where to?");
    g_assert_no_error(request->error());
    g_assert_true(request->wait_for_response());
    std::vector<BackendCall> calls = host.backend_calls();
    g_assert_cmpuint(calls.size(), ==, 1);
    assert_str_eq(calls[0].method, method);
    assert_str_eq(calls[0].title, "[vm-titles] Where to?");
  }
}

}  // namespace

int main(int argc, char** argv) {
  g_test_init(&argc, &argv, nullptr);
  add_test("/host-identity/broker-in-its-scope", test_broker_in_its_scope);
  add_test("/host-identity/configured-and-off", test_configured_and_off);
  add_test("/host-identity/without-user-manager", test_without_user_manager);
  add_test("/host-identity/two-vms-never-share-a-choice", test_two_vms_never_share_a_choice);
  add_test("/host-identity/without-identity-vms-share-choices", test_without_identity_vms_share_choices);
  add_test("/host-identity/two-vms-never-share-a-wallpaper-grant", test_two_vms_never_share_a_wallpaper_grant);
  add_test("/host-identity/every-dialog-names-the-vm", test_every_dialog_names_the_vm);
  return g_test_run();
}
