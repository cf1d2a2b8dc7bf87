// test-networkmonitor.cpp — the NetworkMonitor portal across the VM
// boundary: the host's xdg-desktop-portal 1.16, the broker with the
// networkmonitor plugin, the guest bus and the agent; the guest application
// is GIO itself (tests/desktop-client.cpp with GTK_USE_PORTAL=1, which makes
// GIO choose GNetworkMonitorPortal, as GTK and Firefox applications do
// outside Flatpak), and plain GDBus calls.
//
// What a user notices: with the portal, GIO applications in the VM believe
// they are online (or what the administrator says); without it they believe
// they are offline.
#include <string>
#include <vector>

#include "desktop-portals.hpp"
#include "support/assert.hpp"
#include "support/vm.hpp"

using namespace sidebus::test;
using namespace sidebus::test::desktop;

namespace {

constexpr char kNetworkMonitor[] = "org.freedesktop.portal.NetworkMonitor";

// What makes GIO use the portals outside Flatpak (and nothing else it might
// pick instead).
const std::vector<std::pair<std::string, std::string>> kUsePortals = {{"GTK_USE_PORTAL", "1"},
                                                                      {"GIO_USE_NETWORK_MONITOR", "portal"}};

struct NetworkVmOptions {
  std::string section = "{}";  // the portals.networkmonitor section (enabled is added)
  std::vector<std::string> portals = {"networkmonitor"};
  bool byte_only = false;
};

Vm network_vm(NetworkVmOptions options = {}) {
  return Vm({.portals = options.portals,
             .config = {{"60-networkmonitor.json", R"({"portals": {"networkmonitor": )" + options.section + "}}"}},
             .byte_only = options.byte_only});
}

VariantPtr status(GDBusConnection* connection) {
  VariantPtr reply = call_ok(connection, kNetworkMonitor, "GetStatus", nullptr, "(a{sv})");
  return VariantPtr(g_variant_get_child_value(reply.get(), 0));
}

bool can_reach(GDBusConnection* connection, const char* host, guint32 port) {
  VariantPtr reply = call_ok(connection, kNetworkMonitor, "CanReach", g_variant_new("(su)", host, port), "(b)");
  gboolean reachable;
  g_variant_get(reply.get(), "(b)", &reachable);
  return reachable;
}

// ---- tests ----------------------------------------------------------------------

// By default a GIO application in the VM is online: available, not metered,
// full connectivity; CanReach says so without the broker resolving anything.
void test_gio_online_by_default() {
  Vm vm = network_vm();
  GuestApp app(vm, {"network", "--reach", "example.invalid:443"}, kUsePortals);
  assert_str_eq(app.wait_for_line("monitor"), "monitor GNetworkMonitorPortal");
  assert_str_eq(app.wait_for_line("status"), "status 1 0 4");
  assert_str_eq(app.wait_for_line("reach"), "reach example.invalid:443 yes");

  GDBusConnection* guest = vm.guest().connection();
  assert_same(status(guest).get(), "a{sv}", "{'available': <true>, 'metered': <false>, 'connectivity': <uint32 4>}");
  assert_same(call_ok(guest, kNetworkMonitor, "GetAvailable", nullptr).get(), "(b)", "(true,)");
  assert_same(call_ok(guest, kNetworkMonitor, "GetMetered", nullptr).get(), "(b)", "(false,)");
  assert_same(call_ok(guest, kNetworkMonitor, "GetConnectivity", nullptr).get(), "(u)", "(uint32 4,)");
}

// Without the portal — the bug the plugin fixes — GIO believes the VM is offline.
void test_gio_offline_without_the_portal() {
  Vm vm = network_vm({.portals = {"settings"}});
  GuestApp app(vm, {"network"}, kUsePortals);
  assert_str_eq(app.wait_for_line("monitor"), "monitor GNetworkMonitorPortal");
  assert_str_eq(app.wait_for_line("status"), "status 0 0 1");
}

// An administrator describes this VM's network: a metered link, or none.
void test_configured_state() {
  {
    Vm vm = network_vm({.section = R"({"metered": true, "connectivity": "limited"})"});
    GuestApp app(vm, {"network"}, kUsePortals);
    assert_str_eq(app.wait_for_line("status"), "status 1 1 2");
  }
  Vm vm = network_vm({.section = R"({"available": false, "connectivity": "local"})"});
  GuestApp app(vm, {"network", "--reach", "example.com:80"}, kUsePortals);
  assert_str_eq(app.wait_for_line("status"), "status 0 0 1");
  g_assert_true(app.wait_for_line("reach").starts_with("reach example.com:80 no"));
  g_assert_false(can_reach(vm.guest().connection(), "10.0.0.1", 22));
}

// source "host": the host's own state, as the host portal answers it.
void test_host_source() {
  Vm vm = network_vm({.section = R"({"source": "host"})"});
  VariantPtr host_status = status(vm.host().connection());
  VariantPtr guest_status = status(vm.guest().connection());
  g_assert_true(g_variant_equal(host_status.get(), guest_status.get()));
  gboolean available = FALSE, metered = FALSE;
  guint32 connectivity = 0;
  g_variant_lookup(host_status.get(), "available", "b", &available);
  g_variant_lookup(host_status.get(), "metered", "b", &metered);
  g_variant_lookup(host_status.get(), "connectivity", "u", &connectivity);
  GuestApp app(vm, {"network"}, kUsePortals);
  g_autofree char* expected = g_strdup_printf("status %d %d %u", available ? 1 : 0, metered ? 1 : 0, connectivity);
  // GNetworkMonitorPortal starts at "0 0 1": if the host says the same, its
  // first network-changed is still the answer.
  assert_str_eq(app.wait_for_line("status"), expected);
  for (const char* method : {"GetAvailable", "GetMetered", "GetConnectivity"}) {
    VariantPtr host = call_ok(vm.host().connection(), kNetworkMonitor, method, nullptr);
    VariantPtr guest = call_ok(vm.guest().connection(), kNetworkMonitor, method, nullptr);
    g_assert_true(g_variant_equal(host.get(), guest.get()));
  }
  g_assert_true(can_reach(vm.host().connection(), "127.0.0.1", 80) ==
                can_reach(vm.guest().connection(), "127.0.0.1", 80));
}

// Malformed CanReach: InvalidArgument; the broker serves on.
void test_bad_input() {
  Vm vm = network_vm({.section = R"({"source": "host"})"});
  GDBusConnection* guest = vm.guest().connection();
  const std::string long_name(256, 'a');
  struct Case {
    std::string host;
    guint32 port;
    const char* message;
  };
  const std::vector<Case> cases = {
      {"", 80, "is not a host name"},
      {"exa mple.com", 80, "is not a host name"},
      {"user@example.com", 80, "is not a host name"},
      {"example.com/path", 80, "is not a host name"},
      {long_name, 80, "is not a host name"},
      {"example.com", 65536, "port 65536"},
  };
  for (const Case& c : cases)
    assert_call_fails(guest, kNetworkMonitor, "CanReach", g_variant_new("(su)", c.host.c_str(), c.port),
                      kInvalidArgument, c.message);
  assert_broker_serves(vm);
  status(guest);
}

// The same over a byte-only link.
void test_byte_only_link() {
  Vm vm = network_vm({.byte_only = true});
  GuestApp app(vm, {"network"}, kUsePortals);
  assert_str_eq(app.wait_for_line("status"), "status 1 0 4");
}

// version 3 (GetStatus): GIO asks GetStatus first.
void test_version() {
  Vm vm = network_vm();
  VariantPtr version = portal_property(vm.guest().connection(), kNetworkMonitor, "version");
  g_assert_cmpuint(g_variant_get_uint32(version.get()), ==, 3);
  Vm host_vm = network_vm({.section = R"({"source": "host"})"});
  VariantPtr host_version = portal_property(host_vm.host().connection(), kNetworkMonitor, "version");
  VariantPtr guest_version = portal_property(host_vm.guest().connection(), kNetworkMonitor, "version");
  g_assert_cmpuint(g_variant_get_uint32(guest_version.get()), ==, MIN(g_variant_get_uint32(host_version.get()), 3u));
}

void test_config_refused() {
  struct Case {
    const char* section;
    const char* message;
  };
  const Case cases[] = {
      {R"({"source": "guest"})", "portals.networkmonitor.source: \"guest\" is neither \"static\""},
      {R"({"connectivity": "online"})", "portals.networkmonitor.connectivity: \"online\" is not one of"},
      {R"({"availble": true})", "portals.networkmonitor.availble: unknown key (did you mean \"available\"?)"},
      {R"({"metered": "no"})", "portals.networkmonitor.metered: expected a boolean"},
  };
  for (const Case& c : cases) {
    HostPortal host;
    BrokerOptions options;
    options.host_bus_address = host.bus_address();
    options.wait_for_listen = false;
    options.config = {{"50-nm.json", std::string(R"({"portals": {"networkmonitor": )") + c.section + "}}"}};
    Broker broker(options);
    auto exit = broker.wait_for_exit(20s);
    g_assert_true(exit.has_value());
    g_assert_false(exit->success());
    std::string log = broker.process().log();
    if (log.find(c.message) == std::string::npos) g_error("the broker said “%s”, not “%s”", log.c_str(), c.message);
  }
}

}  // namespace

int main(int argc, char** argv) {
  g_test_init(&argc, &argv, nullptr);
  add_test("/networkmonitor/gio/online-by-default", test_gio_online_by_default);
  add_test("/networkmonitor/gio/offline-without-the-portal", test_gio_offline_without_the_portal);
  add_test("/networkmonitor/configured-state", test_configured_state);
  add_test("/networkmonitor/host-source", test_host_source);
  add_test("/networkmonitor/bad-input", test_bad_input);
  add_test("/networkmonitor/byte-only-link", test_byte_only_link);
  add_test("/networkmonitor/version", test_version);
  add_test("/networkmonitor/config-refused", test_config_refused);
  return g_test_run();
}
