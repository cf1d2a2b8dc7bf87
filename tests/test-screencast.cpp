// SPDX-License-Identifier: LGPL-2.1-or-later
// test-screencast.cpp — the ScreenCast portal across the VM boundary, with
// real parts only: a PipeWire daemon of the test's own (HostPipeWire), the
// host's xdg-desktop-portal 1.16 and the test backend, whose Start creates a
// real PipeWire video source painting frame-numbered pictures
// (tests/backend/test-patterns.hpp); the broker with the screencast plugin,
// a guest bus and the real agent.
//
// The guest client is this test, on the guest bus, as an app in the VM:
// CreateSession → SelectSources → Start → OpenPipeWireRemote →
// pw_context_connect_fd on the fd it got (PipeWireClient) → a stream of the
// granted node, asserting on the pixels and frame numbers it receives. Then
// what a user notices around that: closing the session stops the host's
// stream; another guest client cannot touch the session; the host ending it
// reaches the app as Closed; out-of-order calls and invalid options are
// refused before the host sees them; restore tokens stay with their client;
// and on a byte-only link (VmOptions::byte_only) the stream relay: the
// VM's own PipeWire daemon (a second one), the guest's sidebus-stream-relay,
// the same frames and pixels at a guest node, a stalled guest that does not
// stall the link, and a clear NotSupported where the VM lacks the relay or
// PipeWire, or its agent has no fd forwarding.
#include <gio/gunixfdlist.h>
#include <signal.h>
#include <unistd.h>

#include <cstring>
#include <atomic>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "backend/test-patterns.hpp"
#include "support/assert.hpp"
#include "support/dbus.hpp"
#include "support/files.hpp"
#include "support/host-pipewire.hpp"
#include "support/pipewire-client.hpp"
#include "support/variant.hpp"
#include "support/vm.hpp"

using namespace sidebus::test;
namespace patterns = sidebus::test_patterns;

namespace {

constexpr char kScreenCast[] = "org.freedesktop.portal.ScreenCast";
constexpr char kSession[] = "org.freedesktop.portal.Session";
constexpr char kNotSupported[] = "org.freedesktop.DBus.Error.NotSupported";
constexpr char kNotFound[] = "org.freedesktop.portal.Error.NotFound";
constexpr char kFailed[] = "org.freedesktop.portal.Error.Failed";

bool skip_without_pipewire() {
  g_autofree char* program = g_find_program_in_path("pipewire");
  if (program != nullptr) return false;
  g_test_skip("no pipewire program in PATH (package pipewire-bin)");
  return true;
}

// A VM with the screencast portal, its host on a PipeWire daemon of its own
// (declared first: it outlives the portal that uses it), "the user"
// agreeing to every step unless a test says otherwise.
struct CastVm {
  HostPipeWire pipewire;
  Vm vm;
  explicit CastVm(bool byte_only = false)
      : vm(VmOptions{.name = "cast-vm",
                     .portals = {"screencast"},
                     .byte_only = byte_only,
                     .host = HostPortalOptions{.env = pipewire.env()}}) {
    for (const char* method : {"CreateSession", "SelectSources", "Start"})
      vm.host().set_reply(method, kResponseSuccess);
  }
  GDBusConnection* guest() { return vm.guest().connection(); }
};

// ---- the calls an app makes ---------------------------------------------------

struct Answer {
  std::string error;  // the call's D-Bus error name, "" if it returned a request
  guint32 response = G_MAXUINT32;
  VariantPtr results;
};

// A Request-returning ScreenCast call with @options_text (a{sv}, a fresh
// handle_token added) as its last argument: the error, or the Response.
Answer request(GDBusConnection* client, const char* method, const std::string& session, const std::string& options_text) {
  VariantPtr options = with_handle_token(options_text);
  GVariant* parameters = nullptr;
  if (strcmp(method, "CreateSession") == 0)
    parameters = g_variant_new("(@a{sv})", options.get());
  else if (strcmp(method, "SelectSources") == 0)
    parameters = g_variant_new("(o@a{sv})", session.c_str(), options.get());
  else
    parameters = g_variant_new("(os@a{sv})", session.c_str(), "x11:1234", options.get());
  PortalRequest call(client, kPortalBusName, kScreenCast, method, parameters);
  Answer answer;
  if (call.error() != nullptr) {
    answer.error = remote_error_name(call.error());
    return answer;
  }
  g_assert_true(call.wait_for_response());
  answer.response = call.response();
  answer.results.reset(g_variant_ref(call.results()));
  return answer;
}

std::string create_session(GDBusConnection* client, const std::string& token) {
  Answer answer = request(client, "CreateSession", "", "{'session_handle_token': <'" + token + "'>}");
  assert_str_eq(answer.error, "");
  g_assert_cmpuint(answer.response, ==, kResponseSuccess);
  return lookup_string(answer.results.get(), "session_handle");
}

struct StartedStream {
  uint32_t node_id = 0;
  int width = 0;
  int height = 0;
  guint32 source_type = 0;
  std::string restore_token;
};

StartedStream started_stream(GVariant* results) {
  VariantPtr streams = lookup(results, "streams");
  g_assert_true(g_variant_is_of_type(streams.get(), G_VARIANT_TYPE("a(ua{sv})")));
  g_assert_cmpuint(g_variant_n_children(streams.get()), ==, 1);
  StartedStream started;
  g_autoptr(GVariant) properties = nullptr;
  g_variant_get_child(streams.get(), 0, "(u@a{sv})", &started.node_id, &properties);
  g_assert_true(g_variant_lookup(properties, "size", "(ii)", &started.width, &started.height));
  g_assert_true(g_variant_lookup(properties, "source_type", "u", &started.source_type));
  started.restore_token = lookup_string_or(results, "restore_token");
  return started;
}

// A session of @client, selected (@select_options) and started.
StartedStream start_cast(GDBusConnection* client, const std::string& session,
                         const std::string& select_options = "{'types': <uint32 1>}") {
  Answer selected = request(client, "SelectSources", session, select_options);
  assert_str_eq(selected.error, "");
  g_assert_cmpuint(selected.response, ==, kResponseSuccess);
  Answer started = request(client, "Start", session, "{}");
  assert_str_eq(started.error, "");
  g_assert_cmpuint(started.response, ==, kResponseSuccess);
  return started_stream(started.results.get());
}

// OpenPipeWireRemote: the fd, or -1 with @error_name set.
int open_remote(GDBusConnection* client, const std::string& session, std::string* error_name,
                std::string* message = nullptr) {
  g_autoptr(GError) error = nullptr;
  g_autoptr(GUnixFDList) fds = nullptr;
  g_autoptr(GVariant) reply = g_dbus_connection_call_with_unix_fd_list_sync(
      client, kPortalBusName, kPortalPath, kScreenCast, "OpenPipeWireRemote",
      g_variant_new_parsed("(%o, @a{sv} {})", session.c_str()), G_VARIANT_TYPE("(h)"), G_DBUS_CALL_FLAGS_NONE, 30000,
      nullptr, &fds, nullptr, &error);
  if (reply == nullptr) {
    *error_name = remote_error_name(error);
    if (message != nullptr) *message = error->message;
    return -1;
  }
  gint32 index = -1;
  g_variant_get(reply, "(h)", &index);
  g_assert_nonnull(fds);
  g_assert_cmpint(g_unix_fd_list_get_length(fds), ==, 1);
  const int fd = g_unix_fd_list_get(fds, index, &error);
  g_assert_no_error(error);
  return fd;
}

std::string close_session(GDBusConnection* client, const std::string& session) {
  g_autoptr(GError) error = nullptr;
  g_autoptr(GVariant) reply = g_dbus_connection_call_sync(client, kPortalBusName, session.c_str(), kSession, "Close",
                                                          nullptr, nullptr, G_DBUS_CALL_FLAGS_NONE, 10000, nullptr,
                                                          &error);
  return reply != nullptr ? "" : remote_error_name(error);
}

// The backend's records of @method, oldest first.
std::vector<BackendCall> calls_of(HostPortal& host, const char* method) {
  std::vector<BackendCall> found;
  for (BackendCall& call : host.backend_calls())
    if (call.method == method) found.push_back(std::move(call));
  return found;
}

// org.freedesktop.portal.Session::Closed signals at one path.
struct ClosedSignals {
  GDBusConnection* connection;
  guint subscription;
  int count = 0;
  ClosedSignals(GDBusConnection* c, const std::string& path) : connection(c) {
    subscription = g_dbus_connection_signal_subscribe(
        c, nullptr, kSession, "Closed", path.c_str(), nullptr, G_DBUS_SIGNAL_FLAGS_NONE,
        [](GDBusConnection*, const char*, const char*, const char*, const char*, GVariant*, gpointer data) {
          static_cast<ClosedSignals*>(data)->count++;
        },
        this, nullptr);
  }
  ~ClosedSignals() { g_dbus_connection_signal_unsubscribe(connection, subscription); }
};

// video-client (tests/video-client.cpp), a real program in the guest, as
// the guest user: what it printed, parsed.
VariantPtr run_guest_app(Vm& vm, std::vector<std::string> args) {
  args.insert(args.begin(), env_path("SIDEBUS_VIDEO_CLIENT"));
  GuestBus::Output output = vm.guest().run_as_guest(args, 60s);
  if (!output.status.success())
    throw FixtureError("video-client " + output.status.describe() + ": " + output.err + output.out);
  return parse("a{sv}", output.out);
}

// ---- the tests -----------------------------------------------------------------

// The guest sees the host's offer and the version both speak.
void test_properties() {
  if (skip_without_pipewire()) return;
  CastVm cast;
  assert_same(portal_property(cast.guest(), kScreenCast, "version").get(), "u", "4");  // min(host 4, ours 5)
  assert_same(portal_property(cast.guest(), kScreenCast, "AvailableSourceTypes").get(), "u", "3");
  assert_same(portal_property(cast.guest(), kScreenCast, "AvailableCursorModes").get(), "u", "7");
}

// The whole way on an fd-capable link: the app in the VM sees the host's
// screen, frame after frame; closing the session stops the host's stream.
void test_stream() {
  if (skip_without_pipewire()) return;
  CastVm cast;
  HostPortal& host = cast.vm.host();
  const std::string session = create_session(cast.guest(), "cast1");
  g_assert_true(g_str_has_prefix(session.c_str(), "/org/freedesktop/portal/desktop/session/"));

  const StartedStream stream =
      start_cast(cast.guest(), session, "{'types': <uint32 1>, 'cursor_mode': <uint32 2>, 'multiple': <false>}");
  g_assert_cmpint(stream.width, ==, 320);
  g_assert_cmpint(stream.height, ==, 240);
  g_assert_cmpuint(stream.source_type, ==, 1);
  g_assert_true(stream.restore_token.empty());  // nothing asked to persist
  std::vector<BackendCall> selects = calls_of(host, "SelectSources");
  g_assert_cmpuint(selects.size(), ==, 1);
  assert_same(lookup(selects[0].options.get(), "types").get(), "u", "1");
  assert_same(lookup(selects[0].options.get(), "cursor_mode").get(), "u", "2");
  assert_same(lookup(selects[0].options.get(), "multiple").get(), "b", "false");
  std::vector<BackendCall> starts = calls_of(host, "Start");
  g_assert_cmpuint(starts.size(), ==, 1);
  g_assert_cmpstr(starts[0].parent_window.c_str(), ==, "");  // a guest window means nothing on the host

  std::string error_name;
  const int fd = open_remote(cast.guest(), session, &error_name);
  g_assert_cmpint(fd, >=, 0);
  {
    PipeWireClient app(fd);
    g_assert_true(wait_until([&] { return app.sees(stream.node_id); }));
    const PipeWireClient::Node node = app.nodes().at(stream.node_id);
    g_assert_cmpstr(node.media_class.c_str(), ==, "Video/Source");
    g_assert_cmpuint(app.nodes().size(), ==, 1);  // only what the user granted
    app.consume(stream.node_id, patterns::kScreenCastTag);
    g_assert_true(app.wait_for_frames(10));
    assert_good_frames(app.frames(), 320, 240);

    // The app closes the session: the host's session and stream end.
    assert_str_eq(close_session(cast.guest(), session), "");
    g_assert_true(wait_until([&] { return !calls_of(host, "Session.Close").empty(); }));
    g_assert_true(wait_until([&] { return !app.sees(stream.node_id); }));
    const size_t frames_then = app.frames().numbers.size();
    wait_until([] { return false; }, 300ms);
    g_assert_cmpuint(app.frames().numbers.size(), ==, frames_then);
  }
  open_remote(cast.guest(), session, &error_name);
  assert_str_eq(error_name, kNotFound);
}

// Two remotes of one session both stream; a second session has its own node.
void test_two_remotes() {
  if (skip_without_pipewire()) return;
  CastVm cast;
  const std::string session = create_session(cast.guest(), "twice");
  const StartedStream stream = start_cast(cast.guest(), session);
  std::string error_name;
  PipeWireClient first(open_remote(cast.guest(), session, &error_name));
  PipeWireClient second(open_remote(cast.guest(), session, &error_name));
  first.consume(stream.node_id, patterns::kScreenCastTag);
  second.consume(stream.node_id, patterns::kScreenCastTag);
  g_assert_true(first.wait_for_frames(5));
  g_assert_true(second.wait_for_frames(5));
  assert_good_frames(first.frames(), 320, 240, 5);
  assert_good_frames(second.frames(), 320, 240, 5);

  const std::string other = create_session(cast.guest(), "other");
  const StartedStream other_stream = start_cast(cast.guest(), other);
  g_assert_cmpuint(other_stream.node_id, !=, stream.node_id);
  g_assert_false(first.sees(other_stream.node_id));  // a remote sees its own session's nodes only
}

// Another guest client cannot use, or close, the session; the owner still can.
void test_other_client_not_allowed() {
  if (skip_without_pipewire()) return;
  CastVm cast;
  const std::string session = create_session(cast.guest(), "mine");
  auto other = connect(cast.vm.guest().address());
  assert_str_eq(request(other.get(), "SelectSources", session, "{}").error, kNotAllowed);
  const StartedStream stream = start_cast(cast.guest(), session);
  assert_str_eq(request(other.get(), "Start", session, "{}").error, kNotAllowed);
  std::string error_name;
  g_assert_cmpint(open_remote(other.get(), session, &error_name), ==, -1);
  assert_str_eq(error_name, kNotAllowed);
  assert_str_eq(close_session(other.get(), session), kNotAllowed);
  g_assert_cmpuint(calls_of(cast.vm.host(), "SelectSources").size(), ==, 1);  // the owner's only

  const int fd = open_remote(cast.guest(), session, &error_name);
  g_assert_cmpint(fd, >=, 0);
  PipeWireClient app(fd);
  app.consume(stream.node_id, patterns::kScreenCastTag);
  g_assert_true(app.wait_for_frames(5));
}

// The desktop ends the screen cast (the user pressed "stop sharing"): the app
// hears Closed, the stream goes, the session is gone.
void test_host_closes() {
  if (skip_without_pipewire()) return;
  CastVm cast;
  const std::string session = create_session(cast.guest(), "hostend");
  const StartedStream stream = start_cast(cast.guest(), session);
  std::string error_name;
  PipeWireClient app(open_remote(cast.guest(), session, &error_name));
  app.consume(stream.node_id, patterns::kScreenCastTag);
  g_assert_true(app.wait_for_frames(5));

  ClosedSignals closed(cast.guest(), session);
  const std::string host_session = lookup_string(calls_of(cast.vm.host(), "Start").at(0).record.get(), "session_handle");
  cast.vm.host().call_backend("CloseSession", g_variant_new("(o)", host_session.c_str()));
  g_assert_true(wait_until([&] { return closed.count == 1; }));
  g_assert_true(wait_until([&] { return !app.sees(stream.node_id); }));
  open_remote(cast.guest(), session, &error_name);
  assert_str_eq(error_name, kNotFound);
  wait_until([] { return false; }, 200ms);
  g_assert_cmpint(closed.count, ==, 1);
}

// The app leaves the guest bus mid-cast: the host's session and stream end.
void test_caller_leaves() {
  if (skip_without_pipewire()) return;
  CastVm cast;
  auto app_bus = connect(cast.vm.guest().address());
  const std::string session = create_session(app_bus.get(), "leaving");
  const StartedStream stream = start_cast(app_bus.get(), session);
  std::string error_name;
  PipeWireClient watcher(open_remote(app_bus.get(), session, &error_name));
  g_assert_true(wait_until([&] { return watcher.sees(stream.node_id); }));
  g_dbus_connection_close_sync(app_bus.get(), nullptr, nullptr);
  g_assert_true(wait_until([&] { return !calls_of(cast.vm.host(), "Session.Close").empty(); }));
  g_assert_true(wait_until([&] { return !watcher.sees(stream.node_id); }));
  g_assert_true(cast.vm.broker().process().running());
}

// The user refuses a step: the app gets the answer, and the session ends
// (the host closes it; the app hears Closed).
void test_refused() {
  if (skip_without_pipewire()) return;
  CastVm cast;
  for (guint32 response : {kResponseCancelled, kResponseOther}) {
    cast.vm.host().set_reply("Start", response);
    const std::string session = create_session(cast.guest(), "refused" + std::to_string(response));
    ClosedSignals closed(cast.guest(), session);
    Answer selected = request(cast.guest(), "SelectSources", session, "{}");
    g_assert_cmpuint(selected.response, ==, kResponseSuccess);
    Answer started = request(cast.guest(), "Start", session, "{}");
    g_assert_cmpuint(started.response, ==, response);
    g_assert_false(has_key(started.results.get(), "streams"));
    g_assert_true(wait_until([&] { return closed.count == 1; }));
    std::string error_name;
    open_remote(cast.guest(), session, &error_name);
    assert_str_eq(error_name, kNotFound);
  }
  cast.vm.host().set_reply("CreateSession", kResponseCancelled);
  Answer created = request(cast.guest(), "CreateSession", "", "{'session_handle_token': <'nope'>}");
  g_assert_cmpuint(created.response, ==, kResponseCancelled);
}

// Calls out of order are refused with the reason before the host sees them.
void test_call_order() {
  if (skip_without_pipewire()) return;
  CastVm cast;
  const std::string session = create_session(cast.guest(), "order");
  std::string error_name, message;
  open_remote(cast.guest(), session, &error_name, &message);
  assert_str_eq(error_name, kFailed);
  Answer early_start = request(cast.guest(), "Start", session, "{}");
  assert_str_eq(early_start.error, kFailed);
  g_assert_cmpuint(calls_of(cast.vm.host(), "Start").size(), ==, 0);

  start_cast(cast.guest(), session);
  assert_str_eq(request(cast.guest(), "SelectSources", session, "{}").error, kFailed);
  assert_str_eq(request(cast.guest(), "Start", session, "{}").error, kFailed);
  g_assert_cmpuint(calls_of(cast.vm.host(), "SelectSources").size(), ==, 1);
  g_assert_cmpuint(calls_of(cast.vm.host(), "Start").size(), ==, 1);
  assert_str_eq(request(cast.guest(), "SelectSources", "/org/freedesktop/portal/desktop/session/1_1/none", "{}").error,
                kNotFound);
}

// Options the host does not offer, or that are malformed, are refused
// (InvalidArgument) and never reach the host; the session stays usable.
void test_invalid_options() {
  if (skip_without_pipewire()) return;
  CastVm cast;
  const std::string session = create_session(cast.guest(), "invalid");
  const std::string huge_token(1 << 20, 'a');
  const std::vector<std::string> invalid = {
      "{'types': <uint32 8>}",            // no such source type
      "{'types': <uint32 4>}",            // virtual monitors: this host has none
      "{'types': <'monitor'>}",           // wrong type
      "{'cursor_mode': <uint32 3>}",      // two modes at once
      "{'cursor_mode': <uint32 8>}",      // no such mode
      "{'cursor_mode': <uint32 0>}",
      "{'persist_mode': <uint32 3>}",
      "{'restore_token': <'not-a-uuid'>}",
      "{'restore_token': <'" + huge_token + "'>}",
      "{'multiple': <uint32 1>}",
  };
  for (const std::string& options : invalid) {
    Answer answer = request(cast.guest(), "SelectSources", session, options);
    if (answer.error != kInvalidArgument) g_test_message("options %.80s", options.c_str());
    assert_str_eq(answer.error, kInvalidArgument);
  }
  g_assert_cmpuint(calls_of(cast.vm.host(), "SelectSources").size(), ==, 0);
  g_assert_true(cast.vm.broker().process().running());

  // Unknown keys are dropped, valid ones pass.
  start_cast(cast.guest(), session, "{'types': <uint32 3>, 'cursor_mode': <uint32 4>, 'frobnicate': <true>}");
  std::vector<BackendCall> selects = calls_of(cast.vm.host(), "SelectSources");
  g_assert_cmpuint(selects.size(), ==, 1);
  assert_same(lookup(selects[0].options.get(), "types").get(), "u", "3");
  g_assert_false(has_key(selects[0].options.get(), "frobnicate"));
}

// A restorable session: the host's restore token reaches the app, and brings
// the same choice back for it — but not for another guest client while the
// token is a transient one.
void test_restore_token() {
  if (skip_without_pipewire()) return;
  CastVm cast;
  HostPortal& host = cast.vm.host();
  const std::string first = create_session(cast.guest(), "persist1");
  const StartedStream stream = start_cast(cast.guest(), first, "{'types': <uint32 1>, 'persist_mode': <uint32 1>}");
  g_assert_true(g_uuid_string_is_valid(stream.restore_token.c_str()));
  assert_str_eq(close_session(cast.guest(), first), "");

  // Another client of the VM offers the token: the host does not get it.
  auto other = connect(cast.vm.guest().address());
  const std::string theirs = create_session(other.get(), "theirs");
  start_cast(other.get(), theirs,
             "{'types': <uint32 1>, 'restore_token': <'" + stream.restore_token + "'>, 'persist_mode': <uint32 1>}");
  std::vector<BackendCall> selects = calls_of(host, "SelectSources");
  g_assert_cmpuint(selects.size(), ==, 2);
  g_assert_false(has_key(selects[1].options.get(), "restore_data"));

  // The app that got it: restored, and a token again.
  const std::string again = create_session(cast.guest(), "persist2");
  const StartedStream restored = start_cast(
      cast.guest(), again, "{'types': <uint32 1>, 'restore_token': <'" + stream.restore_token + "'>, 'persist_mode': <uint32 1>}");
  selects = calls_of(host, "SelectSources");
  g_assert_cmpuint(selects.size(), ==, 3);
  assert_same(lookup(selects[2].options.get(), "restore_data").get(), "(suv)",
              "('sidebus-test', uint32 1, <{'stream': <'monitor-0'>}>)");
  g_assert_false(has_key(selects[2].options.get(), "restore_token"));
  g_assert_true(g_uuid_string_is_valid(restored.restore_token.c_str()));
}

// A program in the VM, as the guest user, goes the whole way on its own
// connection and saves the last frame; when it is done the host's session
// is closed.
void test_guest_app() {
  if (skip_without_pipewire()) return;
  CastVm cast;
  const std::string png = cast.vm.guest_files() / "frame.png";
  VariantPtr report = run_guest_app(cast.vm, {"screencast", "--types", "1", "--frames", "10", "--tag",
                                              std::to_string(patterns::kScreenCastTag), "--png", png});
  assert_str_eq(lookup_string(report.get(), "outcome"), "ok");
  assert_same(lookup(report.get(), "width").get(), "u", "320");
  assert_same(lookup(report.get(), "height").get(), "u", "240");
  assert_same(lookup(report.get(), "mismatches").get(), "t", "0");
  VariantPtr numbers = lookup(report.get(), "numbers");
  gsize n = 0;
  const auto* frame_numbers = static_cast<const guint32*>(g_variant_get_fixed_array(numbers.get(), &n, sizeof(guint32)));
  g_assert_cmpuint(n, >=, 10);
  for (gsize i = 1; i < n; i++) g_assert_cmpuint(frame_numbers[i], >, frame_numbers[i - 1]);
  std::optional<std::string> picture = read_file(png);
  g_assert_true(picture.has_value() && picture->compare(0, 8, "\x89PNG\r\n\x1a\n") == 0);
  g_assert_true(wait_until([&] { return !calls_of(cast.vm.host(), "Session.Close").empty(); }));
}

// ---- the stream relay (byte-only links) ------------------------------------------

// A VM on a byte-only link (vsock, virtio-serial) with a PipeWire of its own
// (a second daemon, its own runtime directory) and the guest's
// sidebus-stream-relay, started on demand by the guest bus. @guest_pipewire
// false: the VM has no PipeWire daemon (its runtime directory is empty);
// @relay false: no relay installed in the VM.
struct RelayVm {
  HostPipeWire pipewire;
  HostPipeWire guest_pipewire;
  TempDir empty_runtime{"sidebus-test-no-pipewire"};
  Vm vm;
  RelayVm(bool guest_pipewire_runs = true, bool relay = true)
      : vm(VmOptions{.name = "relay-vm",
                     .portals = {"screencast"},
                     .byte_only = true,
                     .host = HostPortalOptions{.env = pipewire.env()},
                     .guest_services = relay ? relay_service(guest_pipewire_runs ? guest_pipewire.runtime_dir()
                                                                                 : empty_runtime.path())
                                             : std::map<std::string, std::string>{}}) {
    for (const char* method : {"CreateSession", "SelectSources", "Start"})
      vm.host().set_reply(method, kResponseSuccess);
  }
  static std::map<std::string, std::string> relay_service(const std::string& runtime_dir) {
    return {{"org.sidebus.GuestRelay1",
             "/usr/bin/env PIPEWIRE_RUNTIME_DIR=" + runtime_dir + " " + env_path("SIDEBUS_STREAM_RELAY")}};
  }
  GDBusConnection* guest() { return vm.guest().connection(); }
  // The guest relay's process id (it runs once a stream was relayed).
  pid_t relay_pid() {
    g_autoptr(GVariant) reply =
        g_dbus_connection_call_sync(guest(), "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus",
                                    "GetConnectionUnixProcessID", g_variant_new("(s)", "org.sidebus.GuestRelay1"),
                                    G_VARIANT_TYPE("(u)"), G_DBUS_CALL_FLAGS_NONE, 5000, nullptr, nullptr);
    guint32 pid = 0;
    if (reply != nullptr) g_variant_get(reply, "(u)", &pid);
    return pid_t(pid);
  }
};

bool skip_without_relay() {
  if (skip_without_pipewire()) return true;
  if (g_getenv("SIDEBUS_STREAM_RELAY") != nullptr) return false;
  g_test_skip("sidebus-stream-relay was not built (no libpipewire)");
  return true;
}

// The whole way on a byte-only link: Start's node id is the guest's node,
// the app's remote is a connection to the guest's PipeWire that sees only
// it, and the frames are the host's, pixel for pixel, numbers increasing.
// Closing the session stops the host's stream and the guest's node goes.
void test_relay_stream() {
  if (skip_without_relay()) return;
  RelayVm cast;
  HostPortal& host = cast.vm.host();
  const std::string session = create_session(cast.guest(), "relay1");
  const StartedStream stream = start_cast(cast.guest(), session);
  g_assert_cmpint(stream.width, ==, 320);
  g_assert_cmpint(stream.height, ==, 240);
  g_assert_cmpuint(stream.node_id, !=, 0);

  std::string error_name;
  const int fd = open_remote(cast.guest(), session, &error_name);
  assert_str_eq(error_name, "");
  g_assert_cmpint(fd, >=, 0);
  {
    PipeWireClient app(fd);
    g_assert_true(wait_until([&] { return app.sees(stream.node_id); }));
    const PipeWireClient::Node node = app.nodes().at(stream.node_id);
    g_assert_cmpstr(node.media_class.c_str(), ==, "Video/Source");
    g_assert_cmpstr(node.media_role.c_str(), ==, "Screen");
    g_assert_cmpuint(app.nodes().size(), ==, 1);  // only the relayed node
    app.consume(stream.node_id, patterns::kScreenCastTag);
    g_assert_true(app.wait_for_frames(20));
    assert_good_frames(app.frames(), 320, 240, 20);

    // The app closes the session: the host's session ends, and with the relay the guest's node.
    assert_str_eq(close_session(cast.guest(), session), "");
    g_assert_true(wait_until([&] { return !calls_of(host, "Session.Close").empty(); }));
    g_assert_true(wait_until([&] { return !app.sees(stream.node_id); }));
    const size_t frames_then = app.frames().numbers.size();
    wait_until([] { return false; }, 300ms);
    g_assert_cmpuint(app.frames().numbers.size(), ==, frames_then);
  }
  open_remote(cast.guest(), session, &error_name);
  assert_str_eq(error_name, kNotFound);
  g_assert_true(cast.vm.broker().process().running());
}

// The guest side stops reading (the relay process is stopped, as a guest
// that is swapping or hostile would): the frames have nowhere to go, but the
// link does not stall — D-Bus calls are answered at once, another session
// starts — and when the guest reads again, new frames arrive.
void test_relay_stalled_guest() {
  if (skip_without_relay()) return;
  RelayVm cast;
  const std::string session = create_session(cast.guest(), "stall");
  const StartedStream stream = start_cast(cast.guest(), session);
  std::string error_name;
  PipeWireClient app(open_remote(cast.guest(), session, &error_name));
  app.consume(stream.node_id, patterns::kScreenCastTag);
  g_assert_true(app.wait_for_frames(5));
  const pid_t relay = cast.relay_pid();
  g_assert_cmpint(relay, >, 0);
  g_assert_cmpint(kill(relay, SIGSTOP), ==, 0);
  wait_until([] { return false; }, 2s);  // 60 frames of 300 KiB: far more than any buffer on the way
  for (int call = 0; call < 3; call++) {
    const gint64 asked = g_get_monotonic_time();
    assert_same(portal_property(cast.guest(), kScreenCast, "AvailableSourceTypes").get(), "u", "3");
    create_session(cast.guest(), "meanwhile" + std::to_string(call));
    g_assert_cmpint(g_get_monotonic_time() - asked, <, 2 * G_USEC_PER_SEC);
  }
  const PipeWireClient::Frames stalled = app.frames();
  g_assert_cmpint(kill(relay, SIGCONT), ==, 0);
  g_assert_true(app.wait_for_frames(stalled.numbers.size() + 10));
  const PipeWireClient::Frames after = app.frames();
  // New frames, not the stale ones: what came while the guest slept was dropped.
  g_assert_cmpuint(after.numbers.back(), >, stalled.numbers.back() + 30);
  assert_good_frames(after, 320, 240, stalled.numbers.size() + 10);
  g_assert_true(cast.vm.broker().process().running());
}

// The link drops while the app watches: the relay stops on both sides —
// the broker no longer consumes the host's stream, the guest's node goes.
void test_relay_link_drops() {
  if (skip_without_relay()) return;
  RelayVm cast;
  const std::string session = create_session(cast.guest(), "dropped");
  const StartedStream stream = start_cast(cast.guest(), session);
  std::string error_name;
  PipeWireClient app(open_remote(cast.guest(), session, &error_name));
  app.consume(stream.node_id, patterns::kScreenCastTag);
  g_assert_true(app.wait_for_frames(5));
  g_assert_cmpuint(video_consumers(cast.pipewire), ==, 1);  // the broker's relay
  cast.vm.stop_agent();
  g_assert_true(wait_until([&] { return video_consumers(cast.pipewire) == 0; }));
  g_assert_true(wait_until([&] { return !app.sees(stream.node_id); }));
  g_assert_true(cast.vm.broker().process().running());
}

// A hostile guest relay (the guest owns it: it may be anything): this test
// owns org.sidebus.GuestRelay1 itself, on a connection and thread of its
// own, answers CreateStream with a node id, answers OpenRemote without an
// fd, and then sends credit for frames it was never sent. The broker
// answers the app with a clear error, cuts the stream off with the reason
// (it no longer consumes the host's stream), and carries on.
struct HostileRelay {
  std::string address;
  std::thread thread;
  GMainContext* context = g_main_context_new();
  GMainLoop* loop = g_main_loop_new(context, FALSE);
  std::atomic<bool> owned{false};
  std::atomic<int> frame_socket{-1};
  explicit HostileRelay(const std::string& bus) : address(bus) {
    thread = std::thread([this] { run(); });
    wait_until([&] { return owned.load(); });
  }
  ~HostileRelay() {
    g_main_loop_quit(loop);
    thread.join();
    g_main_loop_unref(loop);
    g_main_context_unref(context);
    if (frame_socket >= 0) close(frame_socket);
  }
  static void handle(GDBusConnection*, const char*, const char*, const char*, const char* method, GVariant*,
                     GDBusMethodInvocation* invocation, gpointer data) {
    auto* self = static_cast<HostileRelay*>(data);
    if (g_str_equal(method, "CreateStream")) {
      GUnixFDList* fds = g_dbus_message_get_unix_fd_list(g_dbus_method_invocation_get_message(invocation));
      self->frame_socket = fds != nullptr ? g_unix_fd_list_get(fds, 0, nullptr) : -1;
      g_dbus_method_invocation_return_value(invocation, g_variant_new("(u)", 42));
    } else {
      g_dbus_method_invocation_return_value(invocation, g_variant_new("(h)", 0));  // no fd behind it
    }
  }
  void run() {
    g_main_context_push_thread_default(context);
    g_autoptr(GDBusConnection) bus = g_dbus_connection_new_for_address_sync(
        address.c_str(),
        static_cast<GDBusConnectionFlags>(G_DBUS_CONNECTION_FLAGS_AUTHENTICATION_CLIENT |
                                          G_DBUS_CONNECTION_FLAGS_MESSAGE_BUS_CONNECTION),
        nullptr, nullptr, nullptr);
    g_assert_nonnull(bus);
    static const char xml[] =
        "<node><interface name='org.sidebus.GuestRelay1'>"
        "<method name='CreateStream'><arg type='h' direction='in'/><arg type='a{sv}' direction='in'/>"
        "<arg type='u' direction='out'/></method>"
        "<method name='OpenRemote'><arg type='au' direction='in'/><arg type='h' direction='out'/></method>"
        "</interface></node>";
    g_autoptr(GDBusNodeInfo) info = g_dbus_node_info_new_for_xml(xml, nullptr);
    static const GDBusInterfaceVTable vtable = {handle, nullptr, nullptr, {}};
    g_dbus_connection_register_object(bus, "/org/sidebus/GuestRelay1", info->interfaces[0], &vtable, this, nullptr,
                                      nullptr);
    g_autoptr(GVariant) reply = g_dbus_connection_call_sync(
        bus, "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus", "RequestName",
        g_variant_new("(su)", "org.sidebus.GuestRelay1", 4), G_VARIANT_TYPE("(u)"), G_DBUS_CALL_FLAGS_NONE, 5000,
        nullptr, nullptr);
    owned = reply != nullptr;
    g_main_loop_run(loop);
    g_main_context_pop_thread_default(context);
  }
};

void test_relay_hostile_guest() {
  if (skip_without_relay()) return;
  RelayVm cast(/*guest_pipewire_runs=*/true, /*relay=*/false);
  HostileRelay hostile(cast.vm.guest().address());
  g_assert_true(hostile.owned.load());
  const std::string session = create_session(cast.guest(), "hostile");
  const StartedStream stream = start_cast(cast.guest(), session);
  g_assert_cmpuint(stream.node_id, ==, 42);  // what the guest said: it is the guest's to say
  g_assert_cmpuint(video_consumers(cast.pipewire), ==, 1);
  std::string error_name, message;
  g_assert_cmpint(open_remote(cast.guest(), session, &error_name, &message), ==, -1);
  assert_str_eq(error_name, kFailed);
  g_assert_nonnull(strstr(message.c_str(), "gave no remote"));
  // Credit for 1000 frames: more than the window, for frames never sent.
  const uint8_t credit[12] = {4, 0, 0, 0, 4, 0, 0, 0, 0xe8, 0x03, 0, 0};
  g_assert_cmpint(write(hostile.frame_socket, credit, sizeof credit), ==, 12);
  g_assert_true(wait_until([&] { return video_consumers(cast.pipewire) == 0; }));
  assert_str_eq(close_session(cast.guest(), session), "");
  create_session(cast.guest(), "after");
  g_assert_true(cast.vm.broker().process().running());
}

// A byte-only link to a VM without the relay, or without PipeWire: the
// user can still be asked and the session starts, but OpenPipeWireRemote
// fails at once, naming what the VM is missing; the broker carries on.
void test_relay_missing() {
  if (skip_without_relay()) return;
  for (bool relay_installed : {false, true}) {
    RelayVm cast(/*guest_pipewire_runs=*/false, relay_installed);
    const std::string session = create_session(cast.guest(), "bytes");
    const StartedStream stream = start_cast(cast.guest(), session);
    g_assert_cmpint(stream.width, ==, 320);
    g_assert_cmpuint(stream.node_id, ==, 0);  // no guest node
    std::string error_name, message;
    const gint64 asked = g_get_monotonic_time();
    g_assert_cmpint(open_remote(cast.guest(), session, &error_name, &message), ==, -1);
    g_assert_cmpint(g_get_monotonic_time() - asked, <, 5 * G_USEC_PER_SEC);
    assert_str_eq(error_name, kNotSupported);
    if (relay_installed) {
      g_assert_nonnull(strstr(message.c_str(), "no PipeWire daemon"));
      g_assert_nonnull(strstr(message.c_str(), "pipewire-0"));
    } else {
      g_assert_nonnull(strstr(message.c_str(), "sidebus-stream-relay"));
    }
    assert_str_eq(close_session(cast.guest(), session), "");
    g_assert_true(wait_until([&] { return !calls_of(cast.vm.host(), "Session.Close").empty(); }));
    create_session(cast.guest(), "after");  // still serving
    g_assert_true(cast.vm.broker().process().running());
  }
}

// A byte-only link whose agent speaks link protocol 1 (no fd forwarding):
// nothing can carry the relay's frame socket; OpenPipeWireRemote says so.
void test_byte_only_link_v1() {
  if (skip_without_pipewire()) return;
  HostPipeWire pipewire;
  Vm vm(VmOptions{.name = "v1-vm",
                  .portals = {"screencast"},
                  .byte_only = true,
                  .host = HostPortalOptions{.env = pipewire.env()},
                  .agent_args = {"--link-protocol", "1"}});
  for (const char* method : {"CreateSession", "SelectSources", "Start"}) vm.host().set_reply(method, kResponseSuccess);
  const std::string session = create_session(vm.guest().connection(), "v1");
  start_cast(vm.guest().connection(), session);
  std::string error_name, message;
  g_assert_cmpint(open_remote(vm.guest().connection(), session, &error_name, &message), ==, -1);
  assert_str_eq(error_name, kNotSupported);
  g_assert_nonnull(strstr(message.c_str(), "cannot carry a PipeWire connection"));
  g_assert_nonnull(strstr(message.c_str(), "link protocol 2"));
  VariantPtr report = run_guest_app(vm, {"screencast", "--frames", "1"});
  assert_str_eq(lookup_string(report.get(), "outcome"), "failed");
  assert_str_eq(lookup_string(report.get(), "error_name"), kNotSupported);
  g_assert_true(vm.broker().process().running());
}

}  // namespace

int main(int argc, char** argv) {
  g_test_init(&argc, &argv, nullptr);
  pw_init(&argc, &argv);
  add_test("/screencast/properties", test_properties);
  add_test("/screencast/stream", test_stream);
  add_test("/screencast/two-remotes", test_two_remotes);
  add_test("/screencast/other-client-not-allowed", test_other_client_not_allowed);
  add_test("/screencast/host-closes", test_host_closes);
  add_test("/screencast/caller-leaves", test_caller_leaves);
  add_test("/screencast/refused", test_refused);
  add_test("/screencast/call-order", test_call_order);
  add_test("/screencast/invalid-options", test_invalid_options);
  add_test("/screencast/restore-token", test_restore_token);
  add_test("/screencast/guest-app", test_guest_app);
  add_test("/screencast/relay/stream", test_relay_stream);
  add_test("/screencast/relay/stalled-guest", test_relay_stalled_guest);
  add_test("/screencast/relay/missing", test_relay_missing);
  add_test("/screencast/relay/link-drops", test_relay_link_drops);
  add_test("/screencast/relay/hostile-guest", test_relay_hostile_guest);
  add_test("/screencast/byte-only-link-v1", test_byte_only_link_v1);
  return g_test_run();
}
