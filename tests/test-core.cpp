// SPDX-License-Identifier: LGPL-2.1-or-later
// test-core.cpp — the broker, the agent and the link as a user sees them:
// the portal name appears on the guest bus, introspection shows exactly the
// enabled portals, configuration switches plugins, a bad file stops the
// start, two VMs stay apart, nothing outlives the broker, the agent comes
// back after a broker restart, uids need not match, and a byte-only link
// refuses fds cleanly. The echo test plugin (tests/echo-plugin) stands in
// for a portal here; real portals have their own tests.
#include <fcntl.h>
#include <glib/gstdio.h>
#include <gio/gunixfdlist.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "support/assert.hpp"
#include "support/topology.hpp"

using namespace sidebus::test;

namespace {

constexpr const char* kEcho = "dev.sidebus.test.Echo";
constexpr const char* kEnableEcho = R"({"portals":{"echo":{"enabled":true}}})";

// Broker options with the echo plugin's directory next to the real plugins.
BrokerOptions broker_with_echo(std::vector<std::pair<std::string, std::string>> config = {{"50-echo.json",
                                                                                            kEnableEcho}}) {
  BrokerOptions options;
  options.config = std::move(config);
  options.extra_args = {"--plugin-dir", env_path("SIDEBUS_TEST_PLUGIN_DIR")};
  return options;
}

// Calls @method of the echo portal on the guest bus (with @fds, if any);
// returns the string it answers or "error:<D-Bus error name>".
std::string call_echo(GDBusConnection* guest, const char* method, GVariant* parameters, GUnixFDList* fds = nullptr) {
  g_autoptr(GError) error = nullptr;
  g_autoptr(GVariant) reply = g_dbus_connection_call_with_unix_fd_list_sync(
      guest, kPortalBusName, kPortalPath, kEcho, method, parameters, G_VARIANT_TYPE("(s)"), G_DBUS_CALL_FLAGS_NONE,
      10000, fds, nullptr, nullptr, &error);
  if (reply == nullptr) {
    g_autofree char* name = g_dbus_error_get_remote_error(error);
    return std::string("error:") + (name != nullptr ? name : error->message);
  }
  const char* answer;
  g_variant_get(reply, "(&s)", &answer);
  return answer;
}

std::string guest_echo(GDBusConnection* guest, const char* text) {
  return call_echo(guest, "Echo", g_variant_new("(s)", text));
}

// The interface names at the portal object, except the standard ones.
std::vector<std::string> portal_interfaces(Topology& topology) {
  std::string xml = topology.guest_introspect();
  g_autoptr(GError) error = nullptr;
  g_autoptr(GDBusNodeInfo) node = g_dbus_node_info_new_for_xml(xml.c_str(), &error);
  g_assert_no_error(error);
  std::vector<std::string> names;
  for (GDBusInterfaceInfo** i = node->interfaces; i != nullptr && *i != nullptr; i++)
    if (!g_str_has_prefix((*i)->name, "org.freedesktop.DBus.")) names.emplace_back((*i)->name);
  std::sort(names.begin(), names.end());
  return names;
}

void test_name_owned_through_agent() {
  TopologyOptions options;
  options.broker = broker_with_echo();
  Topology topology(options);
  g_assert_true(name_has_owner(topology.guest().connection(), kPortalBusName));
  assert_str_eq(guest_echo(topology.guest().connection(), "hello from the guest"), "hello from the guest");
}

void test_introspection_shows_enabled_plugins() {
  {
    TopologyOptions options;
    options.broker = broker_with_echo();
    Topology topology(options);
    auto names = portal_interfaces(topology);
    g_assert_cmpuint(names.size(), ==, 1);
    g_assert_cmpstr(names[0].c_str(), ==, kEcho);
  }
  {
    TopologyOptions options;
    options.broker = broker_with_echo({{"50-echo.json", kEnableEcho},
                                       {"60-filechooser.json", R"({"portals":{"filechooser":{"enabled":true}}})"}});
    Topology topology(options);
    auto names = portal_interfaces(topology);
    g_assert_cmpuint(names.size(), ==, 2);
    g_assert_cmpstr(names[0].c_str(), ==, kEcho);
    g_assert_cmpstr(names[1].c_str(), ==, "org.freedesktop.portal.FileChooser");
  }
}

void test_config_disables_plugin() {
  // Enabled by one file, disabled again by a later one and re-enabled by the
  // per-VM file only for this VM's configuration section.
  TopologyOptions options;
  options.broker = broker_with_echo({{"50-echo.json", R"({"portals":{"echo":{"enabled":true,"greeting":"a"}}})"},
                                     {"90-off.json", R"({"portals":{"echo":{"enabled":false}}})"}});
  {
    Topology topology(options);
    g_assert_true(portal_interfaces(topology).empty());
    assert_str_eq(guest_echo(topology.guest().connection(), "x"), "error:org.freedesktop.DBus.Error.UnknownMethod");
  }
  options.broker.config.emplace_back("vm/testvm.json", R"({"portals":{"echo":{"enabled":true,"greeting":"b"}}})");
  Topology topology(options);
  assert_str_eq(call_echo(topology.guest().connection(), "GetConfig", nullptr), R"({"enabled":true,"greeting":"b"})");
}

void test_malformed_config_stops_start() {
  HostPortal host;
  BrokerOptions options = broker_with_echo({{"50-echo.json", "{\n  \"portals\": {\n    \"echo\": { \"enabled\": tru }\n}\n"}});
  options.host_bus_address = host.bus_address();
  options.wait_for_listen = false;
  Broker broker(options);
  auto status = broker.wait_for_exit(20s);
  g_assert_true(status.has_value());
  g_assert_false(status->success());
  std::string log = broker.process().log();
  std::string where = broker.config_dir() + "/50-echo.json:3:";
  g_test_message("broker said: %s", log.c_str());
  g_assert_true(log.find(where) != std::string::npos);
  // Nothing was started: no private bus, no mount.
  g_assert_true(mounts_under(broker.runtime_dir()).empty());
  g_assert_true(processes_referencing(broker.runtime_dir()).empty());
}

void test_two_vms_side_by_side() {
  TopologyOptions first_options;
  first_options.broker = broker_with_echo({{"50-echo.json", R"({"portals":{"echo":{"enabled":true,"vm":"one"}}})"}});
  first_options.broker.vm_name = "vm-one";
  TopologyOptions second_options;
  second_options.broker = broker_with_echo({{"50-echo.json", R"({"portals":{"echo":{"enabled":true,"vm":"two"}}})"}});
  second_options.broker.vm_name = "vm-two";
  Topology first(first_options);
  Topology second(second_options);

  auto config_of = [](Topology& topology) {
    return call_echo(topology.guest().connection(), "GetConfig", nullptr);
  };
  assert_str_eq(config_of(first), R"({"enabled":true,"vm":"one"})");
  assert_str_eq(config_of(second), R"({"enabled":true,"vm":"two"})");
  // Each VM has its own private bus and document mount.
  g_assert_true(is_mounted(first.broker().runtime_dir() + "/doc"));
  g_assert_true(is_mounted(second.broker().runtime_dir() + "/doc"));
  // Stopping one leaves the other serving.
  first.broker().stop();
  g_assert_true(wait_until([&] { return !name_has_owner(first.guest().connection(), kPortalBusName); }));
  assert_str_eq(guest_echo(second.guest().connection(), "still here"), "still here");
}

void test_broker_exit_leaves_nothing() {
  TopologyOptions options;
  options.broker = broker_with_echo();
  Topology topology(options);
  std::string runtime_dir = topology.broker().runtime_dir();
  g_assert_true(is_mounted(runtime_dir + "/doc"));
  g_assert_false(processes_referencing(runtime_dir).empty());  // the private bus and its helpers

  ExitStatus status = topology.broker().stop();
  g_assert_true(status.success());
  g_assert_true(mounts_under(runtime_dir).empty());
  g_assert_true(processes_referencing(runtime_dir).empty());
  g_assert_false(g_file_test((runtime_dir + "/private-bus.sock").c_str(), G_FILE_TEST_EXISTS));
  std::string link = topology.broker().link_address().substr(strlen("unix:"));
  g_assert_false(g_file_test(link.c_str(), G_FILE_TEST_EXISTS));
  // The guest sees the portal go away; the agent stays to reconnect.
  g_assert_true(wait_until([&] { return !name_has_owner(topology.guest().connection(), kPortalBusName); }));
  g_assert_true(topology.agent().process().running());
}

void test_broker_killed_leaves_nothing() {
  TopologyOptions options;
  options.broker = broker_with_echo();
  Topology topology(options);
  std::string runtime_dir = topology.broker().runtime_dir();
  topology.broker().process().send_signal(SIGKILL);
  topology.broker().wait_for_exit(10s);
  // The helpers die with the broker (PR_SET_PDEATHSIG) and the FUSE mount
  // goes with the document portal.
  g_assert_true(wait_until([&] { return processes_referencing(runtime_dir).empty(); }, 10s));
  g_assert_true(wait_until([&] { return mounts_under(runtime_dir).empty(); }, 10s));
}

void test_agent_reconnects_after_broker_restart() {
  TopologyOptions options;
  options.broker = broker_with_echo();
  Topology topology(options);
  assert_str_eq(guest_echo(topology.guest().connection(), "before"), "before");

  BrokerOptions again = broker_with_echo();
  again.host_bus_address = topology.host().bus_address();
  again.listen = {topology.broker().listen_address()};
  again.state_dir = topology.broker().state_dir();
  topology.broker().stop();
  g_assert_true(wait_until([&] { return !name_has_owner(topology.guest().connection(), kPortalBusName); }));

  Broker restarted(again);
  g_assert_true(wait_until([&] { return name_has_owner(topology.guest().connection(), kPortalBusName); }, 30s));
  assert_str_eq(guest_echo(topology.guest().connection(), "after"), "after");
  g_assert_true(topology.agent().process().running());
}

void test_second_link_replaces_first() {
  TopologyOptions options;
  options.broker = broker_with_echo();
  Topology topology(options);
  GuestBus other_guest;
  Agent other_agent({topology.broker().link_address(), other_guest.address()});
  g_assert_true(wait_until([&] { return name_has_owner(other_guest.connection(), kPortalBusName); }));
  assert_str_eq(guest_echo(other_guest.connection(), "new link"), "new link");
  g_assert_true(wait_until([&] { return !name_has_owner(topology.guest().connection(), kPortalBusName); }));
}

void test_different_guest_uid() {
  TopologyOptions options;
  options.broker = broker_with_echo();
  options.broker.listen = {};  // filled below: the guest user must reach the socket
  options.guest.identity = kNobody;
  TempDir link_dir("sidebus-test-link");
  options.broker.listen = {"unix:" + (link_dir / "link.sock") + ",mode=0666"};
  Topology topology(options);
  // A real client running as the guest user reaches the portal, which the
  // broker (root here) serves through the agent's identity.
  auto output = topology.guest().run_as_guest(
      {"gdbus", "call", "--session", "--dest", kPortalBusName, "--object-path", kPortalPath, "--method",
       std::string(kEcho) + ".Echo", "from nobody"});
  g_test_message("gdbus: %s %s", output.out.c_str(), output.err.c_str());
  g_assert_true(output.status.success());
  g_assert_true(output.out.find("from nobody") != std::string::npos);
}

// Sends ReadFd with a pipe whose content is @text; returns the reply string
// or "error:<name>".
std::string guest_read_fd(GDBusConnection* guest, const char* text) {
  int pipe_fds[2];
  g_assert_cmpint(pipe(pipe_fds), ==, 0);
  g_assert_cmpint(write(pipe_fds[1], text, strlen(text)), ==, (ssize_t)strlen(text));
  close(pipe_fds[1]);
  g_autoptr(GUnixFDList) fds = g_unix_fd_list_new_from_array(pipe_fds, 1);
  return call_echo(guest, "ReadFd", g_variant_new("(h)", 0), fds);
}

void test_fd_on_fd_capable_link() {
  TopologyOptions options;
  options.broker = broker_with_echo();
  Topology topology(options);
  assert_str_eq(guest_read_fd(topology.guest().connection(), "bytes through an fd"), "bytes through an fd");
}

void test_fd_on_byte_only_link() {
  TopologyOptions options;
  options.broker = broker_with_echo();
  TempDir link_dir("sidebus-test-link");
  options.broker.listen = {"unix:" + (link_dir / "link.sock") + ",nofds"};
  Topology topology(options);
  // The guest's own bus refuses: the agent never negotiated fd passing.
  assert_str_eq(guest_read_fd(topology.guest().connection(), "never sent"),
                "error:org.freedesktop.DBus.Error.NotSupported");
  // The stream is intact: the next call works.
  assert_str_eq(guest_echo(topology.guest().connection(), "still fine"), "still fine");
}

}  // namespace

int main(int argc, char** argv) {
  g_test_init(&argc, &argv, nullptr);
  add_test("/core/name-owned-through-agent", test_name_owned_through_agent);
  add_test("/core/introspection-shows-enabled-plugins", test_introspection_shows_enabled_plugins);
  add_test("/core/config-disables-plugin", test_config_disables_plugin);
  add_test("/core/malformed-config-stops-start", test_malformed_config_stops_start);
  add_test("/core/two-vms-side-by-side", test_two_vms_side_by_side);
  add_test("/core/broker-exit-leaves-nothing", test_broker_exit_leaves_nothing);
  add_test("/core/broker-killed-leaves-nothing", test_broker_killed_leaves_nothing);
  add_test("/core/agent-reconnects-after-broker-restart", test_agent_reconnects_after_broker_restart);
  add_test("/core/second-link-replaces-first", test_second_link_replaces_first);
  add_test("/core/different-guest-uid", test_different_guest_uid);
  add_test("/core/fd-on-fd-capable-link", test_fd_on_fd_capable_link);
  add_test("/core/fd-on-byte-only-link", test_fd_on_byte_only_link);
  return g_test_run();
}
