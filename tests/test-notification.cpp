// test-notification.cpp — the Notification portal across the VM boundary,
// real parts only: the host's xdg-desktop-portal 1.16 with the test
// backend's Notification (it records each AddNotification as the portal
// passed it on; EmitActionInvoked plays the user clicking), the broker with
// the notification plugin, the guest bus and the agent; guest applications
// are libportal (tests/desktop-client.cpp) and plain GDBus connections (two
// of them stand for two guest applications).
//
// What a user notices: the notification on the host says which VM it comes
// from; clicking its button reaches the application that sent it and no
// other; two applications in the VM never withdraw or replace each other's
// notifications; an application that quits takes its notifications with it.
#include <string>
#include <vector>

#include "desktop-portals.hpp"
#include "support/assert.hpp"
#include "support/vm.hpp"

using namespace sidebus::test;
using namespace sidebus::test::desktop;

namespace {

constexpr char kNotification[] = "org.freedesktop.portal.Notification";

struct NotificationVmOptions {
  std::string notification = "{}";  // the portals.notification section (enabled is added)
  std::string broker = "{}";        // the broker section
  bool byte_only = false;
  std::string name = "testvm";
};

Vm notification_vm(NotificationVmOptions options = {}) {
  return Vm({.name = options.name,
             .portals = {"notification"},
             .config = {{"60-notification.json", R"({"portals": {"notification": )" + options.notification +
                                                     R"(}, "broker": )" + options.broker + "}"}},
             .byte_only = options.byte_only});
}

// AddNotification(@id, @notification) from @connection; the error (or null).
GError* add(GDBusConnection* connection, const char* id, GVariant* notification) {
  GError* error = nullptr;
  call(connection, kNotification, "AddNotification", g_variant_new("(s@a{sv})", id, notification), &error);
  return error;
}

GError* add(GDBusConnection* connection, const char* id, const std::string& notification) {
  VariantPtr parsed = parse("a{sv}", notification);
  return add(connection, id, parsed.get());
}

void add_ok(GDBusConnection* connection, const char* id, const std::string& notification) {
  GError* error = add(connection, id, notification);
  if (error != nullptr) g_error("AddNotification %s: %s", id, error->message);
}

void remove(GDBusConnection* connection, const char* id) {
  call_ok(connection, kNotification, "RemoveNotification", g_variant_new("(s)", id));
}

// The notification the backend got last, and its host id.
struct Shown {
  std::string host_id;
  std::string app_id;
  VariantPtr notification;
};

Shown shown(const BackendCall& call) {
  return {lookup_string(call.record.get(), "id"), call.app_id, lookup(call.record.get(), "notification")};
}

Shown wait_for_added(Vm& vm, size_t count) { return shown(wait_for_calls(vm.host(), "AddNotification", count).back()); }

// "The user" clicks @action of the host notification @host_id.
void click(Vm& vm, const std::string& host_id, const char* action, const char* parameter = "@av []") {
  VariantPtr parameters = parse("av", parameter);
  vm.host().call_backend("EmitActionInvoked", g_variant_new("(sss@av)", "", host_id.c_str(), action, parameters.get()));
}

std::vector<std::string> removed_ids(Vm& vm) {
  std::vector<std::string> ids;
  for (const BackendCall& call : calls_of(vm.host(), "RemoveNotification"))
    ids.push_back(lookup_string(call.record.get(), "id"));
  return ids;
}

bool contains(const std::vector<std::string>& ids, const std::string& id) {
  for (const std::string& candidate : ids)
    if (candidate == id) return true;
  return false;
}

// ---- tests ----------------------------------------------------------------------

// A libportal application: its notification reaches the host with the VM's
// name in the title, the user clicks its button, the application hears it;
// it withdraws it.
void test_libportal_add_click_remove() {
  Vm vm = notification_vm();
  GuestApp app(vm, {"notify", "build-done", "--title", "Build finished", "--body", "All 12 tests passed", "--button",
                    "Open log=app.open-log", "--default-action", "app.show", "--icon", "emblem-default"});
  app.wait_for_line("added build-done");
  Shown host = wait_for_added(vm, 1);
  assert_str_eq(host.app_id, "");  // the broker is an unsandboxed host client
  g_assert_true(host.host_id.starts_with("sidebus.testvm."));
  g_assert_true(host.host_id != "build-done");
  assert_str_eq(lookup_string(host.notification.get(), "title"), "[testvm] Build finished");
  assert_str_eq(lookup_string(host.notification.get(), "body"), "All 12 tests passed");
  assert_str_eq(lookup_string(host.notification.get(), "default-action"), "app.show");
  assert_same(lookup(host.notification.get(), "buttons").get(), "aa{sv}",
              "[{'label': <'Open log'>, 'action': <'app.open-log'>}]");
  assert_same(lookup(host.notification.get(), "icon").get(), "(sv)",
              "('themed', <['emblem-default', 'emblem-default-symbolic']>)");  // as GIcon serializes it

  click(vm, host.host_id, "app.open-log", "[<'/tmp/build.log'>]");
  assert_str_eq(app.wait_for_line("invoked"), "invoked build-done app.open-log [<'/tmp/build.log'>]");

  app.send("remove build-done");
  app.wait_for_line("removed build-done");
  wait_for_calls(vm.host(), "RemoveNotification", 1);
  assert_str_eq(removed_ids(vm).at(0), host.host_id);
  // Withdrawn: a late click reaches nobody.
  click(vm, host.host_id, "app.open-log");
  let_time_pass(500ms);
  g_assert_cmpuint(app.count_lines("invoked"), ==, 1);
}

// Two guest applications use the same id: two host notifications; each
// application hears only its own clicks and withdraws only its own.
void test_ids_per_application() {
  Vm vm = notification_vm();
  GObjectPtr<GDBusConnection> first = connect(vm.guest().address());
  GObjectPtr<GDBusConnection> second = connect(vm.guest().address());
  SignalLog first_hears(first.get(), kNotification, "ActionInvoked");
  SignalLog second_hears(second.get(), kNotification, "ActionInvoked");

  add_ok(first.get(), "message", "{'title': <'From the first'>}");
  add_ok(second.get(), "message", "{'title': <'From the second'>}");
  std::vector<BackendCall> added = wait_for_calls(vm.host(), "AddNotification", 2);
  Shown first_host = shown(added[0]);
  Shown second_host = shown(added[1]);
  g_assert_true(first_host.host_id != second_host.host_id);
  assert_str_eq(lookup_string(first_host.notification.get(), "title"), "[testvm] From the first");
  assert_str_eq(lookup_string(second_host.notification.get(), "title"), "[testvm] From the second");

  click(vm, first_host.host_id, "app.reply", "[<'hi'>]");
  g_assert_true(first_hears.wait_for(1));
  assert_same(first_hears.parameters(0), "(ssav)", "('message', 'app.reply', [<'hi'>])");
  assert_str_eq(first_hears.path(0), kPortalPath);
  let_time_pass(500ms);
  g_assert_cmpuint(second_hears.size(), ==, 0);  // unicast to the one that added it

  // The second withdraws "message": only its own goes.
  remove(second.get(), "message");
  wait_for_calls(vm.host(), "RemoveNotification", 1);
  assert_str_eq(removed_ids(vm).at(0), second_host.host_id);
  click(vm, first_host.host_id, "app.again");
  g_assert_true(first_hears.wait_for(2));

  // The first sends "message" again: its host notification is replaced
  // (same host id), not a new one.
  add_ok(first.get(), "message", "{'title': <'Updated'>}");
  Shown replaced = wait_for_added(vm, 3);
  assert_str_eq(replaced.host_id, first_host.host_id);

  // Withdrawing an id one never added touches nothing on the host.
  remove(second.get(), "never-added");
  // A click on a host notification the broker did not make reaches nobody.
  click(vm, "message", "app.spoof");
  let_time_pass(500ms);
  g_assert_cmpuint(removed_ids(vm).size(), ==, 1);
  g_assert_cmpuint(first_hears.size(), ==, 2);
  g_assert_cmpuint(second_hears.size(), ==, 0);
}

// The title names the VM: the broker's dialog prefix by default, the
// plugin's own prefix when configured; without a title, the prefix alone.
void test_title_names_the_vm() {
  {
    Vm vm = notification_vm({.broker = R"({"dialog_title_prefix": "<{vm}> "})", .name = "work"});
    add_ok(vm.guest().connection(), "a", "{'title': <'Hello'>}");
    assert_str_eq(lookup_string(wait_for_added(vm, 1).notification.get(), "title"), "<work> Hello");
    add_ok(vm.guest().connection(), "b", "{'body': <'no title'>}");
    assert_str_eq(lookup_string(wait_for_added(vm, 2).notification.get(), "title"), "<work>");
  }
  Vm vm = notification_vm({.notification = R"({"title_prefix": "From VM {vm}: "})", .name = "work"});
  add_ok(vm.guest().connection(), "a", "{'title': <'Hello'>}");
  assert_str_eq(lookup_string(wait_for_added(vm, 1).notification.get(), "title"), "From VM work: Hello");
  add_ok(vm.guest().connection(), "b", "{'body': <'no title'>}");
  assert_str_eq(lookup_string(wait_for_added(vm, 2).notification.get(), "title"), "From VM work:");
}

// An application that quits (here: crashes) has its notifications withdrawn
// on the host: nothing could receive their actions any more.
void test_client_leaves() {
  Vm vm = notification_vm();
  GObjectPtr<GDBusConnection> stays = connect(vm.guest().address());
  add_ok(stays.get(), "kept", "{'title': <'Stays'>}");
  GuestApp app(vm, {"notify", "download", "--title", "Download finished"});
  app.wait_for_line("added download");
  std::vector<BackendCall> added = wait_for_calls(vm.host(), "AddNotification", 2);
  const std::string kept_id = shown(added[0]).host_id;
  const std::string app_id = shown(added[1]).host_id;
  app.kill();
  wait_for_calls(vm.host(), "RemoveNotification", 1);
  let_time_pass(500ms);
  std::vector<std::string> removed = removed_ids(vm);
  g_assert_cmpuint(removed.size(), ==, 1);
  assert_str_eq(removed[0], app_id);
  click(vm, app_id, "app.open");  // goes nowhere, harms nothing
  SignalLog hears(stays.get(), kNotification, "ActionInvoked");
  click(vm, kept_id, "app.open");
  g_assert_true(hears.wait_for(1));
  assert_broker_serves(vm);
}

// keep_after_exit: a tool that notifies and exits leaves its notification on
// the host for the user to read; its actions reach nobody; the oldest such
// orphan makes room when the VM's limit is reached.
void test_kept_after_exit() {
  Vm vm = notification_vm({.notification = R"({"keep_after_exit": true, "max_notifications": 2})"});
  std::vector<std::string> host_ids;
  for (const char* id : {"first", "second"}) {
    GuestApp tool(vm, {"notify", id, "--title", id});
    tool.wait_for_line(std::string("added ") + id);
    host_ids.push_back(wait_for_added(vm, host_ids.size() + 1).host_id);
    tool.quit();
  }
  let_time_pass(500ms);
  g_assert_cmpuint(removed_ids(vm).size(), ==, 0);  // both still shown
  click(vm, host_ids[0], "app.open");               // reaches nobody, harms nothing
  // A third: the VM's limit is 2, so the oldest orphan goes.
  add_ok(vm.guest().connection(), "third", "{'title': <'third'>}");
  wait_for_calls(vm.host(), "RemoveNotification", 1);
  assert_str_eq(removed_ids(vm).at(0), host_ids[0]);
  // A live client's notification is never withdrawn to make room.
  GObjectPtr<GDBusConnection> other = connect(vm.guest().address());
  add_ok(other.get(), "fourth", "{'title': <'fourth'>}");
  wait_for_calls(vm.host(), "RemoveNotification", 2);
  assert_str_eq(removed_ids(vm).at(1), host_ids[1]);
  g_autoptr(GError) error = add(other.get(), "fifth", "{'title': <'fifth'>}");
  assert_error(error, kLimitsExceeded, "max_notifications");
  // The link goes: everything goes.
  vm.stop_agent();
  wait_for_calls(vm.host(), "RemoveNotification", 4);
}

// The VM's link goes away (the VM shuts down): its notifications go too.
void test_link_goes() {
  Vm vm = notification_vm();
  add_ok(vm.guest().connection(), "one", "{'title': <'One'>}");
  add_ok(vm.guest().connection(), "two", "{'title': <'Two'>}");
  std::vector<BackendCall> added = wait_for_calls(vm.host(), "AddNotification", 2);
  vm.stop_agent();
  wait_for_calls(vm.host(), "RemoveNotification", 2);
  std::vector<std::string> removed = removed_ids(vm);
  g_assert_true(contains(removed, shown(added[0]).host_id));
  g_assert_true(contains(removed, shown(added[1]).host_id));
}

// Icons: names and bytes pass; files (guest paths, host paths) never.
void test_icons() {
  Vm vm = notification_vm();
  GDBusConnection* guest = vm.guest().connection();
  add_ok(guest, "name", "{'icon': <'mail-unread'>}");
  assert_same(lookup(wait_for_added(vm, 1).notification.get(), "icon").get(), "(sv)", "('themed', <['mail-unread']>)");
  add_ok(guest, "themed", "{'icon': <('themed', <['mail-unread', 'mail-unread-symbolic']>)>}");
  assert_same(lookup(wait_for_added(vm, 2).notification.get(), "icon").get(), "(sv)",
              "('themed', <['mail-unread', 'mail-unread-symbolic']>)");
  // Bytes pass the broker; the host portal checks the image itself (and
  // drops one it cannot read: the notification still shows).
  add_ok(guest, "bytes", "{'title': <'bytes'>, 'icon': <('bytes', <@ay [0x89, 0x50, 0x4e, 0x47]>)>}");
  wait_for_added(vm, 3);

  struct Case {
    const char* icon;
    const char* error;
    const char* message;
  };
  const Case refused[] = {
      {"<'/etc/passwd'>", kNotAllowed, "a file in the VM means nothing on the host"},
      {"<('file', <'file:///etc/passwd'>)>", kNotAllowed, "a file in the VM means nothing on the host"},
      {"<'file:///etc/passwd'>", kNotAllowed, "a file in the VM"},
      {"<'bad name!'>", kInvalidArgument, "not an icon name"},
      {"<('themed', <@as []>)>", kInvalidArgument, "0 names"},
      {"<('themed', <['ok', '../x']>)>", kInvalidArgument, "not an icon name"},
      {"<('emblemed', <('themed', <['x']>)>)>", kInvalidArgument, "icons are not accepted"},
      {"<('file-descriptor', <handle 0>)>", kInvalidArgument, "icons are not accepted"},  // version 1 host
      {"<uint32 3>", kInvalidArgument, "must be an icon name"},
  };
  for (const Case& c : refused) {
    g_autoptr(GError) error = add(guest, "refused", std::string("{'icon': ") + c.icon + "}");
    assert_error(error, c.error, c.message);
  }
  // Bigger than max_icon_size (256 KiB by default).
  std::string zeros(300 * 1024, '\0');
  GVariant* bytes = g_variant_new_fixed_array(G_VARIANT_TYPE_BYTE, zeros.data(), zeros.size(), 1);
  VariantPtr big(g_variant_ref_sink(g_variant_new_parsed("{'icon': <('bytes', <%@ay>)>}", bytes)));
  g_autoptr(GError) error = add(guest, "big", big.get());
  assert_error(error, kInvalidArgument, "portals.notification.max_icon_size");
  g_assert_cmpuint(calls_of(vm.host(), "AddNotification").size(), ==, 3);
  assert_broker_serves(vm);
}

// Every option is checked as the host portal checks it, and capped; a
// refused notification never reaches the host; unknown keys are dropped.
void test_invalid_notifications() {
  Vm vm = notification_vm();
  GDBusConnection* guest = vm.guest().connection();
  const std::string long_title(1025, 'x');
  const std::string long_id(257, 'i');
  struct Case {
    std::string notification;
    const char* message;
  };
  const std::vector<Case> cases = {
      {"{'title': <uint32 3>}", "option 'title' must be of type 's'"},
      {"{'title': <'" + long_title + "'>}", "the title is 1025 bytes long"},
      {"{'priority': <'whenever'>}", "is not a priority"},
      {"{'default-action': <'not valid!'>}", "is not an action name"},
      {"{'buttons': <[{'label': <'No action'>}]>}", "a button has no action"},
      {"{'buttons': <[{'action': <'app.x'>}]>}", "a button has no label"},
      {"{'buttons': <[{'label': <uint32 1>, 'action': <'app.x'>}]>}", "label is not a string"},
      {"{'buttons': <@aa{sv} [{}, {}, {}, {}, {}, {}, {}, {}, {}]>}", "9 buttons"},
      {"{'buttons': <'not buttons'>}", "must be of type 'aa{sv}'"},
  };
  for (const Case& c : cases) {
    g_autoptr(GError) error = add(guest, "bad", c.notification);
    assert_error(error, kInvalidArgument, c.message);
  }
  g_autoptr(GError) error = add(guest, long_id.c_str(), "{}");
  assert_error(error, kInvalidArgument, "257 bytes");
  g_assert_cmpuint(calls_of(vm.host(), "AddNotification").size(), ==, 0);

  // Keys the host's version does not know (markup-body and category are
  // version 2; 1.16 is 1), and made-up ones, are dropped; so are made-up
  // button keys.
  add_ok(guest, "extra",
         "{'title': <'t'>, 'markup-body': <'<b>x</b>'>, 'category': <'im.received'>, 'x-mine': <1>, "
         "'priority': <'urgent'>, 'buttons': <[{'label': <'L'>, 'action': <'app.l'>, 'target': <5>, "
         "'color': <'red'>}]>}");
  Shown host = wait_for_added(vm, 1);
  assert_same(host.notification.get(), "a{sv}",
              "{'title': <'[testvm] t'>, 'priority': <'urgent'>, 'buttons': <[{'label': <'L'>, 'action': <'app.l'>, "
              "'target': <5>}]>}");
  assert_broker_serves(vm);
}

// At most max_notifications per VM; replacing one is not another.
void test_limit() {
  Vm vm = notification_vm({.notification = R"({"max_notifications": 2})"});
  GObjectPtr<GDBusConnection> other = connect(vm.guest().address());
  add_ok(vm.guest().connection(), "a", "{'title': <'a'>}");
  add_ok(other.get(), "a", "{'title': <'other a'>}");
  g_autoptr(GError) error = add(vm.guest().connection(), "b", "{'title': <'b'>}");
  assert_error(error, kLimitsExceeded, "portals.notification.max_notifications");
  add_ok(vm.guest().connection(), "a", "{'title': <'a again'>}");  // a replacement
  remove(other.get(), "a");
  add_ok(vm.guest().connection(), "b", "{'title': <'b'>}");
  g_assert_cmpuint(calls_of(vm.host(), "AddNotification").size(), ==, 4);
}

// A host that fails the call: the guest gets the host's error, and the
// notification is not counted as shown.
void test_host_failure() {
  Vm vm = notification_vm({.notification = R"({"max_notifications": 1})"});
  vm.host().set_reply("AddNotification", kResponseDBusError);
  g_autoptr(GError) error = add(vm.guest().connection(), "a", "{'title': <'a'>}");
  // xdg-desktop-portal 1.16 answers before it asks its backend: the failure
  // stays on the host; newer ones pass it on. Either way the broker goes on.
  wait_for_calls(vm.host(), "AddNotification", 1);
  vm.host().reset_backend();
  g_autoptr(GError) second = add(vm.guest().connection(), "a", "{'title': <'a'>}");
  g_assert_no_error(second);
  assert_broker_serves(vm);
}

// The same on a byte-only link (nothing here needs fds).
void test_byte_only_link() {
  Vm vm = notification_vm({.byte_only = true});
  GuestApp app(vm, {"notify", "chat", "--title", "New message", "--button", "Reply=app.reply"});
  app.wait_for_line("added chat");
  Shown host = wait_for_added(vm, 1);
  assert_str_eq(lookup_string(host.notification.get(), "title"), "[testvm] New message");
  click(vm, host.host_id, "app.reply");
  assert_str_eq(app.wait_for_line("invoked"), "invoked chat app.reply []");
}

// version = min(host 1.16's 1, 2); SupportedOptions (version 2) is empty.
void test_version() {
  Vm vm = notification_vm();
  VariantPtr host_version = portal_property(vm.host().connection(), kNotification, "version");
  VariantPtr version = portal_property(vm.guest().connection(), kNotification, "version");
  g_assert_cmpuint(g_variant_get_uint32(version.get()), ==, MIN(g_variant_get_uint32(host_version.get()), 2u));
  assert_same(portal_property(vm.guest().connection(), kNotification, "SupportedOptions").get(), "a{sv}", "@a{sv} {}");
}

void test_config_refused() {
  struct Case {
    const char* section;
    const char* message;
  };
  const Case cases[] = {
      {R"({"max_notification": 5})",
       "portals.notification.max_notification: unknown key (did you mean \"max_notifications\"?)"},
      {R"({"max_notifications": 0})", "portals.notification.max_notifications: expected an integer in 1..1024, got 0"},
      {R"({"max_icon_size": 100})", "portals.notification.max_icon_size: expected an integer in 1024..16777216"},
      {R"({"title_prefix": 7})", "portals.notification.title_prefix: expected a string"},
      {R"({"keep_after_exit": "yes"})", "portals.notification.keep_after_exit: expected a boolean"},
  };
  for (const Case& c : cases) {
    HostPortal host;
    BrokerOptions options;
    options.host_bus_address = host.bus_address();
    options.wait_for_listen = false;
    options.config = {{"50-notification.json", std::string(R"({"portals": {"notification": )") + c.section + "}}"}};
    Broker broker(options);
    auto status = broker.wait_for_exit(20s);
    g_assert_true(status.has_value());
    g_assert_false(status->success());
    std::string log = broker.process().log();
    if (log.find(c.message) == std::string::npos) g_error("the broker said “%s”, not “%s”", log.c_str(), c.message);
  }
}

}  // namespace

int main(int argc, char** argv) {
  g_test_init(&argc, &argv, nullptr);
  add_test("/notification/libportal/add-click-remove", test_libportal_add_click_remove);
  add_test("/notification/ids-per-application", test_ids_per_application);
  add_test("/notification/title-names-the-vm", test_title_names_the_vm);
  add_test("/notification/client-leaves", test_client_leaves);
  add_test("/notification/kept-after-exit", test_kept_after_exit);
  add_test("/notification/link-goes", test_link_goes);
  add_test("/notification/icons", test_icons);
  add_test("/notification/invalid", test_invalid_notifications);
  add_test("/notification/limit", test_limit);
  add_test("/notification/host-failure", test_host_failure);
  add_test("/notification/byte-only-link", test_byte_only_link);
  add_test("/notification/version", test_version);
  add_test("/notification/config-refused", test_config_refused);
  return g_test_run();
}
