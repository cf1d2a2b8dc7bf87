// SPDX-License-Identifier: LGPL-2.1-or-later
// test-out-of-tree-plugin.cpp — what a distribution and a third-party plugin
// author get from `meson install`: the broker, the agent, the public header,
// the sidebus-plugin pkg-config file and the data files; and a plugin built
// with nothing but those (tests/echo-plugin/echo.c compiled by `cc` with
// `pkg-config --cflags sidebus-plugin`) loads into the broker and serves the
// guest.
#include <gio/gunixfdlist.h>
#include <glib/gstdio.h>

#include <cstring>
#include <string>
#include <vector>

#include "support/dbus.hpp"
#include "support/files.hpp"
#include "support/topology.hpp"
#include "support/variant.hpp"

using namespace sidebus::test;

namespace {

// Runs @argv to completion; returns its stdout, fails the test on error.
std::string run(const std::vector<std::string>& argv, const std::vector<std::string>& env = {}) {
  std::vector<const char*> args;
  for (const std::string& arg : argv) args.push_back(arg.c_str());
  args.push_back(nullptr);
  g_auto(GStrv) envp = g_get_environ();
  for (const std::string& assignment : env) {
    auto equals = assignment.find('=');
    envp = g_environ_setenv(envp, assignment.substr(0, equals).c_str(), assignment.substr(equals + 1).c_str(), TRUE);
  }
  g_autofree char* out = nullptr;
  g_autofree char* err = nullptr;
  int wait_status = 0;
  g_autoptr(GError) error = nullptr;
  g_spawn_sync(nullptr, const_cast<char**>(args.data()), envp, G_SPAWN_SEARCH_PATH, nullptr, nullptr, &out, &err,
               &wait_status, &error);
  g_assert_no_error(error);
  if (!g_spawn_check_wait_status(wait_status, nullptr)) {
    g_test_message("%s failed:\n%s\n%s", argv[0].c_str(), out, err);
    g_assert_not_reached();
  }
  return g_strstrip(out);
}

// The single file called @name below @dir, or "" if there is none.
std::string find_file(const std::string& dir, const std::string& name) {
  std::string out = run({"find", dir, "-name", name});
  return out.substr(0, out.find('\n'));
}

// What the echo plugin does with the plugin API 2, from a guest client: an
// fd in a reply, a session, a forwarded call, a host signal passed on.
void exercise_api(Topology& topology) {
  GDBusConnection* guest = topology.guest().connection();
  auto call = [&](const char* method, GVariant* parameters, GUnixFDList** fds = nullptr) {
    g_autoptr(GError) error = nullptr;
    GVariant* reply = g_dbus_connection_call_with_unix_fd_list_sync(
        guest, kPortalBusName, kPortalPath, "dev.sidebus.test.Echo", method, parameters, nullptr,
        G_DBUS_CALL_FLAGS_NONE, 10000, nullptr, fds, nullptr, &error);
    g_assert_no_error(error);
    return VariantPtr(reply);
  };
  // OpenPipe: the plugin's pipe reaches the guest, its bytes with it.
  GUnixFDList* fds = nullptr;
  VariantPtr pipe = call("OpenPipe", g_variant_new("(s)", "from the host"), &fds);
  g_autoptr(GUnixFDList) owned_fds = fds;
  g_assert_cmpint(g_unix_fd_list_get_length(fds), ==, 1);
  int fd = g_unix_fd_list_get(fds, 0, nullptr);
  char buffer[64] = {};
  g_assert_cmpint(read(fd, buffer, sizeof buffer - 1), ==, 13);
  close(fd);
  g_assert_cmpstr(buffer, ==, "from the host");
  // HostVersion: forwarded to the host portal, its answer unchanged.
  VariantPtr version = call("HostVersion", g_variant_new("(s)", "org.freedesktop.portal.FileChooser"));
  g_autoptr(GVariant) value = nullptr;
  g_variant_get(version.get(), "(v)", &value);
  g_assert_cmpuint(g_variant_get_uint32(value), ==, 3);  // xdg-desktop-portal 1.16
  // CreateMonitor / SessionState: a session of the caller's.
  topology.host().set_reply("CreateMonitor", kResponseSuccess, nullptr);
  VariantPtr options = parse("a{sv}", "{'handle_token': <'oot'>, 'session_handle_token': <'oot'>}");
  PortalRequest monitor(guest, kPortalBusName, "dev.sidebus.test.Echo", "CreateMonitor",
                        g_variant_new("(@a{sv})", options.get()));
  g_assert_no_error(monitor.error());
  g_assert_true(monitor.wait_for_response());
  g_assert_cmpuint(monitor.response(), ==, kResponseSuccess);
  std::string session = lookup_string(monitor.results(), "session_handle");
  VariantPtr state = call("SessionState", g_variant_new("(o)", session.c_str()));
  const char* text;
  g_variant_get(state.get(), "(&s)", &text);
  g_assert_cmpstr(text, ==, "active");
  // WatchSettings: a host signal, passed on to this client only.
  std::vector<std::string> seen;
  guint subscription = g_dbus_connection_signal_subscribe(
      guest, nullptr, "dev.sidebus.test.Echo", "SettingSeen", kPortalPath, nullptr, G_DBUS_SIGNAL_FLAGS_NONE,
      [](GDBusConnection*, const char*, const char*, const char*, const char*, GVariant* parameters, gpointer data) {
        const char *namespace_, *key;
        g_variant_get(parameters, "(&s&s)", &namespace_, &key);
        static_cast<std::vector<std::string>*>(data)->push_back(std::string(namespace_) + " " + key);
      },
      &seen, nullptr);
  call("WatchSettings", nullptr);
  topology.host().call_backend("SetSetting", g_variant_new("(ssv)", "org.freedesktop.appearance", "color-scheme",
                                                           g_variant_new_uint32(2)),
                               nullptr);
  g_assert_true(wait_until([&] { return !seen.empty(); }));
  g_assert_cmpstr(seen[0].c_str(), ==, "org.freedesktop.appearance color-scheme");
  g_dbus_connection_signal_unsubscribe(guest, subscription);
}

void test_install_and_build_plugin() {
  TempDir dir("sidebus-test-install");
  std::string root = dir.make_dir("root");
  run({"meson", "install", "-C", env_path("SIDEBUS_BUILD_ROOT"), "--destdir", root, "--no-rebuild", "--quiet"});

  // What a distribution packages.
  for (const char* name : {"sidebus-broker", "sidebus-agent", "sidebusctl", "sidebus-plugin.h", "sidebus-plugin.pc",
                           "10-defaults.json", "dev.sidebus.portal.Desktop.service", "sidebus-broker@.service",
                           "sidebus-broker@.socket", "sidebus-agent.service", "LICENSE", "NEWS", "configuration.md"})
    if (find_file(root, name).empty()) g_error("meson install did not install %s", name);
  // Every portal plugin this build has (-Dplugins): plugins/<name>/lib<name>.so.
  g_autoptr(GDir) built = g_dir_open(env_path("SIDEBUS_PLUGIN_DIR").c_str(), 0, nullptr);
  int plugins = 0;
  while (const char* entry = built != nullptr ? g_dir_read_name(built) : nullptr) {
    std::string library = "lib" + std::string(entry) + ".so";
    if (!g_file_test((env_path("SIDEBUS_PLUGIN_DIR") + "/" + entry + "/" + library).c_str(), G_FILE_TEST_EXISTS))
      continue;
    plugins++;
    for (const std::string& name : {std::string(entry) + ".plugin", library})
      if (find_file(root, name).empty()) g_error("meson install did not install %s", name.c_str());
  }
  g_assert_cmpint(plugins, >=, 2);  // filechooser and openuri at least
  // Never xdg-desktop-portal's own activation file: a guest package holding
  // it could not be installed beside xdg-desktop-portal.
  g_assert_true(find_file(root, "org.freedesktop.portal.Desktop.service").empty());

  // A third party's build: only the installed header and pkg-config file.
  std::string pc = find_file(root, "sidebus-plugin.pc");
  // The prefix moved under the DESTDIR, as a relocated package would have it
  // (only ours: --define-variable would move GLib's prefix too).
  std::optional<std::string> pc_text = read_file(pc);
  g_assert_true(pc_text.has_value());
  std::string relocated = *pc_text;
  g_assert_true(relocated.starts_with("prefix="));
  relocated.insert(strlen("prefix="), root);
  dir.write_file("pkgconfig/sidebus-plugin.pc", relocated);
  std::vector<std::string> pkg_env = {"PKG_CONFIG_PATH=" + (dir / "pkgconfig")};
  std::string cflags = run({"pkg-config", "--cflags", "sidebus-plugin"}, pkg_env);
  g_assert_true(cflags.find(root) != std::string::npos);  // the installed header, not the source tree
  std::string libs = run({"pkg-config", "--libs", "sidebus-plugin"}, pkg_env);
  std::string plugin_dir = dir.make_dir("plugins");
  std::string source = env_path("SIDEBUS_SOURCE_ROOT") + "/tests/echo-plugin/echo.c";
  std::vector<std::string> cc = {"cc", "-shared", "-fPIC", "-Wall", "-Werror", "-o", plugin_dir + "/libecho.so",
                                 source};
  for (const std::string& flags : {cflags, libs}) {
    g_auto(GStrv) words = g_strsplit(flags.c_str(), " ", -1);
    for (char** word = words; *word != nullptr; word++)
      if (**word != '\0') cc.push_back(*word);
  }
  run(cc);
  std::optional<std::string> keyfile = read_file(env_path("SIDEBUS_SOURCE_ROOT") + "/tests/echo-plugin/echo.plugin");
  g_assert_true(keyfile.has_value());
  dir.write_file("plugins/echo.plugin", *keyfile);

  TopologyOptions options;
  options.broker.plugin_dir = plugin_dir;
  options.broker.config = {{"50-echo.json", R"({"portals":{"echo":{"enabled":true}}})"}};
  Topology topology(options);
  auto output = topology.guest().run_as_guest({"gdbus", "call", "--session", "--dest",
                                               "org.freedesktop.portal.Desktop", "--object-path",
                                               "/org/freedesktop/portal/desktop", "--method",
                                               "dev.sidebus.test.Echo.Echo", "built out of tree"});
  g_assert_true(output.status.success());
  g_assert_true(output.out.find("built out of tree") != std::string::npos);
  exercise_api(topology);
}

void test_plugin_for_other_api_version_refused() {
  TempDir dir("sidebus-test-api");
  std::string plugin_dir = dir.make_dir("plugins");
  std::optional<std::string> keyfile = read_file(env_path("SIDEBUS_TEST_PLUGIN_DIR") + "/echo.plugin");
  g_assert_true(keyfile.has_value());
  std::string text = *keyfile;
  text.replace(text.find("X-Sidebus-API=2"), strlen("X-Sidebus-API=2"), "X-Sidebus-API=99");
  dir.write_file("plugins/echo.plugin", text);
  g_assert_true(g_file_test((env_path("SIDEBUS_TEST_PLUGIN_DIR") + "/libecho.so").c_str(), G_FILE_TEST_EXISTS));
  run({"cp", env_path("SIDEBUS_TEST_PLUGIN_DIR") + "/libecho.so", plugin_dir});

  HostPortal host;
  BrokerOptions options;
  options.host_bus_address = host.bus_address();
  options.plugin_dir = plugin_dir;
  options.config = {{"50-echo.json", R"({"portals":{"echo":{"enabled":true}}})"}};
  options.wait_for_listen = false;
  Broker broker(options);
  auto status = broker.wait_for_exit(20s);
  g_assert_true(status.has_value());
  g_assert_false(status->success());
  g_assert_true(broker.process().log().find("X-Sidebus-API=99") != std::string::npos);
}

}  // namespace

int main(int argc, char** argv) {
  g_test_init(&argc, &argv, nullptr);
  add_test("/plugin/out-of-tree/install-and-build", test_install_and_build_plugin);
  add_test("/plugin/out-of-tree/other-api-version-refused", test_plugin_for_other_api_version_refused);
  return g_test_run();
}
