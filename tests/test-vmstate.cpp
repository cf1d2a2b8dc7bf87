// SPDX-License-Identifier: LGPL-2.1-or-later
// test-vmstate.cpp — the broker as QEMU's D-Bus helper (org.qemu.VMState1)
// and its migrated state, without booting a guest (test-migration.cpp boots
// two):
//
//   /vmstate/blob/*            the Save format (documents/vmstate-blob.hpp):
//                              round trip, every refusal, the 1 MiB limit
//   /vmstate/broker/migrate    a source broker's Save, Load into a second
//                              broker started with --incoming (refusing a
//                              corrupt, a truncated and a foreign blob
//                              first, serving nothing before), then the
//                              guest's link moved to it: the same document
//                              path reads the same host bytes, the document
//                              still opens through OpenURI.OpenFile, and the
//                              request that was pending on the source gets
//                              response 2
//   /vmstate/broker/join-refuses-activatable
//                              --private-bus on a bus that could activate
//                              the document portal is refused, saying why
//   /vmstate/policy/two-users  the shipped data/vm-bus.conf.in with QEMU as
//                              nobody and the broker as root (--private-bus):
//                              nobody reads Id and calls Save, and may not
//                              reach the documents, the permission store, or
//                              own a name; an unauthenticated Load from it is
//                              refused
//   /vmstate/qemu/vhost-user-fs-unmigratable
//                              what docs/migration.md says of QEMU 7.2: a VM
//                              with the broker's document share
//                              (vhost-user-fs) cannot be migrated
//   /vmstate/qemu/save-load    real QEMU's dbus-vmstate, run as nobody on
//                              that bus (no guest: -S, migration to a file):
//                              the destination QEMU's Load brings the
//                              documents to the destination broker
//
// SIDEBUS_WRITE_FUZZ_SEEDS=DIR writes valid blobs there (seeds for
// tests/fuzz/vmstate-blob/).
#include <fcntl.h>
#include <glib/gstdio.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>

#include "documents/app-id.hpp"
#include "documents/vmstate-blob.hpp"
#include "support/assert.hpp"
#include "support/dbus-daemon.hpp"
#include "support/files.hpp"
#include "support/qmp.hpp"
#include "support/variant.hpp"
#include "support/vm.hpp"

using namespace sidebus::test;
using sidebus::decode_vmstate;
using sidebus::DocumentEntry;
using sidebus::encode_vmstate;
using sidebus::VmState;

namespace {

constexpr char kVmName[] = "migvm";
constexpr char kVmStateName[] = "org.qemu.VMState1";
constexpr char kVmStatePath[] = "/org/qemu/VMState1";

std::string app_id() { return sidebus::app_id_for_vm(kVmName); }

// ---- the format ------------------------------------------------------------------------

VmState sample_state(size_t documents = 3) {
  VmState state;
  state.app_id = app_id();
  for (size_t i = 0; i < documents; i++) {
    DocumentEntry entry;
    g_autofree char* id = g_strdup_printf("%x", guint32(0x1000 + i));
    entry.id = id;
    entry.host_path = "/home/user/Documents/file-" + std::to_string(i) + ".txt";
    entry.directory_device = 2049;
    entry.directory_inode = 4242 + i;
    entry.flags = i % 2 == 0 ? 0 : sidebus::kDocumentFlagDirectory;
    entry.permissions = {
        {app_id(), i % 2 == 0 ? std::vector<std::string>{"read"} : std::vector<std::string>{"read", "write"}}};
    state.documents.push_back(entry);
  }
  state.pending_requests = {"/org/freedesktop/portal/desktop/request/1_42/t1"};
  state.sessions = {"/org/freedesktop/portal/desktop/session/1_42/s1"};
  return state;
}

std::string encode(const VmState& state, const std::string& key = "") {
  g_autoptr(GError) error = nullptr;
  std::optional<std::string> blob = encode_vmstate(state, key, &error);
  g_assert_no_error(error);
  return *blob;
}

// The refusal's message, "" if the blob was accepted.
std::string refusal(const std::string& blob, const std::string& key = "", const std::string& app = app_id()) {
  g_autoptr(GError) error = nullptr;
  std::optional<VmState> state = decode_vmstate(blob.data(), blob.size(), key, app, &error);
  if (state) return "";
  g_assert_nonnull(error);
  return error->message;
}

void assert_refused(const std::string& blob, const char* because, const std::string& key = "",
                    const std::string& app = app_id()) {
  std::string message = refusal(blob, key, app);
  if (message.find(because) == std::string::npos)
    g_error("expected a refusal mentioning “%s”, got “%s”", because, message.empty() ? "(accepted)" : message.c_str());
}

void test_blob_round_trip() {
  std::string seeds = env_or("SIDEBUS_WRITE_FUZZ_SEEDS");
  for (const std::string key : {"", "a secret of 32 bytes, more or less"}) {
    for (size_t documents : {0, 1, 3, 100}) {
      VmState state = sample_state(documents);
      std::string blob = encode(state, key);
      g_autoptr(GError) error = nullptr;
      std::optional<VmState> back = decode_vmstate(blob.data(), blob.size(), key, app_id(), &error);
      g_assert_no_error(error);
      g_assert_true(back.has_value() && *back == state);
      if (!seeds.empty() && documents <= 3 && key.empty())
        write_file(seeds + "/seed-" + std::to_string(documents), blob);
    }
  }
}

void test_blob_refused() {
  const std::string key = "the key of this VM's brokers";
  const std::string blob = encode(sample_state());
  const std::string signed_blob = encode(sample_state(), key);
  assert_refused("", "header");
  assert_refused(std::string(40, 'x'), "not state saved by a sidebus broker");
  assert_refused(blob.substr(0, blob.size() - 1), "its header says");
  assert_refused(blob + "x", "its header says");
  std::string version_2 = blob;
  version_2[19] = 2;
  assert_refused(version_2, "format version 2");
  std::string flags = blob;
  flags[23] |= 0x02;
  assert_refused(flags, "unknown header flags");
  assert_refused(blob, "another VM's state", "", "dev.sidebus.vm.other");
  assert_refused(blob, "this broker has a --vmstate-key", key);
  assert_refused(signed_blob, "was not given (--vmstate-key)");
  assert_refused(signed_blob, "does not match", "another key");
  // Any byte changed in an authenticated blob: refused (the MAC, or the
  // header's own checks).
  for (size_t i = 0; i < signed_blob.size(); i++) {
    std::string changed = signed_blob;
    changed[i] ^= 0x01;
    if (refusal(changed, key).empty()) g_error("a blob with byte %zu changed was accepted", i);
  }
  // A payload that is not in normal form (a byte changed in an
  // unauthenticated blob's variable-size framing) or says the wrong things.
  auto with = [](auto change) {
    VmState state = sample_state();
    change(state);
    return encode(state);
  };
  assert_refused(with([](VmState& s) { s.documents[0].host_path = "relative/path"; }), "clean absolute path");
  assert_refused(with([](VmState& s) { s.documents[0].host_path = "/home/user/../etc/shadow"; }),
                 "clean absolute path");
  assert_refused(with([](VmState& s) { s.documents[0].host_path = ""; }), "clean absolute path");
  assert_refused(with([](VmState& s) { s.documents[1].id = s.documents[0].id; }), "listed twice");
  assert_refused(with([](VmState& s) { s.documents[0].id = "../x"; }), "not a document id");
  assert_refused(with([](VmState& s) { s.documents[0].flags = 0x80; }), "unknown flags");
  assert_refused(with([](VmState& s) {
                   s.documents[0].permissions = {{"org.other.App", {"read"}}};
                 }),
                 "not to this VM");
  assert_refused(with([](VmState& s) {
                   s.documents[0].permissions = {{app_id(), {"read", "own"}}};
                 }),
                 "unknown permission");
  assert_refused(with([](VmState& s) { s.documents[0].permissions = {{app_id(), {"read", "read"}}}; }), "given twice");
  assert_refused(with([](VmState& s) { s.pending_requests = {"/org/freedesktop/portal/desktop/session/1_2/x"}; }),
                 "not a portal request path");
  assert_refused(with([](VmState& s) { s.sessions = {"/elsewhere"}; }), "not a portal session path");
  // The payload's GVariant framing: the offset of the last array element
  // points past its end.
  std::string framing = blob;
  framing[framing.size() - 1] = char(0xff);
  assert_refused(framing, "not a well-formed");
}

void test_blob_size_limit() {
  VmState state = sample_state(0);
  DocumentEntry entry = sample_state(1).documents[0];
  entry.host_path = "/home/user/" + std::string(1000, 'd') + "/file.txt";
  for (size_t i = 0; i < 1100; i++) {
    g_autofree char* id = g_strdup_printf("%zx", 0x10000 + i);
    entry.id = id;
    state.documents.push_back(entry);
  }
  g_autoptr(GError) error = nullptr;
  std::optional<std::string> blob = encode_vmstate(state, "", &error);
  g_assert_false(blob.has_value());
  g_assert_error(error, G_IO_ERROR, G_IO_ERROR_MESSAGE_TOO_LARGE);
  g_assert_nonnull(strstr(error->message, "1100 documents"));
  g_assert_nonnull(strstr(error->message, "1048576"));
  state.documents.resize(900);  // ~0.9 MiB: fits
  g_clear_error(&error);
  blob = encode_vmstate(state, "", &error);
  g_assert_no_error(error);
  g_assert_cmpuint(blob->size(), <=, sidebus::kMaxVmStateSize);
  std::string too_big(sidebus::kMaxVmStateSize + 1, '\0');
  assert_refused(too_big, "more than the 1048576 bytes");
}

// ---- calls on a private bus ------------------------------------------------------------

std::string private_bus_of(const Broker& broker) { return "unix:path=" + broker.runtime_dir() + "/private-bus.sock"; }

// Until the broker serves org.qemu.VMState1 on @address; a connection to it.
GObjectPtr<GDBusConnection> wait_for_vmstate(const std::string& address, Broker& broker) {
  GObjectPtr<GDBusConnection> bus;
  auto socket = address.substr(strlen("unix:path="));
  if (!wait_until([&] { return g_file_test(socket.c_str(), G_FILE_TEST_EXISTS) || !broker.process().running(); }) ||
      !broker.process().running())
    throw FixtureError("the broker's private bus did not come up (its log is printed below)");
  bus = connect(address);
  if (!wait_until([&] { return name_has_owner(bus.get(), kVmStateName) || !broker.process().running(); }) ||
      !name_has_owner(bus.get(), kVmStateName))
    throw FixtureError("the broker does not own org.qemu.VMState1 (its log is printed below)");
  return bus;
}

// Save's bytes, or nullopt with @error.
std::optional<std::string> save(GDBusConnection* bus, GError** error) {
  g_autoptr(GVariant) reply =
      g_dbus_connection_call_sync(bus, kVmStateName, kVmStatePath, kVmStateName, "Save", nullptr,
                                  G_VARIANT_TYPE("(ay)"), G_DBUS_CALL_FLAGS_NO_AUTO_START, 20000, nullptr, error);
  if (reply == nullptr) return std::nullopt;
  g_autoptr(GVariant) bytes = g_variant_get_child_value(reply, 0);
  gsize size = 0;
  const char* data = static_cast<const char*>(g_variant_get_fixed_array(bytes, &size, 1));
  return std::string(data, size);
}

bool load(GDBusConnection* bus, const std::string& blob, GError** error) {
  g_autoptr(GVariant) reply = g_dbus_connection_call_sync(
      bus, kVmStateName, kVmStatePath, kVmStateName, "Load",
      g_variant_new("(@ay)", g_variant_new_fixed_array(G_VARIANT_TYPE_BYTE, blob.data(), blob.size(), 1)), nullptr,
      G_DBUS_CALL_FLAGS_NO_AUTO_START, 20000, nullptr, error);
  return reply != nullptr;
}

std::string vmstate_id(GDBusConnection* bus) {
  g_autoptr(GError) error = nullptr;
  g_autoptr(GVariant) reply = g_dbus_connection_call_sync(
      bus, kVmStateName, kVmStatePath, "org.freedesktop.DBus.Properties", "Get",
      g_variant_new("(ss)", kVmStateName, "Id"), G_VARIANT_TYPE("(v)"), G_DBUS_CALL_FLAGS_NONE, 5000, nullptr, &error);
  g_assert_no_error(error);
  g_autoptr(GVariant) id = nullptr;
  g_variant_get(reply, "(v)", &id);
  return g_variant_get_string(id, nullptr);
}

bool socket_exists(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode);
}

// Whether a broker serves the link socket at @path: it answers an agent's
// first handshake line. (An --incoming broker binds its sockets at start,
// so a bad --listen fails at once, but accepts on them only after Load.)
bool link_served(const std::string& path) {
  if (!socket_exists(path)) return false;
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_un address = {};
  address.sun_family = AF_UNIX;
  g_strlcpy(address.sun_path, path.c_str(), sizeof address.sun_path);
  bool answered = false;
  if (connect(fd, reinterpret_cast<struct sockaddr*>(&address), sizeof address) == 0) {
    const char hello[] = "SIDEBUS 1 fds=0 uid=0 agent=test-vmstate\n";
    if (write(fd, hello, strlen(hello)) == ssize_t(strlen(hello))) {
      struct pollfd readable = {.fd = fd, .events = POLLIN};
      answered = poll(&readable, 1, 500) == 1;
    }
  }
  close(fd);
  return answered;
}

// Where a broker's document view of this VM is.
std::string view_of(const Broker& broker) { return broker.runtime_dir() + "/doc/by-app/" + app_id(); }

const char* kPortalsConfig = R"({"portals": {"filechooser": {"enabled": true}, "openuri": {"enabled": true}}})";

// ---- /vmstate/broker/migrate -------------------------------------------------------------

void test_broker_migrate() {
  Vm source({.name = kVmName, .portals = {"filechooser", "openuri"}});
  HostFiles files;
  const std::string host_file = files.add("papers/report.txt", "the host's bytes\n");
  const std::string guest_path = source.share_document(host_file);
  const std::string doc_id = source.document_id(uri_for(guest_path), "report.txt");
  assert_str_eq(read_file(guest_path).value_or("(unreadable)"), "the host's bytes\n");

  // A dialog the user has not answered when the VM migrates.
  source.host().set_reply("SaveFile", kResponseSuccess, nullptr, 60000);
  auto pending = source.file_chooser("SaveFile", "{'handle_token': <'pending1'>}");
  g_assert_null(pending->error());
  g_assert_true(wait_until([&] {
    return !source.host().backend_calls().empty() && source.host().backend_calls().back().method == "SaveFile";
  }));

  GObjectPtr<GDBusConnection> source_bus = wait_for_vmstate(private_bus_of(source.broker()), source.broker());
  assert_str_eq(vmstate_id(source_bus.get()), "sidebus");
  g_autoptr(GError) error = nullptr;
  std::optional<std::string> blob = save(source_bus.get(), &error);
  g_assert_no_error(error);
  g_test_message("Save: %zu bytes for 1 document and 1 pending request", blob->size());

  // The destination: the same VM, its own broker and state, waiting.
  TempDir dest_files("sidebus-test-vmstate-dest");
  const std::string dest_link = dest_files / "link.sock";
  Broker dest({.host_bus_address = source.host().bus_address(),
               .listen = {"unix:" + dest_link},
               .vm_name = kVmName,
               .guest_documents_path = source.documents(),
               .config = {{"50-portals.json", kPortalsConfig}},
               .extra_args = {"--incoming"},
               .wait_for_listen = false});
  GObjectPtr<GDBusConnection> dest_bus = wait_for_vmstate(private_bus_of(dest), dest);
  g_assert_false(link_served(dest_link));  // nothing served before Load
  g_assert_false(save(dest_bus.get(), &error).has_value());
  g_assert_nonnull(strstr(error->message, "Load"));
  g_clear_error(&error);

  // Refused without a trace: corrupt, truncated, another VM's.
  std::string corrupt = *blob;
  corrupt[corrupt.size() / 2] ^= 0x5a;
  VmState other = sample_state(1);
  other.app_id = sidebus::app_id_for_vm("another-vm");
  for (const std::string& bad : {corrupt, blob->substr(0, blob->size() - 3), encode(other)}) {
    g_assert_false(load(dest_bus.get(), bad, &error));
    g_assert_error(error, G_DBUS_ERROR, G_DBUS_ERROR_INVALID_ARGS);
    g_test_message("refused: %s", error->message);
    g_clear_error(&error);
  }
  g_assert_false(link_served(dest_link));
  g_assert_false(g_file_test((dest.state_dir() + "/flatpak/db/documents").c_str(), G_FILE_TEST_EXISTS));

  g_assert_true(load(dest_bus.get(), *blob, &error));
  g_assert_no_error(error);
  g_assert_true(link_served(dest_link));                // Load answers once the guest can be served
  g_assert_false(load(dest_bus.get(), *blob, &error));  // only once
  g_clear_error(&error);

  // The VMM moves the guest: the link goes to the destination, the guest's
  // documents path now shows the destination broker's view.
  source.stop_agent();
  g_unlink(source.documents().c_str());
  g_assert_cmpint(symlink(view_of(dest).c_str(), source.documents().c_str()), ==, 0);
  Agent agent({.connect = "unix:" + dest_link, .guest_bus_address = source.guest().address()});
  g_assert_true(source.topology().wait_for_guest_name());

  // The request the source had pending: answered 2, from the new owner.
  g_assert_true(pending->wait_for_response());
  g_assert_cmpuint(pending->response(), ==, kResponseOther);

  // The same path, the same id, the same host bytes.
  assert_str_eq(read_file(guest_path).value_or("(unreadable)"), "the host's bytes\n");
  g_assert_true(g_file_test((view_of(dest) + "/" + doc_id + "/report.txt").c_str(), G_FILE_TEST_IS_REGULAR));

  // And the document still opens on the host through OpenURI.OpenFile.
  source.host().set_reply("ChooseApplication", kResponseCancelled, "{}");
  size_t calls_before = source.host().backend_calls().size();
  int fd = open(guest_path.c_str(), O_RDONLY | O_CLOEXEC);
  g_assert_cmpint(fd, >=, 0);
  PortalRequest open_file(source.guest().connection(), kPortalBusName, "org.freedesktop.portal.OpenURI", "OpenFile",
                          g_variant_new("(sh@a{sv})", "", 0, with_handle_token("{'ask': <true>}").get()), {fd});
  close(fd);
  g_assert_null(open_file.error());
  g_assert_true(open_file.wait_for_response());
  g_assert_cmpuint(open_file.response(), ==, kResponseCancelled);
  auto calls = source.host().backend_calls();
  g_assert_cmpuint(calls.size(), ==, calls_before + 1);
  assert_str_eq(calls.back().method, "ChooseApplication");
  assert_str_eq(lookup_string(calls.back().options.get(), "uri"), uri_for(host_file));
}

// ---- joining the VM manager's bus --------------------------------------------------------

void test_join_refuses_activatable() {
  HostPortal host;
  TempDir dir("sidebus-test-vmbus");
  std::string services = dir.make_dir("services");
  dir.write_file("services/org.freedesktop.portal.Documents.service",
                 "[D-BUS Service]\nName=org.freedesktop.portal.Documents\nExec=/bin/false\n");
  std::string address;
  auto bus = start_dbus_daemon(dir, "vm-bus", bus_config(dir / "bus.sock", services), std::nullopt, {}, &address);
  Broker broker({.host_bus_address = host.bus_address(),
                 .vm_name = kVmName,
                 .extra_args = {"--private-bus", address},
                 .wait_for_listen = false});
  std::optional<ExitStatus> status = broker.wait_for_exit(20s);
  g_assert_true(status.has_value());
  g_assert_cmpint(status->code, ==, 1);
  g_assert_nonnull(strstr(broker.process().log().c_str(), "can activate org.freedesktop.portal.Documents"));
}

// The shipped policy with @QEMU_USER@ = nobody, @HELPER_USER@ = root, a
// dbus-daemon on it in a directory both can reach.
struct PolicyBus {
  TempDir dir{"sidebus-test-vmbus"};
  std::unique_ptr<ChildProcess> daemon;
  std::string address;

  PolicyBus() {
    std::string config = read_file(env_path("SIDEBUS_SOURCE_ROOT") + "/data/vm-bus.conf.in").value_or("");
    if (config.empty()) throw FixtureError("cannot read data/vm-bus.conf.in");
    for (auto [from, to] : {std::pair{"@QEMU_USER@", "nobody"}, std::pair{"@HELPER_USER@", "root"}})
      for (size_t at = config.find(from); at != std::string::npos; at = config.find(from))
        config.replace(at, strlen(from), to);
    const std::string socket = dir / "bus.sock";
    config.replace(config.find("<auth>"), 0, "<listen>unix:path=" + socket + "</listen>\n  ");
    g_chmod(dir.path().c_str(), 0755);
    daemon = start_dbus_daemon(dir, "vm-bus", config, std::nullopt, {}, &address);
  }

  // `gdbus call` as nobody (QEMU's user) on this bus.
  struct Answer {
    bool ok;
    std::string text;
  };
  Answer call_as_nobody(const std::vector<std::string>& arguments) {
    std::vector<std::string> argv = {"gdbus", "call", "--address", address};
    argv.insert(argv.end(), arguments.begin(), arguments.end());
    static int calls = 0;
    std::string log = dir / ("nobody-" + std::to_string(++calls) + ".log");
    ChildProcess gdbus({.name = "gdbus", .argv = argv, .stdout_path = log, .identity = kNobody});
    std::optional<ExitStatus> status = gdbus.wait_for_exit(20s);
    return {status && status->success(), gdbus.log()};
  }
};

void test_policy_two_users() {
  HostPortal host;
  PolicyBus bus;
  Broker broker({.host_bus_address = host.bus_address(),
                 .vm_name = kVmName,
                 .config = {{"50-portals.json", kPortalsConfig}},
                 .extra_args = {"--private-bus", bus.address}});
  GObjectPtr<GDBusConnection> root = connect(bus.address);
  g_assert_true(wait_until([&] { return name_has_owner(root.get(), kVmStateName); }));
  g_assert_true(name_has_owner(root.get(), "org.freedesktop.portal.Documents"));
  g_assert_true(name_has_owner(root.get(), "org.freedesktop.impl.portal.PermissionStore"));
  // The broker's view is on its FUSE mount, as with its own bus.
  g_assert_true(is_mounted(broker.runtime_dir() + "/doc"));

  // QEMU's part: Id (GetAll, as GDBusProxy reads it) and Save.
  auto id = bus.call_as_nobody({"--dest", kVmStateName, "--object-path", kVmStatePath, "--method",
                                "org.freedesktop.DBus.Properties.GetAll", kVmStateName});
  g_assert_true(id.ok);
  g_assert_nonnull(strstr(id.text.c_str(), "'Id': <'sidebus'>"));
  auto saved =
      bus.call_as_nobody({"--dest", kVmStateName, "--object-path", kVmStatePath, "--method", "org.qemu.VMState1.Save"});
  g_assert_true(saved.ok);
  g_assert_nonnull(strstr(saved.text.c_str(), "[byte 0x73, 0x69, 0x64"));  // "sid…"

  // Nothing else.
  for (const std::vector<std::string>& denied : std::vector<std::vector<std::string>>{
           {"--dest", "org.freedesktop.portal.Documents", "--object-path", "/org/freedesktop/portal/documents",
            "--method", "org.freedesktop.portal.Documents.GetMountPoint"},
           {"--dest", "org.freedesktop.impl.portal.PermissionStore", "--object-path",
            "/org/freedesktop/impl/portal/PermissionStore", "--method",
            "org.freedesktop.impl.portal.PermissionStore.List", "documents"},
           {"--dest", "org.freedesktop.DBus", "--object-path", "/org/freedesktop/DBus", "--method",
            "org.freedesktop.DBus.RequestName", kVmStateName, "0"},
       }) {
    auto answer = bus.call_as_nobody(denied);
    if (answer.ok || answer.text.find("AccessDenied") == std::string::npos)
      g_error("nobody could call %s: %s", denied[4].c_str(), answer.text.c_str());
  }
  broker.stop();

  // A destination broker on the same bus: an unauthenticated Load from
  // QEMU's user is refused (with a key it would be checked).
  Broker incoming({.host_bus_address = host.bus_address(),
                   .vm_name = kVmName,
                   .extra_args = {"--private-bus", bus.address, "--incoming"},
                   .wait_for_listen = false});
  g_assert_true(wait_until([&] { return name_has_owner(root.get(), kVmStateName); }));
  std::string blob = encode(sample_state(1));
  std::string bytes = "[";
  for (unsigned char c : blob) bytes += (bytes.size() > 1 ? ", " : "") + std::to_string(c);
  auto loaded = bus.call_as_nobody({"--dest", kVmStateName, "--object-path", kVmStatePath, "--method",
                                    "org.qemu.VMState1.Load", "@ay " + bytes + "]"});
  g_assert_false(loaded.ok);
  g_assert_nonnull(strstr(loaded.text.c_str(), "AccessDenied"));
  g_assert_nonnull(strstr(loaded.text.c_str(), "--vmstate-key"));
}

// ---- real QEMU ---------------------------------------------------------------------------

// One QEMU without a guest (-S: never runs), as nobody, its dbus-vmstate on
// @bus_address, its QMP socket in @dir.
std::unique_ptr<ChildProcess> qemu_as_nobody(const TempDir& dir, const std::string& name,
                                             const std::string& bus_address, std::vector<std::string> extra = {}) {
  std::vector<std::string> argv = {
      "qemu-system-x86_64", "-accel", "tcg", "-machine", "pc", "-m", "32", "-nodefaults", "-no-user-config", "-display",
      "none", "-S", "-qmp", "unix:" + (dir / (name + ".qmp")) + ",server=on,wait=off",
      // QEMU's option syntax splits at commas: the address without ",guid=…".
      "-object", "dbus-vmstate,id=vmstate,addr=" + bus_address.substr(0, bus_address.find(',')) + ",id-list=sidebus"};
  argv.insert(argv.end(), extra.begin(), extra.end());
  return std::make_unique<ChildProcess>(
      SpawnOptions{.name = name, .argv = argv, .stdout_path = dir / (name + ".log"), .identity = kNobody});
}

void test_qemu_save_load() {
  g_autofree char* qemu = g_find_program_in_path("qemu-system-x86_64");
  if (qemu == nullptr) {
    g_test_skip("qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)");
    return;
  }
  HostPortal host;
  PolicyBus source_bus, dest_bus;
  TempDir qemu_dir("sidebus-test-vmstate-qemu");
  g_chmod(qemu_dir.path().c_str(), 0777);
  const std::string stream = qemu_dir / "migration.stream";
  TempDir keys("sidebus-test-vmstate-key");
  const std::string key = keys.write_file("vmstate.key", "0123456789abcdef0123456789abcdef");

  // The source: a broker with one document, its state authenticated (QEMU
  // is another user), QEMU saving the VM to a file.
  TopologyOptions source_options;
  source_options.host = {};
  source_options.broker.vm_name = kVmName;
  source_options.broker.config = {{"50-portals.json", kPortalsConfig}};
  source_options.broker.extra_args = {"--private-bus", source_bus.address, "--vmstate-key", key};
  Topology source(source_options);
  HostFiles files;
  const std::string host_file = files.add("notes.txt", "saved with the VM\n");
  source.host().set_reply("OpenFile", kResponseSuccess, uris_result({host_file}));
  PortalRequest pick(source.guest().connection(), kPortalBusName, "org.freedesktop.portal.FileChooser", "OpenFile",
                     g_variant_new("(ss@a{sv})", "", "Pick", with_handle_token("{}").get()));
  g_assert_true(pick.wait_for_response());
  std::vector<std::string> uris = strv(pick.results(), "uris");
  g_assert_cmpuint(uris.size(), ==, 1);
  const std::string in_runtime_dir = path_of(uris[0]).substr(source.broker().runtime_dir().size());

  auto source_qemu = qemu_as_nobody(qemu_dir, "qemu-source", source_bus.address);
  Qmp source_qmp(qemu_dir / "qemu-source.qmp");
  source_qmp.execute("migrate", "{\"uri\": \"exec:cat > " + stream + "\"}");
  std::string why;
  if (!source_qmp.wait_for_migration(60s, &why))
    g_error("saving the VM failed: %s\n%s", why.c_str(), source_qemu->log().c_str());
  source_qmp.execute("quit");
  source_qemu->wait_for_exit(10s);

  // A destination broker without the key refuses QEMU's Load: the
  // migration fails there (the source VM would run on).
  const std::string dest_link = keys / "dest-link.sock";
  GObjectPtr<GDBusConnection> dest_root = connect(dest_bus.address);
  {
    Broker keyless({.host_bus_address = host.bus_address(),
                    .listen = {"unix:" + dest_link},
                    .vm_name = kVmName,
                    .extra_args = {"--private-bus", dest_bus.address, "--incoming"},
                    .wait_for_listen = false});
    g_assert_true(wait_until([&] { return name_has_owner(dest_root.get(), kVmStateName); }));
    auto refusing =
        qemu_as_nobody(qemu_dir, "qemu-dest-refused", dest_bus.address, {"-incoming", "exec:cat " + stream});
    std::optional<ExitStatus> refused = refusing->wait_for_exit(60s);
    g_assert_true(refused.has_value() && !refused->success());
    g_assert_nonnull(strstr(refusing->log().c_str(), "--vmstate-key"));
    g_assert_false(link_served(dest_link));
  }
  g_assert_true(wait_until([&] { return !name_has_owner(dest_root.get(), kVmStateName); }));

  // With the key: QEMU's Load brings the document, and the broker serves.
  Broker dest({.host_bus_address = host.bus_address(),
               .listen = {"unix:" + dest_link},
               .vm_name = kVmName,
               .config = {{"50-portals.json", kPortalsConfig}},
               .extra_args = {"--private-bus", dest_bus.address, "--incoming", "--vmstate-key", key},
               .wait_for_listen = false});
  g_assert_true(wait_until([&] { return name_has_owner(dest_root.get(), kVmStateName); }));
  auto dest_qemu = qemu_as_nobody(qemu_dir, "qemu-dest", dest_bus.address, {"-incoming", "exec:cat " + stream});
  g_assert_true(wait_until([&] { return link_served(dest_link) || !dest_qemu->running(); }, 60s));
  g_assert_true(dest_qemu->running());
  assert_str_eq(read_file(dest.runtime_dir() + in_runtime_dir).value_or("(unreadable)"), "saved with the VM\n");
  Qmp dest_qmp(qemu_dir / "qemu-dest.qmp");
  assert_str_eq(dest_qmp.migration_status(), "completed");
  dest_qmp.execute("quit");
  dest_qemu->wait_for_exit(10s);
}

void test_qemu_vhost_user_fs_unmigratable() {
  g_autofree char* qemu = g_find_program_in_path("qemu-system-x86_64");
  if (qemu == nullptr) {
    g_test_skip("qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)");
    return;
  }
  std::string virtiofsd;
  for (const char* path : {"/usr/lib/qemu/virtiofsd", "/usr/libexec/virtiofsd"})
    if (g_file_test(path, G_FILE_TEST_IS_EXECUTABLE)) virtiofsd = path;
  if (virtiofsd.empty()) {
    g_test_skip("no virtiofsd (/usr/lib/qemu/virtiofsd from qemu-system-common, or the virtiofsd package)");
    return;
  }
  HostPortal host;
  Broker broker({.host_bus_address = host.bus_address(), .vm_name = kVmName, .extra_args = {"--virtiofsd", virtiofsd}});
  const std::string share = broker.runtime_dir() + "/virtiofsd.sock";
  g_assert_true(wait_until([&] { return socket_exists(share); }));
  TempDir dir("sidebus-test-vmstate-vufs");
  ChildProcess qemu_process({.name = "qemu",
                             .argv = {"qemu-system-x86_64",
                                      "-accel",
                                      "tcg",
                                      "-machine",
                                      "pc",
                                      "-m",
                                      "64",
                                      "-nodefaults",
                                      "-no-user-config",
                                      "-display",
                                      "none",
                                      "-S",
                                      "-object",
                                      "memory-backend-memfd,id=mem,size=64M,share=on",
                                      "-numa",
                                      "node,memdev=mem",
                                      "-chardev",
                                      "socket,id=documents,path=" + share,
                                      "-device",
                                      "vhost-user-fs-pci,chardev=documents,tag=sidebus-docs",
                                      "-qmp",
                                      "unix:" + (dir / "qmp.sock") + ",server=on,wait=off"},
                             .stdout_path = dir / "qemu.log"});
  Qmp qmp(dir / "qmp.sock");
  std::string version = qmp.execute("query-version");
  g_test_message("QEMU: %s", version.c_str());
  std::string refusal;
  try {
    qmp.execute("migrate", "{\"uri\": \"exec:cat > /dev/null\"}");
  } catch (const FixtureError& error) {
    refusal = error.what();
  }
  qmp.execute("quit");
  if (refusal.empty()) {
    // QEMU 8.2 and later migrate vhost-user-fs (with virtiofsd's help).
    g_test_skip(("this QEMU migrates a vhost-user-fs device: " + version).c_str());
    return;
  }
  g_test_message("%s", refusal.c_str());
  g_assert_nonnull(strstr(refusal.c_str(), "non-migratable device"));
  g_assert_nonnull(strstr(refusal.c_str(), "vhost-user-fs"));
}

}  // namespace

int main(int argc, char** argv) {
  g_test_init(&argc, &argv, nullptr);
  add_test("/vmstate/blob/round-trip", test_blob_round_trip);
  add_test("/vmstate/blob/refused", test_blob_refused);
  add_test("/vmstate/blob/size-limit", test_blob_size_limit);
  add_test("/vmstate/broker/migrate", test_broker_migrate);
  add_test("/vmstate/broker/join-refuses-activatable", test_join_refuses_activatable);
  add_test("/vmstate/policy/two-users", test_policy_two_users);
  add_test("/vmstate/qemu/vhost-user-fs-unmigratable", test_qemu_vhost_user_fs_unmigratable);
  add_test("/vmstate/qemu/save-load", test_qemu_save_load);
  return g_test_run();
}
