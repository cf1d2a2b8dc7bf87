// test-sessions.cpp — portal sessions across the VM boundary (the core's
// SidebusSession, core/api/session.cpp), through the echo test plugin's
// session-based call: CreateMonitor, the host's Inhibit.CreateMonitor behind
// it (the real xdg-desktop-portal and the test backend's impl Session), and
// SessionState, which only the session's own client may ask.
//
// Asserted is what a guest client and the host see: the guest's session
// object and path, who may use it, and that it ends on both sides, once,
// whoever ends it — the guest, the host, the caller leaving, the link going,
// the host portal exiting.
#include <signal.h>

#include <cstring>
#include <string>
#include <vector>

#include "support/assert.hpp"
#include "support/dbus.hpp"
#include "support/variant.hpp"
#include "support/vm.hpp"

using namespace sidebus::test;

namespace {

constexpr char kEcho[] = "dev.sidebus.test.Echo";
constexpr char kSessionInterface[] = "org.freedesktop.portal.Session";

VmOptions echo_vm(std::vector<std::pair<std::string, std::string>> config = {}) {
  return {.portals = {"echo"}, .config = std::move(config),
          .broker_args = {"--plugin-dir", env_path("SIDEBUS_TEST_PLUGIN_DIR")}};
}

// The echo portal's VM, its host "user" agreeing to monitors.
struct EchoVm : Vm {
  explicit EchoVm(std::vector<std::pair<std::string, std::string>> config = {}) : Vm(echo_vm(std::move(config))) {
    host().set_reply("CreateMonitor", kResponseSuccess, nullptr);
  }
};

// A guest session made through CreateMonitor on @client: its guest path.
std::string create_monitor(GDBusConnection* client, const std::string& token) {
  VariantPtr options = parse("a{sv}", "{'handle_token': <'" + token + "'>, 'session_handle_token': <'" + token + "'>}");
  PortalRequest request(client, kPortalBusName, kEcho, "CreateMonitor", g_variant_new("(@a{sv})", options.get()));
  if (request.error() != nullptr) throw FixtureError(std::string("CreateMonitor: ") + request.error()->message);
  if (!request.wait_for_response() || request.response() != kResponseSuccess)
    throw FixtureError("CreateMonitor did not succeed");
  return lookup_string(request.results(), "session_handle");
}

// SessionState(@session) from @client: "active" or the error's name.
std::string session_state(GDBusConnection* client, const std::string& session) {
  g_autoptr(GError) error = nullptr;
  g_autoptr(GVariant) reply = g_dbus_connection_call_sync(
      client, kPortalBusName, kPortalPath, kEcho, "SessionState", g_variant_new("(o)", session.c_str()),
      G_VARIANT_TYPE("(s)"), G_DBUS_CALL_FLAGS_NONE, 10000, nullptr, &error);
  if (reply == nullptr) return remote_error_name(error);
  const char* state;
  g_variant_get(reply, "(&s)", &state);
  return state;
}

// The impl sessions the host closed, as the backend recorded them.
std::vector<std::string> host_closed_sessions(HostPortal& host) {
  std::vector<std::string> closed;
  for (const BackendCall& call : host.backend_calls())
    if (call.method == "Session.Close") closed.push_back(lookup_string(call.record.get(), "session_handle"));
  return closed;
}

// The host session behind the only CreateMonitor the backend saw.
std::string host_session(HostPortal& host) {
  for (const BackendCall& call : host.backend_calls())
    if (call.method == "CreateMonitor") return lookup_string(call.record.get(), "session_handle");
  throw FixtureError("the backend saw no CreateMonitor");
}

// Collects org.freedesktop.portal.Session::Closed at one path.
struct ClosedSignals {
  GDBusConnection* connection;
  guint subscription;
  int count = 0;
  ClosedSignals(GDBusConnection* c, const std::string& path) : connection(c) {
    subscription = g_dbus_connection_signal_subscribe(
        c, nullptr, kSessionInterface, "Closed", path.c_str(), nullptr, G_DBUS_SIGNAL_FLAGS_NONE,
        [](GDBusConnection*, const char*, const char*, const char*, const char*, GVariant*, gpointer data) {
          static_cast<ClosedSignals*>(data)->count++;
        },
        this, nullptr);
  }
  ~ClosedSignals() { g_dbus_connection_signal_unsubscribe(connection, subscription); }
};

void test_session_created() {
  EchoVm vm;
  GDBusConnection* guest = vm.guest().connection();
  std::string session = create_monitor(guest, "monitor1");
  // The guest's own path, never the host's.
  std::string sender = g_dbus_connection_get_unique_name(guest) + 1;
  for (char& c : sender)
    if (c == '.') c = '_';
  assert_str_eq(session, "/org/freedesktop/portal/desktop/session/" + sender + "/monitor1");
  g_assert_true(session != host_session(vm.host()));
  std::string xml = introspect(guest, kPortalBusName, session.c_str());
  g_assert_true(xml.find(kSessionInterface) != std::string::npos);
  g_autoptr(GVariant) version = g_dbus_connection_call_sync(
      guest, kPortalBusName, session.c_str(), "org.freedesktop.DBus.Properties", "Get",
      g_variant_new("(ss)", kSessionInterface, "version"), G_VARIANT_TYPE("(v)"), G_DBUS_CALL_FLAGS_NONE, 10000,
      nullptr, nullptr);
  g_assert_nonnull(version);
  g_autoptr(GVariant) value = nullptr;
  g_variant_get(version, "(v)", &value);
  g_assert_cmpuint(g_variant_get_uint32(value), ==, 1);
  assert_str_eq(session_state(guest, session), "active");
}

// Only the client that created a session may name it.
void test_other_client_not_allowed() {
  EchoVm vm;
  std::string session = create_monitor(vm.guest().connection(), "mine");
  auto other = connect(vm.guest().address());
  assert_str_eq(session_state(other.get(), session), "org.freedesktop.portal.Error.NotAllowed");
  g_autoptr(GError) error = nullptr;
  g_autoptr(GVariant) reply = g_dbus_connection_call_sync(
      other.get(), kPortalBusName, session.c_str(), kSessionInterface, "Close", nullptr, nullptr,
      G_DBUS_CALL_FLAGS_NONE, 10000, nullptr, &error);
  assert_str_eq(remote_error_name(error), "org.freedesktop.portal.Error.NotAllowed");
  assert_str_eq(session_state(vm.guest().connection(), session), "active");  // still there
  assert_str_eq(session_state(vm.guest().connection(), "/org/freedesktop/portal/desktop/session/x/none"),
                "org.freedesktop.portal.Error.NotFound");
}

// The guest closes: the host session is closed, no Closed comes back.
void test_guest_closes() {
  EchoVm vm;
  GDBusConnection* guest = vm.guest().connection();
  std::string session = create_monitor(guest, "closing");
  std::string host = host_session(vm.host());
  ClosedSignals closed(guest, session);
  g_autoptr(GError) error = nullptr;
  g_autoptr(GVariant) reply = g_dbus_connection_call_sync(guest, kPortalBusName, session.c_str(), kSessionInterface,
                                                          "Close", nullptr, nullptr, G_DBUS_CALL_FLAGS_NONE, 10000,
                                                          nullptr, &error);
  g_assert_no_error(error);
  g_assert_true(wait_until([&] { return host_closed_sessions(vm.host()) == std::vector<std::string>{host}; }));
  assert_str_eq(session_state(guest, session), "org.freedesktop.portal.Error.NotFound");
  wait_until([] { return false; }, 300ms);
  g_assert_cmpint(closed.count, ==, 0);
}

// The host ends the session: the guest hears Closed, once.
void test_host_closes() {
  EchoVm vm;
  GDBusConnection* guest = vm.guest().connection();
  std::string session = create_monitor(guest, "hostend");
  ClosedSignals closed(guest, session);
  vm.host().call_backend("CloseSession", g_variant_new("(o)", host_session(vm.host()).c_str()), nullptr);
  g_assert_true(wait_until([&] { return closed.count == 1; }));
  assert_str_eq(session_state(guest, session), "org.freedesktop.portal.Error.NotFound");
  g_assert_false(introspect(guest, kPortalBusName, session.c_str()).find(kSessionInterface) != std::string::npos);
}

// The client that made it leaves, or the link goes: the host session is closed.
void test_caller_leaves_and_link_drops() {
  EchoVm vm;
  auto client = connect(vm.guest().address());
  create_monitor(client.get(), "leaving");
  std::string first = host_session(vm.host());
  g_dbus_connection_close_sync(client.get(), nullptr, nullptr);
  g_assert_true(wait_until([&] { return host_closed_sessions(vm.host()).size() == 1; }));
  assert_str_eq(host_closed_sessions(vm.host())[0], first);

  vm.host().reset_backend();
  vm.host().set_reply("CreateMonitor", kResponseSuccess, nullptr);
  create_monitor(vm.guest().connection(), "linked");
  std::string second = host_session(vm.host());
  vm.agent().process().send_signal(SIGKILL);
  g_assert_true(wait_until([&] { return host_closed_sessions(vm.host()) == std::vector<std::string>{second}; }));
  g_assert_true(vm.broker().process().running());
}

// broker.max_sessions holds; a session that ended gives its room back.
void test_session_limit() {
  EchoVm vm(std::vector<std::pair<std::string, std::string>>{{"60-limits.json", R"({"broker": {"max_sessions": 2}})"}});
  GDBusConnection* guest = vm.guest().connection();
  std::string one = create_monitor(guest, "one");
  create_monitor(guest, "two");
  VariantPtr options = parse("a{sv}", "{'handle_token': <'three'>, 'session_handle_token': <'three'>}");
  PortalRequest third(guest, kPortalBusName, kEcho, "CreateMonitor", g_variant_new("(@a{sv})", options.get()));
  g_assert_nonnull(third.error());
  assert_str_eq(remote_error_name(third.error()), "org.freedesktop.DBus.Error.LimitsExceeded");
  g_assert_nonnull(strstr(third.error()->message, "broker.max_sessions"));
  g_autoptr(GVariant) reply = g_dbus_connection_call_sync(guest, kPortalBusName, one.c_str(), kSessionInterface,
                                                          "Close", nullptr, nullptr, G_DBUS_CALL_FLAGS_NONE, 10000,
                                                          nullptr, nullptr);
  g_assert_nonnull(reply);
  create_monitor(guest, "three");
}

guint32 requests_freed(GDBusConnection* guest) {
  g_autoptr(GError) error = nullptr;
  g_autoptr(GVariant) reply =
      g_dbus_connection_call_sync(guest, kPortalBusName, kPortalPath, kEcho, "RequestsFreed", nullptr,
                                  G_VARIANT_TYPE("(u)"), G_DBUS_CALL_FLAGS_NONE, 10000, nullptr, &error);
  g_assert_no_error(error);
  guint32 freed;
  g_variant_get(reply, "(u)", &freed);
  return freed;
}

// Every request is freed once it is over, however it ended (answered, closed
// by the guest, its caller gone): its data's destroy notify runs, so nothing
// a plugin charged to it stays charged.
void test_requests_freed() {
  EchoVm vm;
  GDBusConnection* guest = vm.guest().connection();
  const guint32 before = requests_freed(guest);
  create_monitor(guest, "answered");
  g_assert_true(wait_until([&] { return requests_freed(guest) == before + 1; }));

  vm.host().set_reply("CreateMonitor", kResponseWaitForClose, nullptr);
  VariantPtr options = parse("a{sv}", "{'handle_token': <'closed'>, 'session_handle_token': <'closed'>}");
  PortalRequest closed(guest, kPortalBusName, kEcho, "CreateMonitor", g_variant_new("(@a{sv})", options.get()));
  g_assert_null(closed.error());
  g_assert_true(vm.host().wait_for_backend_calls(2));
  g_autoptr(GError) error = nullptr;
  g_assert_true(closed.close(&error));
  g_assert_true(wait_until([&] { return requests_freed(guest) == before + 2; }));

  auto leaving = connect(vm.guest().address());
  options = parse("a{sv}", "{'handle_token': <'left'>, 'session_handle_token': <'left'>}");
  PortalRequest left(leaving.get(), kPortalBusName, kEcho, "CreateMonitor", g_variant_new("(@a{sv})", options.get()));
  g_assert_null(left.error());
  g_assert_true(vm.host().wait_for_backend_calls(3));
  g_dbus_connection_close_sync(leaving.get(), nullptr, nullptr);
  g_assert_true(wait_until([&] { return requests_freed(guest) == before + 3; }));
}

// The host portal exits: the guest's sessions end (Closed), the broker stays.
void test_host_portal_exits() {
  EchoVm vm;
  GDBusConnection* guest = vm.guest().connection();
  std::string session = create_monitor(guest, "orphan");
  ClosedSignals closed(guest, session);
  vm.host().kill_portal();
  g_assert_true(wait_until([&] { return closed.count == 1; }));
  assert_str_eq(session_state(guest, session), "org.freedesktop.portal.Error.NotFound");
  g_assert_true(vm.broker().process().running());
}

}  // namespace

int main(int argc, char** argv) {
  g_test_init(&argc, &argv, nullptr);
  add_test("/sessions/created", test_session_created);
  add_test("/sessions/other-client-not-allowed", test_other_client_not_allowed);
  add_test("/sessions/guest-closes", test_guest_closes);
  add_test("/sessions/host-closes", test_host_closes);
  add_test("/sessions/caller-leaves-and-link-drops", test_caller_leaves_and_link_drops);
  add_test("/sessions/limit", test_session_limit);
  add_test("/sessions/host-portal-exits", test_host_portal_exits);
  add_test("/sessions/requests-freed", test_requests_freed);
  return g_test_run();
}
