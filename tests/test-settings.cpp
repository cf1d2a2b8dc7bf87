// test-settings.cpp — the Settings portal across the VM boundary, real parts
// only: the host's xdg-desktop-portal 1.16 with the test backend's Settings
// (appearance defaults: color-scheme 1, accent-color (0.2, 0.4, 0.8),
// contrast 0; and a private namespace, org.gnome.desktop.privacy), the broker
// with the settings plugin, the guest bus and the agent. The guest's
// applications are plain D-Bus clients on the guest bus (and `gdbus`), as a
// toolkit reads settings.
//
// What a user notices: a guest application follows the host's dark mode and
// hears it change; it never learns a setting outside the allow-list, which
// reads exactly like a setting that does not exist.
#include <string>
#include <vector>

#include "desktop-portals.hpp"
#include "support/assert.hpp"
#include "support/vm.hpp"

using namespace sidebus::test;
using namespace sidebus::test::desktop;

namespace {

constexpr char kSettings[] = "org.freedesktop.portal.Settings";
constexpr char kAppearance[] = "org.freedesktop.appearance";
constexpr char kPrivacy[] = "org.gnome.desktop.privacy";

struct SettingsVmOptions {
  std::string settings = "{}";  // the portals.settings section (enabled is added)
  bool byte_only = false;
};

Vm settings_vm(SettingsVmOptions options = {}) {
  return Vm({.portals = {"settings"},
             .config = {{"60-settings.json", R"({"portals": {"settings": )" + options.settings + "}}"}},
             .byte_only = options.byte_only});
}

// Read and ReadOne of @name_space @key, each fully unboxed; they must agree.
VariantPtr read_setting(GDBusConnection* guest, const char* name_space, const char* key) {
  VariantPtr read = call_ok(guest, kSettings, "Read", g_variant_new("(ss)", name_space, key), "(v)");
  g_autoptr(GVariant) read_value = g_variant_get_child_value(read.get(), 0);
  // Read answers <<value>> (xdg-desktop-portal's historical shape), ReadOne <value>.
  g_assert_true(g_variant_is_of_type(read_value, G_VARIANT_TYPE_VARIANT));
  g_autoptr(GVariant) inner = g_variant_get_variant(read_value);
  g_assert_true(g_variant_is_of_type(inner, G_VARIANT_TYPE_VARIANT));
  VariantPtr read_one = call_ok(guest, kSettings, "ReadOne", g_variant_new("(ss)", name_space, key), "(v)");
  g_autoptr(GVariant) one_value = g_variant_get_child_value(read_one.get(), 0);
  VariantPtr value = unbox(one_value);
  g_assert_true(g_variant_equal(unbox(read_value).get(), value.get()));
  g_autoptr(GVariant) one_inner = g_variant_get_variant(one_value);
  g_assert_false(g_variant_is_of_type(one_inner, G_VARIANT_TYPE_VARIANT));
  return value;
}

VariantPtr read_all(GDBusConnection* guest, const std::string& filters) {
  VariantPtr parsed = parse("as", filters);
  VariantPtr reply = call_ok(guest, kSettings, "ReadAll", g_variant_new("(@as)", parsed.get()), "(a{sa{sv}})");
  return VariantPtr(g_variant_get_child_value(reply.get(), 0));
}

void set_host_setting(Vm& vm, const char* name_space, const char* key, GVariant* value) {
  vm.host().call_backend("SetSetting", g_variant_new("(ssv)", name_space, key, value));
}

// ---- tests ----------------------------------------------------------------------

// The guest reads the host's appearance, in both shapes, and the whole
// appearance namespace; nothing else comes with it.
void test_reads_appearance() {
  Vm vm = settings_vm();
  GDBusConnection* guest = vm.guest().connection();
  assert_same(read_setting(guest, kAppearance, "color-scheme").get(), "u", "1");
  assert_same(read_setting(guest, kAppearance, "accent-color").get(), "(ddd)", "(0.2, 0.4, 0.8)");
  assert_same(read_setting(guest, kAppearance, "contrast").get(), "u", "0");

  const char* appearance =
      "{'org.freedesktop.appearance': {'accent-color': <(0.2, 0.4, 0.8)>, 'color-scheme': <uint32 1>,"
      " 'contrast': <uint32 0>}}";
  assert_same(read_all(guest, "['org.freedesktop.appearance']").get(), "a{sa{sv}}", appearance);
  assert_same(read_all(guest, "@as []").get(), "a{sa{sv}}", appearance);  // all the VM may read
  assert_same(read_all(guest, "['']").get(), "a{sa{sv}}", appearance);
  assert_same(read_all(guest, "['org.freedesktop.*']").get(), "a{sa{sv}}", appearance);
  assert_same(read_all(guest, "['org.gnome.*']").get(), "a{sa{sv}}", "@a{sa{sv}} {}");
  // The host was only ever asked for what the VM may read.
  for (const BackendCall& call : calls_of(vm.host(), "ReadAll"))
    assert_same(lookup(call.record.get(), "namespaces").get(), "as", "['org.freedesktop.appearance']");

  // A key the host does not have: the host portal's own answer.
  assert_call_fails(guest, kSettings, "Read", g_variant_new("(ss)", kAppearance, "no-such-key"), kNotFound);
  assert_call_fails(guest, kSettings, "ReadOne", g_variant_new("(ss)", kAppearance, "no-such-key"), kNotFound);
}

// A namespace outside the allow-list reads as "not found", exactly like a
// setting that does not exist, and the host is never asked.
void test_private_namespace_not_found() {
  Vm vm = settings_vm();
  GDBusConnection* guest = vm.guest().connection();
  for (const char* method : {"Read", "ReadOne"}) {
    g_autoptr(GError) error = nullptr;
    VariantPtr reply = call(guest, kSettings, method, g_variant_new("(ss)", kPrivacy, "remember-recent-files"), &error);
    g_assert_null(reply);
    assert_error(error, kNotFound);
    // The same message as for a missing key, so the two cannot be told apart.
    g_autoptr(GError) missing = nullptr;
    VariantPtr missing_reply =
        call(guest, kSettings, method, g_variant_new("(ss)", kAppearance, "no-such-key"), &missing);
    g_assert_null(missing_reply);
    assert_str_eq(remote_error_name(missing), remote_error_name(error));
    g_assert_cmpstr(missing->message, ==, error->message);
  }
  for (const BackendCall& call : calls_of(vm.host(), "Read")) {
    const std::string asked = lookup_string(call.record.get(), "namespace");
    g_assert_cmpstr(asked.c_str(), !=, kPrivacy);
  }
  assert_same(read_all(guest, "['org.gnome.desktop.privacy']").get(), "a{sa{sv}}", "@a{sa{sv}} {}");
}

// The host's dark mode changes: the guest hears it and reads the new value;
// a private setting changing is not heard.
void test_setting_changed() {
  Vm vm = settings_vm();
  GDBusConnection* guest = vm.guest().connection();
  GObjectPtr<GDBusConnection> second_app = connect(vm.guest().address());
  SignalLog changed(guest, kSettings, "SettingChanged");
  SignalLog changed_too(second_app.get(), kSettings, "SettingChanged");  // broadcast: every app hears it
  SignalLog host_changed(vm.host().connection(), kSettings, "SettingChanged");

  set_host_setting(vm, kPrivacy, "remember-recent-files", g_variant_new_boolean(FALSE));
  set_host_setting(vm, kAppearance, "color-scheme", g_variant_new_uint32(2));
  g_assert_true(host_changed.wait_for(2));
  g_assert_true(changed.wait_for(1));
  g_assert_true(changed_too.wait_for(1));
  let_time_pass(500ms);
  g_assert_cmpuint(changed.size(), ==, 1);  // not the privacy one
  const char* name_space = nullptr;
  const char* key = nullptr;
  g_autoptr(GVariant) value = nullptr;
  g_variant_get(changed.parameters(0), "(&s&s@v)", &name_space, &key, &value);
  g_assert_cmpstr(name_space, ==, kAppearance);
  g_assert_cmpstr(key, ==, "color-scheme");
  assert_same(unbox(value).get(), "u", "2");
  assert_str_eq(changed.path(0), kPortalPath);
  assert_same(read_setting(guest, kAppearance, "color-scheme").get(), "u", "2");
}

// An administrator allows more: org.gnome.* reads, its changes are heard.
void test_configured_namespaces() {
  Vm vm = settings_vm({.settings = R"({"namespaces": ["org.freedesktop.appearance", "org.gnome.*"]})"});
  GDBusConnection* guest = vm.guest().connection();
  assert_same(read_setting(guest, kPrivacy, "remember-recent-files").get(), "b", "true");
  VariantPtr all = read_all(guest, "@as []");
  g_assert_cmpuint(g_variant_n_children(all.get()), ==, 2);
  assert_same(read_all(guest, "['org.gnome.desktop.*']").get(), "a{sa{sv}}",
              "{'org.gnome.desktop.privacy': {'remember-recent-files': <true>}}");
  assert_same(lookup(calls_of(vm.host(), "ReadAll").back().record.get(), "namespaces").get(), "as",
              "['org.freedesktop.appearance', 'org.gnome.*']");
  SignalLog changed(guest, kSettings, "SettingChanged");
  set_host_setting(vm, kPrivacy, "remember-recent-files", g_variant_new_boolean(FALSE));
  g_assert_true(changed.wait_for(1));
  assert_same(read_setting(guest, kPrivacy, "remember-recent-files").get(), "b", "false");

  // "org.gnome.*" is below org.gnome, not org.gnome itself or org.gnomeish.
  Vm narrow = settings_vm({.settings = R"({"namespaces": ["org.gnome.desktop.*"]})"});
  assert_call_fails(narrow.guest().connection(), kSettings, "ReadOne",
                    g_variant_new("(ss)", kAppearance, "color-scheme"), kNotFound);
  assert_same(read_setting(narrow.guest().connection(), kPrivacy, "remember-recent-files").get(), "b", "true");
}

// An empty allow-list: nothing reads, the host is never asked.
void test_empty_allow_list() {
  Vm vm = settings_vm({.settings = R"({"namespaces": []})"});
  GDBusConnection* guest = vm.guest().connection();
  assert_call_fails(guest, kSettings, "ReadOne", g_variant_new("(ss)", kAppearance, "color-scheme"), kNotFound);
  assert_same(read_all(guest, "@as []").get(), "a{sa{sv}}", "@a{sa{sv}} {}");
  g_assert_cmpuint(vm.host().backend_calls().size(), ==, 0);
}

// Malformed input gets InvalidArgument and never reaches the host; the
// broker goes on serving.
void test_bad_input() {
  Vm vm = settings_vm();
  GDBusConnection* guest = vm.guest().connection();
  const std::string long_name(300, 'a');
  assert_call_fails(guest, kSettings, "Read", g_variant_new("(ss)", "", "color-scheme"), kInvalidArgument, "empty");
  assert_call_fails(guest, kSettings, "ReadOne", g_variant_new("(ss)", kAppearance, ""), kInvalidArgument, "empty");
  assert_call_fails(guest, kSettings, "Read", g_variant_new("(ss)", kAppearance, long_name.c_str()), kInvalidArgument,
                    "300 bytes");
  assert_call_fails(guest, kSettings, "ReadOne", g_variant_new("(ss)", long_name.c_str(), "x"), kInvalidArgument,
                    "300 bytes");
  g_auto(GVariantBuilder) many = G_VARIANT_BUILDER_INIT(G_VARIANT_TYPE("as"));
  for (int i = 0; i < 65; i++) g_variant_builder_add(&many, "s", "org.freedesktop.appearance");
  assert_call_fails(guest, kSettings, "ReadAll", g_variant_new("(@as)", g_variant_builder_end(&many)), kInvalidArgument,
                    "filters");
  g_auto(GVariantBuilder) long_filter = G_VARIANT_BUILDER_INIT(G_VARIANT_TYPE("as"));
  g_variant_builder_add(&long_filter, "s", long_name.c_str());
  assert_call_fails(guest, kSettings, "ReadAll", g_variant_new("(@as)", g_variant_builder_end(&long_filter)),
                    kInvalidArgument, "300 bytes");
  // Wrong signatures never reach the plugin.
  assert_call_fails(guest, kSettings, "Read", g_variant_new("(s)", kAppearance),
                    "org.freedesktop.DBus.Error.InvalidArgs");
  g_assert_cmpuint(vm.host().backend_calls().size(), ==, 0);
  assert_broker_serves(vm);
  assert_same(read_setting(guest, kAppearance, "color-scheme").get(), "u", "1");
}

// version = min(host 1.16's 1, 2); ReadOne is there anyway (the same value
// as Read, one variant less), for clients that try it first.
void test_version() {
  Vm vm = settings_vm();
  VariantPtr host_version = portal_property(vm.host().connection(), kSettings, "version");
  VariantPtr version = portal_property(vm.guest().connection(), kSettings, "version");
  g_assert_cmpuint(g_variant_get_uint32(version.get()), ==, MIN(g_variant_get_uint32(host_version.get()), 2u));
  std::string xml = vm.guest_introspect();
  g_assert_true(xml.find("\"ReadOne\"") != std::string::npos);
}

// A typo or a pattern that would allow everything stops the broker at start.
void test_config_refused() {
  struct Case {
    const char* section;
    const char* message;
  };
  const Case cases[] = {
      {R"({"namespace": ["org.freedesktop.appearance"]})",
       "portals.settings.namespace: unknown key (did you mean \"namespaces\"?)"},
      {R"({"namespaces": ["*"]})", "portals.settings.namespaces: [0] \"*\" would let the VM read every host setting"},
      {R"({"namespaces": ["org.freedesktop.appearance", "org.gnome*"]})",
       "portals.settings.namespaces: [1] \"org.gnome*\" is not a namespace"},
      {R"({"namespaces": "org.freedesktop.appearance"})", "portals.settings.namespaces: expected an array of strings"},
  };
  for (const Case& c : cases) {
    HostPortal host;
    BrokerOptions options;
    options.host_bus_address = host.bus_address();
    options.wait_for_listen = false;
    options.config = {{"50-settings.json", std::string(R"({"portals": {"settings": )") + c.section + "}}"}};
    Broker broker(options);
    auto status = broker.wait_for_exit(20s);
    g_assert_true(status.has_value());
    g_assert_false(status->success());
    std::string log = broker.process().log();
    if (log.find(c.message) == std::string::npos) g_error("the broker said “%s”, not “%s”", log.c_str(), c.message);
  }
}

// The same over a byte-only link (virtio-serial, vsock): nothing here needs fds.
void test_byte_only_link() {
  Vm vm = settings_vm({.byte_only = true});
  GDBusConnection* guest = vm.guest().connection();
  assert_same(read_setting(guest, kAppearance, "color-scheme").get(), "u", "1");
  assert_call_fails(guest, kSettings, "Read", g_variant_new("(ss)", kPrivacy, "remember-recent-files"), kNotFound);
  SignalLog changed(guest, kSettings, "SettingChanged");
  set_host_setting(vm, kAppearance, "contrast", g_variant_new_uint32(1));
  g_assert_true(changed.wait_for(1));
  assert_same(read_setting(guest, kAppearance, "contrast").get(), "u", "1");
}

// A real client: gdbus, as a user tries it.
void test_gdbus_reads() {
  Vm vm = settings_vm();
  GuestBus::Output output =
      vm.guest().run_as_guest({"gdbus", "call", "--session", "--dest", kPortalBusName, "--object-path", kPortalPath,
                               "--method", "org.freedesktop.portal.Settings.ReadOne", kAppearance, "color-scheme"});
  g_assert_true(output.status.success());
  assert_str_eq(output.out, "(<uint32 1>,)\n");
  output =
      vm.guest().run_as_guest({"gdbus", "call", "--session", "--dest", kPortalBusName, "--object-path", kPortalPath,
                               "--method", "org.freedesktop.portal.Settings.Read", kPrivacy, "remember-recent-files"});
  g_assert_false(output.status.success());
  g_assert_true(output.err.find(kNotFound) != std::string::npos);
}

}  // namespace

int main(int argc, char** argv) {
  g_test_init(&argc, &argv, nullptr);
  add_test("/settings/reads-appearance", test_reads_appearance);
  add_test("/settings/private-namespace-not-found", test_private_namespace_not_found);
  add_test("/settings/setting-changed", test_setting_changed);
  add_test("/settings/configured-namespaces", test_configured_namespaces);
  add_test("/settings/empty-allow-list", test_empty_allow_list);
  add_test("/settings/bad-input", test_bad_input);
  add_test("/settings/version", test_version);
  add_test("/settings/config-refused", test_config_refused);
  add_test("/settings/byte-only-link", test_byte_only_link);
  add_test("/settings/gdbus", test_gdbus_reads);
  return g_test_run();
}
