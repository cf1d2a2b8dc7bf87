// SPDX-License-Identifier: LGPL-2.1-or-later
// test-proxyresolver.cpp — the ProxyResolver portal across the VM boundary:
// the host's xdg-desktop-portal 1.16, the broker with the proxyresolver (and
// networkmonitor) plugins, the guest bus and the agent; the guest
// application is GIO itself (tests/desktop-client.cpp with GTK_USE_PORTAL=1:
// GProxyResolverPortal, and a GSocketClient connecting through it, as every
// GIO application does), and plain GDBus calls.
//
// What a user notices: with the portal, a GIO application in the VM
// connects; without it, every connection fails. The host's proxy reaches the
// VM only when the administrator says the VM's traffic uses it.
#include <string>
#include <vector>

#include "desktop-portals.hpp"
#include "support/assert.hpp"
#include "support/vm.hpp"

using namespace sidebus::test;
using namespace sidebus::test::desktop;

namespace {

constexpr char kProxyResolver[] = "org.freedesktop.portal.ProxyResolver";
// A proxy only the host is configured with (libproxy reads it from the
// environment of the host's xdg-desktop-portal).
constexpr char kHostProxy[] = "http://proxy.invalid:3128";

const std::vector<std::pair<std::string, std::string>> kUsePortals = {{"GTK_USE_PORTAL", "1"}};

struct ProxyVmOptions {
  std::string section = "{}";  // the portals.proxyresolver section (enabled is added)
  std::vector<std::string> portals = {"networkmonitor", "proxyresolver"};
  bool byte_only = false;
};

Vm proxy_vm(ProxyVmOptions options = {}) {
  HostPortalOptions host;
  host.env = {{"http_proxy", kHostProxy}, {"HTTP_PROXY", kHostProxy}};
  return Vm({.portals = options.portals,
             .config = {{"60-proxyresolver.json", R"({"portals": {"proxyresolver": )" + options.section + "}}"}},
             .byte_only = options.byte_only,
             .host = host});
}

std::vector<std::string> lookup(GDBusConnection* connection, const char* uri) {
  VariantPtr reply = call_ok(connection, kProxyResolver, "Lookup", g_variant_new("(s)", uri), "(as)");
  g_autofree const char** proxies = nullptr;
  g_variant_get(reply.get(), "(^a&s)", &proxies);
  std::vector<std::string> result;
  for (const char** proxy = proxies; *proxy != nullptr; proxy++) result.emplace_back(*proxy);
  return result;
}

// A TCP service on 127.0.0.1 for the guest application to connect to;
// counts the connections it accepts.
class TcpServer {
 public:
  TcpServer() : service_(g_socket_service_new()) {
    g_autoptr(GError) error = nullptr;
    g_autoptr(GInetAddress) loopback = g_inet_address_new_loopback(G_SOCKET_FAMILY_IPV4);
    g_autoptr(GSocketAddress) address = g_inet_socket_address_new(loopback, 0);
    g_autoptr(GSocketAddress) bound = nullptr;
    if (!g_socket_listener_add_address(G_SOCKET_LISTENER(service_.get()), address, G_SOCKET_TYPE_STREAM,
                                       G_SOCKET_PROTOCOL_TCP, nullptr, &bound, &error))
      throw FixtureError(std::string("cannot listen: ") + error->message);
    port_ = g_inet_socket_address_get_port(G_INET_SOCKET_ADDRESS(bound));
    g_signal_connect(service_.get(), "incoming", G_CALLBACK(on_incoming), this);
    g_socket_service_start(service_.get());
  }
  ~TcpServer() { g_socket_service_stop(service_.get()); }
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }
  int accepted() const { return accepted_; }

 private:
  static gboolean on_incoming(GSocketService*, GSocketConnection*, GObject*, gpointer user_data) {
    static_cast<TcpServer*>(user_data)->accepted_++;
    return FALSE;
  }
  GObjectPtr<GSocketService> service_;
  guint16 port_ = 0;
  int accepted_ = 0;
};

// ---- tests ----------------------------------------------------------------------

// By default: direct connections, whatever the host uses; a GIO application
// in the VM connects through the portal.
void test_direct_by_default() {
  Vm vm = proxy_vm();
  GDBusConnection* guest = vm.guest().connection();
  std::vector<std::string> proxies = lookup(guest, "https://example.com/index.html");
  g_assert_cmpuint(proxies.size(), ==, 1);
  assert_str_eq(proxies[0], "direct://");
  // The host itself would use its proxy: that stays on the host.
  std::vector<std::string> host_proxies = lookup(vm.host().connection(), "http://example.com/");
  g_test_message("the host's own answer: %s", host_proxies.empty() ? "(none)" : host_proxies[0].c_str());

  TcpServer server;
  GuestApp app(vm, {"network", "--lookup", "http://example.com/", "--connect", server.address()}, kUsePortals);
  assert_str_eq(app.wait_for_line("resolver"), "resolver GProxyResolverPortal");
  assert_str_eq(app.wait_for_line("proxies"), "proxies direct://");
  assert_str_eq(app.wait_for_line("connected"), "connected");
  g_assert_true(wait_until([&] { return server.accepted() == 1; }));
}

// Without the portal — the bug the plugin fixes — GIO's portal resolver is
// still chosen (the portal name has an owner), and every connection fails.
void test_connections_fail_without_the_portal() {
  Vm vm = proxy_vm({.portals = {"networkmonitor"}});
  TcpServer server;
  GuestApp app(vm, {"network", "--connect", server.address()}, kUsePortals);
  assert_str_eq(app.wait_for_line("resolver"), "resolver GProxyResolverPortal");
  g_assert_true(app.wait_for_line("connect").starts_with("connect-failed"));
  g_assert_cmpint(server.accepted(), ==, 0);
}

// use_host_proxy: the host's own answer.
void test_host_proxy() {
  Vm vm = proxy_vm({.section = R"({"use_host_proxy": true})"});
  for (const char* uri : {"http://example.com/", "https://example.org:8443/x?y=1", "none://10.0.0.1:22"}) {
    std::vector<std::string> host = lookup(vm.host().connection(), uri);
    std::vector<std::string> guest = lookup(vm.guest().connection(), uri);
    g_assert_true(host == guest);
  }
  // GIO's libproxy module (glib-networking) gives the host's portal the
  // proxy of its environment; without that module the host answers
  // direct:// and there is no host proxy to see cross.
  std::vector<std::string> host = lookup(vm.host().connection(), "http://example.com/");
  g_assert_cmpuint(host.size(), >=, 1);
  if (host[0] != kHostProxy) {
    g_test_skip(("the host's resolver ignores http_proxy (no glib-networking libproxy module?): it says " + host[0])
                    .c_str());
    return;
  }
  GuestApp app(vm, {"network", "--lookup", "http://example.com/"}, kUsePortals);
  assert_str_eq(app.wait_for_line("proxies"), std::string("proxies ") + kHostProxy);
}

// Malformed URIs: InvalidArgument, never the host's resolver; the broker
// serves on.
void test_bad_uris() {
  Vm vm = proxy_vm({.section = R"({"use_host_proxy": true})"});
  GDBusConnection* guest = vm.guest().connection();
  const std::string long_uri = "http://example.com/" + std::string(5000, 'a');
  struct Case {
    std::string uri;
    const char* message;
  };
  const std::vector<Case> cases = {
      {"", "the URI is empty"},
      {"example.com", "not a URI"},
      {"http://exa mple.com/", "spaces or control characters"},
      {"http://example.com/\n", "spaces or control characters"},
      {"http:///path", "names no host"},
      {"mailto:someone@example.com", "names no host"},
      {"http://example.com/%zz", "not a URI"},
      {long_uri, "longer than 4096 bytes"},
  };
  for (const Case& c : cases)
    assert_call_fails(guest, kProxyResolver, "Lookup", g_variant_new("(s)", c.uri.c_str()), kInvalidArgument,
                      c.message);
  assert_broker_serves(vm);
  lookup(guest, "https://example.com/");
}

void test_byte_only_link() {
  Vm vm = proxy_vm({.byte_only = true});
  TcpServer server;
  GuestApp app(vm, {"network", "--connect", server.address()}, kUsePortals);
  assert_str_eq(app.wait_for_line("connect"), "connected");
}

void test_version() {
  Vm vm = proxy_vm();
  VariantPtr version = portal_property(vm.guest().connection(), kProxyResolver, "version");
  g_assert_cmpuint(g_variant_get_uint32(version.get()), ==, 1);
}

void test_config_refused() {
  HostPortal host;
  BrokerOptions options;
  options.host_bus_address = host.bus_address();
  options.wait_for_listen = false;
  options.config = {{"50-proxy.json", R"({"portals": {"proxyresolver": {"use_host_prxy": true}}})"}};
  Broker broker(options);
  auto exit = broker.wait_for_exit(20s);
  g_assert_true(exit.has_value());
  g_assert_false(exit->success());
  std::string log = broker.process().log();
  const char* expected = "portals.proxyresolver.use_host_prxy: unknown key (did you mean \"use_host_proxy\"?)";
  if (log.find(expected) == std::string::npos) g_error("the broker said “%s”", log.c_str());
}

}  // namespace

int main(int argc, char** argv) {
  g_test_init(&argc, &argv, nullptr);
  add_test("/proxyresolver/direct-by-default", test_direct_by_default);
  add_test("/proxyresolver/connections-fail-without-the-portal", test_connections_fail_without_the_portal);
  add_test("/proxyresolver/host-proxy", test_host_proxy);
  add_test("/proxyresolver/bad-uris", test_bad_uris);
  add_test("/proxyresolver/byte-only-link", test_byte_only_link);
  add_test("/proxyresolver/version", test_version);
  add_test("/proxyresolver/config-refused", test_config_refused);
  return g_test_run();
}
