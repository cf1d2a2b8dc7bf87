// SPDX-License-Identifier: LGPL-2.1-or-later
// test-migration.cpp — a real live migration of a guest that sidebus
// serves: two QEMU processes on this machine (TCG), the source and the
// destination (-incoming), each with its own broker and private bus, QEMU's
// dbus-vmstate on both with the broker's Id in id-list, the migration
// started over QMP.
//
//   /migration/documents-follow-the-vm
//     on the source, a guest client gets a host file through
//     FileChooser.OpenFile (its document path) and leaves a SaveFile dialog
//     open; the VM migrates; in the destination the guest's agent
//     reconnects to the destination broker, which loaded the source's state
//     (org.qemu.VMState1.Load); the open dialog's request gets response 2;
//     the document path reads the host file's bytes; the document still
//     opens on the host through OpenURI (a file:// URI of the document;
//     OpenURI.OpenFile with an fd is test-vmstate's /vmstate/broker/migrate
//     and test-vm's /vm/openuri-document).
//
// How the guest reaches its documents: QEMU 7.2 (Debian 12) cannot migrate
// a VM with a vhost-user-fs device (hw/virtio/vhost-user-fs.c: "unmigratable";
// `migrate` answers "State blocked by non-migratable device
// '…/vhost-user-fs'"), nor one with a mounted 9p share (hw/9pfs/9p.c adds a
// migration blocker on attach). So the guest runs from its initramfs
// (QemuSpec::guest_files, no 9p), the source VM has no virtiofs device,
// and the destination's is hot-plugged over QMP once the migration is done
// (chardev-add + device_add of vhost-user-fs-pci on the destination broker's
// virtiofsd); the guest mounts it at the same documents path
// (guest-init.sh's sidebus.docs-hotplug). docs/migration.md says the same
// for VM managers.
//
// Skips (saying why) when qemu-system-x86_64, a usable kernel or virtiofsd
// is missing. The guest client is this binary, run in the VM as
// `test-migration --guest-client`.
#include <fcntl.h>
#include <glib/gstdio.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "support/dbus.hpp"
#include "support/files.hpp"
#include "support/qemu.hpp"
#include "support/qmp.hpp"
#include "support/variant.hpp"
#include "support/vm.hpp"

using namespace sidebus::test;

namespace {

constexpr char kVmName[] = "migrating-vm";
constexpr char kPhaseMarker[] = "SIDEBUS-PHASE exported";
constexpr char kPortals[] = R"({"portals": {"filechooser": {"enabled": true}, "openuri": {"enabled": true}}})";

// What a QEMU of this test is given, besides the guest: its QMP socket and
// dbus-vmstate on its broker's private bus.
std::vector<std::string> qemu_args(const TempDir& dir, const std::string& name, const Broker& broker) {
  return {"-qmp", "unix:" + (dir / (name + ".qmp")) + ",server=on,wait=off", "-object",
          "dbus-vmstate,id=vmstate,addr=unix:path=" + broker.runtime_dir() + "/private-bus.sock,id-list=sidebus"};
}

bool exists(const std::string& path) { return g_file_test(path.c_str(), G_FILE_TEST_EXISTS); }

void test_documents_follow_the_vm() {
  std::optional<Kernel> kernel = kernel_or_skip();
  if (!kernel) return;
  std::string virtiofsd = find_virtiofsd();
  if (virtiofsd.empty()) {
    g_test_skip("no virtiofsd (/usr/lib/qemu/virtiofsd from qemu-system-common, or the virtiofsd package)");
    return;
  }
  std::string agent = env_path("SIDEBUS_AGENT");
  g_autofree char* self = g_file_read_link("/proc/self/exe", nullptr);
  gint64 begin = g_get_monotonic_time();

  TempDir dir("sidebus-test-migration");
  HostPortal host;
  std::string picked = dir.write_file("picked/hello.txt", "made on the host before the migration\n");
  host.set_reply("OpenFile", kResponseSuccess, uris_result({picked}));
  host.set_reply("SaveFile", kResponseSuccess, nullptr, 300 * 1000);  // the user never answers
  host.set_reply("ChooseApplication", kResponseCancelled, "{}");

  TempDir source_state("sidebus-test-migration-source"), dest_state("sidebus-test-migration-dest");
  Broker source_broker({.host_bus_address = host.bus_address(),
                        .listen = {"unix:" + (dir / "source-link.sock") + ",nofds"},
                        .vm_name = kVmName,
                        .guest_documents_path = kQemuGuestDocumentsPath,
                        .state_dir = source_state.path(),
                        .config = {{"50-vm.json", kPortals}}});
  Broker dest_broker({.host_bus_address = host.bus_address(),
                      .listen = {"unix:" + (dir / "dest-link.sock") + ",nofds"},
                      .vm_name = kVmName,
                      .guest_documents_path = kQemuGuestDocumentsPath,
                      .state_dir = dest_state.path(),
                      .config = {{"50-vm.json", kPortals}},
                      .extra_args = {"--incoming", "--virtiofsd", virtiofsd},
                      .wait_for_listen = false});

  QemuSpec spec;
  spec.link_socket = dir / "source-link.sock";
  spec.agent = agent;
  spec.command = std::string(self) + " --guest-client";
  spec.guest_files = {agent,          self,      "/usr/bin/dbus-daemon", "/usr/bin/gdbus",
                      "/usr/bin/env", "/bin/sh", "/etc/passwd",          "/etc/group"};
  spec.shared_memory = true;
  spec.documents_hotplug = true;
  spec.guest_timeout_s = 240;
  spec.guest_wait_s = 180;
  spec.extra_args = qemu_args(dir, "qemu-source", source_broker);
  Qemu source(*kernel, dir, spec, "qemu-source");
  Checker check_source(source);
  source.start();
  if (!check_source(source.wait_for([&] { return source.console().find(kPhaseMarker) != std::string::npos; }, 180s),
                    "the guest client did not get its document on the source"))
    return;
  gint64 exported = g_get_monotonic_time();
  g_test_message("source: booted and exported a document in %.1f s", (exported - begin) / 1e6);

  // The destination: started like the source, waiting for the stream.
  QemuSpec dest_spec = spec;
  dest_spec.link_socket = dir / "dest-link.sock";
  dest_spec.initramfs = source.initramfs();
  dest_spec.extra_args = qemu_args(dir, "qemu-dest", dest_broker);
  dest_spec.extra_args.insert(dest_spec.extra_args.end(), {"-incoming", "unix:" + (dir / "migration.sock")});
  Qemu dest(*kernel, dir, dest_spec, "qemu-dest");
  Checker check(dest);
  dest.start();
  if (!check(wait_until([&] { return exists(dir / "migration.sock") || !dest.running(); }, 30s) && dest.running(),
             "the destination QEMU did not start listening for the migration"))
    return;
  Qmp source_qmp(dir / "qemu-source.qmp");
  source_qmp.execute("migrate", "{\"uri\": \"unix:" + (dir / "migration.sock") + "\"}");
  std::string why;
  if (!check(source_qmp.wait_for_migration(120s, &why), why)) return;
  gint64 migrated = g_get_monotonic_time();
  g_test_message("migration: %.1f s", (migrated - exported) / 1e6);
  source_qmp.execute("quit");
  source.stop();

  // The documents, hot-plugged: the destination broker's virtiofsd (up
  // since Load) serves its view of the migrated document table.
  Qmp dest_qmp(dir / "qemu-dest.qmp");
  const std::string virtiofsd_socket = dest_broker.runtime_dir() + "/virtiofsd.sock";
  if (!check(exists(virtiofsd_socket), "the destination broker serves no virtiofsd after Load")) return;
  dest_qmp.execute("chardev-add",
                   "{\"id\": \"documents\", \"backend\": {\"type\": \"socket\", \"data\": "
                   "{\"addr\": {\"type\": \"unix\", \"data\": {\"path\": \"" +
                       virtiofsd_socket + "\"}}, \"server\": false}}}");
  dest_qmp.execute("device_add",
                   "{\"driver\": \"vhost-user-fs-pci\", \"chardev\": \"documents\", "
                   "\"tag\": \"sidebus-docs\", \"id\": \"documents-fs\"}");

  std::string problem = dest.wait_for_power_off(180s);
  GuestReport report = parse_console(dest.console());
  if (!env_or("SIDEBUS_VM_DEBUG").empty()) dest.dump();
  g_test_message("destination: the guest finished %.1f s after the migration; the test took %.1f s",
                 (g_get_monotonic_time() - migrated) / 1e6, (g_get_monotonic_time() - begin) / 1e6);
  std::string errors;
  for (const std::string& error : report.errors) errors += (errors.empty() ? "" : "; ") + error;
  if (!check(report.errors.empty(), "the guest reported: " + errors)) return;
  if (!check(problem.empty(), problem)) return;
  if (!check(report.exited, "the guest client never finished")) return;
  if (!check(report.exit_status == 0, "the guest client failed: " + report.result)) return;
  const std::string& result = report.result;
  check(dest.console().find("SIDEBUS-DOCS-MOUNTED") != std::string::npos, "the hot-plugged documents were not mounted");
  check(result.find("pending response 2\n") != std::string::npos,
        "the dialog open during the migration was not answered with 2: " + result);
  check(result.find("content made on the host before the migration\n") != std::string::npos,
        "the guest could not read its document after the migration: " + result);
  check(result.find("openuri response 1\n") != std::string::npos, "OpenURI of the document failed: " + result);
  std::vector<BackendCall> calls = host.backend_calls();
  auto chooser = std::find_if(calls.begin(), calls.end(),
                              [](const BackendCall& call) { return call.method == "ChooseApplication"; });
  check(chooser != calls.end() && lookup_string(chooser->options.get(), "uri") == uri_for(picked),
        "the host was not asked to open the picked file");
  check(dest_broker.process().log().find("Load: 1 documents") != std::string::npos ||
            dest_broker.process().log().find("Load done") != std::string::npos,
        "the destination broker did not log its Load");
}

// ---- inside the guest ----------------------------------------------------------------

// Says on the serial console (live, unlike the command's output) that the
// first part is done, so the host starts the migration.
void announce(const std::string& line) {
  int fd = open("/dev/ttyS0", O_WRONLY | O_NOCTTY | O_CLOEXEC);
  if (fd < 0) return;
  std::string text = "\n" + line + "\n";
  ssize_t written = write(fd, text.data(), text.size());
  (void)written;
  close(fd);
}

// `test-migration --guest-client`: FileChooser.OpenFile ("uri …"), a
// SaveFile left open; announces kPhaseMarker; then, after the migration,
// "pending response N" for the SaveFile, "content …" once the document can
// be read (the share is hot-plugged), "openuri response N" for OpenURI of
// its file:// URI with ask (the host's chooser answers "cancelled").
int guest_client() {
  g_autoptr(GError) error = nullptr;
  g_autoptr(GDBusConnection) bus = g_bus_get_sync(G_BUS_TYPE_SESSION, nullptr, &error);
  if (bus == nullptr) {
    g_printerr("cannot connect to the session bus: %s\n", error->message);
    return 1;
  }
  try {
    PortalRequest pick(bus, kPortalBusName, "org.freedesktop.portal.FileChooser", "OpenFile",
                       g_variant_new("(ss@a{sv})", "", "Pick a file", with_handle_token("{}").get()));
    if (pick.error() != nullptr || !pick.wait_for_response(60s) || pick.response() != kResponseSuccess) {
      g_printerr("OpenFile failed\n");
      return 1;
    }
    std::vector<std::string> uris = strv(pick.results(), "uris");
    if (uris.size() != 1) return 1;
    g_print("uri %s\n", uris[0].c_str());
    PortalRequest pending(bus, kPortalBusName, "org.freedesktop.portal.FileChooser", "SaveFile",
                          g_variant_new("(ss@a{sv})", "", "Save", with_handle_token("{}").get()));
    if (pending.error() != nullptr) {
      g_printerr("SaveFile failed: %s\n", pending.error()->message);
      return 1;
    }
    announce(std::string(kPhaseMarker) + " " + uris[0]);

    if (!pending.wait_for_response(170s)) {
      g_printerr("the pending SaveFile got no response\n");
      return 1;
    }
    g_print("pending response %u\n", pending.response());
    std::string path = path_of(uris[0]);
    std::optional<std::string> contents;
    wait_until([&] { return (contents = read_file(path)).has_value(); }, 120s);
    if (!contents) {
      g_printerr("cannot read %s\n", path.c_str());
      return 1;
    }
    g_print("content %s", contents->c_str());
    PortalRequest opened(bus, kPortalBusName, "org.freedesktop.portal.OpenURI", "OpenURI",
                         g_variant_new("(ss@a{sv})", "", uris[0].c_str(), with_handle_token("{'ask': <true>}").get()));
    if (opened.error() != nullptr || !opened.wait_for_response(60s)) {
      g_printerr("OpenURI failed: %s\n", opened.error() ? opened.error()->message : "no response");
      return 1;
    }
    g_print("openuri response %u\n", opened.response());
  } catch (const std::exception& e) {
    g_printerr("%s\n", e.what());
    return 1;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 2 && g_str_equal(argv[1], "--guest-client")) return guest_client();
  g_test_init(&argc, &argv, nullptr);
  add_test("/migration/documents-follow-the-vm", test_documents_follow_the_vm);
  return g_test_run();
}
