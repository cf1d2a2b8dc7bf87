// SPDX-License-Identifier: LGPL-2.1-or-later
// test-clipboard.cpp — files copied and pasted between the VM and the host
// (FileTransfer), real parts only: the host's xdg-document-portal on the
// test's host bus (its own FUSE mount) next to the real xdg-desktop-portal,
// the broker with the clipboard and filechooser plugins and its private
// document portal, a guest bus with the real agent, over a native and a
// byte-only link.
//
// The clients do what GTK 4 does (gdk/filetransferportal.c): the source
// calls StartTransfer (writable, autostop), AddFiles with O_PATH fds in
// chunks of 16, and offers the key as application/vnd.portal.filetransfer;
// the target calls RetrieveFiles with the key and opens the paths. The host
// client talks to the host's document portal, the guest client to
// org.freedesktop.portal.Documents on the guest bus. What a user notices: the
// bytes that arrive, where they arrive (a path inside the VM's documents for
// the guest), writes that reach the file, and clear errors.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <string>
#include <vector>

#include "handoff-test.hpp"

using namespace sidebus::test;

namespace {

constexpr char kDocuments[] = "org.freedesktop.portal.Documents";
constexpr char kDocumentsPath[] = "/org/freedesktop/portal/documents";
constexpr char kFileTransfer[] = "org.freedesktop.portal.FileTransfer";
constexpr char kNotFound[] = "org.freedesktop.portal.Error.NotFound";
constexpr char kNotAllowed[] = "org.freedesktop.portal.Error.NotAllowed";
constexpr char kInvalidArgument[] = "org.freedesktop.portal.Error.InvalidArgument";
constexpr char kVmName[] = "dev.sidebus.ClipboardTest";

VmOptions clipboard_vm(bool byte_only = false, const std::string& clipboard = "{}", HostPortal* shared_host = nullptr,
                       const char* name = kVmName) {
  return {.name = name,
          .portals = {"filechooser", "clipboard"},
          .config = {{"60-clipboard.json", R"({"portals": {"clipboard": )" + clipboard + "}}"}},
          .byte_only = byte_only,
          .host = {.document_portal = true},
          .shared_host = shared_host};
}

// A FileTransfer client as GTK 4 is one, on @connection (the guest bus, or
// the host bus where the host's document portal answers).
struct Client {
  GDBusConnection* connection;

  VariantPtr call(const char* method, GVariant* parameters, const GVariantType* reply_type, GUnixFDList* fds,
                  GError** error) {
    GVariant* reply = g_dbus_connection_call_with_unix_fd_list_sync(
        connection, kDocuments, kDocumentsPath, kFileTransfer, method, parameters, reply_type, G_DBUS_CALL_FLAGS_NONE,
        60000, fds, nullptr, nullptr, error);
    return VariantPtr(reply);
  }
  std::string start(bool writable = true, bool autostop = true, GError** error = nullptr) {
    g_autoptr(GError) local = nullptr;
    VariantPtr reply =
        call("StartTransfer", g_variant_new_parsed("({'writable': <%b>, 'autostop': <%b>},)", writable, autostop),
             G_VARIANT_TYPE("(s)"), nullptr, error ? error : &local);
    if (!reply) {
      if (error == nullptr) throw FixtureError(std::string("StartTransfer failed: ") + local->message);
      return "";
    }
    const char* key = nullptr;
    g_variant_get(reply.get(), "(&s)", &key);
    return key;
  }
  // AddFiles with @fds (taken, closed), in one call.
  bool add_fds(const std::string& key, const std::vector<int>& fds, GError** error) {
    g_autoptr(GUnixFDList) list = g_unix_fd_list_new();
    g_auto(GVariantBuilder) handles = G_VARIANT_BUILDER_INIT(G_VARIANT_TYPE("ah"));
    for (int fd : fds) {
      g_variant_builder_add(&handles, "h", g_unix_fd_list_append(list, fd, nullptr));
      close(fd);
    }
    VariantPtr reply = call(
        "AddFiles",
        g_variant_new("(sah@a{sv})", key.c_str(), &handles, g_variant_new_array(G_VARIANT_TYPE("{sv}"), nullptr, 0)),
        nullptr, list, error);
    return reply != nullptr;
  }
  // What GTK does: O_PATH fds, 16 at a time.
  bool add_paths(const std::string& key, const std::vector<std::string>& paths, GError** error = nullptr) {
    g_autoptr(GError) local = nullptr;
    for (size_t from = 0; from < paths.size(); from += 16) {
      std::vector<int> fds;
      for (size_t i = from; i < paths.size() && i < from + 16; i++) {
        int fd = open(paths[i].c_str(), O_PATH | O_CLOEXEC);
        if (fd < 0) throw FixtureError("cannot open " + paths[i]);
        fds.push_back(fd);
      }
      if (!add_fds(key, fds, error ? error : &local)) {
        if (error == nullptr) throw FixtureError(std::string("AddFiles failed: ") + local->message);
        return false;
      }
    }
    return true;
  }
  std::vector<std::string> retrieve(const std::string& key, GError** error = nullptr) {
    g_autoptr(GError) local = nullptr;
    VariantPtr reply =
        call("RetrieveFiles",
             g_variant_new("(s@a{sv})", key.c_str(), g_variant_new_array(G_VARIANT_TYPE("{sv}"), nullptr, 0)),
             G_VARIANT_TYPE("(as)"), nullptr, error ? error : &local);
    if (!reply) {
      if (error == nullptr) throw FixtureError(std::string("RetrieveFiles failed: ") + local->message);
      return {};
    }
    g_autoptr(GVariant) files = g_variant_get_child_value(reply.get(), 0);
    std::vector<std::string> paths;
    for (gsize i = 0; i < g_variant_n_children(files); i++) {
      const char* path = nullptr;
      g_variant_get_child(files, i, "&s", &path);
      paths.emplace_back(path);
    }
    return paths;
  }
  bool stop(const std::string& key, GError** error) {
    return call("StopTransfer", g_variant_new("(s)", key.c_str()), nullptr, nullptr, error) != nullptr;
  }
};

// TransferClosed signals a connection receives.
struct ClosedSignals {
  GDBusConnection* connection;
  guint id = 0;
  std::vector<std::string> keys;
  explicit ClosedSignals(GDBusConnection* connection) : connection(connection) {
    id = g_dbus_connection_signal_subscribe(
        connection, nullptr, kFileTransfer, "TransferClosed", kDocumentsPath, nullptr, G_DBUS_SIGNAL_FLAGS_NONE,
        [](GDBusConnection*, const char*, const char*, const char*, const char*, GVariant* parameters, gpointer data) {
          const char* key = nullptr;
          g_variant_get(parameters, "(&s)", &key);
          static_cast<ClosedSignals*>(data)->keys.emplace_back(key);
        },
        this, nullptr);
  }
  ~ClosedSignals() { g_dbus_connection_signal_unsubscribe(connection, id); }
  bool wait_for(const std::string& key, Timeout timeout = 10s) {
    return wait_until([&] { return std::find(keys.begin(), keys.end(), key) != keys.end(); }, timeout);
  }
};

std::string bytes_of_file(const std::string& path) {
  auto bytes = sidebus::test::read_file(path);
  if (!bytes) g_error("cannot read %s", path.c_str());
  return *bytes;
}

void assert_inside_documents(Vm& vm, const std::string& path) {
  if (!g_str_has_prefix(path.c_str(), (vm.documents() + "/").c_str()))
    g_error("%s is not inside the VM's documents %s", path.c_str(), vm.documents().c_str());
}

// @n guest-local files f<i>.txt with distinct contents, in a directory of the guest's own.
std::vector<std::string> guest_files(Vm& vm, const std::string& dir, size_t n, std::vector<std::string>* contents) {
  std::vector<std::string> paths;
  for (size_t i = 0; i < n; i++) {
    std::string bytes = "guest file " + std::to_string(i) + " of " + dir + "\n" + std::string(i, '\x7f');
    paths.push_back(vm.guest_files().write_file(dir + "/f" + std::to_string(i) + ".txt", bytes));
    if (contents) contents->push_back(bytes);
  }
  return paths;
}

// ---- The portal on the guest bus --------------------------------------------------------

// GTK does not start the portal: the name is there once the link is up, at
// the path GTK looks, with version 1.
void test_served() {
  Vm vm(clipboard_vm());
  g_assert_true(vm.topology().wait_for_guest_name(kDocuments));
  g_autoptr(GError) error = nullptr;
  g_autoptr(GVariant) version = g_dbus_connection_call_sync(
      vm.guest().connection(), kDocuments, kDocumentsPath, "org.freedesktop.DBus.Properties", "Get",
      g_variant_new("(ss)", kFileTransfer, "version"), G_VARIANT_TYPE("(v)"), G_DBUS_CALL_FLAGS_NONE, 10000, nullptr,
      &error);
  g_assert_no_error(error);
  g_autoptr(GVariant) value = nullptr;
  g_variant_get(version, "(v)", &value);
  g_assert_cmpuint(g_variant_get_uint32(value), ==, 1);
}

// ---- Guest → host ------------------------------------------------------------------------

// Copy in the VM, paste on the host: 20 guest-local files (two AddFiles, as
// GTK chunks them) and a shared document; the host app gets host paths
// with the same bytes, the document as the host file itself, the others as
// staged copies. Autostop: the guest source hears TransferClosed, the key
// is used up on both sides.
void guest_to_host(bool byte_only) {
  Vm vm(clipboard_vm(byte_only));
  SharedDocument document(vm, "report.txt", "the shared report\n");
  std::vector<std::string> contents;
  std::vector<std::string> paths = guest_files(vm, "copied", 20, &contents);
  paths.push_back(document.guest_path);
  contents.push_back(document.contents);

  Client guest{vm.guest().connection()};
  ClosedSignals closed(vm.guest().connection());
  std::string key = guest.start(/*writable=*/false);
  g_assert_true(g_ascii_isdigit(key[0]));
  guest.add_paths(key, paths);

  Client host{vm.host().connection()};
  std::vector<std::string> pasted = host.retrieve(key);
  g_assert_cmpuint(pasted.size(), ==, paths.size());
  for (size_t i = 0; i < pasted.size(); i++) {
    assert_str_eq(bytes_of_file(pasted[i]), contents[i]);
    g_autofree char* name = g_path_get_basename(pasted[i].c_str());
    g_autofree char* guest_name = g_path_get_basename(paths[i].c_str());
    g_assert_cmpstr(name, ==, guest_name);
  }
  assert_str_eq(pasted.back(), document.host_path);
  g_assert_true(closed.wait_for(key));
  g_autoptr(GError) error = nullptr;
  g_assert_true(host.retrieve(key, &error).empty());
  assert_str_eq(remote_error_name(error), "org.freedesktop.DBus.Error.AccessDenied");
  g_clear_error(&error);
  g_assert_true(guest.retrieve(key, &error).empty());
  assert_error(error, kNotFound, "no file transfer with this key");
}
void test_guest_to_host() { guest_to_host(false); }
void test_guest_to_host_byte_only() { guest_to_host(true); }

// ---- Host → guest ------------------------------------------------------------------------

// Copy on the host, paste in the VM: the guest app gets paths inside its
// documents, with the bytes of the host files.
void host_to_guest(bool byte_only) {
  Vm vm(clipboard_vm(byte_only));
  HostFiles files;
  std::vector<std::string> host_paths, contents;
  for (int i = 0; i < 18; i++) {
    contents.push_back("host file " + std::to_string(i) + "\n");
    host_paths.push_back(files.add("copied on the host " + std::to_string(i) + ".txt", contents.back()));
  }
  Client host{vm.host().connection()};
  ClosedSignals closed(vm.host().connection());
  std::string key = host.start();
  host.add_paths(key, host_paths);

  Client guest{vm.guest().connection()};
  std::vector<std::string> pasted = guest.retrieve(key);
  g_assert_cmpuint(pasted.size(), ==, host_paths.size());
  for (size_t i = 0; i < pasted.size(); i++) {
    assert_inside_documents(vm, pasted[i]);
    g_autofree char* name = g_path_get_basename(pasted[i].c_str());
    assert_str_eq(name, "copied on the host " + std::to_string(i) + ".txt");
    assert_str_eq(bytes_of_file(pasted[i]), contents[i]);
  }
  // Autostop ended the host app's transfer.
  g_assert_true(closed.wait_for(key));
  g_autoptr(GError) error = nullptr;
  g_assert_true(guest.retrieve(key, &error).empty());
  assert_error(error, kNotFound, "no file transfer with this key");
}
void test_host_to_guest() { host_to_guest(false); }
void test_host_to_guest_byte_only() { host_to_guest(true); }

// ---- Guest → guest -----------------------------------------------------------------------

// Two apps of one VM: the target gets documents with the source's bytes.
void guest_to_guest(bool byte_only) {
  Vm vm(clipboard_vm(byte_only));
  std::vector<std::string> contents;
  std::vector<std::string> paths = guest_files(vm, "between apps", 3, &contents);
  Client source{vm.guest().connection()};
  std::string key = source.start();
  source.add_paths(key, paths);
  GObjectPtr<GDBusConnection> other = connect(vm.guest().address());
  Client target{other.get()};
  std::vector<std::string> pasted = target.retrieve(key);
  g_assert_cmpuint(pasted.size(), ==, paths.size());
  for (size_t i = 0; i < pasted.size(); i++) {
    assert_inside_documents(vm, pasted[i]);
    assert_str_eq(bytes_of_file(pasted[i]), contents[i]);
  }
}
void test_guest_to_guest() { guest_to_guest(false); }
void test_guest_to_guest_byte_only() { guest_to_guest(true); }

// ---- Writable transfers ------------------------------------------------------------------

// A host file the VM may write: the guest saved to it (FileChooser.SaveFile,
// the backend choosing @host_path); its guest path.
std::string save_document(Vm& vm, const std::string& host_path) {
  vm.host().set_reply("SaveFile", kResponseSuccess, uris_result({host_path}));
  g_autofree char* name = g_path_get_basename(host_path.c_str());
  auto save = vm.file_chooser(
      "SaveFile", "{'handle_token': <'" + unique_token() + "'>, 'current_name': <'" + std::string(name) + "'>}");
  if (save->error() || !save->wait_for_response() || save->response() != kResponseSuccess)
    throw FixtureError("SaveFile did not succeed");
  std::vector<std::string> uris = strv(save->results(), "uris");
  if (uris.size() != 1) throw FixtureError("SaveFile returned no uri");
  return path_of(uris[0]);
}

// A writable transfer of a document the VM may write: the host app's write
// lands in the document (the guest reads it), and another guest app's write
// to its pasted copy lands in the host file.
void writable(bool byte_only) {
  Vm vm(clipboard_vm(byte_only));
  HostFiles files;
  std::string host_path = files.add("shared/draft.txt", "first draft\n");
  std::string guest_path = save_document(vm, host_path);

  Client guest{vm.guest().connection()};
  std::string key = guest.start(/*writable=*/true, /*autostop=*/false);
  guest.add_paths(key, {guest_path});
  Client host{vm.host().connection()};
  std::vector<std::string> pasted = host.retrieve(key);
  g_assert_cmpuint(pasted.size(), ==, 1);
  assert_str_eq(pasted[0], host_path);
  write_file(pasted[0], "edited on the host\n");
  assert_str_eq(bytes_of_file(guest_path), "edited on the host\n");

  GObjectPtr<GDBusConnection> other = connect(vm.guest().address());
  std::vector<std::string> in_guest = Client{other.get()}.retrieve(key);
  g_assert_cmpuint(in_guest.size(), ==, 1);
  assert_inside_documents(vm, in_guest[0]);
  write_file(in_guest[0], "edited by another app in the VM\n");
  assert_str_eq(bytes_of_file(host_path), "edited by another app in the VM\n");

  // A document the VM may only read goes into a writable transfer (GTK's
  // always are) as a copy: the host app's write does not reach the file.
  std::string original = files.add("shared/read-only.txt", "do not touch\n");
  std::string read_only = vm.share_document(original);
  std::string second = guest.start(/*writable=*/true);
  guest.add_paths(second, {read_only});
  std::vector<std::string> copy = host.retrieve(second);
  g_assert_cmpuint(copy.size(), ==, 1);
  g_assert_true(copy[0] != original);
  assert_str_eq(bytes_of_file(copy[0]), "do not touch\n");
  write_file(copy[0], "touched\n");
  assert_str_eq(bytes_of_file(original), "do not touch\n");
  assert_str_eq(bytes_of_file(read_only), "do not touch\n");
}
void test_writable() { writable(false); }
void test_writable_byte_only() { writable(true); }

// ---- Autostop, StopTransfer, owners ------------------------------------------------------

// autostop=false: the files can be retrieved again until the owner stops
// the transfer; then the key is used up and the owner hears TransferClosed.
// Staged copies stay keep_staged_for seconds after a transfer that may have
// been retrieved ended (a host app retrieves from the host portal, unseen by
// the broker, and reads the files afterwards); one that cannot have been —
// autostop, stopped by its owner, never retrieved through the broker — takes
// them along at once.
void test_autostop_and_stop() {
  Vm vm(clipboard_vm(false, R"({"keep_staged_for": 1})"));
  std::vector<std::string> paths = guest_files(vm, "kept", 2, nullptr);
  Client guest{vm.guest().connection()};
  ClosedSignals closed(vm.guest().connection());
  Client host{vm.host().connection()};

  std::string key = guest.start(false, /*autostop=*/false);
  guest.add_paths(key, paths);
  g_assert_cmpuint(host_copies(vm, "clipboard").size(), ==, 2);
  g_assert_cmpuint(host.retrieve(key).size(), ==, 2);
  g_assert_cmpuint(host.retrieve(key).size(), ==, 2);
  g_autoptr(GError) error = nullptr;
  g_assert_true(guest.stop(key, &error));
  g_assert_no_error(error);
  g_assert_true(closed.wait_for(key));
  g_assert_true(host.retrieve(key, &error).empty());
  g_clear_error(&error);
  g_assert_cmpuint(host_copies(vm, "clipboard").size(), ==, 2);
  g_assert_true(wait_until([&] { return host_copies(vm, "clipboard").empty(); }, 10s));

  // Autostop, retrieved by a host app: the host ends it; the copies stay a while.
  std::string pasted = guest.start(false, true);
  guest.add_paths(pasted, paths);
  std::vector<std::string> files = host.retrieve(pasted);
  g_assert_true(closed.wait_for(pasted));
  for (const std::string& file : files) g_assert_true(sidebus::test::read_file(file).has_value());
  g_assert_true(wait_until([&] { return host_copies(vm, "clipboard").empty(); }, 10s));

  // Never retrieved: deleted with the transfer.
  std::string unused = guest.start(false, true);
  guest.add_paths(unused, paths);
  g_assert_cmpuint(host_copies(vm, "clipboard").size(), ==, 2);
  g_assert_true(guest.stop(unused, &error));
  g_assert_true(host_copies(vm, "clipboard").empty());
  g_assert_false(guest.stop(unused, &error));
  assert_error(error, kNotFound, "no transfer");
}

// Only the client that started a transfer adds to it or stops it; when it
// leaves the bus, its transfers end (on the host too).
void test_owner_rules() {
  Vm vm(clipboard_vm(false, R"({"keep_staged_for": 0})"));
  std::vector<std::string> paths = guest_files(vm, "owned", 1, nullptr);
  GObjectPtr<GDBusConnection> owner_connection = connect(vm.guest().address());
  Client owner{owner_connection.get()};
  Client other{vm.guest().connection()};
  std::string key = owner.start(false, false);
  owner.add_paths(key, paths);

  g_autoptr(GError) error = nullptr;
  g_assert_false(other.add_paths(key, paths, &error));
  assert_error(error, kNotAllowed, "belongs to the client that started it");
  g_clear_error(&error);
  g_assert_false(other.stop(key, &error));
  assert_error(error, kNotAllowed, "belongs to the client that started it");
  g_clear_error(&error);
  // The target may retrieve (that is what the key is for).
  g_assert_cmpuint(other.retrieve(key).size(), ==, 1);

  g_dbus_connection_close_sync(owner_connection.get(), nullptr, nullptr);
  Client host{vm.host().connection()};
  g_assert_true(wait_until([&] {
    g_autoptr(GError) gone = nullptr;
    return host.retrieve(key, &gone).empty() && gone != nullptr;
  }));
  g_assert_true(wait_until([&] { return host_copies(vm, "clipboard").empty(); }));
}

// ---- Refusals and limits -----------------------------------------------------------------

void test_refusals_and_limits() {
  Vm vm(clipboard_vm(false, R"({"max_transfers": 2, "max_files": 3, "max_copy_size": 1024})"));
  Client guest{vm.guest().connection()};
  g_autoptr(GError) error = nullptr;

  // Keys: malformed, unknown.
  g_assert_true(guest.retrieve("../etc", &error).empty());
  assert_error(error, kInvalidArgument, "is not a transfer key");
  g_clear_error(&error);
  g_assert_true(guest.retrieve("12345", &error).empty());
  assert_error(error, kNotFound, "no file transfer with this key");
  g_clear_error(&error);
  std::vector<int> none;
  g_assert_false(guest.add_fds("12345", none, &error));
  assert_error(error, kNotFound, "no transfer 12345 of this VM");
  g_clear_error(&error);

  // Options of the wrong type.
  g_autoptr(GVariant) bad =
      g_dbus_connection_call_sync(vm.guest().connection(), kDocuments, kDocumentsPath, kFileTransfer, "StartTransfer",
                                  g_variant_new_parsed("({'writable': <'yes'>},)"), G_VARIANT_TYPE("(s)"),
                                  G_DBUS_CALL_FLAGS_NONE, 10000, nullptr, &error);
  assert_error(error, kInvalidArgument, "writable");
  g_clear_error(&error);

  // Files per transfer, what can be added, staged sizes.
  std::string key = guest.start(false, false);
  std::vector<std::string> four = guest_files(vm, "four", 4, nullptr);
  g_assert_false(guest.add_paths(key, four, &error));
  assert_error(error, kLimitsExceeded, "portals.clipboard.max_files");
  g_clear_error(&error);
  g_assert_false(guest.add_fds(key, {pipe_with("a pipe")}, &error));
  assert_error(error, kNotAllowed, "pipe");
  g_clear_error(&error);
  std::string folder = vm.guest_files().make_dir("a folder");
  g_assert_false(guest.add_fds(key, {open(folder.c_str(), O_PATH | O_CLOEXEC)}, &error));
  assert_error(error, kNotAllowed, "is a folder of the VM's own");
  g_clear_error(&error);
  std::string big = vm.guest_files().write_file("big.bin", std::string(4096, 'x'));
  g_assert_false(guest.add_paths(key, {big}, &error));
  assert_error(error, kLimitsExceeded, "");
  g_clear_error(&error);
  // The refused ones did not count: three files still fit.
  g_assert_true(guest.add_paths(key, {four[0], four[1], four[2]}));
  g_assert_cmpuint(Client{vm.host().connection()}.retrieve(key).size(), ==, 3);

  // Transfers per VM: a client at the limit has its oldest replaced (GTK
  // never stops its transfers); another client is refused.
  ClosedSignals closed(vm.guest().connection());
  std::string second = guest.start();
  std::string third = guest.start();
  g_assert_true(closed.wait_for(key));
  g_assert_true(Client{vm.host().connection()}.retrieve(key, &error).empty());
  g_clear_error(&error);
  GObjectPtr<GDBusConnection> other_connection = connect(vm.guest().address());
  Client other{other_connection.get()};
  g_assert_true(other.start(true, true, &error).empty());
  assert_error(error, kLimitsExceeded, "portals.clipboard.max_transfers");
  g_clear_error(&error);
  g_assert_true(guest.stop(second, &error));
  g_assert_false(other.start().empty());

  assert_portal_up(vm, "org.freedesktop.portal.FileChooser");
}

// A transfer a VM started cannot be pasted in another VM (host apps can).
void test_key_of_another_vm() {
  HostPortal host_portal({.document_portal = true});
  TempDir registry("sidebus-test-keys");
  std::string shared = R"({"key_registry": ")" + registry.path() + "\"}";
  Vm first(clipboard_vm(false, shared, &host_portal, "dev.sidebus.ClipboardFirst"));
  Vm second(clipboard_vm(true, shared, &host_portal, "dev.sidebus.ClipboardSecond"));
  std::vector<std::string> paths = guest_files(first, "secret", 1, nullptr);
  Client source{first.guest().connection()};
  std::string key = source.start(false, false);
  source.add_paths(key, paths);

  Client elsewhere{second.guest().connection()};
  g_autoptr(GError) error = nullptr;
  g_assert_true(elsewhere.retrieve(key, &error).empty());
  assert_error(error, kNotAllowed, "another VM's");
  g_clear_error(&error);
  g_assert_false(elsewhere.stop(key, &error));
  assert_error(error, kNotAllowed, "another VM's");
  g_clear_error(&error);
  g_assert_cmpuint(Client{host_portal.connection()}.retrieve(key).size(), ==, 1);
}

// ---- A real GTK 4 application -----------------------------------------------------------

// A broadway display (gtk4-broadwayd) for GTK 4 apps in the guest.
struct Broadway {
  TempDir dir{"sidebus-test-broadway"};
  std::string runtime = dir.make_dir("runtime", 0700);
  std::string display = ":" + std::to_string(10 + getpid() % 80);
  std::unique_ptr<ChildProcess> daemon;
  Broadway() {
    daemon = std::make_unique<ChildProcess>(SpawnOptions{
        .name = "gtk4-broadwayd",
        .argv = {env_path("SIDEBUS_GTK4_BROADWAYD"), "--port", std::to_string(30000 + getpid() % 20000), display},
        .env = {{"XDG_RUNTIME_DIR", runtime}},
        .cwd = dir.path(),
        .stdout_path = dir / "broadwayd.log",
    });
    auto has_socket = [&] {
      g_autoptr(GDir) entries = g_dir_open(runtime.c_str(), 0, nullptr);
      while (const char* name = entries ? g_dir_read_name(entries) : nullptr)
        if (g_str_has_prefix(name, "broadway") && g_str_has_suffix(name, ".socket")) return true;
      return false;
    };
    if (!wait_until([&] { return has_socket() || !daemon->running(); }) || !daemon->running())
      throw FixtureError("gtk4-broadwayd did not come up (its log is below)");
  }
  std::vector<std::string> client(std::vector<std::string> args) const {
    std::vector<std::string> argv = {env_path("SIDEBUS_GTK_FILES_CLIENT"), "--runtime-dir", runtime, "--display",
                                     display};
    argv.insert(argv.end(), args.begin(), args.end());
    return argv;
  }
};

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  g_auto(GStrv) split = g_strsplit(text.c_str(), "\n", -1);
  for (char** line = split; *line != nullptr; line++)
    if (**line != '\0') lines.emplace_back(*line);
  return lines;
}

// GTK 4 (GDK's own FileTransfer code, GDK_DEBUG=portals) copies files in
// the VM — a guest file and a document — and a host app pastes them; a host
// app copies and GTK pastes in the VM. The clipboard between the two apps is
// the test (the Wayland proxy's job); the rest is GTK's.
void gtk_copy_and_paste(bool byte_only) {
  if (env_or("SIDEBUS_GTK_FILES_CLIENT").empty()) {
    g_test_skip("GTK 4 or gtk4-broadwayd was not found at build time");
    return;
  }
  Broadway broadway;
  Vm vm(clipboard_vm(byte_only));
  SharedDocument document(vm, "notes.txt", "shared notes\n");
  std::string own = vm.guest_files().write_file("Pictures/photo.jpg", "\xff\xd8 a photo from the guest");

  const std::string out = vm.guest_files() / "gtk-copy.out";
  ChildProcess copier(SpawnOptions{
      .name = "gtk-files-client copy",
      .argv = broadway.client({"copy", own, document.guest_path}),
      .env = {{"DBUS_SESSION_BUS_ADDRESS", vm.guest().address()}},
      .cwd = vm.guest_files().path(),
      .stdout_path = out,
      .stderr_path = vm.guest_files() / "gtk-copy.err",
  });
  std::string key;
  g_assert_true(wait_until([&] {
    auto text = sidebus::test::read_file(out);
    if (text && text->find('\n') != std::string::npos) key = lines_of(*text).at(0);
    return !key.empty() || !copier.running();
  }));
  if (key.empty())
    throw FixtureError("GTK did not copy: " + sidebus::test::read_file(vm.guest_files() / "gtk-copy.err").value_or(""));
  std::vector<std::string> pasted = Client{vm.host().connection()}.retrieve(key);
  g_assert_cmpuint(pasted.size(), ==, 2);
  assert_str_eq(bytes_of_file(pasted[0]), "\xff\xd8 a photo from the guest");
  // GTK's transfers are writable, this document is read-only: a copy.
  assert_str_eq(bytes_of_file(pasted[1]), document.contents);

  HostFiles files;
  std::string host_file = files.add("from the host.txt", "copied on the host desktop\n");
  Client host{vm.host().connection()};
  std::string host_key = host.start();
  host.add_paths(host_key, {host_file});
  GuestBus::Output paste = vm.guest().run_as_guest(broadway.client({"paste", host_key}));
  if (!paste.status.success()) throw FixtureError("GTK did not paste: " + paste.err);
  std::vector<std::string> got = lines_of(paste.out);
  g_assert_cmpuint(got.size(), ==, 1);
  assert_inside_documents(vm, got[0]);
  assert_str_eq(bytes_of_file(got[0]), "copied on the host desktop\n");
}
void test_gtk() { gtk_copy_and_paste(false); }
void test_gtk_byte_only() { gtk_copy_and_paste(true); }

// ---- Numbers -------------------------------------------------------------------------------

// How long a paste takes, each way (a message, never asserted): 100 small
// files, and one large file ($SIDEBUS_CLIPBOARD_LARGE_MB, default 64).
void test_paste_times() {
  gint64 large_mb = g_ascii_strtoll(env_or("SIDEBUS_CLIPBOARD_LARGE_MB", "64").c_str(), nullptr, 10);
  std::string limits = R"({"max_copy_size": )" + std::to_string((large_mb + 1) << 20) + R"(, "max_staged_total": )" +
                       std::to_string((large_mb + 16) << 20) + "}";
  for (bool byte_only : {false, true}) {
    VmOptions options = clipboard_vm(byte_only, limits);
    if (byte_only)
      options.config.push_back(
          {"70-content.json", R"({"broker": {"max_content_size": )" + std::to_string((large_mb + 1) << 20) +
                                  R"(, "max_content_in_flight": )" + std::to_string((large_mb + 16) << 20) + "}}"});
    Vm vm(options);
    Client guest{vm.guest().connection()};
    Client host{vm.host().connection()};
    using Clock = std::chrono::steady_clock;
    auto ms = [](Clock::time_point since) {
      return std::chrono::duration<double, std::milli>(Clock::now() - since).count();
    };
    auto read_all = [](const std::vector<std::string>& paths) {
      size_t total = 0;
      for (const std::string& path : paths) total += bytes_of_file(path).size();
      return total;
    };
    const char* link = byte_only ? "byte-only" : "native";
    std::vector<std::string> small = guest_files(vm, "small", 100, nullptr);
    std::string large_guest = vm.guest_files().write_file("large.bin", std::string(size_t(large_mb) << 20, 'g'));
    for (auto& [what, paths] : std::vector<std::pair<std::string, std::vector<std::string>>>{
             {"100 small files", small}, {std::to_string(large_mb) + " MiB file", {large_guest}}}) {
      auto t0 = Clock::now();
      std::string key = guest.start(false);
      guest.add_paths(key, paths);
      size_t bytes = read_all(host.retrieve(key));
      g_test_message("paste %s VM -> host (%s link): %.1f ms (%zu bytes)", what.c_str(), link, ms(t0), bytes);
    }
    HostFiles files;
    std::vector<std::string> host_small;
    for (int i = 0; i < 100; i++) host_small.push_back(files.add("s" + std::to_string(i) + ".txt", "small\n"));
    std::string large_host = files.add("large.bin", std::string(size_t(large_mb) << 20, 'h'));
    for (auto& [what, paths] : std::vector<std::pair<std::string, std::vector<std::string>>>{
             {"100 small files", host_small}, {std::to_string(large_mb) + " MiB file", {large_host}}}) {
      auto t0 = Clock::now();
      std::string key = host.start(false);
      host.add_paths(key, paths);
      size_t bytes = read_all(guest.retrieve(key));
      g_test_message("paste %s host -> VM (%s link): %.1f ms (%zu bytes)", what.c_str(), link, ms(t0), bytes);
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  g_test_init(&argc, &argv, nullptr);
  add_test("/clipboard/served", test_served);
  add_test("/clipboard/guest-to-host", test_guest_to_host);
  add_test("/clipboard/guest-to-host-byte-only", test_guest_to_host_byte_only);
  add_test("/clipboard/host-to-guest", test_host_to_guest);
  add_test("/clipboard/host-to-guest-byte-only", test_host_to_guest_byte_only);
  add_test("/clipboard/guest-to-guest", test_guest_to_guest);
  add_test("/clipboard/guest-to-guest-byte-only", test_guest_to_guest_byte_only);
  add_test("/clipboard/writable", test_writable);
  add_test("/clipboard/writable-byte-only", test_writable_byte_only);
  add_test("/clipboard/autostop-and-stop", test_autostop_and_stop);
  add_test("/clipboard/owner-rules", test_owner_rules);
  add_test("/clipboard/refusals-and-limits", test_refusals_and_limits);
  add_test("/clipboard/key-of-another-vm", test_key_of_another_vm);
  add_test("/clipboard/gtk", test_gtk);
  add_test("/clipboard/gtk-byte-only", test_gtk_byte_only);
  add_test("/clipboard/paste-times", test_paste_times);
  return g_test_run();
}
