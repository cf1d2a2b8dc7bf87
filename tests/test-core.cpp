// SPDX-License-Identifier: LGPL-2.1-or-later
// test-core.cpp — the broker, the agent and the link as a user sees them:
// the portal name appears on the guest bus, introspection shows exactly the
// enabled portals, configuration switches plugins, a bad file stops the
// start, two VMs stay apart, nothing outlives the broker, the agent comes
// back after a broker restart, uids need not match, and a byte-only link
// forwards fds (link protocol 2) or, with an agent of protocol 1, refuses
// them cleanly. The echo test plugin (tests/echo-plugin) stands in
// for a portal here; real portals have their own tests.
#include <fcntl.h>
#include <glib/gstdio.h>
#include <gio/gunixfdlist.h>
#include <sys/socket.h>
#include <unistd.h>

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <algorithm>
#include <cstring>
#include <thread>

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
  // Link protocol 2 forwards the pipe as a channel of the link.
  assert_str_eq(guest_read_fd(topology.guest().connection(), "bytes through a forwarded fd"),
               "bytes through a forwarded fd");
}

// An agent of protocol 1 (what an older sidebus runs) gets protocol 1: the
// link carries no fds.
void test_fd_on_byte_only_link_protocol_1() {
  TopologyOptions options;
  options.broker = broker_with_echo();
  options.agent_args = {"--link-protocol", "1"};
  TempDir link_dir("sidebus-test-link");
  options.broker.listen = {"unix:" + (link_dir / "link.sock") + ",nofds"};
  Topology topology(options);
  // The guest's own bus refuses: the agent never negotiated fd passing.
  assert_str_eq(guest_read_fd(topology.guest().connection(), "never sent"),
                "error:org.freedesktop.DBus.Error.NotSupported");
  // The stream is intact: the next call works.
  assert_str_eq(guest_echo(topology.guest().connection(), "still fine"), "still fine");
}

// ---- fds across byte-only links (link protocol 2) -----------------------------
//
// The link as a VMM gives it: byte-only at the broker (unix:PATH,nofds, as
// hybrid vsock and QEMU chardevs are), and "vsock-like", byte-only at both
// ends (the agent connects to unix:PATH,nofds, as it would to vsock:, which
// has no loopback here).

enum class ByteOnly { Broker, Both };

const char* byte_only_name(ByteOnly kind) { return kind == ByteOnly::Broker ? "byte-only" : "vsock-like"; }

struct ForwardingTopology {
  TempDir link_dir{"sidebus-test-link"};
  std::unique_ptr<Topology> topology;

  explicit ForwardingTopology(ByteOnly kind, std::vector<std::pair<std::string, std::string>> config = {}) {
    TopologyOptions options;
    config.emplace_back("50-echo.json", kEnableEcho);
    options.broker = broker_with_echo(config);
    std::string address = "unix:" + (link_dir / "link.sock") + ",nofds";
    options.broker.listen = {address};
    options.broker.wait_for_listen = false;
    if (kind == ByteOnly::Both) options.agent_args = {"--connect", address};
    topology = std::make_unique<Topology>(options);
  }
  GDBusConnection* guest() { return topology->guest().connection(); }
  std::string broker_log() { return topology->broker().process().log(); }
};

// The pattern both ends of a long stream write and check: byte i is i % 251.
constexpr size_t kPeriod = 251;
const std::vector<uint8_t>& pattern() {
  static const std::vector<uint8_t> bytes = [] {
    std::vector<uint8_t> b(kPeriod * 4097);
    for (size_t i = 0; i < b.size(); i++) b[i] = uint8_t(i % kPeriod);
    return b;
  }();
  return bytes;
}
constexpr size_t kPatternBlock = kPeriod * 4096;  // ~1 MiB

struct Reply {
  bool done = false;
  GVariant* value = nullptr;
  GUnixFDList* fds = nullptr;
  GError* error = nullptr;
  ~Reply() {
    if (value) g_variant_unref(value);
    if (fds) g_object_unref(fds);
    g_clear_error(&error);
  }
};

void call_async(GDBusConnection* guest, const char* method, GVariant* parameters, GUnixFDList* fds, Reply* reply) {
  g_dbus_connection_call_with_unix_fd_list(
      guest, kPortalBusName, kPortalPath, kEcho, method, parameters, nullptr, G_DBUS_CALL_FLAGS_NONE, 300000, fds,
      nullptr,
      [](GObject* source, GAsyncResult* result, gpointer data) {
        auto* reply = static_cast<Reply*>(data);
        reply->value = g_dbus_connection_call_with_unix_fd_list_finish(G_DBUS_CONNECTION(source), &reply->fds, result,
                                                                       &reply->error);
        reply->done = true;
      },
      reply);
}

// A guest application streams @total bytes into a pipe whose read end it
// gave the host (ReadAll): what the host read, as it says it.
void test_forwarded_pipe_to_host(ByteOnly kind, uint64_t total) {
  ForwardingTopology forwarding(kind);
  int pipe_fds[2];
  g_assert_cmpint(pipe2(pipe_fds, O_CLOEXEC), ==, 0);
  g_autoptr(GUnixFDList) fds = g_unix_fd_list_new_from_array(&pipe_fds[0], 1);
  Reply reply;
  call_async(forwarding.guest(), "ReadAll", g_variant_new("(h)", 0), fds, &reply);
  std::string sent_digest;
  gint64 start = g_get_monotonic_time();
  std::thread writer([&] {
    g_autoptr(GChecksum) checksum = g_checksum_new(G_CHECKSUM_SHA256);
    uint64_t offset = 0;
    while (offset < total) {
      size_t length = size_t(std::min<uint64_t>(kPatternBlock, total - offset));
      const uint8_t* block = pattern().data() + offset % kPeriod;
      ssize_t n = write(pipe_fds[1], block, length);
      if (n <= 0) break;
      g_checksum_update(checksum, block, n);
      offset += uint64_t(n);
    }
    close(pipe_fds[1]);
    sent_digest = g_checksum_get_string(checksum);
  });
  bool answered = wait_until([&] { return reply.done; }, 280s);
  writer.join();
  g_assert_true(answered);
  g_assert_no_error(reply.error);
  guint64 size = 0;
  const char* digest = nullptr;
  g_variant_get(reply.value, "(t&s)", &size, &digest);
  double seconds = (g_get_monotonic_time() - start) / 1e6;
  g_test_message("%" G_GUINT64_FORMAT " bytes guest → host in %.1f s (%.0f MB/s, SHA-256 on both ends included)",
                 size, seconds, size / seconds / 1e6);
  g_assert_cmpuint(size, ==, total);
  g_assert_cmpstr(digest, ==, sent_digest.c_str());
  assert_str_eq(guest_echo(forwarding.guest(), "after the stream"), "after the stream");
}

// The host gives the guest the read end of a pipe it fills (WritePattern):
// the guest reads every byte, in order.
void test_forwarded_pipe_to_guest(ByteOnly kind, uint64_t total) {
  ForwardingTopology forwarding(kind);
  g_autoptr(GError) error = nullptr;
  g_autoptr(GUnixFDList) fds = nullptr;
  g_autoptr(GVariant) reply = g_dbus_connection_call_with_unix_fd_list_sync(
      forwarding.guest(), kPortalBusName, kPortalPath, kEcho, "WritePattern", g_variant_new("(t)", total),
      G_VARIANT_TYPE("(h)"), G_DBUS_CALL_FLAGS_NONE, 10000, nullptr, &fds, nullptr, &error);
  g_assert_no_error(error);
  g_assert_cmpint(g_unix_fd_list_get_length(fds), ==, 1);
  int fd = g_unix_fd_list_get(fds, 0, &error);
  g_assert_no_error(error);
  struct stat st;
  g_assert_cmpint(fstat(fd, &st), ==, 0);
  g_assert_true(S_ISFIFO(st.st_mode));  // a pipe here too, made by the agent
  std::vector<uint8_t> buffer(kPatternBlock);
  uint64_t offset = 0;
  gint64 start = g_get_monotonic_time();
  while (true) {
    ssize_t n = read(fd, buffer.data(), buffer.size());
    g_assert_cmpint(n, >=, 0);
    if (n == 0) break;
    if (memcmp(buffer.data(), pattern().data() + offset % kPeriod, size_t(n)) != 0)
      g_error("the stream differs from what the host wrote within bytes %" G_GUINT64_FORMAT "..%" G_GUINT64_FORMAT,
              offset, offset + uint64_t(n));
    offset += uint64_t(n);
    g_assert_cmpuint(offset, <=, total);
  }
  close(fd);
  double seconds = (g_get_monotonic_time() - start) / 1e6;
  g_test_message("%" G_GUINT64_FORMAT " bytes host → guest in %.1f s (%.0f MB/s)", offset, seconds,
                 offset / seconds / 1e6);
  g_assert_cmpuint(offset, ==, total);
  assert_str_eq(guest_echo(forwarding.guest(), "after the stream"), "after the stream");
}

// sidebus_context_get_fd_transport() as a plugin sees it, for every kind of link.
void test_fd_transport_reported() {
  {
    TopologyOptions options;
    options.broker = broker_with_echo();
    Topology topology(options);
    assert_str_eq(call_echo(topology.guest().connection(), "FdTransport", nullptr), "native");
  }
  for (ByteOnly kind : {ByteOnly::Broker, ByteOnly::Both}) {
    ForwardingTopology forwarding(kind);
    assert_str_eq(call_echo(forwarding.guest(), "FdTransport", nullptr), "forwarded");
    g_assert_true(forwarding.broker_log().find("protocol 2") != std::string::npos);
  }
  TopologyOptions options;
  options.broker = broker_with_echo();
  options.agent_args = {"--link-protocol", "1"};
  TempDir link_dir("sidebus-test-link");
  options.broker.listen = {"unix:" + (link_dir / "link.sock") + ",nofds"};
  Topology topology(options);
  assert_str_eq(call_echo(topology.guest().connection(), "FdTransport", nullptr), "none");
}

// What cannot be forwarded is refused with NotSupported naming what it is;
// the link stays up.
void test_forwarded_refused_kinds() {
  ForwardingTopology forwarding(ByteOnly::Broker);
  TempDir outside("sidebus-test-outside");
  int datagram[2];
  g_assert_cmpint(socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, datagram), ==, 0);
  struct Case {
    int fd;
    const char* kind;
  };
  const Case cases[] = {
      {eventfd(0, EFD_CLOEXEC), "an eventfd"},
      {open("/dev/null", O_RDONLY | O_CLOEXEC), "a character device"},
      {open(outside.path().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC), "a directory outside the VM's documents"},
      {datagram[0], "a datagram socket"},
  };
  for (const Case& c : cases) {
    g_assert_cmpint(c.fd, >=, 0);
    g_autoptr(GUnixFDList) fds = g_unix_fd_list_new_from_array(&c.fd, 1);
    g_autoptr(GError) error = nullptr;
    g_autoptr(GVariant) reply = g_dbus_connection_call_with_unix_fd_list_sync(
        forwarding.guest(), kPortalBusName, kPortalPath, kEcho, "ReadFd", g_variant_new("(h)", 0), G_VARIANT_TYPE("(s)"),
        G_DBUS_CALL_FLAGS_NONE, 10000, fds, nullptr, nullptr, &error);
    g_assert_null(reply);
    g_autofree char* name = g_dbus_error_get_remote_error(error);
    g_test_message("%s: %s", c.kind, error->message);
    g_assert_cmpstr(name, ==, "org.freedesktop.DBus.Error.NotSupported");
    g_assert_nonnull(strstr(error->message, c.kind));
    assert_str_eq(guest_echo(forwarding.guest(), "still linked"), "still linked");
  }
  close(datagram[1]);
}

// The broker's limits on what a guest may make it hold for forwarded fds,
// from the configuration: a copy too large, too many channels at once.
void test_forwarded_limits() {
  ForwardingTopology forwarding(
      ByteOnly::Broker, {{"60-limits.json", R"({"broker": {"max_content_size": 4096, "max_channels": 2}})"}});
  TempDir files("sidebus-test-files");
  std::string small = files.write_file("small.txt", "small enough");
  std::string big = files.write_file("big.txt", std::string(10000, 'b'));
  auto read_file_fd = [&](const std::string& path) {
    int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    g_autoptr(GUnixFDList) fds = g_unix_fd_list_new_from_array(&fd, 1);
    return call_echo(forwarding.guest(), "ReadFd", g_variant_new("(h)", 0), fds);
  };
  // A file's content is copied (the plugin reads the copy) within the limit.
  assert_str_eq(read_file_fd(small), "small enough");
  assert_str_eq(read_file_fd(big), "error:org.freedesktop.DBus.Error.LimitsExceeded");
  // Three pipes at once are more channels than the broker takes.
  int pipes[3][2];
  g_autoptr(GUnixFDList) fds = g_unix_fd_list_new();
  for (auto& p : pipes) {
    g_assert_cmpint(pipe2(p, O_CLOEXEC), ==, 0);
    g_unix_fd_list_append(fds, p[0], nullptr);
  }
  assert_str_eq(call_echo(forwarding.guest(), "ReadFd", g_variant_new("(h)", 0), fds),
               "error:org.freedesktop.DBus.Error.LimitsExceeded");
  for (auto& p : pipes) {
    close(p[0]);
    close(p[1]);
  }
  // The first refusal is logged (the next ones within 10 s are counted).
  g_assert_true(forwarding.broker_log().find("broker.max_content_size") != std::string::npos);
  assert_str_eq(guest_echo(forwarding.guest(), "still linked"), "still linked");
}

// Something that speaks the handshake and then sends garbage frames loses its
// link, with one warning; the broker and its real link go on.
void test_forwarded_hostile_peer() {
  ForwardingTopology forwarding(ByteOnly::Broker);
  std::string socket_path = forwarding.link_dir / "link.sock";
  g_autoptr(GRand) rand = g_rand_new_with_seed(0x51deb05);
  for (int round = 0; round < 3; round++) {
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un address = {};
    address.sun_family = AF_UNIX;
    g_strlcpy(address.sun_path, socket_path.c_str(), sizeof address.sun_path);
    g_assert_cmpint(connect(fd, reinterpret_cast<struct sockaddr*>(&address), sizeof address), ==, 0);
    std::string hello = "SIDEBUS 2 fds=0 uid=0 agent=hostile\nREADY fds=1\n";
    g_assert_cmpint(write(fd, hello.data(), hello.size()), ==, ssize_t(hello.size()));
    // Frames: a valid credit, then random ones.
    std::string frames("\0\0\0\0\3\0\0\0\4\0\0\0\0\0\x40\0", 16);
    for (int i = 0; i < 4096; i++) frames += char(g_rand_int_range(rand, 0, 256));
    (void)!write(fd, frames.data(), frames.size());
    // The broker hangs up.
    char buffer[4096];
    bool closed = wait_until(
        [&] {
          struct pollfd pfd = {fd, POLLIN, 0};
          if (poll(&pfd, 1, 0) != 1) return false;
          return read(fd, buffer, sizeof buffer) <= 0;
        },
        10s);
    close(fd);
    g_assert_true(closed);
  }
  bool warned = wait_until([&] {
    std::string log = forwarding.broker_log();
    size_t count = 0;
    for (size_t at = log.find("broke the link protocol"); at != std::string::npos;
         at = log.find("broke the link protocol", at + 1))
      count++;
    return count == 3;
  });
  if (!warned) g_test_message("broker log:\n%s", forwarding.broker_log().c_str());
  g_assert_true(warned);
  g_assert_true(forwarding.topology->broker().process().running());
  assert_str_eq(guest_echo(forwarding.guest(), "the real link"), "the real link");
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
  add_test("/core/fd-on-byte-only-link-protocol-1", test_fd_on_byte_only_link_protocol_1);
  add_test("/core/forwarded/fd-transport", test_fd_transport_reported);
  constexpr uint64_t kGiB = uint64_t(1) << 30;
  for (ByteOnly kind : {ByteOnly::Broker, ByteOnly::Both}) {
    std::string name = byte_only_name(kind);
    add_test(("/core/forwarded/pipe-to-host-1gib/" + name).c_str(), [kind] { test_forwarded_pipe_to_host(kind, kGiB); });
    add_test(("/core/forwarded/pipe-to-guest-1gib/" + name).c_str(),
             [kind] { test_forwarded_pipe_to_guest(kind, kGiB); });
  }
  add_test("/core/forwarded/refused-kinds", test_forwarded_refused_kinds);
  add_test("/core/forwarded/limits", test_forwarded_limits);
  add_test("/core/forwarded/hostile-peer", test_forwarded_hostile_peer);
  return g_test_run();
}
