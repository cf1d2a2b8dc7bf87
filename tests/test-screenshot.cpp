// test-screenshot.cpp — the Screenshot portal across the VM boundary, real
// parts only: the host's xdg-desktop-portal 1.16 with the test backend
// (whose Screenshot writes a real PNG, tests/backend/test-patterns.hpp, and
// whose Access dialog plays the user's permission answer), the broker with
// the screenshot plugin and its private document portal, a guest bus and the
// real agent.
//
// Asserted is what the app in the VM notices: the URI it gets is a file in
// its documents directory whose bytes are the host's PNG, which it cannot
// write; cancel and refusal answers; PickColor's color; and that the host
// was asked what the app asked (options by table, no guest window handle).
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <string>
#include <vector>

#include "support/assert.hpp"
#include "support/dbus.hpp"
#include "support/files.hpp"
#include "support/variant.hpp"
#include "support/vm.hpp"

using namespace sidebus::test;

namespace {

constexpr char kScreenshot[] = "org.freedesktop.portal.Screenshot";

VmOptions shot_vm() { return {.name = "shot-vm", .portals = {"screenshot"}}; }

struct Answer {
  std::string error;  // the call's D-Bus error name, "" if it returned a request
  guint32 response = G_MAXUINT32;
  VariantPtr results;
};

Answer call(Vm& vm, const char* method, const std::string& options_text) {
  VariantPtr options = with_handle_token(options_text);
  PortalRequest request(vm.guest().connection(), kPortalBusName, kScreenshot, method,
                        g_variant_new("(s@a{sv})", "x11:1234", options.get()));
  Answer answer;
  if (request.error() != nullptr) {
    answer.error = remote_error_name(request.error());
    return answer;
  }
  g_assert_true(request.wait_for_response());
  answer.response = request.response();
  answer.results.reset(g_variant_ref(request.results()));
  return answer;
}

std::vector<BackendCall> calls_of(HostPortal& host, const char* method) {
  std::vector<BackendCall> found;
  for (BackendCall& call : host.backend_calls())
    if (call.method == method) found.push_back(std::move(call));
  return found;
}

void test_version() {
  Vm vm(shot_vm());
  assert_same(portal_property(vm.guest().connection(), kScreenshot, "version").get(), "u", "2");
}

// The app takes a screenshot: the host asks the user once (non-interactive),
// and the app gets a file in its documents with the host's PNG in it, which
// it can read but not change.
void test_screenshot_exported() {
  Vm vm(shot_vm());
  vm.host().set_reply("AccessDialog", kResponseSuccess);
  vm.host().set_reply("Screenshot", kResponseSuccess);
  Answer answer = call(vm, "Screenshot", "{'interactive': <false>, 'modal': <true>, 'frobnicate': <1>}");
  assert_str_eq(answer.error, "");
  g_assert_cmpuint(answer.response, ==, kResponseSuccess);
  const std::string guest_uri = lookup_string(answer.results.get(), "uri");
  std::vector<BackendCall> shots = calls_of(vm.host(), "Screenshot");
  g_assert_cmpuint(shots.size(), ==, 1);
  const std::string host_uri = lookup_string(lookup(shots[0].record.get(), "results").get(), "uri");
  g_assert_true(guest_uri != host_uri);  // never the host's path
  g_autofree char* name = g_path_get_basename(path_of(host_uri).c_str());
  vm.document_id(guest_uri, name);  // <documents>/<doc-id>/<name>

  const std::string guest_path = path_of(guest_uri);
  std::optional<std::string> seen = read_file(guest_path);
  std::optional<std::string> written = read_file(path_of(host_uri));
  g_assert_true(seen.has_value() && written.has_value());
  g_assert_cmpuint(seen->size(), >, 8);
  g_assert_true(seen->compare(0, 8, "\x89PNG\r\n\x1a\n") == 0);
  g_assert_true(*seen == *written);

  for (int flags : {O_WRONLY, O_RDWR, O_WRONLY | O_TRUNC}) {
    const int fd = open(guest_path.c_str(), flags | O_CLOEXEC);
    const int saved = errno;
    if (fd >= 0) close(fd);
    g_assert_cmpint(fd, <, 0);
    g_assert_true(saved == EACCES || saved == EPERM || saved == EROFS);
  }
  g_assert_true(read_file(path_of(host_uri)) == written);

  // What the host was asked: the app's options (known ones), no guest window.
  g_assert_cmpstr(shots[0].parent_window.c_str(), ==, "");
  assert_same(lookup(shots[0].options.get(), "interactive").get(), "b", "false");
  assert_same(lookup(shots[0].options.get(), "modal").get(), "b", "true");
  g_assert_false(has_key(shots[0].options.get(), "frobnicate"));
  g_assert_cmpuint(calls_of(vm.host(), "AccessDialog").size(), ==, 1);

  // An interactive one goes straight to the host's screenshot UI.
  Answer second = call(vm, "Screenshot", "{'interactive': <true>}");
  g_assert_cmpuint(second.response, ==, kResponseSuccess);
  g_assert_true(read_file(path_of(lookup_string(second.results.get(), "uri"))).has_value());
  g_assert_cmpuint(calls_of(vm.host(), "AccessDialog").size(), ==, 1);
}

// A program in the VM, as the guest user, reads the whole picture.
void test_guest_app() {
  Vm vm(shot_vm());
  vm.host().set_reply("Screenshot", kResponseSuccess);
  GuestBus::Output output =
      vm.guest().run_as_guest({env_path("SIDEBUS_VIDEO_CLIENT"), "screenshot", "--interactive"}, 60s);
  g_assert_true(output.status.success());
  VariantPtr report = parse("a{sv}", output.out);
  assert_str_eq(lookup_string(report.get(), "outcome"), "ok");
  std::vector<BackendCall> shots = calls_of(vm.host(), "Screenshot");
  g_assert_cmpuint(shots.size(), ==, 1);
  std::optional<std::string> written =
      read_file(path_of(lookup_string(lookup(shots[0].record.get(), "results").get(), "uri")));
  g_assert_true(written.has_value());
  assert_same(lookup(report.get(), "bytes").get(), "t", std::to_string(written->size()));
}

// Cancel and failure reach the app; so does the user's "no" to screenshots;
// a host answer that is no local file never reaches it.
void test_screenshot_refusals() {
  Vm vm(shot_vm());
  for (guint32 response : {kResponseCancelled, kResponseOther}) {
    vm.host().set_reply("Screenshot", response);
    Answer answer = call(vm, "Screenshot", "{'interactive': <true>}");
    g_assert_cmpuint(answer.response, ==, response);
    g_assert_false(has_key(answer.results.get(), "uri"));
  }
  vm.host().set_reply("Screenshot", kResponseSuccess, "{'uri': <'https://example.com/shot.png'>}");
  Answer remote = call(vm, "Screenshot", "{'interactive': <true>}");
  g_assert_cmpuint(remote.response, ==, kResponseOther);
  g_assert_false(has_key(remote.results.get(), "uri"));

  vm.host().set_reply("Screenshot", kResponseSuccess, "{'uri': <'file:///nonexistent/sidebus-shot.png'>}");
  Answer missing = call(vm, "Screenshot", "{'interactive': <true>}");
  g_assert_cmpuint(missing.response, ==, kResponseOther);

  // The user denies screenshots: 2, and the screenshot backend is not asked.
  Vm denied(shot_vm());
  denied.host().set_reply("AccessDialog", kResponseCancelled);
  denied.host().set_reply("Screenshot", kResponseSuccess);
  g_assert_cmpuint(call(denied, "Screenshot", "{'interactive': <false>}").response, ==, kResponseOther);
  g_assert_cmpuint(calls_of(denied.host(), "Screenshot").size(), ==, 0);
  g_assert_true(vm.broker().process().running());
}

void test_invalid_options() {
  Vm vm(shot_vm());
  vm.host().set_reply("Screenshot", kResponseSuccess);
  assert_str_eq(call(vm, "Screenshot", "{'interactive': <'yes'>}").error, kInvalidArgument);
  assert_str_eq(call(vm, "Screenshot", "{'modal': <uint32 1>}").error, kInvalidArgument);
  g_assert_cmpuint(calls_of(vm.host(), "Screenshot").size(), ==, 0);
}

// PickColor: the color the user picked on the host reaches the app.
void test_pick_color() {
  Vm vm(shot_vm());
  vm.host().set_reply("PickColor", kResponseSuccess);
  Answer answer = call(vm, "PickColor", "{'frobnicate': <true>}");
  g_assert_cmpuint(answer.response, ==, kResponseSuccess);
  assert_same(lookup(answer.results.get(), "color").get(), "(ddd)", "(0.25, 0.5, 0.75)");
  std::vector<BackendCall> picks = calls_of(vm.host(), "PickColor");
  g_assert_cmpuint(picks.size(), ==, 1);
  g_assert_cmpstr(picks[0].parent_window.c_str(), ==, "");
  g_assert_false(has_key(picks[0].options.get(), "frobnicate"));

  vm.host().set_reply("PickColor", kResponseSuccess, "{'color': <(1.0, 0.0, 0.5)>}");
  assert_same(lookup(call(vm, "PickColor", "{}").results.get(), "color").get(), "(ddd)", "(1.0, 0.0, 0.5)");
  for (guint32 response : {kResponseCancelled, kResponseOther}) {
    vm.host().set_reply("PickColor", response);
    Answer refused = call(vm, "PickColor", "{}");
    g_assert_cmpuint(refused.response, ==, response);
    g_assert_false(has_key(refused.results.get(), "color"));
  }
}

}  // namespace

int main(int argc, char** argv) {
  g_test_init(&argc, &argv, nullptr);
  add_test("/screenshot/version", test_version);
  add_test("/screenshot/exported", test_screenshot_exported);
  add_test("/screenshot/guest-app", test_guest_app);
  add_test("/screenshot/refusals", test_screenshot_refusals);
  add_test("/screenshot/invalid-options", test_invalid_options);
  add_test("/screenshot/pick-color", test_pick_color);
  return g_test_run();
}
