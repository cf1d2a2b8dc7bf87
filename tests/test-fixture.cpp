// SPDX-License-Identifier: LGPL-2.1-or-later
// test-fixture.cpp — tests the integration tests' support library itself
// (tests/support/):
// the host portal stack answers the way the broker will use it, a guest bus
// can run as another user, and teardown leaves no process, mount or
// directory behind, even when a test process aborts.
#include <glib/gstdio.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "support/assert.hpp"
#include "support/topology.hpp"

using namespace sidebus::test;

namespace {

// After a piece is gone: nothing references its directory, nothing is
// mounted there, it no longer exists, and the orderly teardown had left the
// final sweep nothing to do (@swept_before: leftovers_swept() at the start).
void assert_torn_down(const std::string& dir, size_t swept_before) {
  g_assert_cmpuint(processes_referencing(dir).size(), ==, 0);
  g_assert_cmpuint(mounts_under(dir).size(), ==, 0);
  g_assert_false(g_file_test(dir.c_str(), G_FILE_TEST_EXISTS));
  g_assert_cmpuint(leftovers_swept(), ==, swept_before);
}

GVariant* open_file_parameters(const char* token) {
  return g_variant_new_parsed(
      "('', 'Pick a file', {'handle_token': <%s>, 'accept_label': <'Take it'>, 'modal': <true>,"
      "  'filters': <[('Text', [(uint32 0, '*.txt'), (1, 'text/plain')])]>,"
      "  'choices': <[('encoding', 'Encoding', [('utf8', 'UTF-8')], 'utf8')]>})",
      token);
}

void test_open_file() {
  const size_t swept_before = leftovers_swept();
  std::string dir;
  {
    const gint64 start = g_get_monotonic_time();
    HostPortal host;
    g_test_message("HostPortal started in %.0f ms", (g_get_monotonic_time() - start) / 1000.0);
    dir = host.dir().path();

    host.set_reply("OpenFile", kResponseSuccess, g_variant_new_parsed("{'uris': <['file:///tmp/x']>}"));
    PortalRequest request(host.connection(), "org.freedesktop.portal.Desktop", "org.freedesktop.portal.FileChooser",
                          "OpenFile", open_file_parameters("t1"));
    g_assert_no_error(request.error());
    g_assert_true(request.wait_for_response());
    g_assert_cmpuint(request.response(), ==, kResponseSuccess);
    assert_same(lookup(request.results(), "uris").get(), "as", "['file:///tmp/x']");

    std::vector<BackendCall> calls = host.backend_calls();
    g_assert_cmpuint(calls.size(), ==, 1);
    const BackendCall& call = calls[0];
    g_assert_cmpstr(call.method.c_str(), ==, "OpenFile");
    assert_str_eq(call.handle, request.handle());
    g_assert_cmpstr(call.app_id.c_str(), ==, "");  // an unsandboxed host client
    g_assert_cmpstr(call.title.c_str(), ==, "Pick a file");
    g_assert_true(call.answered);
    g_assert_false(call.closed);
    assert_same(lookup(call.options.get(), "accept_label").get(), "s", "'Take it'");
    assert_same(lookup(call.options.get(), "filters").get(), "a(sa(us))",
                "[('Text', [(uint32 0, '*.txt'), (1, 'text/plain')])]");
    assert_same(lookup(call.options.get(), "choices").get(), "a(ssa(ss)s)",
                "[('encoding', 'Encoding', [('utf8', 'UTF-8')], 'utf8')]");
  }
  assert_torn_down(dir, swept_before);
}

void test_cancel_and_failures() {
  HostPortal host;
  host.set_reply("OpenFile", kResponseCancelled);
  PortalRequest cancelled(host.connection(), "org.freedesktop.portal.Desktop", "org.freedesktop.portal.FileChooser",
                          "OpenFile", open_file_parameters("cancelled"));
  g_assert_true(cancelled.wait_for_response());
  g_assert_cmpuint(cancelled.response(), ==, kResponseCancelled);

  // A backend that fails with a D-Bus error, after a delay: the portal answers 2.
  host.set_reply("SaveFile", kResponseDBusError, nullptr, 50);
  PortalRequest failed(host.connection(), "org.freedesktop.portal.Desktop", "org.freedesktop.portal.FileChooser",
                       "SaveFile", g_variant_new_parsed("('', 'Save', {'handle_token': <'failed'>})"));
  g_assert_true(failed.wait_for_response());
  g_assert_cmpuint(failed.response(), ==, kResponseOther);

  // Unscripted methods answer 2 too.
  host.reset_backend();
  PortalRequest unscripted(host.connection(), "org.freedesktop.portal.Desktop", "org.freedesktop.portal.FileChooser",
                           "SaveFiles", g_variant_new_parsed("('', 'Save all', {'handle_token': <'other'>})"));
  g_assert_true(unscripted.wait_for_response());
  g_assert_cmpuint(unscripted.response(), ==, kResponseOther);
  std::vector<BackendCall> calls = host.backend_calls();
  g_assert_cmpuint(calls.size(), ==, 1);
  g_assert_cmpstr(calls[0].method.c_str(), ==, "SaveFiles");
}

void test_close_reaches_backend() {
  HostPortal host;
  host.set_reply("OpenFile", kResponseWaitForClose);
  PortalRequest request(host.connection(), "org.freedesktop.portal.Desktop", "org.freedesktop.portal.FileChooser",
                        "OpenFile", open_file_parameters("closed"));
  g_assert_no_error(request.error());
  g_assert_true(host.wait_for_backend_calls(1));
  g_assert_false(host.backend_calls()[0].closed);

  g_autoptr(GError) error = nullptr;
  g_assert_true(request.close(&error));
  g_assert_no_error(error);
  std::vector<BackendCall> calls = host.backend_calls();
  g_assert_true(calls[0].closed);
  g_assert_true(calls[0].answered);
  g_assert_cmpuint(calls[0].response, ==, kResponseOther);
}

// OpenURI asks the AppChooser backend, which answers with the scripted
// choice; xdg-desktop-portal then launches that application.
void test_app_chooser() {
  TempDir marks("sidebus-test-marks");
  const std::string launched = marks / "launched";
  HostPortal host(HostPortalOptions{.files = {
                                        {"data/applications/org.example.Browser.desktop",
                                         "[Desktop Entry]\nType=Application\nName=Browser\nExec=touch " + launched +
                                             "\nMimeType=x-scheme-handler/https;\n"},
                                        // GLib finds handlers through this index only.
                                        {"data/applications/mimeinfo.cache",
                                         "[MIME Cache]\nx-scheme-handler/https=org.example.Browser.desktop;\n"},
                                    }});
  host.set_reply("ChooseApplication", kResponseSuccess,
                 g_variant_new_parsed("{'choice': <'org.example.Browser'>}"));
  PortalRequest request(host.connection(), "org.freedesktop.portal.Desktop", "org.freedesktop.portal.OpenURI",
                        "OpenURI",
                        g_variant_new_parsed("('', 'https://example.com/', {'handle_token': <'uri'>, 'ask': <true>})"));
  g_assert_no_error(request.error());
  g_assert_true(request.wait_for_response());
  g_assert_cmpuint(request.response(), ==, kResponseSuccess);

  std::vector<BackendCall> calls = host.backend_calls();
  g_assert_cmpuint(calls.size(), >=, 1);
  g_assert_cmpstr(calls[0].method.c_str(), ==, "ChooseApplication");
  VariantPtr choices = lookup(calls[0].record.get(), "choices");
  g_autofree const char** names = g_variant_get_strv(choices.get(), nullptr);
  g_assert_true(g_strv_contains(names, "org.example.Browser"));
  g_assert_true(wait_until([&] { return g_file_test(launched.c_str(), G_FILE_TEST_EXISTS); }, 10s));
}

void test_guest_bus_other_user() {
  const size_t swept_before = leftovers_swept();
  std::string dir;
  {
    GuestBus guest(GuestBusOptions{.identity = kNobody});
    dir = guest.dir().path();
    GuestBus::Output output =
        guest.run_as_guest({"gdbus", "call", "--session", "--dest", "org.freedesktop.DBus", "--object-path",
                            "/org/freedesktop/DBus", "--method", "org.freedesktop.DBus.GetId"});
    g_test_message("gdbus: %s%s", output.out.c_str(), output.err.c_str());
    g_assert_true(output.status.success());
    g_assert_true(g_str_has_prefix(output.out.c_str(), "('"));

    // The test's own (root) client is let in, and the bus runs as the guest user.
    g_autoptr(GError) error = nullptr;
    g_autoptr(GVariant) reply = g_dbus_connection_call_sync(
        guest.connection(), "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus", "GetId",
        nullptr, G_VARIANT_TYPE("(s)"), G_DBUS_CALL_FLAGS_NONE, 5000, nullptr, &error);
    g_assert_no_error(error);
    struct stat socket_info;
    g_assert_cmpint(stat((dir + "/bus").c_str(), &socket_info), ==, 0);
    g_assert_cmpuint(socket_info.st_uid, ==, kNobody.uid);
  }
  assert_torn_down(dir, swept_before);
}

void test_guest_bus_rejects_other_users() {
  GuestBus guest(GuestBusOptions{.identity = kNobody, .allow_root_client = false});
  bool refused = false;
  try {
    guest.connection();
  } catch (const FixtureError&) {
    refused = true;
  }
  g_assert_true(refused);
  // Really refused by the bus, not only by the support library.
  refused = false;
  try {
    connect(guest.address());
  } catch (const FixtureError& error) {
    g_test_message("%s", error.what());
    refused = true;
  }
  g_assert_true(refused);
}

// In a subprocess: start a HostPortal, report its directory, then abort
// like a failed g_assert would, without any destructor running.
// What a careless piece would leave: a process with its cwd in the
// directory and a mount below it. The TempDir sweep removes both.
void test_sweep() {
  const size_t swept_before = leftovers_swept();
  std::string dir;
  GPid stray = 0;
  bool mounted = false;
  {
    TempDir scratch("sidebus-test-sweep");
    dir = scratch.path();
    const char* argv[] = {"sleep", "600", nullptr};
    g_assert_true(g_spawn_async(dir.c_str(), const_cast<char**>(argv), nullptr,
                                static_cast<GSpawnFlags>(G_SPAWN_SEARCH_PATH | G_SPAWN_DO_NOT_REAP_CHILD), nullptr,
                                nullptr, &stray, nullptr));
    g_assert_true(wait_until([&] { return processes_referencing(dir).size() == 1; }, 5s));
    const std::string mount_point = scratch.make_dir("mnt");
    mounted = mount("sidebus-test", mount_point.c_str(), "tmpfs", 0, nullptr) == 0;
    if (mounted) g_assert_true(is_mounted(mount_point));
    else g_test_message("cannot mount a tmpfs here (%s): only the process is checked", g_strerror(errno));
  }
  g_assert_cmpuint(leftovers_swept(), ==, swept_before + (mounted ? 2 : 1));
  g_assert_cmpint(kill(stray, 0), !=, 0);  // killed and reaped
  g_assert_cmpuint(processes_referencing(dir).size(), ==, 0);
  g_assert_cmpuint(mounts_under(dir).size(), ==, 0);
  g_assert_false(g_file_test(dir.c_str(), G_FILE_TEST_EXISTS));
}

// (GLib runs a test path with "/subprocess" in it only when asked to.)
std::string report_path(pid_t test_process) {
  return std::string(g_get_tmp_dir()) + "/sidebus-test-report-" + std::to_string(test_process);
}

void aborting_subprocess() {
  HostPortal host;
  g_assert_true(g_file_set_contents(report_path(getppid()).c_str(), host.dir().path().c_str(), -1, nullptr));
  abort();
}

void test_janitor_after_abort() {
  const std::string report = report_path(getpid());
  g_test_trap_subprocess("/fixture/teardown/abort/subprocess", 60 * G_USEC_PER_SEC, G_TEST_SUBPROCESS_DEFAULT);
  g_test_trap_assert_failed();
  // The janitor printed the logs of what the aborted test left …
  g_test_trap_assert_stderr("*the test ended without tearing down*xdg-desktop-portal.log*");

  g_autofree char* dir = nullptr;
  g_assert_true(g_file_get_contents(report.c_str(), &dir, nullptr, nullptr));
  g_unlink(report.c_str());
  // … and swept it (the trap waits for stderr to close, so it is done by now,
  // but the check is the same either way).
  g_assert_true(wait_until([&] { return processes_referencing(dir).empty() && !g_file_test(dir, G_FILE_TEST_EXISTS); },
                           10s));
  g_assert_cmpuint(mounts_under(dir).size(), ==, 0);
}

// The whole topology, once the broker and the agent exist.
void test_topology() {
  for (const char* program : {"SIDEBUS_BROKER", "SIDEBUS_AGENT"}) {
    if (!g_file_test(env_path(program).c_str(), G_FILE_TEST_IS_EXECUTABLE)) {
      g_test_skip("the broker and the agent are not built yet");
      return;
    }
  }
  const size_t swept_before = leftovers_swept();
  std::vector<std::string> dirs;
  {
    const gint64 start = g_get_monotonic_time();
    Topology topology(TopologyOptions{
        .guest = {.identity = kNobody},
        .broker = {.config = {{"50-filechooser.json", R"({"portals": {"filechooser": {"enabled": true}}})"}}},
    });
    g_test_message("Topology started in %.0f ms", (g_get_monotonic_time() - start) / 1000.0);
    dirs = {topology.host().dir().path(), topology.guest().dir().path(), topology.broker().dir().path(),
            topology.agent().dir().path()};
    g_assert_true(topology.wait_for_guest_name("org.freedesktop.portal.Desktop"));
    std::string xml = topology.guest_introspect();
    g_assert_nonnull(strstr(xml.c_str(), "org.freedesktop.portal.FileChooser"));
  }
  for (const std::string& dir : dirs) assert_torn_down(dir, swept_before);
}

}  // namespace

int main(int argc, char** argv) {
  g_test_init(&argc, &argv, nullptr);
  add_test("/fixture/host-portal/open-file", test_open_file);
  add_test("/fixture/host-portal/cancel-and-failures", test_cancel_and_failures);
  add_test("/fixture/host-portal/close", test_close_reaches_backend);
  add_test("/fixture/host-portal/app-chooser", test_app_chooser);
  add_test("/fixture/guest-bus/other-user", test_guest_bus_other_user);
  add_test("/fixture/guest-bus/rejects-other-users", test_guest_bus_rejects_other_users);
  add_test("/fixture/teardown/sweep", test_sweep);
  add_test("/fixture/teardown/abort", test_janitor_after_abort);
  add_test("/fixture/teardown/abort/subprocess", aborting_subprocess);
  add_test("/fixture/topology", test_topology);
  return g_test_run();
}
