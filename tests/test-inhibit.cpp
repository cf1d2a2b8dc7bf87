// test-inhibit.cpp — the Inhibit portal across the VM boundary, real parts
// only: the host's xdg-desktop-portal 1.16 with the test backend's Inhibit
// (it keeps each inhibition's Request until the portal closes it and records
// "closed"; CreateMonitor exports a Session; EmitStateChanged plays the
// desktop), the broker with the inhibit plugin, the guest bus and the agent;
// guest applications are libportal (tests/desktop-client.cpp) and plain
// GDBus connections.
//
// What a user notices: while a VM's video player inhibits, the host does not
// go idle; when the player stops (closes its request, quits or crashes, or
// the VM goes away) the host may sleep again; the host's session state
// reaches the one application that monitors it, and nobody else.
#include <string>
#include <vector>

#include "desktop-portals.hpp"
#include "support/assert.hpp"
#include "support/vm.hpp"

using namespace sidebus::test;
using namespace sidebus::test::desktop;

namespace {

constexpr char kInhibit[] = "org.freedesktop.portal.Inhibit";
constexpr char kSession[] = "org.freedesktop.portal.Session";
constexpr guint32 kIdle = 8;
constexpr guint32 kSuspend = 4;

struct InhibitVmOptions {
  std::string broker = "{}";  // the broker section
  bool byte_only = false;
};

// A VM with the inhibit portal, and a desktop that accepts monitors.
class InhibitVm : public Vm {
 public:
  explicit InhibitVm(InhibitVmOptions options = {})
      : Vm({.portals = {"inhibit"},
            .config = {{"60-inhibit.json", R"({"broker": )" + options.broker + "}"}},
            .byte_only = options.byte_only}) {
    host().set_reply("CreateMonitor", kResponseSuccess);
  }
};

std::unique_ptr<PortalRequest> inhibit(GDBusConnection* connection, guint32 flags, const std::string& options = "{}") {
  VariantPtr with_token = with_handle_token(options);
  return std::make_unique<PortalRequest>(connection, kPortalBusName, kInhibit, "Inhibit",
                                         g_variant_new("(su@a{sv})", "x11:1234", flags, with_token.get()));
}

// The backend's record of the inhibition the portal made for the
// @n-th Inhibit call (0-based), once it exists.
BackendCall inhibition(Vm& vm, size_t n = 0) {
  std::vector<BackendCall> calls = wait_for_calls(vm.host(), "Inhibit", n + 1);
  return std::move(calls.at(n));
}

bool released(Vm& vm, size_t n = 0) {
  return wait_until([&] { return calls_of(vm.host(), "Inhibit").at(n).closed; });
}

// A monitor for @connection: its guest session path (asserts success).
std::string create_monitor(GDBusConnection* connection) {
  std::string token = unique_token();
  VariantPtr options =
      parse("a{sv}", "{'handle_token': <'" + unique_token() + "'>, 'session_handle_token': <'" + token + "'>}");
  PortalRequest request(connection, kPortalBusName, kInhibit, "CreateMonitor",
                        g_variant_new("(s@a{sv})", "", options.get()));
  g_assert_no_error(request.error());
  g_assert_true(request.wait_for_response());
  g_assert_cmpuint(request.response(), ==, kResponseSuccess);
  return lookup_string(request.results(), "session_handle");
}

// The host session the portal made for the @n-th CreateMonitor.
std::string host_session(Vm& vm, size_t n = 0) {
  return lookup_string(wait_for_calls(vm.host(), "CreateMonitor", n + 1).at(n).record.get(), "session_handle");
}

void emit_state(Vm& vm, const std::string& host_session_path, const char* state) {
  VariantPtr parsed = parse("a{sv}", state);
  vm.host().call_backend("EmitStateChanged", g_variant_new("(o@a{sv})", host_session_path.c_str(), parsed.get()));
}

size_t session_closes(Vm& vm, const std::string& host_session_path) {
  size_t count = 0;
  for (const BackendCall& call : calls_of(vm.host(), "Session.Close"))
    count += lookup_string(call.record.get(), "session_handle") == host_session_path;
  return count;
}

// ---- Inhibit --------------------------------------------------------------------

// A libportal player inhibits idle and suspend: the host is asked, with the
// VM's name in the reason; it stays until the player uninhibits.
void test_libportal_inhibit_uninhibit() {
  InhibitVm vm;
  GuestApp app(vm, {"inhibit", std::to_string(kIdle | kSuspend), "Playing a film"});
  app.wait_for_line("inhibited");
  BackendCall call = inhibition(vm);
  assert_same(lookup(call.record.get(), "flags").get(), "u", "12");
  assert_str_eq(lookup_string(call.options.get(), "reason"), "[testvm] Playing a film");
  assert_str_eq(call.parent_window, "");
  assert_str_eq(lookup_string(call.record.get(), "window"), "");
  assert_str_eq(call.app_id, "");
  let_time_pass(500ms);
  g_assert_false(calls_of(vm.host(), "Inhibit").at(0).closed);  // held
  app.send("uninhibit");
  app.wait_for_line("uninhibited");
  g_assert_true(released(vm));
}

// The inhibition lasts while the caller does: a crash releases it, another
// client cannot.
void test_released_when_caller_leaves() {
  InhibitVm vm;
  GuestApp app(vm, {"inhibit", std::to_string(kIdle), "Presenting"});
  app.wait_for_line("inhibited");
  inhibition(vm);
  app.kill();
  g_assert_true(released(vm));

  // A GDBus client: its Response is success, and the request object is still
  // there to close — by its owner only.
  GObjectPtr<GDBusConnection> player = connect(vm.guest().address());
  auto request = inhibit(player.get(), kIdle, "{'reason': <'Music'>}");
  g_assert_no_error(request->error());
  g_assert_true(request->wait_for_response());
  g_assert_cmpuint(request->response(), ==, kResponseSuccess);
  inhibition(vm, 1);
  GObjectPtr<GDBusConnection> other = connect(vm.guest().address());
  g_autoptr(GError) error = nullptr;
  VariantPtr closed =
      call(other.get(), "org.freedesktop.portal.Request", "Close", nullptr, &error, nullptr, request->handle().c_str());
  assert_error(error, kNotAllowed);
  let_time_pass(500ms);
  g_assert_false(calls_of(vm.host(), "Inhibit").at(1).closed);
  // Its connection closes (the application exits): released.
  g_dbus_connection_close_sync(player.get(), nullptr, nullptr);
  g_assert_true(released(vm, 1));
}

// The VM goes away: every inhibition of it is released.
void test_released_when_link_goes() {
  InhibitVm vm;
  auto first = inhibit(vm.guest().connection(), kIdle);
  auto second = inhibit(vm.guest().connection(), kSuspend);
  g_assert_true(first->wait_for_response());
  g_assert_true(second->wait_for_response());
  inhibition(vm, 1);
  vm.stop_agent();
  g_assert_true(released(vm, 0));
  g_assert_true(released(vm, 1));
}

// Bad input: InvalidArgument, nothing reaches the host, the broker serves on.
void test_invalid_inhibit() {
  InhibitVm vm;
  GDBusConnection* guest = vm.guest().connection();
  const std::string long_reason(257, 'r');
  struct Case {
    guint32 flags;
    std::string options;
    const char* message;
  };
  const std::vector<Case> cases = {
      {16, "{}", "invalid flags 16"},
      {0, "{}", "invalid flags 0"},
      {kIdle, "{'reason': <'" + long_reason + "'>}", "257 characters"},
      {kIdle, "{'reason': <uint32 1>}", "option 'reason' must be of type 's'"},
      {kIdle, "{'handle_token': <'not/a/token'>}", "handle_token"},
  };
  for (const Case& c : cases) {
    VariantPtr options = parse("a{sv}", c.options);
    g_autoptr(GError) error = nullptr;
    call(guest, kInhibit, "Inhibit", g_variant_new("(su@a{sv})", "", c.flags, options.get()), &error);
    assert_error(error, kInvalidArgument, c.message);
  }
  g_assert_cmpuint(calls_of(vm.host(), "Inhibit").size(), ==, 0);
  // A reason of exactly 256 characters, with the VM's name, is cut to what
  // the host accepts.
  const std::string reason(256, 'r');
  auto request = inhibit(guest, kIdle, "{'reason': <'" + reason + "'>}");
  g_assert_true(request->wait_for_response());
  std::string host_reason = lookup_string(inhibition(vm).options.get(), "reason");
  g_assert_cmpuint(g_utf8_strlen(host_reason.c_str(), -1), ==, 256);
  g_assert_true(host_reason.starts_with("[testvm] rrr"));
  assert_broker_serves(vm);
}

// The host's backend fails: the guest hears 2, and nothing is held.
void test_backend_fails() {
  InhibitVm vm;
  vm.host().set_reply("Inhibit", kResponseDBusError);
  auto request = inhibit(vm.guest().connection(), kIdle);
  g_assert_true(request->wait_for_response());
  g_assert_cmpuint(request->response(), ==, kResponseOther);
  // The guest's request is gone with its answer.
  g_autoptr(GError) error = nullptr;
  VariantPtr closed = call(vm.guest().connection(), "org.freedesktop.portal.Request", "Close", nullptr, &error, nullptr,
                           request->handle().c_str());
  g_assert_nonnull(error);
}

// Held inhibitions count as pending requests (broker.max_pending_requests).
void test_inhibitions_are_counted() {
  InhibitVm vm({.broker = R"({"max_pending_requests": 2})"});
  auto first = inhibit(vm.guest().connection(), kIdle);
  auto second = inhibit(vm.guest().connection(), kIdle);
  g_assert_true(first->wait_for_response());
  g_assert_true(second->wait_for_response());
  auto third = inhibit(vm.guest().connection(), kIdle);
  assert_error(third->error(), kLimitsExceeded, "broker.max_pending_requests");
  g_assert_true(first->close());
  g_assert_true(released(vm, 0));
  auto fourth = inhibit(vm.guest().connection(), kIdle);
  g_assert_no_error(fourth->error());
  g_assert_true(fourth->wait_for_response());
}

// ---- CreateMonitor --------------------------------------------------------------

// A libportal application monitors the session: the desktop's state reaches
// it; its QueryEndResponse reaches the host for its own session; stopping
// closes the host session.
void test_libportal_monitor() {
  InhibitVm vm;
  GObjectPtr<GDBusConnection> bystander = connect(vm.guest().address());
  SignalLog bystander_hears(bystander.get(), kInhibit, "StateChanged");
  GuestApp app(vm, {"monitor"});
  app.wait_for_line("monitoring");
  const std::string host = host_session(vm);
  emit_state(vm, host, "{'screensaver-active': <true>, 'session-state': <uint32 2>}");
  assert_str_eq(app.wait_for_line("state"), "state 1 2");
  emit_state(vm, host, "{'screensaver-active': <false>, 'session-state': <uint32 3>}");
  assert_str_eq(app.wait_for_line("state", 1), "state 0 3");
  let_time_pass(500ms);
  g_assert_cmpuint(bystander_hears.size(), ==, 0);  // unicast to the session's owner

  app.send("query-end-response");
  app.wait_for_line("responded");
  std::vector<BackendCall> responses = wait_for_calls(vm.host(), "QueryEndResponse", 1);
  assert_str_eq(lookup_string(responses[0].record.get(), "session_handle"), host);

  app.send("stop");
  app.wait_for_line("stopped");
  g_assert_true(wait_until([&] { return session_closes(vm, host) == 1; }));
}

// Another guest client cannot use, close or answer for a session it does
// not own; unknown sessions are not found; StateChanged carries the guest's
// own session path.
void test_monitor_belongs_to_its_client() {
  InhibitVm vm;
  GObjectPtr<GDBusConnection> owner = connect(vm.guest().address());
  GObjectPtr<GDBusConnection> other = connect(vm.guest().address());
  SignalLog owner_hears(owner.get(), kInhibit, "StateChanged");
  SignalLog other_hears(other.get(), kInhibit, "StateChanged");
  const std::string session = create_monitor(owner.get());
  g_assert_true(session.starts_with("/org/freedesktop/portal/desktop/session/"));
  const std::string host = host_session(vm);
  g_assert_true(host != session);

  assert_call_fails(other.get(), kInhibit, "QueryEndResponse", g_variant_new("(o)", session.c_str()), kNotAllowed);
  g_autoptr(GError) error = nullptr;
  call(other.get(), kSession, "Close", nullptr, &error, nullptr, session.c_str());
  assert_error(error, kNotAllowed);
  assert_call_fails(owner.get(), kInhibit, "QueryEndResponse",
                    g_variant_new("(o)", "/org/freedesktop/portal/desktop/session/1_1/nope"), kNotFound);
  // The host path means nothing on the guest side either.
  assert_call_fails(owner.get(), kInhibit, "QueryEndResponse", g_variant_new("(o)", host.c_str()), kNotFound);
  g_assert_cmpuint(calls_of(vm.host(), "QueryEndResponse").size(), ==, 0);

  emit_state(vm, host, "{'screensaver-active': <false>, 'session-state': <uint32 1>}");
  g_assert_true(owner_hears.wait_for(1));
  assert_same(owner_hears.parameters(0), "(oa{sv})",
              "(objectpath '" + session + "', {'screensaver-active': <false>, 'session-state': <uint32 1>})");
  assert_str_eq(owner_hears.path(0), kPortalPath);
  let_time_pass(500ms);
  g_assert_cmpuint(other_hears.size(), ==, 0);

  call_ok(owner.get(), kInhibit, "QueryEndResponse", g_variant_new("(o)", session.c_str()));
  wait_for_calls(vm.host(), "QueryEndResponse", 1);
  // The owner leaves: its host session is closed; a later state reaches nobody.
  g_dbus_connection_close_sync(owner.get(), nullptr, nullptr);
  g_assert_true(wait_until([&] { return session_closes(vm, host) == 1; }));
  emit_state(vm, host, "{'session-state': <uint32 2>}");
  let_time_pass(500ms);
  g_assert_cmpuint(other_hears.size(), ==, 0);
  assert_broker_serves(vm);
}

// The desktop refuses a monitor, or ends it: the guest hears the answer, or
// Closed.
void test_monitor_refused_and_ended() {
  InhibitVm vm;
  vm.host().set_reply("CreateMonitor", kResponseCancelled);
  VariantPtr options = parse("a{sv}", "{'handle_token': <'m1'>, 'session_handle_token': <'s1'>}");
  PortalRequest refused(vm.guest().connection(), kPortalBusName, kInhibit, "CreateMonitor",
                        g_variant_new("(s@a{sv})", "", options.get()));
  g_assert_true(refused.wait_for_response());
  g_assert_cmpuint(refused.response(), ==, kResponseCancelled);
  g_assert_true(wait_until([&] { return session_closes(vm, host_session(vm)) == 1; }));

  vm.host().set_reply("CreateMonitor", kResponseSuccess);
  const std::string session = create_monitor(vm.guest().connection());
  SignalLog closed(vm.guest().connection(), kSession, "Closed");
  vm.host().call_backend("CloseSession", g_variant_new("(o)", host_session(vm, 1).c_str()));
  g_assert_true(closed.wait_for(1));
  assert_str_eq(closed.path(0), session);
  assert_call_fails(vm.guest().connection(), kInhibit, "QueryEndResponse", g_variant_new("(o)", session.c_str()),
                    kNotFound);
}

// Inhibit and a monitor over a byte-only link (nothing here needs fds).
void test_byte_only_link() {
  InhibitVm vm({.byte_only = true});
  GuestApp player(vm, {"inhibit", std::to_string(kIdle), "Playing"});
  player.wait_for_line("inhibited");
  assert_str_eq(lookup_string(inhibition(vm).options.get(), "reason"), "[testvm] Playing");
  player.send("uninhibit");
  g_assert_true(released(vm));
  GuestApp monitor(vm, {"monitor"});
  monitor.wait_for_line("monitoring");
  emit_state(vm, host_session(vm), "{'screensaver-active': <true>, 'session-state': <uint32 1>}");
  assert_str_eq(monitor.wait_for_line("state"), "state 1 1");
}

// version = min(host 1.16's 3, 3).
void test_version() {
  InhibitVm vm;
  VariantPtr host_version = portal_property(vm.host().connection(), kInhibit, "version");
  VariantPtr version = portal_property(vm.guest().connection(), kInhibit, "version");
  g_assert_cmpuint(g_variant_get_uint32(version.get()), ==, MIN(g_variant_get_uint32(host_version.get()), 3u));
  g_assert_cmpuint(g_variant_get_uint32(version.get()), ==, 3);
}

// The portal has nothing to configure: any key but "enabled" stops the broker.
void test_config_refused() {
  HostPortal host;
  BrokerOptions options;
  options.host_bus_address = host.bus_address();
  options.wait_for_listen = false;
  options.config = {{"50-inhibit.json", R"({"portals": {"inhibit": {"enable": true}}})"}};
  Broker broker(options);
  auto status = broker.wait_for_exit(20s);
  g_assert_true(status.has_value());
  g_assert_false(status->success());
  std::string log = broker.process().log();
  const char* expected =
      "portals.inhibit.enable: unknown key (did you mean \"enabled\"?); the inhibit portal reads: enabled";
  if (log.find(expected) == std::string::npos) g_error("the broker said “%s”", log.c_str());
}

}  // namespace

int main(int argc, char** argv) {
  g_test_init(&argc, &argv, nullptr);
  add_test("/inhibit/libportal/inhibit-uninhibit", test_libportal_inhibit_uninhibit);
  add_test("/inhibit/released-when-caller-leaves", test_released_when_caller_leaves);
  add_test("/inhibit/released-when-link-goes", test_released_when_link_goes);
  add_test("/inhibit/invalid", test_invalid_inhibit);
  add_test("/inhibit/backend-fails", test_backend_fails);
  add_test("/inhibit/counted-as-pending-requests", test_inhibitions_are_counted);
  add_test("/inhibit/monitor/libportal", test_libportal_monitor);
  add_test("/inhibit/monitor/belongs-to-its-client", test_monitor_belongs_to_its_client);
  add_test("/inhibit/monitor/refused-and-ended", test_monitor_refused_and_ended);
  add_test("/inhibit/byte-only-link", test_byte_only_link);
  add_test("/inhibit/version", test_version);
  add_test("/inhibit/config-refused", test_config_refused);
  return g_test_run();
}
