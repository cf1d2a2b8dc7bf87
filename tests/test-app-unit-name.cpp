// SPDX-License-Identifier: LGPL-2.1-or-later
// test-app-unit-name.cpp — the unit names of the broker's host identity
// (core/broker/app-unit-name.hpp): systemd's escaping, the scope name, and
// the port of xdg-desktop-portal's two unit-name parsers, checked against
// the cases of xdg-desktop-portal's own test suite (tests/test-xdp-utils.c
// of 1.16.0 and 1.20.0; 1.16.1 already has the newer parser), then every scope name the broker makes for a range
// of VM names read back by both parsers; plus the configuration keys.
#include <glib/gstdio.h>
#include <unistd.h>

#include <string>

#include "broker/app-unit-name.hpp"
#include "broker/config.hpp"
#include "documents/app-id.hpp"

namespace un = sidebus::unit_name;
using un::XdpParser;

namespace {

void assert_eq(const std::string& actual, const std::string& expected, const char* what) {
  if (actual != expected) g_error("%s: got \"%s\", expected \"%s\"", what, actual.c_str(), expected.c_str());
}

void test_escape() {
  assert_eq(un::escape("dev.sidebus.vm.vm1"), "dev.sidebus.vm.vm1", "plain");
  assert_eq(un::escape("dev.sidebus.vm.my-vm"), "dev.sidebus.vm.my\\x2dvm", "dash");
  assert_eq(un::escape(".hidden"), "\\x2ehidden", "leading dot");
  assert_eq(un::escape("a/b c\\"), "a-b\\x20c\\x5c", "slash, space, backslash");
  assert_eq(un::escape("\xc3\xa9:_"), "\\xc3\\xa9:_", "bytes above ASCII");
}

struct ParseCase {
  const char* unit;
  const char* app_id_1_14;  // 1.14.0 – 1.16.0
  const char* app_id_1_17;  // 1.16.1, 1.17.0 and later
};

// xdg-desktop-portal's own cases, with what each generation's test expects.
void test_xdp_cases() {
  const ParseCase cases[] = {
      {"app-not-a-well-formed-unit-name", "", ""},
      {"app-gnome-org.gnome.Evolution\\x2dalarm\\x2dnotify-2437.scope", "org.gnome.Evolution-alarm-notify",
       "org.gnome.Evolution-alarm-notify"},
      {"app-gnome-org.gnome.Epiphany-182352.scope", "org.gnome.Epiphany", "org.gnome.Epiphany"},
      {"app-glib-spice\\x2dvdagent-1839.scope", "", "spice-vdagent"},
      {"app-KDE-org.kde.okular@12345.service", "org.kde.okular", "org.kde.okular"},
      {"app-firefox.service", "", "firefox"},
      {"app-org.kde.amarok.service", "org.kde.amarok", "org.kde.amarok"},
      {"app-gnome-org.gnome.SettingsDaemon.DiskUtilityNotify-autostart.service",
       "org.gnome.SettingsDaemon.DiskUtilityNotify", "org.gnome.SettingsDaemon.DiskUtilityNotify"},
      {"app-gnome-org.gnome.Terminal-92502.slice", "org.gnome.Terminal", "org.gnome.Terminal"},
      {"app-com.obsproject.Studio-d70acc38b5154a3a8b4a60accc4b15f4.scope", "com.obsproject.Studio",
       "com.obsproject.Studio"},
      {"app-firefox-jcfppqx.scope", "", "firefox"},
      {"app-gnome-firefox.service", "", "firefox"},
      // Not app units at all.
      {"sidebus-broker@vm1.service", "", ""},
      {"init.scope", "", ""},
      // A NUL escape fails systemd's unescaping: ''.
      {"app-sidebus-dev.sidebus.vm.a\\x00b-1.scope", "", ""},
  };
  for (const ParseCase& c : cases) {
    assert_eq(un::xdp_app_id(c.unit, XdpParser::k1_14), c.app_id_1_14, c.unit);
    assert_eq(un::xdp_app_id(c.unit, XdpParser::k1_17), c.app_id_1_17, c.unit);
  }
}

// Every VM's scope reads back as its app id in every xdg-desktop-portal that
// reads unit names at all (1.14.0–1.16.0 only ids of three or more elements).
void test_scopes_read_back() {
  const char* vm_names[] = {"vm1", "my-vm",           "win_11",           "a-b-c", "Fedora-40.x86_64",
                            "x.y", "org.example.App", "dev.sidebus.vm.z", "0",     "-leading-dash"};
  for (const char* vm_name : vm_names) {
    std::string app_id = sidebus::app_id_for_vm(vm_name);
    size_t elements = 1;
    for (char c : app_id) elements += c == '.';
    for (pid_t pid : {pid_t(1), pid_t(4194304)}) {
      std::string scope = un::app_scope(app_id, pid);
      g_assert_true(g_str_has_prefix(scope.c_str(), "app-sidebus-"));
      g_assert_true(g_str_has_suffix(scope.c_str(), ("-" + std::to_string(pid) + ".scope").c_str()));
      assert_eq(un::xdp_app_id(scope, XdpParser::k1_17), app_id, scope.c_str());
      assert_eq(un::xdp_app_id(scope, XdpParser::k1_14), elements >= 3 ? app_id : "", scope.c_str());
    }
  }
  // "x.y" and "org.example.App" have two and three elements.
  g_assert_true(un::xdp_app_id(un::app_scope("x.y", 7), XdpParser::k1_14).empty());
}

// Names systemd would refuse are never made.
void test_scope_length() {
  std::string longest_vm(sidebus::Config::kMaxVmNameLength, 'v');
  std::string app_id = sidebus::app_id_for_vm(longest_vm);
  std::string scope = un::app_scope(app_id, 4194304);
  g_assert_cmpuint(scope.size(), <=, un::kMaxUnitNameLength);
  assert_eq(un::xdp_app_id(scope, XdpParser::k1_17), app_id, "longest plain name");
  // Dashes escape to four bytes each: such a name no longer fits.
  std::string dashes = "dev.sidebus.vm." + std::string(60, '-');
  g_assert_true(un::app_scope(dashes, 1).empty());
}

void test_unit_of_cgroup() {
  // Hybrid hosts list both hierarchies; libsystemd reads the unified one.
  assert_eq(un::unit_of_cgroup("12:pids:/\n1:name=systemd:/user.slice/user-1000.slice/user@1000.service/"
                               "app.slice/legacy.scope\n0::/user.slice/user-1000.slice/user@1000.service/"
                               "app.slice/app-sidebus-dev.sidebus.vm.vm1-42.scope\n"),
            "app-sidebus-dev.sidebus.vm.vm1-42.scope", "hybrid");
  assert_eq(un::unit_of_cgroup("1:name=systemd:/user.slice/user-1000.slice/user@1000.service/app.slice/"
                               "app-x-1.scope\n0::/\n"),
            "app-x-1.scope", "legacy");
  assert_eq(un::unit_of_cgroup("0::/system.slice/sidebus-broker@vm1.service\n"), "sidebus-broker@vm1.service",
            "system service");
  assert_eq(un::unit_of_cgroup("0::/\n"), "", "no unit");
  // The real one parses (whatever this process is in).
  g_autofree char* own = nullptr;
  g_assert_true(g_file_get_contents("/proc/self/cgroup", &own, nullptr, nullptr));
  (void)un::unit_of_cgroup(own);
}

// broker.host_identity and broker.host_app_id: read, defaulted, refused with
// the file, position and key.
void test_config_keys() {
  g_autofree char* dir = g_dir_make_tmp("sidebus-test-identity-XXXXXX", nullptr);
  std::string path = std::string(dir) + "/50-identity.json";
  auto load = [&](const char* text, GError** error) {
    g_file_set_contents(path.c_str(), text, -1, nullptr);
    return sidebus::Config::load({dir}, "vm1", error);
  };
  g_autoptr(GError) error = nullptr;
  auto config = load("{}", &error);
  g_assert_no_error(error);
  g_assert_true(config->host_identity() == sidebus::HostIdentityMode::kAuto);
  g_assert_cmpstr(config->host_app_id().c_str(), ==, "");
  config = load(R"({"broker": {"host_identity": "required", "host_app_id": "org.example.Vm1"}})", &error);
  g_assert_no_error(error);
  g_assert_true(config->host_identity() == sidebus::HostIdentityMode::kRequired);
  g_assert_cmpstr(config->host_app_id().c_str(), ==, "org.example.Vm1");
  config = load(R"({"broker": {"host_identity": "off"}})", &error);
  g_assert_true(config->host_identity() == sidebus::HostIdentityMode::kOff);

  config = load(R"({"broker": {"host_identity": "yes"}})", &error);
  g_assert_null(config);
  g_assert_nonnull(strstr(error->message, "50-identity.json:1:"));
  g_assert_nonnull(strstr(error->message, "broker.host_identity"));
  g_assert_nonnull(strstr(error->message, "expected \"off\", \"auto\" or \"required\", got \"yes\""));
  g_clear_error(&error);
  config = load(R"({"broker": {"host_app_id": "not an id"}})", &error);
  g_assert_null(config);
  g_assert_nonnull(strstr(error->message, "broker.host_app_id"));
  g_assert_nonnull(strstr(error->message, "got \"not an id\""));
  g_unlink(path.c_str());
  g_rmdir(dir);
}

}  // namespace

int main(int argc, char** argv) {
  g_test_init(&argc, &argv, nullptr);
  g_test_add_func("/app-unit-name/escape", test_escape);
  g_test_add_func("/app-unit-name/xdp-cases", test_xdp_cases);
  g_test_add_func("/app-unit-name/scopes-read-back", test_scopes_read_back);
  g_test_add_func("/app-unit-name/scope-length", test_scope_length);
  g_test_add_func("/app-unit-name/unit-of-cgroup", test_unit_of_cgroup);
  g_test_add_func("/app-unit-name/config-keys", test_config_keys);
  return g_test_run();
}
