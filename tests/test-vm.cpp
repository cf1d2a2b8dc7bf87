// SPDX-License-Identifier: LGPL-2.1-or-later
// test-vm.cpp — the real-VM integration test: a QEMU guest (tests/support/
// qemu.hpp: TCG, the host's kernel, a busybox initramfs, the host's root
// read-only over 9p) runs the host's own dbus-daemon, gdbus and freshly
// built sidebus-agent; the link is a byte-only virtio-serial port.
//
//   /vm/link-bytes            the VM plumbing alone: a line each way over the
//                             port, the host root visible in the guest
//   /vm/portal-on-guest-bus   host bus + xdg-desktop-portal + test backend +
//                             broker on the host, guest bus + agent in the VM:
//                             a guest client introspects the portal object
//   /vm/file-chooser-document a guest client opens a file through
//                             FileChooser.OpenFile; the host backend picks a
//                             host file, and the guest reads its contents
//                             through the document view shared by virtiofsd
//   /vm/openuri-document      then hands an fd of that document to
//                             OpenURI.OpenFile: over the byte-only port the
//                             link forwards it as a document reference, and
//                             the host application opens the host file
//
// The guest-side client of the last test is this very binary, run inside the
// VM as `test-vm --guest-open-file` (the host root, build tree included, is
// the guest's root), so it uses the support library's PortalRequest like
// every host test does.
//
// Skips (saying why) when qemu-system-x86_64, a usable kernel or virtiofsd
// is missing. SIDEBUS_VM_KERNEL and SIDEBUS_VM_DEBUG: see qemu.hpp.

#include <gio/gio.h>
#include <gio/gunixfdlist.h>
#include <gio/gunixsocketaddress.h>
#include <glib/gstdio.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "host-recorder.hpp"
#include "support/dbus.hpp"
#include "support/qemu.hpp"

using namespace sidebus::test;

namespace {

// ---- /vm/link-bytes ----------------------------------------------------------------

// The host end of the link for the plumbing test: accepts QEMU's connection,
// reads one line, answers one line.
class LineHost {
 public:
  explicit LineHost(const std::string& socket_path) {
    g_autoptr(GSocketAddress) address = g_unix_socket_address_new(socket_path.c_str());
    g_autoptr(GError) error = nullptr;
    if (!g_socket_listener_add_address(listener_.get(), address, G_SOCKET_TYPE_STREAM, G_SOCKET_PROTOCOL_DEFAULT,
                                       nullptr, nullptr, &error))
      throw FixtureError(std::string("cannot listen on ") + socket_path + ": " + error->message);
    g_socket_listener_accept_async(listener_.get(), cancellable_.get(), on_accept, this);
  }
  ~LineHost() {
    g_cancellable_cancel(cancellable_.get());
    g_socket_listener_close(listener_.get());
  }
  LineHost(const LineHost&) = delete;
  LineHost& operator=(const LineHost&) = delete;

  const std::string& received() const { return received_; }

 private:
  static void on_accept(GObject* source, GAsyncResult* result, gpointer data) {
    g_autoptr(GError) error = nullptr;
    g_autoptr(GSocketConnection) connection =
        g_socket_listener_accept_finish(G_SOCKET_LISTENER(source), result, nullptr, &error);
    if (connection == nullptr) return;  // cancelled: the LineHost is gone
    auto* self = static_cast<LineHost*>(data);
    self->connection_.reset(static_cast<GSocketConnection*>(g_steal_pointer(&connection)));
    self->lines_.reset(g_data_input_stream_new(g_io_stream_get_input_stream(G_IO_STREAM(self->connection_.get()))));
    g_data_input_stream_read_line_async(self->lines_.get(), G_PRIORITY_DEFAULT, self->cancellable_.get(), on_line,
                                        self);
  }

  static void on_line(GObject* source, GAsyncResult* result, gpointer data) {
    g_autoptr(GError) error = nullptr;
    g_autofree char* line = g_data_input_stream_read_line_finish(G_DATA_INPUT_STREAM(source), result, nullptr, &error);
    if (line == nullptr) return;  // cancelled, or the guest closed the port
    auto* self = static_cast<LineHost*>(data);
    self->received_ = line;
    std::string answer = "host heard: " + self->received_ + "\n";
    g_output_stream_write_all(g_io_stream_get_output_stream(G_IO_STREAM(self->connection_.get())), answer.data(),
                              answer.size(), nullptr, nullptr, &error);
  }

  GObjectPtr<GSocketListener> listener_{g_socket_listener_new()};
  GObjectPtr<GCancellable> cancellable_{g_cancellable_new()};
  GObjectPtr<GSocketConnection> connection_;
  GObjectPtr<GDataInputStream> lines_;
  std::string received_;
};

void test_link_bytes() {
  std::optional<Kernel> kernel = kernel_or_skip();
  if (!kernel) return;
  TempDir dir("sidebus-test-vm");
  LineHost host(dir / "link.sock");
  QemuSpec spec;
  spec.link_socket = dir / "link.sock";
  spec.command = std::string("exec 3<>") + kQemuPortPath +
                 " && echo 'guest says hello' >&3 && head -n 1 <&3"
                 " && test -x /usr/bin/dbus-daemon && echo 'host root visible'";
  Qemu vm(*kernel, dir, spec);
  Checker check(vm);
  std::optional<GuestReport> report = run_to_power_off(vm, check);
  if (!report) return;
  if (!check(report->exit_status == 0, "the guest command failed")) return;
  check(host.received() == "guest says hello", "the host did not receive the guest's line");
  check(report->result == "host heard: guest says hello\nhost root visible\n",
        "the guest did not receive the host's line: " + report->result);
}

// ---- the whole topology ----------------------------------------------------------------

void test_portal_on_guest_bus() {
  std::optional<Kernel> kernel = kernel_or_skip();
  if (!kernel) return;
  std::string agent = env_path("SIDEBUS_AGENT");
  if (!guest_binaries_or_skip({agent})) return;
  TempDir dir("sidebus-test-vm");
  QemuHost host({.link_socket = dir / "link.sock"});
  QemuSpec spec;
  spec.link_socket = dir / "link.sock";
  spec.agent = agent;
  spec.command = std::string("gdbus introspect --session --dest ") + kPortalBusName + " --object-path " + kPortalPath;
  Qemu vm(*kernel, dir, spec);
  Checker check(vm);
  std::optional<GuestReport> report = run_to_power_off(vm, check);
  if (!report) return;
  if (!check(report->exit_status == 0, "gdbus introspect failed in the guest: " + report->result)) return;
  for (const char* interface : {"org.freedesktop.portal.FileChooser", "org.freedesktop.portal.OpenURI"}) {
    check(report->result.find(std::string("interface ") + interface + " {") != std::string::npos,
          std::string("the guest does not see ") + interface);
  }
}

void test_file_chooser_document() {
  std::optional<Kernel> kernel = kernel_or_skip();
  if (!kernel) return;
  std::string agent = env_path("SIDEBUS_AGENT");
  g_autofree char* self = g_file_read_link("/proc/self/exe", nullptr);
  if (!guest_binaries_or_skip({agent, self})) return;
  std::string virtiofsd = find_virtiofsd();
  if (virtiofsd.empty()) {
    g_test_skip("no virtiofsd (/usr/lib/qemu/virtiofsd from qemu-system-common, or the virtiofsd package)");
    return;
  }
  TempDir dir("sidebus-test-vm");
  QemuHost host({.link_socket = dir / "link.sock", .virtiofsd = virtiofsd});
  std::string picked = dir.write_file("picked/hello.txt", "made on the host\n");
  g_autofree char* picked_uri = g_filename_to_uri(picked.c_str(), nullptr, nullptr);
  const char* uris[] = {picked_uri, nullptr};
  host.portal().set_reply("OpenFile", kResponseSuccess, g_variant_new_parsed("{'uris': <%^as>}", uris));
  QemuSpec spec;
  spec.link_socket = dir / "link.sock";
  spec.agent = agent;
  spec.documents_socket = host.broker().runtime_dir() + "/virtiofsd.sock";
  spec.command = std::string(self) + " --guest-open-file";
  Qemu vm(*kernel, dir, spec);
  Checker check(vm);
  std::optional<GuestReport> report = run_to_power_off(vm, check);
  if (!report) return;
  if (!check(report->exit_status == 0, "the guest client failed: " + report->result)) return;
  std::string prefix = std::string("uri file://") + kQemuGuestDocumentsPath + "/";
  check(report->result.find("response 0\n") != std::string::npos, "OpenFile did not succeed: " + report->result);
  check(report->result.find(prefix) != std::string::npos && report->result.find("/hello.txt\n") != std::string::npos,
        "the guest did not get a URI in its documents directory: " + report->result);
  check(report->result.find("content made on the host\n") != std::string::npos,
        "the guest could not read the picked file: " + report->result);
  check(report->result.find("write allowed") == std::string::npos,
        "the guest could open a file it was only given to read for writing: " + report->result);
  std::vector<BackendCall> calls = host.portal().backend_calls();
  check(calls.size() == 1 && calls[0].method == "OpenFile", "the host backend was not asked exactly once");
}

// The guest opens a document on the host through OpenURI.OpenFile with an fd
// (not a path): the virtio-serial link is byte-only, so the fd crosses as a
// document reference (link protocol 2) and the broker hands the host's
// xdg-desktop-portal the host file, which it opens in the host application.
void test_openuri_document() {
  std::optional<Kernel> kernel = kernel_or_skip();
  if (!kernel) return;
  std::string agent = env_path("SIDEBUS_AGENT");
  g_autofree char* self = g_file_read_link("/proc/self/exe", nullptr);
  if (!guest_binaries_or_skip({agent, self})) return;
  std::string virtiofsd = find_virtiofsd();
  if (virtiofsd.empty()) {
    g_test_skip("no virtiofsd (/usr/lib/qemu/virtiofsd from qemu-system-common, or the virtiofsd package)");
    return;
  }
  TempDir dir("sidebus-test-vm");
  HostRecorder recorder;
  QemuHostOptions host_options{.link_socket = dir / "link.sock", .virtiofsd = virtiofsd};
  recorder.add_to(&host_options.portal);
  QemuHost host(std::move(host_options));
  std::string picked = dir.write_file("picked/report.txt", "the host's report\n");
  g_autofree char* picked_uri = g_filename_to_uri(picked.c_str(), nullptr, nullptr);
  const char* uris[] = {picked_uri, nullptr};
  host.portal().set_reply("OpenFile", kResponseSuccess, g_variant_new_parsed("{'uris': <%^as>}", uris));
  host.portal().set_reply("ChooseApplication", kResponseSuccess,
                          g_variant_new_parsed("{'choice': <%s>}", HostRecorder::kId));
  QemuSpec spec;
  spec.link_socket = dir / "link.sock";
  spec.agent = agent;
  spec.documents_socket = host.broker().runtime_dir() + "/virtiofsd.sock";
  spec.command = std::string(self) + " --guest-open-document";
  Qemu vm(*kernel, dir, spec);
  Checker check(vm);
  std::optional<GuestReport> report = run_to_power_off(vm, check);
  if (!report) return;
  if (!check(report->exit_status == 0, "the guest client failed: " + report->result)) return;
  check(report->result.find("openfile response 0\n") != std::string::npos,
        "OpenURI.OpenFile did not succeed: " + report->result);
  wait_until([&] { return !recorder.launches().empty(); }, 10s);
  std::vector<std::string> launches = recorder.launches();
  check(launches.size() == 1 && launches[0] == picked_uri,
        "the host application was not asked to open the host file " + std::string(picked_uri) + " (launches: " +
            std::to_string(launches.size()) + (launches.empty() ? "" : ", first " + launches[0]) + ")");
  std::string broker_log = host.broker().process().log();
  check(broker_log.find("fds forwarded") != std::string::npos, "the link did not forward fds:\n" + broker_log);
}

// ---- inside the guest ----------------------------------------------------------------

// `test-vm --guest-open-file`, run by guest-init.sh in the VM: calls
// FileChooser.OpenFile on the guest session bus and prints "response N",
// then for every URI "uri URI", "content TEXT" (the file read through the
// guest path) and "write allowed" or "write <error>" (opening it for
// writing). Exit status 0 once it got a response.
int guest_open_file() {
  g_autoptr(GError) error = nullptr;
  g_autoptr(GDBusConnection) bus = g_bus_get_sync(G_BUS_TYPE_SESSION, nullptr, &error);
  if (bus == nullptr) {
    g_printerr("cannot connect to the session bus: %s\n", error->message);
    return 1;
  }
  g_auto(GVariantBuilder) options = G_VARIANT_BUILDER_INIT(G_VARIANT_TYPE_VARDICT);
  g_variant_builder_add(&options, "{sv}", "handle_token", g_variant_new_string("vmtest"));
  try {
    PortalRequest request(bus, kPortalBusName, "org.freedesktop.portal.FileChooser", "OpenFile",
                          g_variant_new("(ssa{sv})", "", "Pick a file", &options));
    if (request.error() != nullptr) {
      g_printerr("OpenFile failed: %s\n", request.error()->message);
      return 1;
    }
    if (!request.wait_for_response(60s)) {
      g_printerr("no Response for %s\n", request.handle().c_str());
      return 1;
    }
    g_print("response %u\n", request.response());
    g_autofree const char** uris = nullptr;
    if (g_variant_lookup(request.results(), "uris", "^a&s", &uris)) {
      for (const char** uri = uris; *uri != nullptr; uri++) {
        g_print("uri %s\n", *uri);
        g_autofree char* path = g_filename_from_uri(*uri, nullptr, nullptr);
        g_autofree char* contents = nullptr;
        if (path != nullptr && g_file_get_contents(path, &contents, nullptr, &error))
          g_print("content %s", contents);
        else
          g_print("unreadable %s\n", error != nullptr ? error->message : "not a file URI");
        g_clear_error(&error);
        // OpenFile without "writable" grants read only.
        int fd = path != nullptr ? g_open(path, O_WRONLY | O_APPEND, 0) : -1;
        g_print("write %s\n", fd >= 0 ? "allowed" : g_strerror(errno));
        if (fd >= 0) close(fd);
      }
    }
  } catch (const std::exception& e) {
    g_printerr("%s\n", e.what());
    return 1;
  }
  return 0;
}

// `test-vm --guest-open-document`: picks a document with FileChooser.OpenFile,
// opens it (read-only) and hands the fd to OpenURI.OpenFile; prints
// "document PATH" and "openfile response N". Exit status 0 once OpenFile
// answered.
int guest_open_document() {
  g_autoptr(GError) error = nullptr;
  g_autoptr(GDBusConnection) bus = g_bus_get_sync(G_BUS_TYPE_SESSION, nullptr, &error);
  if (bus == nullptr) {
    g_printerr("cannot connect to the session bus: %s\n", error->message);
    return 1;
  }
  try {
    g_auto(GVariantBuilder) pick_options = G_VARIANT_BUILDER_INIT(G_VARIANT_TYPE_VARDICT);
    g_variant_builder_add(&pick_options, "{sv}", "handle_token", g_variant_new_string("pick"));
    PortalRequest pick(bus, kPortalBusName, "org.freedesktop.portal.FileChooser", "OpenFile",
                       g_variant_new("(ssa{sv})", "", "Pick a file", &pick_options));
    if (pick.error() != nullptr || !pick.wait_for_response(60s) || pick.response() != 0) {
      g_printerr("FileChooser.OpenFile failed\n");
      return 1;
    }
    g_autofree const char** uris = nullptr;
    if (!g_variant_lookup(pick.results(), "uris", "^a&s", &uris) || uris[0] == nullptr) {
      g_printerr("FileChooser.OpenFile gave no uris\n");
      return 1;
    }
    g_autofree char* path = g_filename_from_uri(uris[0], nullptr, nullptr);
    g_print("document %s\n", path);
    int fd = path != nullptr ? open(path, O_RDONLY | O_CLOEXEC) : -1;
    if (fd < 0) {
      g_printerr("cannot open the document: %s\n", g_strerror(errno));
      return 1;
    }
    // OpenURI.OpenFile answers through a Request like any portal call: every
    // Response is watched for before the call, then the one of its handle.
    std::map<std::string, guint32> responses;
    guint subscription = g_dbus_connection_signal_subscribe(
        bus, kPortalBusName, "org.freedesktop.portal.Request", "Response", nullptr, nullptr, G_DBUS_SIGNAL_FLAGS_NONE,
        [](GDBusConnection*, const char*, const char* object, const char*, const char*, GVariant* parameters,
           gpointer data) {
          guint32 code = G_MAXUINT32;
          g_variant_get(parameters, "(u@a{sv})", &code, nullptr);
          (*static_cast<std::map<std::string, guint32>*>(data))[object] = code;
        },
        &responses, nullptr);
    g_autoptr(GUnixFDList) fds = g_unix_fd_list_new_from_array(&fd, 1);
    g_auto(GVariantBuilder) options = G_VARIANT_BUILDER_INIT(G_VARIANT_TYPE_VARDICT);
    g_variant_builder_add(&options, "{sv}", "handle_token", g_variant_new_string("open"));
    g_autoptr(GVariant) reply = g_dbus_connection_call_with_unix_fd_list_sync(
        bus, kPortalBusName, kPortalPath, "org.freedesktop.portal.OpenURI", "OpenFile",
        g_variant_new("(sha{sv})", "", 0, &options), G_VARIANT_TYPE("(o)"), G_DBUS_CALL_FLAGS_NONE, 60000, fds, nullptr,
        nullptr, &error);
    if (reply == nullptr) {
      g_printerr("OpenURI.OpenFile failed: %s\n", error->message);
      g_dbus_connection_signal_unsubscribe(bus, subscription);
      return 1;
    }
    const char* handle = nullptr;
    g_variant_get(reply, "(&o)", &handle);
    bool answered = wait_until([&] { return responses.count(handle) != 0; }, 60s);
    g_dbus_connection_signal_unsubscribe(bus, subscription);
    if (!answered) {
      g_printerr("no Response for %s\n", handle);
      return 1;
    }
    g_print("openfile response %u\n", responses[handle]);
  } catch (const std::exception& e) {
    g_printerr("%s\n", e.what());
    return 1;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 2 && g_str_equal(argv[1], "--guest-open-file")) return guest_open_file();
  if (argc == 2 && g_str_equal(argv[1], "--guest-open-document")) return guest_open_document();
  g_test_init(&argc, &argv, nullptr);
  add_test("/vm/link-bytes", test_link_bytes);
  add_test("/vm/portal-on-guest-bus", test_portal_on_guest_bus);
  add_test("/vm/file-chooser-document", test_file_chooser_document);
  add_test("/vm/openuri-document", test_openuri_document);
  return g_test_run();
}
