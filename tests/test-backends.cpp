// SPDX-License-Identifier: LGPL-2.1-or-later
// test-backends.cpp — the test backend (tests/backend) against the real
// xdg-desktop-portal 1.16, no broker: the test is an unsandboxed app on the
// host bus, calls each frontend portal with plain D-Bus calls and asserts
// what a user would notice — the values, signals, files and video frames it
// gets back — and what the backend was asked (GetCalls). Each dialog portal
// also has its cancel (1) and other (2) answers reach the caller.
//
// The video portals run on the test's own PipeWire daemon (HostPipeWire):
// ScreenCast streams come from the backend's video source, the camera from
// sidebus-test-camera, and the test consumes them as an app would, through
// the fd OpenPipeWireRemote returns (support/pipewire-client.hpp), checking the
// frame numbers and pixels of tests/backend/test-patterns.hpp.
//
// Plain D-Bus calls rather than libportal: an XdpPortal talks to the
// process's one session bus, and every test here starts its own host bus.
//
// Permissions xdg-desktop-portal keeps (screenshot, wallpaper, camera) live
// in the permission store of each HostPortal's temp dir, so tests that need a
// first-time question start their own HostPortal.
#include <fcntl.h>
#include <gdk-pixbuf/gdk-pixbuf.h>
#include <gio/gunixfdlist.h>
#include <pipewire/pipewire.h>
#include <unistd.h>

#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "backend/test-patterns.hpp"
#include "support/assert.hpp"
#include "support/files.hpp"
#include "support/host-pipewire.hpp"
#include "support/host-portal.hpp"
#include "support/pipewire-client.hpp"

using namespace sidebus::test;
namespace patterns = sidebus::test_patterns;

namespace {

// ---- D-Bus helpers ---------------------------------------------------------

// A method of the portal; the reply, or nullptr with @error set.
VariantPtr call_portal(GDBusConnection* connection, const char* interface, const char* method, GVariant* parameters,
                       const char* reply_type, GError** error) {
  return VariantPtr(g_dbus_connection_call_sync(connection, kPortalBusName, kPortalPath, interface, method, parameters,
                                                reply_type ? G_VARIANT_TYPE(reply_type) : nullptr,
                                                G_DBUS_CALL_FLAGS_NONE, 30000, nullptr, error));
}

VariantPtr call_portal_ok(GDBusConnection* connection, const char* interface, const char* method, GVariant* parameters,
                          const char* reply_type = nullptr) {
  g_autoptr(GError) error = nullptr;
  VariantPtr reply = call_portal(connection, interface, method, parameters, reply_type, &error);
  g_assert_no_error(error);
  return reply;
}

// Fully unboxed: Settings.Read in xdg-desktop-portal 1.16 answers <<value>>.
VariantPtr unbox(GVariant* value) {
  VariantPtr current(g_variant_ref(value));
  while (g_variant_is_of_type(current.get(), G_VARIANT_TYPE_VARIANT))
    current.reset(g_variant_get_variant(current.get()));
  return current;
}

// The backend's records of @method, oldest first.
std::vector<BackendCall> calls_of(HostPortal& host, const char* method) {
  std::vector<BackendCall> found;
  for (BackendCall& call : host.backend_calls())
    if (call.method == method) found.push_back(std::move(call));
  return found;
}

// The one record of @method, once there is one.
BackendCall only_call(HostPortal& host, const char* method) {
  g_assert_true(wait_until([&] { return !calls_of(host, method).empty(); }));
  std::vector<BackendCall> calls = calls_of(host, method);
  g_assert_cmpuint(calls.size(), ==, 1);
  return std::move(calls[0]);
}

// The signals @member of @interface the portal sent us.
class SignalLog {
 public:
  SignalLog(GDBusConnection* connection, const char* interface, const char* member)
      : connection_(connection),
        subscription_(g_dbus_connection_signal_subscribe(connection, kPortalBusName, interface, member, nullptr,
                                                         nullptr, G_DBUS_SIGNAL_FLAGS_NONE, on_signal, this, nullptr)) {
  }
  ~SignalLog() { g_dbus_connection_signal_unsubscribe(connection_, subscription_); }
  SignalLog(const SignalLog&) = delete;
  SignalLog& operator=(const SignalLog&) = delete;

  bool wait_for(size_t count, Timeout timeout = kDefaultTimeout) {
    return wait_until([&] { return received_.size() >= count; }, timeout);
  }
  GVariant* parameters(size_t i) const { return received_.at(i).second.get(); }
  const std::string& path(size_t i) const { return received_.at(i).first; }
  size_t size() const { return received_.size(); }

 private:
  static void on_signal(GDBusConnection*, const char*, const char* path, const char*, const char*, GVariant* parameters,
                        gpointer user_data) {
    static_cast<SignalLog*>(user_data)->received_.emplace_back(path, VariantPtr(g_variant_ref(parameters)));
  }
  GDBusConnection* connection_;
  guint subscription_;
  std::vector<std::pair<std::string, VariantPtr>> received_;
};

// A Request-returning call, answered: its response (and results in @results).
guint32 request(HostPortal& host, const char* interface, const char* method, GVariant* parameters,
                VariantPtr* results = nullptr) {
  PortalRequest call(host.connection(), kPortalBusName, interface, method, parameters);
  g_assert_no_error(call.error());
  g_assert_true(call.wait_for_response());
  if (results != nullptr) results->reset(g_variant_ref(call.results()));
  return call.response();
}

// An fd of a new file @name in @dir with @contents, read-only.
int file_fd(const TempDir& dir, const std::string& name, const std::string& contents) {
  const int fd = open(dir.write_file(name, contents).c_str(), O_RDONLY | O_CLOEXEC);
  g_assert_cmpint(fd, >=, 0);
  return fd;
}

// ---- PipeWire as a portal's app sees it --------------------------------------

// The fd an OpenPipeWireRemote answered.
int pipewire_fd(GDBusConnection* connection, const char* interface, GVariant* parameters, GError** error) {
  g_autoptr(GUnixFDList) fds = nullptr;
  g_autoptr(GVariant) reply = g_dbus_connection_call_with_unix_fd_list_sync(
      connection, kPortalBusName, kPortalPath, interface, "OpenPipeWireRemote", parameters, G_VARIANT_TYPE("(h)"),
      G_DBUS_CALL_FLAGS_NONE, 30000, nullptr, &fds, nullptr, error);
  if (reply == nullptr) return -1;
  gint32 index = -1;
  g_variant_get(reply, "(h)", &index);
  return g_unix_fd_list_get(fds, index, error);
}

// The video tests run a PipeWire daemon (.ci/install-deps installs it).
bool skip_without_pipewire() {
  g_autofree char* program = g_find_program_in_path("pipewire");
  if (program != nullptr) return false;
  g_test_skip("no pipewire program in PATH (package pipewire-bin, see .ci/install-deps)");
  return true;
}

// ---- Settings ----------------------------------------------------------------

void test_settings() {
  HostPortal host;
  GDBusConnection* bus = host.connection();
  constexpr char kSettings[] = "org.freedesktop.portal.Settings";

  VariantPtr reply = call_portal_ok(bus, kSettings, "Read",
                                    g_variant_new("(ss)", "org.freedesktop.appearance", "color-scheme"), "(v)");
  g_autoptr(GVariant) boxed = g_variant_get_child_value(reply.get(), 0);
  assert_same(unbox(boxed).get(), "u", "1");
  BackendCall read = only_call(host, "Read");
  assert_str_eq(lookup_string(read.record.get(), "namespace"), "org.freedesktop.appearance");
  assert_str_eq(lookup_string(read.record.get(), "key"), "color-scheme");

  // ReadAll with a namespace: only that one; with none, everything,
  // including the private namespace (keeping it from a guest is the
  // broker's job, not the host portal's).
  reply = call_portal_ok(bus, kSettings, "ReadAll", g_variant_new_parsed("(['org.freedesktop.appearance'],)"),
                         "(a{sa{sv}})");
  assert_same(reply.get(), "(a{sa{sv}})",
              "({'org.freedesktop.appearance': {'accent-color': <(0.2, 0.4, 0.8)>, 'color-scheme': <uint32 1>,"
              " 'contrast': <uint32 0>}},)");
  reply = call_portal_ok(bus, kSettings, "ReadAll", g_variant_new_parsed("(['org.gnome.*'],)"), "(a{sa{sv}})");
  assert_same(reply.get(), "(a{sa{sv}})", "({'org.gnome.desktop.privacy': {'remember-recent-files': <true>}},)");
  reply = call_portal_ok(bus, kSettings, "ReadAll", g_variant_new_parsed("(@as [],)"), "(a{sa{sv}})");
  g_autoptr(GVariant) all = g_variant_get_child_value(reply.get(), 0);
  g_assert_cmpuint(g_variant_n_children(all), ==, 2);
  std::vector<BackendCall> read_all = calls_of(host, "ReadAll");
  g_assert_cmpuint(read_all.size(), ==, 3);
  assert_same(lookup(read_all[1].record.get(), "namespaces").get(), "as", "['org.gnome.*']");

  g_autoptr(GError) error = nullptr;
  reply = call_portal(bus, kSettings, "Read", g_variant_new("(ss)", "org.freedesktop.appearance", "no-such-key"), "(v)",
                      &error);
  g_assert_null(reply);
  assert_str_eq(remote_error_name(error), "org.freedesktop.portal.Error.NotFound");

  // The desktop changes a setting: the app hears of it, and reads the new value.
  SignalLog changed(bus, kSettings, "SettingChanged");
  host.call_backend("SetSetting",
               g_variant_new("(ssv)", "org.freedesktop.appearance", "color-scheme", g_variant_new_uint32(2)));
  g_assert_true(changed.wait_for(1));
  const char* name_space = nullptr;
  const char* key = nullptr;
  g_autoptr(GVariant) value = nullptr;
  g_variant_get(changed.parameters(0), "(&s&s@v)", &name_space, &key, &value);
  g_assert_cmpstr(name_space, ==, "org.freedesktop.appearance");
  g_assert_cmpstr(key, ==, "color-scheme");
  assert_same(unbox(value).get(), "u", "2");
  reply = call_portal_ok(bus, kSettings, "Read", g_variant_new("(ss)", "org.freedesktop.appearance", "color-scheme"),
                         "(v)");
  g_autoptr(GVariant) changed_value = g_variant_get_child_value(reply.get(), 0);
  assert_same(unbox(changed_value).get(), "u", "2");

  // Reset puts the defaults back.
  host.reset_backend();
  reply = call_portal_ok(bus, kSettings, "Read", g_variant_new("(ss)", "org.freedesktop.appearance", "color-scheme"),
                         "(v)");
  g_autoptr(GVariant) reset_value = g_variant_get_child_value(reply.get(), 0);
  assert_same(unbox(reset_value).get(), "u", "1");
}

// ---- Notification -----------------------------------------------------------

void test_notification() {
  HostPortal host;
  GDBusConnection* bus = host.connection();
  constexpr char kNotification[] = "org.freedesktop.portal.Notification";
  SignalLog invoked(bus, kNotification, "ActionInvoked");

  call_portal_ok(bus, kNotification, "AddNotification",
                 g_variant_new_parsed("('build-done', {'title': <'Build finished'>, 'body': <'All 12 tests passed'>,"
                                      " 'priority': <'high'>, 'default-action': <'app.show'>,"
                                      " 'buttons': <[{'label': <'Open log'>, 'action': <'app.open-log'>}]>})"));
  BackendCall added = only_call(host, "AddNotification");
  g_assert_cmpstr(added.app_id.c_str(), ==, "");  // an unsandboxed host app
  assert_str_eq(lookup_string(added.record.get(), "id"), "build-done");
  VariantPtr notification = lookup(added.record.get(), "notification");
  assert_str_eq(lookup_string(notification.get(), "title"), "Build finished");
  assert_str_eq(lookup_string(notification.get(), "body"), "All 12 tests passed");
  assert_same(lookup(notification.get(), "buttons").get(), "aa{sv}",
              "[{'label': <'Open log'>, 'action': <'app.open-log'>}]");

  // "The user" clicks the button: the app gets the action, with its parameter.
  host.call_backend("EmitActionInvoked",
               g_variant_new_parsed("('', 'build-done', 'app.open-log', [<'/tmp/build.log'>])"));
  g_assert_true(invoked.wait_for(1));
  assert_same(invoked.parameters(0), "(ssav)", "('build-done', 'app.open-log', [<'/tmp/build.log'>])");

  call_portal_ok(bus, kNotification, "RemoveNotification", g_variant_new("(s)", "build-done"));
  BackendCall removed = only_call(host, "RemoveNotification");
  assert_str_eq(lookup_string(removed.record.get(), "id"), "build-done");

  // A notification the portal refuses never reaches the backend.
  g_autoptr(GError) error = nullptr;
  VariantPtr reply = call_portal(bus, kNotification, "AddNotification",
                                 g_variant_new_parsed("('bad', {'title': <uint32 3>})"), nullptr, &error);
  g_assert_null(reply);
  g_assert_cmpuint(calls_of(host, "AddNotification").size(), ==, 1);
}

// ---- Inhibit -----------------------------------------------------------------

void test_inhibit() {
  HostPortal host;
  GDBusConnection* bus = host.connection();
  constexpr char kInhibit[] = "org.freedesktop.portal.Inhibit";

  // An inhibition lasts until the app closes its request.
  PortalRequest inhibit(
      bus, kPortalBusName, kInhibit, "Inhibit",
      g_variant_new_parsed("('', uint32 12, {'handle_token': <'idle'>, 'reason': <'Playing a film'>})"));
  g_assert_no_error(inhibit.error());
  g_assert_true(inhibit.wait_for_response());
  g_assert_cmpuint(inhibit.response(), ==, kResponseSuccess);
  BackendCall call = only_call(host, "Inhibit");
  g_assert_cmpstr(call.handle.c_str(), ==, inhibit.handle().c_str());
  assert_same(lookup(call.record.get(), "flags").get(), "u", "12");
  assert_str_eq(lookup_string(call.options.get(), "reason"), "Playing a film");
  g_assert_false(call.closed);
  g_autoptr(GError) error = nullptr;
  g_assert_true(inhibit.close(&error));
  g_assert_true(wait_until([&] { return only_call(host, "Inhibit").closed; }));

  // A backend failure reaches the app as 2.
  host.set_reply("Inhibit", kResponseDBusError);
  g_assert_cmpuint(
      request(host, kInhibit, "Inhibit", g_variant_new_parsed("('', uint32 4, {'handle_token': <'failing'>})")), ==,
      kResponseOther);

  // A monitor: a session; the desktop's state changes reach the app.
  host.set_reply("CreateMonitor", kResponseSuccess);
  VariantPtr results;
  g_assert_cmpuint(
      request(host, kInhibit, "CreateMonitor",
              g_variant_new_parsed("('', {'handle_token': <'monitor'>, 'session_handle_token': <'m1'>})"), &results),
      ==, kResponseSuccess);
  const std::string session = lookup_string(results.get(), "session_handle");
  BackendCall monitor = only_call(host, "CreateMonitor");
  assert_str_eq(lookup_string(monitor.record.get(), "session_handle"), session);

  SignalLog state_changed(bus, kInhibit, "StateChanged");
  host.call_backend(
      "EmitStateChanged",
      g_variant_new_parsed("(%o, {'screensaver-active': <true>, 'session-state': <uint32 2>})", session.c_str()));
  g_assert_true(state_changed.wait_for(1));
  const char* changed_session = nullptr;
  g_autoptr(GVariant) state = nullptr;
  g_variant_get(state_changed.parameters(0), "(&o@a{sv})", &changed_session, &state);
  g_assert_cmpstr(changed_session, ==, session.c_str());
  assert_same(lookup(state, "session-state").get(), "u", "2");
  assert_same(lookup(state, "screensaver-active").get(), "b", "true");

  call_portal_ok(bus, kInhibit, "QueryEndResponse", g_variant_new("(o)", session.c_str()));
  BackendCall query = only_call(host, "QueryEndResponse");
  assert_str_eq(lookup_string(query.record.get(), "session_handle"), session);

  // The app ends the monitor: the backend's session is closed.
  g_autoptr(GVariant) closed =
      g_dbus_connection_call_sync(bus, kPortalBusName, session.c_str(), "org.freedesktop.portal.Session", "Close",
                                  nullptr, nullptr, G_DBUS_CALL_FLAGS_NONE, 10000, nullptr, &error);
  g_assert_no_error(error);
  BackendCall session_close = only_call(host, "Session.Close");
  assert_str_eq(lookup_string(session_close.record.get(), "session_handle"), session);

  // Refused monitors reach the app, and the portal closes their sessions.
  for (guint32 response : {kResponseCancelled, kResponseOther}) {
    host.reset_backend();
    host.set_reply("CreateMonitor", response);
    g_autofree char* token = g_strdup_printf("refused%u", response);
    g_assert_cmpuint(
        request(host, kInhibit, "CreateMonitor",
                g_variant_new_parsed("('', {'handle_token': <%s>, 'session_handle_token': <%s>})", token, token)),
        ==, response);
    only_call(host, "Session.Close");
  }
}

// ---- Screenshot and PickColor ------------------------------------------------

constexpr char kScreenshot[] = "org.freedesktop.portal.Screenshot";

// The screenshot file at @uri holds the backend's picture.
void assert_screenshot_file(const std::string& uri) {
  const std::string path = path_of(uri);
  g_autoptr(GError) error = nullptr;
  g_autoptr(GdkPixbuf) image = gdk_pixbuf_new_from_file(path.c_str(), &error);
  g_assert_no_error(error);
  g_assert_cmpint(gdk_pixbuf_get_width(image), ==, patterns::kScreenshotWidth);
  g_assert_cmpint(gdk_pixbuf_get_height(image), ==, patterns::kScreenshotHeight);
  g_assert_cmpint(gdk_pixbuf_get_n_channels(image), ==, 3);
  const guint8* pixels = gdk_pixbuf_read_pixels(image);
  const int stride = gdk_pixbuf_get_rowstride(image);
  for (uint32_t y = 0; y < patterns::kScreenshotHeight; y++)
    for (uint32_t x = 0; x < patterns::kScreenshotWidth; x++) {
      uint8_t expected[3];
      patterns::screenshot_pixel(x, y, expected);
      g_assert_cmpmem(pixels + y * stride + 3 * x, 3, expected, 3);
    }
}

void test_screenshot() {
  HostPortal host;
  host.set_reply("AccessDialog", kResponseSuccess);
  host.set_reply("Screenshot", kResponseSuccess);

  // A non-interactive screenshot: the portal asks for permission first (once).
  VariantPtr results;
  g_assert_cmpuint(request(host, kScreenshot, "Screenshot",
                           g_variant_new_parsed("('', {'handle_token': <'shot1'>, 'interactive': <false>})"), &results),
                   ==, kResponseSuccess);
  assert_screenshot_file(lookup_string(results.get(), "uri"));
  BackendCall access = only_call(host, "AccessDialog");
  g_assert_cmpstr(access.title.c_str(), ==, "Allow Applications to Take Screenshots?");
  BackendCall shot = only_call(host, "Screenshot");
  assert_same(lookup(shot.options.get(), "permission_store_checked").get(), "b", "true");
  assert_same(lookup(shot.options.get(), "interactive").get(), "b", "false");
  assert_str_eq(lookup_string(lookup(shot.record.get(), "results").get(), "uri"), lookup_string(results.get(), "uri"));

  g_assert_cmpuint(request(host, kScreenshot, "Screenshot",
                           g_variant_new_parsed("('', {'handle_token': <'shot2'>, 'interactive': <false>})"), &results),
                   ==, kResponseSuccess);
  assert_screenshot_file(lookup_string(results.get(), "uri"));
  g_assert_cmpuint(calls_of(host, "AccessDialog").size(), ==, 1);  // remembered

  // A scripted uri is passed through as it is.
  host.set_reply("Screenshot", kResponseSuccess, g_variant_new_parsed("{'uri': <'file:///tmp/elsewhere.png'>}"));
  g_assert_cmpuint(request(host, kScreenshot, "Screenshot",
                           g_variant_new_parsed("('', {'handle_token': <'shot3'>, 'interactive': <true>})"), &results),
                   ==, kResponseSuccess);
  assert_str_eq(lookup_string(results.get(), "uri"), "file:///tmp/elsewhere.png");

  for (guint32 response : {kResponseCancelled, kResponseOther}) {
    host.set_reply("Screenshot", response);
    g_autofree char* token = g_strdup_printf("refused%u", response);
    g_assert_cmpuint(request(host, kScreenshot, "Screenshot",
                             g_variant_new_parsed("('', {'handle_token': <%s>, 'interactive': <true>})", token)),
                     ==, response);
  }

  host.set_reply("PickColor", kResponseSuccess);
  g_assert_cmpuint(
      request(host, kScreenshot, "PickColor", g_variant_new_parsed("('', {'handle_token': <'c1'>})"), &results), ==,
      kResponseSuccess);
  double red = 0, green = 0, blue = 0;
  g_assert_true(g_variant_lookup(results.get(), "color", "(ddd)", &red, &green, &blue));
  g_assert_cmpfloat(red, ==, patterns::kPickedColor[0]);
  g_assert_cmpfloat(green, ==, patterns::kPickedColor[1]);
  g_assert_cmpfloat(blue, ==, patterns::kPickedColor[2]);
  for (guint32 response : {kResponseCancelled, kResponseOther}) {
    host.set_reply("PickColor", response);
    g_autofree char* token = g_strdup_printf("color%u", response);
    g_assert_cmpuint(
        request(host, kScreenshot, "PickColor", g_variant_new_parsed("('', {'handle_token': <%s>})", token)), ==,
        response);
  }
}

// "The user" denies screenshots: the app gets 2, the screenshot backend is
// never asked, and the portal remembers.
void test_screenshot_denied() {
  HostPortal host;
  host.set_reply("AccessDialog", kResponseCancelled);
  host.set_reply("Screenshot", kResponseSuccess);
  for (const char* token : {"denied1", "denied2"})
    g_assert_cmpuint(request(host, kScreenshot, "Screenshot",
                             g_variant_new_parsed("('', {'handle_token': <%s>, 'interactive': <false>})", token)),
                     ==, kResponseOther);
  g_assert_cmpuint(calls_of(host, "AccessDialog").size(), ==, 1);
  g_assert_cmpuint(calls_of(host, "Screenshot").size(), ==, 0);
}

// ---- ScreenCast --------------------------------------------------------------

constexpr char kScreenCast[] = "org.freedesktop.portal.ScreenCast";

// CreateSession; the session handle.
std::string create_screen_cast_session(HostPortal& host, const char* token) {
  VariantPtr results;
  g_assert_cmpuint(
      request(host, kScreenCast, "CreateSession",
              g_variant_new_parsed("({'handle_token': <%s>, 'session_handle_token': <%s>},)", token, token), &results),
      ==, kResponseSuccess);
  return lookup_string(results.get(), "session_handle");
}

struct StartedStream {
  uint32_t node_id = 0;
  int width = 0;
  int height = 0;
  std::string restore_token;
};

StartedStream start_screen_cast(HostPortal& host, const std::string& session, const char* token) {
  VariantPtr results;
  g_assert_cmpuint(request(host, kScreenCast, "Start",
                           g_variant_new_parsed("(%o, '', {'handle_token': <%s>})", session.c_str(), token), &results),
                   ==, kResponseSuccess);
  VariantPtr streams = lookup(results.get(), "streams");
  g_assert_true(g_variant_is_of_type(streams.get(), G_VARIANT_TYPE("a(ua{sv})")));
  g_assert_cmpuint(g_variant_n_children(streams.get()), ==, 1);
  StartedStream started;
  g_autoptr(GVariant) properties = nullptr;
  g_variant_get_child(streams.get(), 0, "(u@a{sv})", &started.node_id, &properties);
  g_assert_true(g_variant_lookup(properties, "size", "(ii)", &started.width, &started.height));
  assert_same(lookup(properties, "source_type").get(), "u", "1");
  const char* token_value = nullptr;
  if (g_variant_lookup(results.get(), "restore_token", "&s", &token_value)) started.restore_token = token_value;
  return started;
}

void close_session(GDBusConnection* bus, const std::string& session) {
  g_autoptr(GError) error = nullptr;
  g_autoptr(GVariant) reply =
      g_dbus_connection_call_sync(bus, kPortalBusName, session.c_str(), "org.freedesktop.portal.Session", "Close",
                                  nullptr, nullptr, G_DBUS_CALL_FLAGS_NONE, 10000, nullptr, &error);
  g_assert_no_error(error);
}

// sidebus-test-camera on @pipewire; its node id.
std::unique_ptr<ChildProcess> start_camera(const HostPipeWire& pipewire, uint32_t* node_id) {
  auto camera = std::make_unique<ChildProcess>(SpawnOptions{
      .name = "sidebus-test-camera",
      .argv = {env_path("SIDEBUS_TEST_CAMERA")},
      .env = pipewire.env(),
      .cwd = pipewire.dir().path(),
      .stdout_path = pipewire.dir() / "camera.log",
  });
  constexpr char kReady[] = "sidebus-test-camera: node ";
  g_assert_true(wait_until([&] { return camera->log().find(kReady) != std::string::npos || !camera->running(); }));
  const std::string log = camera->log();
  const size_t at = log.find(kReady);
  g_assert_true(at != std::string::npos);
  *node_id = static_cast<uint32_t>(g_ascii_strtoull(log.c_str() + at + strlen(kReady), nullptr, 10));
  return camera;
}

void test_screen_cast() {
  if (skip_without_pipewire()) return;
  HostPipeWire pipewire;
  HostPortal host(HostPortalOptions{.env = pipewire.env()});
  GDBusConnection* bus = host.connection();
  assert_same(portal_property(bus, kScreenCast, "AvailableSourceTypes").get(), "u", "3");
  assert_same(portal_property(bus, kScreenCast, "AvailableCursorModes").get(), "u", "7");
  for (const char* method : {"CreateSession", "SelectSources", "Start"}) host.set_reply(method, kResponseSuccess);
  // A camera node exists too: the screen cast's fd must not show it.
  uint32_t camera_node = 0;
  std::unique_ptr<ChildProcess> camera = start_camera(pipewire, &camera_node);

  const std::string session = create_screen_cast_session(host, "cast1");
  BackendCall create = only_call(host, "CreateSession");
  assert_str_eq(lookup_string(create.record.get(), "session_handle"), session);
  g_assert_cmpuint(request(host, kScreenCast, "SelectSources",
                           g_variant_new_parsed("(%o, {'handle_token': <'select1'>, 'types': <uint32 1>,"
                                                " 'cursor_mode': <uint32 2>, 'persist_mode': <uint32 1>})",
                                                session.c_str())),
                   ==, kResponseSuccess);
  BackendCall select = only_call(host, "SelectSources");
  assert_same(lookup(select.options.get(), "types").get(), "u", "1");
  assert_same(lookup(select.options.get(), "cursor_mode").get(), "u", "2");
  assert_same(lookup(select.options.get(), "persist_mode").get(), "u", "1");
  g_assert_false(g_variant_lookup(select.options.get(), "restore_data", "*", nullptr));

  const StartedStream stream = start_screen_cast(host, session, "start1");
  g_assert_cmpint(stream.width, ==, 320);
  g_assert_cmpint(stream.height, ==, 240);
  g_assert_true(g_uuid_string_is_valid(stream.restore_token.c_str()));  // from the backend's restore_data

  g_autoptr(GError) error = nullptr;
  const int fd = pipewire_fd(bus, kScreenCast, g_variant_new_parsed("(%o, @a{sv} {})", session.c_str()), &error);
  g_assert_no_error(error);
  {
    PipeWireClient app(fd);
    g_assert_true(wait_until([&] { return app.sees(stream.node_id); }));
    PipeWireClient::Node node = app.nodes().at(stream.node_id);
    g_assert_cmpstr(node.media_class.c_str(), ==, "Video/Source");
    app.consume(stream.node_id, patterns::kScreenCastTag);
    g_assert_true(app.wait_for_frames(10));
    assert_good_frames(app.frames(), 320, 240, 10);
    g_assert_false(app.sees(camera_node));

    // The app closes the session: the backend hears it, the stream goes.
    close_session(bus, session);
    only_call(host, "Session.Close");
    g_assert_true(wait_until([&] { return !app.sees(stream.node_id); }));
  }

  // A new session with the restore token: the backend gets its restore data
  // back (never the token), and streams in the size the test set.
  host.call_backend("SetVideoFormat", g_variant_new("(uuu)", 64, 48, 15));
  const std::string restored = create_screen_cast_session(host, "cast2");
  g_assert_cmpuint(request(host, kScreenCast, "SelectSources",
                           g_variant_new_parsed("(%o, {'handle_token': <'select2'>, 'types': <uint32 1>,"
                                                " 'restore_token': <%s>, 'persist_mode': <uint32 1>})",
                                                restored.c_str(), stream.restore_token.c_str())),
                   ==, kResponseSuccess);
  std::vector<BackendCall> selects = calls_of(host, "SelectSources");
  g_assert_cmpuint(selects.size(), ==, 2);
  assert_same(lookup(selects[1].options.get(), "restore_data").get(), "(suv)",
              "('sidebus-test', uint32 1, <{'stream': <'monitor-0'>}>)");
  g_assert_false(g_variant_lookup(selects[1].options.get(), "restore_token", "*", nullptr));
  const StartedStream small = start_screen_cast(host, restored, "start2");
  g_assert_cmpint(small.width, ==, 64);
  g_assert_cmpint(small.height, ==, 48);
  const int small_fd = pipewire_fd(bus, kScreenCast, g_variant_new_parsed("(%o, @a{sv} {})", restored.c_str()), &error);
  g_assert_no_error(error);
  {
    PipeWireClient app(small_fd);
    app.consume(small.node_id, patterns::kScreenCastTag);
    g_assert_true(app.wait_for_frames(10));
    assert_good_frames(app.frames(), 64, 48, 10);

    // The desktop ends the session: the app is told, the stream goes.
    SignalLog closed(bus, "org.freedesktop.portal.Session", "Closed");
    host.call_backend("CloseSession", g_variant_new("(o)", restored.c_str()));
    g_assert_true(closed.wait_for(1));
    g_assert_cmpstr(closed.path(0).c_str(), ==, restored.c_str());
    g_assert_true(wait_until([&] { return !app.sees(small.node_id); }));
  }
  g_autoptr(GVariant) gone =
      g_dbus_connection_call_sync(bus, kPortalBusName, restored.c_str(), "org.freedesktop.portal.Session", "Close",
                                  nullptr, nullptr, G_DBUS_CALL_FLAGS_NONE, 10000, nullptr, &error);
  g_assert_null(gone);  // the portal closed it too
  g_clear_error(&error);
}

// Every step's cancel (1) and other (2) reach the app.
void test_screen_cast_refusals() {
  if (skip_without_pipewire()) return;
  HostPipeWire pipewire;
  HostPortal host(HostPortalOptions{.env = pipewire.env()});
  for (guint32 response : {kResponseCancelled, kResponseOther}) {
    host.reset_backend();
    host.set_reply("CreateSession", response);
    g_autofree char* token = g_strdup_printf("create%u", response);
    g_assert_cmpuint(
        request(host, kScreenCast, "CreateSession",
                g_variant_new_parsed("({'handle_token': <%s>, 'session_handle_token': <%s>},)", token, token)),
        ==, response);
    only_call(host, "Session.Close");  // the portal closes the backend's session

    host.set_reply("CreateSession", kResponseSuccess);
    host.set_reply("SelectSources", response);
    g_autofree char* select_token = g_strdup_printf("select%u", response);
    std::string session = create_screen_cast_session(host, select_token);
    g_assert_cmpuint(request(host, kScreenCast, "SelectSources",
                             g_variant_new_parsed("(%o, {'handle_token': <%s>})", session.c_str(), select_token)),
                     ==, response);

    host.set_reply("SelectSources", kResponseSuccess);
    host.set_reply("Start", response);
    g_autofree char* start_token = g_strdup_printf("start%u", response);
    session = create_screen_cast_session(host, start_token);
    g_autofree char* selected_token = g_strdup_printf("selected%u", response);
    g_assert_cmpuint(request(host, kScreenCast, "SelectSources",
                             g_variant_new_parsed("(%o, {'handle_token': <%s>})", session.c_str(), selected_token)),
                     ==, kResponseSuccess);
    g_assert_cmpuint(request(host, kScreenCast, "Start",
                             g_variant_new_parsed("(%o, '', {'handle_token': <%s>})", session.c_str(), start_token)),
                     ==, response);
  }
}

// ---- Camera ------------------------------------------------------------------

constexpr char kCamera[] = "org.freedesktop.portal.Camera";

bool camera_present(GDBusConnection* bus) {
  return g_variant_get_boolean(portal_property(bus, kCamera, "IsCameraPresent").get());
}

// xdg-desktop-portal 1.16 counts cameras only while it connects to PipeWire
// (src/pipewire.c destroys the registry after its first round trip; fixed in
// 1.19.0), so the camera must be there before the portal starts, and its
// going away is not noticed: IsCameraPresent is checked right after start.
void test_camera() {
  if (skip_without_pipewire()) return;
  HostPipeWire pipewire;
  uint32_t camera_node = 0;
  std::unique_ptr<ChildProcess> camera = start_camera(pipewire, &camera_node);
  HostPortal host(HostPortalOptions{.env = pipewire.env()});
  GDBusConnection* bus = host.connection();
  g_assert_true(camera_present(bus));

  // "The user" lets the app use the camera.
  host.set_reply("AccessDialog", kResponseSuccess);
  g_assert_cmpuint(request(host, kCamera, "AccessCamera", g_variant_new_parsed("({'handle_token': <'cam'>},)")), ==,
                   kResponseSuccess);
  BackendCall access = only_call(host, "AccessDialog");
  g_assert_cmpstr(access.title.c_str(), ==, "Turn On Camera?");
  assert_str_eq(lookup_string(access.record.get(), "subtitle"), "An application wants to use your camera.");
  assert_str_eq(lookup_string(access.record.get(), "body"),
                "Access to your camera can be changed at any time from the privacy settings.");
  assert_str_eq(lookup_string(access.options.get(), "icon"), "camera-web-symbolic");

  g_autoptr(GError) error = nullptr;
  const int fd = pipewire_fd(bus, kCamera, g_variant_new_parsed("(@a{sv} {},)"), &error);
  g_assert_no_error(error);
  {
    PipeWireClient app(fd);
    g_assert_true(wait_until([&] { return app.sees(camera_node); }));
    PipeWireClient::Node node = app.nodes().at(camera_node);
    g_assert_cmpstr(node.media_role.c_str(), ==, "Camera");
    g_assert_cmpstr(node.media_class.c_str(), ==, "Video/Source");
    app.consume(camera_node, patterns::kCameraTag);
    g_assert_true(app.wait_for_frames(10));
    assert_good_frames(app.frames(), 320, 240, 10);
  }
  g_assert_cmpuint(calls_of(host, "AccessDialog").size(), ==, 1);  // the store remembers
}

// PipeWire without a camera node: no camera.
void test_camera_absent() {
  if (skip_without_pipewire()) return;
  HostPipeWire pipewire;
  HostPortal host(HostPortalOptions{.env = pipewire.env()});
  g_assert_false(camera_present(host.connection()));
}

// "The user" says no: AccessCamera answers 1, no fd is handed out, and the
// portal does not ask again.
void test_camera_denied() {
  if (skip_without_pipewire()) return;
  HostPipeWire pipewire;
  HostPortal host(HostPortalOptions{.env = pipewire.env()});
  host.set_reply("AccessDialog", kResponseCancelled);
  for (const char* token : {"no1", "no2"})
    g_assert_cmpuint(request(host, kCamera, "AccessCamera", g_variant_new_parsed("({'handle_token': <%s>},)", token)),
                     ==, kResponseCancelled);
  g_assert_cmpuint(calls_of(host, "AccessDialog").size(), ==, 1);
  g_autoptr(GError) error = nullptr;
  g_assert_cmpint(pipewire_fd(host.connection(), kCamera, g_variant_new_parsed("(@a{sv} {},)"), &error), ==, -1);
  assert_str_eq(remote_error_name(error), "org.freedesktop.portal.Error.NotAllowed");
}

// Without PipeWire there is no camera.
void test_camera_without_pipewire() {
  HostPortal host;
  g_assert_false(camera_present(host.connection()));
}

// ---- Email -------------------------------------------------------------------

void test_email() {
  HostPortal host;
  TempDir files("sidebus-test-email");
  constexpr char kEmail[] = "org.freedesktop.portal.Email";
  const std::string attachment = "minutes of the meeting\n\x01\x02 binary too";
  const int fd = file_fd(files, "minutes.txt", attachment);
  host.set_reply("ComposeEmail", kResponseSuccess);
  {
    PortalRequest compose(host.connection(), kPortalBusName, kEmail, "ComposeEmail",
                      g_variant_new_parsed("('', {'handle_token': <'mail'>, 'addresses': <['ada@example.com']>,"
                                           " 'subject': <'Minutes'>, 'body': <'Attached.'>,"
                                           " 'attachment_fds': <[handle 0]>})"),
                      {fd});
    g_assert_no_error(compose.error());
    close(fd);
    g_assert_true(compose.wait_for_response());
    g_assert_cmpuint(compose.response(), ==, kResponseSuccess);
  }
  BackendCall call = only_call(host, "ComposeEmail");
  assert_same(lookup(call.options.get(), "addresses").get(), "as", "['ada@example.com']");
  assert_str_eq(lookup_string(call.options.get(), "subject"), "Minutes");
  assert_str_eq(lookup_string(call.options.get(), "body"), "Attached.");
  VariantPtr data = lookup(call.record.get(), "attachment_data");
  g_assert_cmpuint(g_variant_n_children(data.get()), ==, 1);
  g_autoptr(GVariant) first = g_variant_get_child_value(data.get(), 0);
  g_assert_true(bytes_of(first) == attachment);

  for (guint32 response : {kResponseCancelled, kResponseOther}) {
    host.set_reply("ComposeEmail", response);
    g_autofree char* token = g_strdup_printf("mail%u", response);
    g_assert_cmpuint(request(host, kEmail, "ComposeEmail",
                             g_variant_new_parsed("('', {'handle_token': <%s>, 'subject': <'Hi'>})", token)),
                     ==, response);
  }
}

// ---- Print -------------------------------------------------------------------

void test_print() {
  HostPortal host;
  TempDir files("sidebus-test-print");
  constexpr char kPrint[] = "org.freedesktop.portal.Print";
  host.set_reply("PreparePrint", kResponseSuccess);
  host.set_reply("Print", kResponseSuccess);

  VariantPtr results;
  g_assert_cmpuint(request(host, kPrint, "PreparePrint",
                           g_variant_new_parsed("('', 'Report', {'n-copies': <'2'>}, {'PPDName': <'na_letter'>},"
                                                " {'handle_token': <'prepare'>, 'modal': <true>})"),
                           &results),
                   ==, kResponseSuccess);
  guint32 token = 0;
  g_assert_true(g_variant_lookup(results.get(), "token", "u", &token));
  assert_str_eq(lookup_string(lookup(results.get(), "settings").get(), "printer"), "sidebus-test-printer");
  assert_str_eq(lookup_string(lookup(results.get(), "page-setup").get(), "PPDName"), "iso_a4");
  BackendCall prepare = only_call(host, "PreparePrint");
  g_assert_cmpstr(prepare.title.c_str(), ==, "Report");
  assert_same(lookup(prepare.record.get(), "settings").get(), "a{sv}", "{'n-copies': <'2'>}");
  assert_same(lookup(prepare.record.get(), "page_setup").get(), "a{sv}", "{'PPDName': <'na_letter'>}");

  const std::string document = "%PDF-1.4\n% a document of the test\n%%EOF\n";
  const int fd = file_fd(files, "report.pdf", document);
  {
    PortalRequest print(host.connection(), kPortalBusName, kPrint, "Print",
                    g_variant_new_parsed("('', 'Report', handle 0, {'handle_token': <'print'>, 'token': <%u>})", token),
                    {fd});
    g_assert_no_error(print.error());
    close(fd);
    g_assert_true(print.wait_for_response());
    g_assert_cmpuint(print.response(), ==, kResponseSuccess);
  }
  BackendCall printed = only_call(host, "Print");
  g_assert_cmpstr(printed.title.c_str(), ==, "Report");
  assert_same(lookup(printed.options.get(), "token").get(), "u", std::to_string(token).c_str());
  g_assert_true(bytes_of(lookup(printed.record.get(), "data").get()) == document);

  for (guint32 response : {kResponseCancelled, kResponseOther}) {
    host.set_reply("PreparePrint", response);
    host.set_reply("Print", response);
    g_autofree char* prepare_token = g_strdup_printf("prepare%u", response);
    g_assert_cmpuint(
        request(host, kPrint, "PreparePrint",
                g_variant_new_parsed("('', 'Report', @a{sv} {}, @a{sv} {}, {'handle_token': <%s>})", prepare_token)),
        ==, response);
    const int again = file_fd(files, "again.pdf", document);
    g_autofree char* print_token = g_strdup_printf("print%u", response);
    PortalRequest print(host.connection(), kPortalBusName, kPrint, "Print",
                    g_variant_new_parsed("('', 'Report', handle 0, {'handle_token': <%s>})", print_token), {again});
    g_assert_no_error(print.error());
    close(again);
    g_assert_true(print.wait_for_response());
    g_assert_cmpuint(print.response(), ==, response);
  }
}

// ---- Wallpaper ---------------------------------------------------------------

void test_wallpaper() {
  HostPortal host;
  TempDir files("sidebus-test-wallpaper");
  constexpr char kWallpaper[] = "org.freedesktop.portal.Wallpaper";
  const std::string picture = "\x89PNG not really, but bytes the backend must see";
  const std::string uri = uri_for(files.write_file("sunset.png", picture));
  host.set_reply("AccessDialog", kResponseSuccess);
  host.set_reply("SetWallpaperURI", kResponseSuccess);

  g_assert_cmpuint(request(host, kWallpaper, "SetWallpaperURI",
                           g_variant_new_parsed("('', %s, {'handle_token': <'wall'>, 'show-preview': <false>,"
                                                " 'set-on': <'background'>})",
                                                uri.c_str())),
                   ==, kResponseSuccess);
  BackendCall access = only_call(host, "AccessDialog");
  g_assert_cmpstr(access.title.c_str(), ==, "Allow Applications to Set Backgrounds?");
  BackendCall call = only_call(host, "SetWallpaperURI");
  assert_str_eq(lookup_string(call.record.get(), "uri"), uri);
  assert_str_eq(lookup_string(call.options.get(), "set-on"), "background");
  assert_same(lookup(call.options.get(), "show-preview").get(), "b", "false");
  g_assert_true(bytes_of(lookup(call.record.get(), "file_data").get()) == picture);

  for (guint32 response : {kResponseCancelled, kResponseOther}) {
    host.set_reply("SetWallpaperURI", response);
    g_autofree char* token = g_strdup_printf("wall%u", response);
    g_assert_cmpuint(
        request(host, kWallpaper, "SetWallpaperURI",
                g_variant_new_parsed("('', %s, {'handle_token': <%s>, 'show-preview': <true>})", uri.c_str(), token)),
        ==, response);
  }
  g_assert_cmpuint(calls_of(host, "AccessDialog").size(), ==, 1);  // granted once, remembered
}

}  // namespace

int main(int argc, char** argv) {
  g_test_init(&argc, &argv, nullptr);
  pw_init(&argc, &argv);
  add_test("/backends/settings", test_settings);
  add_test("/backends/notification", test_notification);
  add_test("/backends/inhibit", test_inhibit);
  add_test("/backends/screenshot", test_screenshot);
  add_test("/backends/screenshot/denied", test_screenshot_denied);
  add_test("/backends/screen-cast", test_screen_cast);
  add_test("/backends/screen-cast/refusals", test_screen_cast_refusals);
  add_test("/backends/camera", test_camera);
  add_test("/backends/camera/absent", test_camera_absent);
  add_test("/backends/camera/denied", test_camera_denied);
  add_test("/backends/camera/without-pipewire", test_camera_without_pipewire);
  add_test("/backends/email", test_email);
  add_test("/backends/print", test_print);
  add_test("/backends/wallpaper", test_wallpaper);
  return g_test_run();
}
