// SPDX-License-Identifier: LGPL-2.1-or-later
// test-private-bus.cpp — the per-VM private bus and document export against
// the real dbus-daemon, xdg-permission-store and xdg-document-portal with a
// real FUSE mount (no mocks): start-up, export (read, write, save, folders),
// rejected URIs, the guest → host mapping, restarts after crashes,
// persistence, two VMs side by side, and nothing left behind at the end.
// The guest's view is read where a VM would see it:
// <documents_mount>/by-app/<app id>/<doc-id>/<name>.
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <glib/gstdio.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "documents/app-id.hpp"
#include "documents/document-export.hpp"
#include "documents/private-bus.hpp"
#include "sidebus-config.h"

using namespace sidebus;

namespace {

constexpr const char* kGuestDocuments = "/run/user/1000/doc";  // where the guest sees its documents
constexpr const char* kDocumentsName = "org.freedesktop.portal.Documents";

// ---- Test plumbing ---------------------------------------------------------

// g_assert_cmpstr on copies: its arguments are often c_str() of temporaries,
// which would be gone by the time the macro compares them.
#define assert_cmpstring(a, op, b)                                \
  do {                                                            \
    const std::string string_a_ = (a), string_b_ = (b);           \
    g_assert_cmpstr(string_a_.c_str(), op, string_b_.c_str());    \
  } while (0)

// Warnings are expected in some tests (a helper dies and is restarted):
// recorded and printed as TAP comments instead of aborting the test.
std::vector<std::string> warnings;

GLogWriterOutput log_writer(GLogLevelFlags level, const GLogField* fields, gsize n_fields, gpointer) {
  if ((level & G_LOG_LEVEL_WARNING) == 0) return g_log_writer_default(level, fields, n_fields, nullptr);
  std::string message;
  for (gsize i = 0; i < n_fields; i++)
    if (g_strcmp0(fields[i].key, "MESSAGE") == 0)
      message = fields[i].length < 0 ? static_cast<const char*>(fields[i].value)
                                     : std::string(static_cast<const char*>(fields[i].value), size_t(fields[i].length));
  warnings.push_back(message);
  g_printerr("# warning: %s\n", message.c_str());
  return G_LOG_WRITER_HANDLED;
}

bool warned_about(const char* text) {
  for (const std::string& warning : warnings)
    if (warning.find(text) != std::string::npos) return true;
  return false;
}

// Skips the test (with the reason) unless the real parts are there.
bool can_run() {
  int fd = open("/dev/fuse", O_RDWR | O_CLOEXEC);
  if (fd < 0) {
    g_autofree char* reason = g_strdup_printf("/dev/fuse cannot be opened (%s)", g_strerror(errno));
    g_test_skip(reason);
    return false;
  }
  close(fd);
  for (const char* program : {DBUS_DAEMON, XDG_DOCUMENT_PORTAL, XDG_PERMISSION_STORE}) {
    if (!g_file_test(program, G_FILE_TEST_IS_EXECUTABLE)) {
      g_autofree char* reason = g_strdup_printf("%s is not installed", program);
      g_test_skip(reason);
      return false;
    }
  }
  g_autofree char* fusermount = g_find_program_in_path("fusermount3");
  if (fusermount == nullptr) {
    g_test_skip("fusermount3 is not installed (package fuse3)");
    return false;
  }
  return true;
}

// Everything a test makes lives under this directory (see main()).
std::string scratch_dir;

// (mount point, filesystem type) for each mount, from /proc/self/mountinfo —
// statfs() is no help: xdg-document-portal answers it with EPERM.
std::vector<std::pair<std::string, std::string>> mounts() {
  std::vector<std::pair<std::string, std::string>> result;
  g_autofree char* mountinfo = nullptr;
  if (!g_file_get_contents("/proc/self/mountinfo", &mountinfo, nullptr, nullptr)) return result;
  g_auto(GStrv) lines = g_strsplit(mountinfo, "\n", -1);
  for (char** line = lines; *line != nullptr; line++) {
    // "36 35 0:39 / /run/user/0/doc rw,nosuid,nodev - fuse.portal portal rw,…"
    g_auto(GStrv) fields = g_strsplit(*line, " ", -1);
    const char* type = strstr(*line, " - ");
    if (g_strv_length(fields) >= 5 && type != nullptr) result.emplace_back(fields[4], type + 3);
  }
  return result;
}

bool is_fuse_mount(const std::string& path) {
  bool mounted = false;  // the last mount on a point is the visible one
  for (const auto& [mount_point, type] : mounts())
    if (mount_point == path) mounted = g_str_has_prefix(type.c_str(), "fuse");
  return mounted;
}

// Removes a tree without descending into another filesystem (a FUSE mount
// left by a failure): unmounts those first.
void remove_tree(const std::string& root) {
  for (const auto& [mount_point, type] : mounts())
    if (g_str_has_prefix(mount_point.c_str(), (root + "/").c_str())) umount2(mount_point.c_str(), MNT_DETACH);
  nftw(
      root.c_str(),
      [](const char* file, const struct stat*, int type, struct FTW*) {
        if (type == FTW_DP)
          rmdir(file);
        else
          unlink(file);
        return 0;
      },
      16, FTW_DEPTH | FTW_PHYS | FTW_MOUNT);
}

// A fresh directory under scratch_dir, removed with its contents at the end.
struct TempDir {
  std::string path;
  explicit TempDir(const char* name_template) {
    std::string full_template = scratch_dir + "/" + name_template;
    g_assert_nonnull(g_mkdtemp_full(full_template.data(), 0700));
    path = full_template;
  }
  ~TempDir() { remove_tree(path); }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string operator/(const std::string& name) const { return path + "/" + name; }
};

// Iterates the default main context (where restarts happen) until done().
bool wait_until(const std::function<bool()>& done, int timeout_ms) {
  gint64 end = g_get_monotonic_time() + gint64(timeout_ms) * 1000;
  while (!done()) {
    if (g_get_monotonic_time() > end) return false;
    while (g_main_context_iteration(nullptr, FALSE)) {
    }
    g_usleep(10 * 1000);
  }
  return true;
}

void write_file(const std::string& path, const std::string& contents) {
  g_autoptr(GError) error = nullptr;
  g_file_set_contents(path.c_str(), contents.data(), gssize(contents.size()), &error);
  g_assert_no_error(error);
}

// The contents, or "<unreadable: …>" so that a comparison fails with a readable message.
std::string read_file(const std::string& path) {
  g_autofree char* contents = nullptr;
  gsize length = 0;
  g_autoptr(GError) error = nullptr;
  if (!g_file_get_contents(path.c_str(), &contents, &length, &error))
    return "<unreadable: " + std::string(error->message) + ">";
  return std::string(contents, length);
}

// Writes through open/write/close (no temporary file); returns errno or 0.
int write_in_place(const std::string& path, const std::string& contents, int extra_flags = O_TRUNC) {
  int fd = open(path.c_str(), O_WRONLY | O_CLOEXEC | extra_flags, 0644);
  if (fd < 0) return errno;
  ssize_t written = write(fd, contents.data(), contents.size());
  int saved_errno = written == ssize_t(contents.size()) ? 0 : errno;
  if (close(fd) != 0 && saved_errno == 0) saved_errno = errno;
  return saved_errno;
}

std::string file_uri(const std::string& path) {
  g_autofree char* uri = g_filename_to_uri(path.c_str(), nullptr, nullptr);
  g_assert_nonnull(uri);
  return uri;
}

std::string real_path(const std::string& path) {
  g_autofree char* resolved = realpath(path.c_str(), nullptr);
  g_assert_nonnull(resolved);
  return resolved;
}

GVariant* call(GDBusConnection* bus, const char* destination, const char* path, const char* interface,
               const char* method, GVariant* parameters, const char* reply_type, GError** error) {
  return g_dbus_connection_call_sync(bus, destination, path, interface, method, parameters,
                                     reply_type != nullptr ? G_VARIANT_TYPE(reply_type) : nullptr,
                                     G_DBUS_CALL_FLAGS_NO_AUTO_START, 10000, nullptr, error);
}

bool name_has_owner(GDBusConnection* bus, const char* name) {
  g_autoptr(GVariant) reply = call(bus, "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus",
                                   "NameHasOwner", g_variant_new("(s)", name), "(b)", nullptr);
  gboolean owned = FALSE;
  if (reply) g_variant_get(reply, "(b)", &owned);
  return owned;
}

pid_t pid_of_name(GDBusConnection* bus, const char* name) {
  g_autoptr(GError) error = nullptr;
  g_autoptr(GVariant) reply = call(bus, "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus",
                                   "GetConnectionUnixProcessID", g_variant_new("(s)", name), "(u)", &error);
  g_assert_no_error(error);
  guint32 pid = 0;
  g_variant_get(reply, "(u)", &pid);
  return pid_t(pid);
}

// Documents.Lookup: "" if the host file is not a document on this bus.
std::string lookup_document(GDBusConnection* bus, const std::string& host_path) {
  g_autoptr(GError) error = nullptr;
  g_autoptr(GVariant) reply = call(bus, kDocumentsName, "/org/freedesktop/portal/documents", kDocumentsName, "Lookup",
                                   g_variant_new("(^ay)", host_path.c_str()), "(s)", &error);
  g_assert_no_error(error);
  const char* id = nullptr;
  g_variant_get(reply, "(&s)", &id);
  return id;
}

bool document_info_succeeds(GDBusConnection* bus, const std::string& doc_id) {
  g_autoptr(GVariant) reply = call(bus, kDocumentsName, "/org/freedesktop/portal/documents", kDocumentsName, "Info",
                                   g_variant_new("(s)", doc_id.c_str()), "(aya{sas})", nullptr);
  return reply != nullptr;
}

bool path_exists(const std::string& path) {
  struct stat st;
  return lstat(path.c_str(), &st) == 0;
}

// A guest URI from export_uris → its path in the guest and its document id.
std::string guest_path_of(const std::string& guest_uri) {
  g_autofree char* path = g_filename_from_uri(guest_uri.c_str(), nullptr, nullptr);
  g_assert_nonnull(path);
  g_assert_true(g_str_has_prefix(path, kGuestDocuments));
  return path;
}

std::string doc_id_of(const std::string& guest_uri) {
  std::string rest = guest_path_of(guest_uri).substr(strlen(kGuestDocuments) + 1);
  return rest.substr(0, rest.find('/'));
}

// DocumentExporter::export_uris, waited for (the main context runs meanwhile).
std::optional<std::vector<std::string>> export_sync(DocumentExporter& exporter, const std::vector<std::string>& uris,
                                                   SidebusExportFlags flags, GError** error) {
  bool done = false;
  std::optional<std::vector<std::string>> result;
  exporter.export_uris(uris, flags, [&](std::optional<std::vector<std::string>> guest_uris, const GError* failure) {
    result = std::move(guest_uris);
    if (failure != nullptr) g_propagate_error(error, g_error_copy(failure));
    done = true;
  });
  while (!done) g_main_context_iteration(nullptr, TRUE);
  return result;
}

// Until @exporter has loaded its document index (the broker answers guest
// paths only then).
void wait_for_index(const DocumentExporter& exporter) {
  while (!exporter.index_loaded()) g_main_context_iteration(nullptr, TRUE);
}

// One VM: its directories, its private bus and its exporter.
struct Vm {
  TempDir runtime{"run-XXXXXX"};
  TempDir own_state{"state-XXXXXX"};
  std::string state_dir = own_state.path;
  std::unique_ptr<PrivateBus> bus;
  std::unique_ptr<DocumentExporter> exporter;

  // Follows the bus across restarts (the constructor the broker should use).
  void start(const char* vm_name) {
    g_autoptr(GError) error = nullptr;
    bus = PrivateBus::start({runtime.path, state_dir, vm_name}, &error);
    g_assert_no_error(error);
    g_assert_nonnull(bus.get());
    exporter = std::make_unique<DocumentExporter>(*bus, vm_name, kGuestDocuments);
    wait_for_index(*exporter);
  }

  // Where this VM's guest sees a guest URI, on the host.
  std::string view_of(const std::string& guest_uri) const {
    return exporter->guest_view_path() + guest_path_of(guest_uri).substr(strlen(kGuestDocuments));
  }

  std::string export_one(const std::string& host_path, SidebusExportFlags flags) {
    g_autoptr(GError) error = nullptr;
    auto uris = export_sync(*exporter, {file_uri(host_path)}, flags, &error);
    g_assert_no_error(error);
    g_assert_true(uris.has_value());
    g_assert_cmpuint(uris->size(), ==, 1);
    return uris->front();
  }

  // An export is on disk (crash-safe) once the permission store confirmed
  // it, a moment after the guest had its answer.
  void wait_until_persisted() {
    while (exporter && exporter->unpersisted() > 0) g_main_context_iteration(nullptr, TRUE);
  }

  // As the broker stops: once the exports are on disk.
  void stop() {
    wait_until_persisted();
    exporter.reset();
    bus.reset();
  }
  ~Vm() { stop(); }
};

// ---- Tests -----------------------------------------------------------------

void check_app_id(const char* vm_name, const char* expected) {
  std::string app_id = sidebus::app_id_for_vm(vm_name);
  assert_cmpstring(app_id, ==, expected);
}

void test_app_id_for_vm() {
  check_app_id("org.example.App", "org.example.App");
  check_app_id("a.b-c", "a.b-c");
  check_app_id("testvm", "dev.sidebus.vm.testvm");
  check_app_id("my vm/1", "dev.sidebus.vm.my_vm_1");
  check_app_id("a-b.c", "dev.sidebus.vm.a-b_c");
  check_app_id("a..b", "dev.sidebus.vm.a__b");
  check_app_id("", "dev.sidebus.vm.unnamed");
}

void test_start() {
  if (!can_run()) return;
  Vm vm;
  vm.start("org.example.Vm1");
  assert_cmpstring(vm.bus->documents_mount(), ==, (vm.runtime / "doc"));
  g_assert_true(is_fuse_mount(vm.bus->documents_mount()));
  g_assert_true(name_has_owner(vm.bus->connection(), kDocumentsName));
  g_assert_true(name_has_owner(vm.bus->connection(), "org.freedesktop.impl.portal.PermissionStore"));
  g_assert_true(g_str_has_prefix(vm.bus->address().c_str(), ("unix:path=" + vm.runtime / "private-bus.sock").c_str()));
  g_assert_true(path_exists(vm.runtime / "private-bus.conf"));
  assert_cmpstring(vm.exporter->guest_view_path(), ==, (vm.runtime / "doc/by-app/org.example.Vm1"));
}

void test_export_read_only() {
  if (!can_run()) return;
  Vm vm;
  vm.start("org.example.Vm1");
  TempDir host("host-XXXXXX");
  const std::string bytes("first line\nbinary \x01\x02\xff\0 end", 27);
  write_file(host / "hello wörld #1.txt", bytes);

  std::string uri = vm.export_one(host / "hello wörld #1.txt", SIDEBUS_EXPORT_FLAGS_NONE);
  std::string doc_id = doc_id_of(uri);
  assert_cmpstring(uri, ==,
                  (std::string("file://") + kGuestDocuments + "/" + doc_id + "/hello%20w%C3%B6rld%20%231.txt"));
  g_assert_true(bytes == read_file(vm.view_of(uri)));
  g_assert_true(bytes == read_file(vm.bus->documents_mount() + "/" + doc_id + "/hello wörld #1.txt"));
  // Read-only: the guest cannot change it.
  g_assert_cmpint(write_in_place(vm.view_of(uri), "changed"), !=, 0);
  g_assert_true(bytes == read_file(host / "hello wörld #1.txt"));
  // The same file again: the same document.
  assert_cmpstring(vm.export_one(host / "hello wörld #1.txt", SIDEBUS_EXPORT_FLAGS_NONE), ==, uri);
}

void test_export_writable() {
  if (!can_run()) return;
  Vm vm;
  vm.start("org.example.Vm1");
  TempDir host("host-XXXXXX");
  write_file(host / "notes.txt", "original");

  std::string uri = vm.export_one(host / "notes.txt", SIDEBUS_EXPORT_FLAGS_WRITABLE);
  g_assert_cmpint(write_in_place(vm.view_of(uri), "written by the guest"), ==, 0);
  assert_cmpstring(read_file(host / "notes.txt"), ==, "written by the guest");
  // How editors save: a temporary file renamed over it.
  write_file(vm.view_of(uri), "saved atomically");
  assert_cmpstring(read_file(host / "notes.txt"), ==, "saved atomically");
}

void test_export_for_save() {
  if (!can_run()) return;
  Vm vm;
  vm.start("org.example.Vm1");
  TempDir host("host-XXXXXX");
  g_assert_false(path_exists(host / "new file.txt"));

  std::string uri = vm.export_one(host / "new file.txt", SIDEBUS_EXPORT_FLAGS_FOR_SAVE);
  g_assert_true(g_str_has_suffix(uri.c_str(), "/new%20file.txt"));
  g_assert_false(path_exists(vm.view_of(uri)));
  g_assert_cmpint(write_in_place(vm.view_of(uri), "saved from the guest", O_CREAT | O_EXCL), ==, 0);
  assert_cmpstring(read_file(host / "new file.txt"), ==, "saved from the guest");

  // Saving over an existing file works the same way.
  write_file(host / "existing.txt", "old");
  std::string existing = vm.export_one(host / "existing.txt", SIDEBUS_EXPORT_FLAGS_FOR_SAVE);
  assert_cmpstring(read_file(vm.view_of(existing)), ==, "old");
  g_assert_cmpint(write_in_place(vm.view_of(existing), "new"), ==, 0);
  assert_cmpstring(read_file(host / "existing.txt"), ==, "new");
}

void test_export_directory() {
  if (!can_run()) return;
  Vm vm;
  vm.start("org.example.Vm1");
  TempDir host("host-XXXXXX");
  g_assert_cmpint(g_mkdir_with_parents((host / "folder/sub").c_str(), 0755), ==, 0);
  write_file(host / "folder/inner.txt", "inner");
  write_file(host / "folder/sub/deeper.txt", "deeper");

  g_autoptr(GError) error = nullptr;
  auto refused = export_sync(*vm.exporter, {file_uri(host / "folder")}, SIDEBUS_EXPORT_FLAGS_NONE, &error);
  g_assert_false(refused.has_value());
  g_assert_error(error, SIDEBUS_ERROR, SIDEBUS_ERROR_INVALID_ARGUMENT);

  std::string uri = vm.export_one(host / "folder", SIDEBUS_EXPORT_FLAGS_DIRECTORY);
  g_assert_true(g_str_has_suffix(uri.c_str(), "/folder"));
  assert_cmpstring(read_file(vm.view_of(uri) + "/inner.txt"), ==, "inner");
  assert_cmpstring(read_file(vm.view_of(uri) + "/sub/deeper.txt"), ==, "deeper");
  g_assert_cmpint(write_in_place(vm.view_of(uri) + "/inner.txt", "changed"), !=, 0);
  g_assert_cmpint(write_in_place(vm.view_of(uri) + "/created.txt", "x", O_CREAT), !=, 0);

  // Exported again as writable: the same document, now the guest may write in it.
  auto writable_folder = SidebusExportFlags(SIDEBUS_EXPORT_FLAGS_DIRECTORY | SIDEBUS_EXPORT_FLAGS_WRITABLE);
  std::string writable = vm.export_one(host / "folder", writable_folder);
  assert_cmpstring(writable, ==, uri);
  g_assert_cmpint(write_in_place(vm.view_of(uri) + "/created.txt", "from the guest", O_CREAT), ==, 0);
  assert_cmpstring(read_file(host / "folder/created.txt"), ==, "from the guest");
}

void test_export_rejects() {
  if (!can_run()) return;
  Vm vm;
  vm.start("org.example.Vm1");
  TempDir host("host-XXXXXX");
  write_file(host / "good.txt", "good");
  g_assert_cmpint(mkfifo((host / "fifo").c_str(), 0600), ==, 0);
  g_assert_cmpint(g_mkdir((host / "folder").c_str(), 0700), ==, 0);

  struct Case {
    std::string uri;
    SidebusError code;
    SidebusExportFlags flags = SIDEBUS_EXPORT_FLAGS_NONE;
  };
  const Case cases[] = {
      {"https://example.com/file.txt", SIDEBUS_ERROR_NOT_ALLOWED},
      {"sftp:///etc/passwd", SIDEBUS_ERROR_NOT_ALLOWED},
      {"file://otherhost/etc/passwd", SIDEBUS_ERROR_NOT_ALLOWED},
      {"relative/path.txt", SIDEBUS_ERROR_INVALID_ARGUMENT},
      {"/absolute/but/not/a/uri", SIDEBUS_ERROR_INVALID_ARGUMENT},
      {"file:relative.txt", SIDEBUS_ERROR_INVALID_ARGUMENT},
      {"file:///tmp/%2Fescaped-slash", SIDEBUS_ERROR_INVALID_ARGUMENT},
      {"file:///tmp/not-utf8-\xff", SIDEBUS_ERROR_INVALID_ARGUMENT},
      {"", SIDEBUS_ERROR_INVALID_ARGUMENT},
      {file_uri(host / "missing.txt"), SIDEBUS_ERROR_NOT_FOUND},
      {file_uri(host / "fifo"), SIDEBUS_ERROR_INVALID_ARGUMENT},
      {file_uri(host / "folder"), SIDEBUS_ERROR_INVALID_ARGUMENT},
      {file_uri(host / "folder"), SIDEBUS_ERROR_INVALID_ARGUMENT, SIDEBUS_EXPORT_FLAGS_FOR_SAVE},
      {file_uri(host / "no-such-dir/new.txt"), SIDEBUS_ERROR_NOT_FOUND, SIDEBUS_EXPORT_FLAGS_FOR_SAVE},
      {"file:///", SIDEBUS_ERROR_INVALID_ARGUMENT, SIDEBUS_EXPORT_FLAGS_FOR_SAVE},
  };
  for (const Case& c : cases) {
    g_autoptr(GError) error = nullptr;
    auto result = export_sync(*vm.exporter, {c.uri}, c.flags, &error);
    g_autofree char* uri = g_utf8_make_valid(c.uri.c_str(), -1);
    g_test_message("%s → %s", uri, error != nullptr ? error->message : "(exported)");
    g_assert_false(result.has_value());
    g_assert_error(error, SIDEBUS_ERROR, c.code);
  }

  // One bad URI fails the whole call before anything is exported.
  g_autoptr(GError) error = nullptr;
  auto result = export_sync(*vm.exporter, {file_uri(host / "good.txt"), "http://example.com/"},
                                         SIDEBUS_EXPORT_FLAGS_NONE, &error);
  g_assert_false(result.has_value());
  g_assert_error(error, SIDEBUS_ERROR, SIDEBUS_ERROR_NOT_ALLOWED);
  assert_cmpstring(lookup_document(vm.bus->connection(), host / "good.txt"), ==, "");
}

void test_guest_path_to_host_path() {
  if (!can_run()) return;
  Vm vm;
  vm.start("org.example.Vm1");
  TempDir host("host-XXXXXX");
  write_file(host / "file.txt", "file");
  g_assert_cmpint(g_mkdir_with_parents((host / "folder/sub").c_str(), 0755), ==, 0);
  write_file(host / "folder/sub/deeper.txt", "deeper");
  g_assert_cmpint(symlink("/etc/passwd", (host / "folder/link").c_str()), ==, 0);
  g_assert_cmpint(symlink("/etc", (host / "folder/dirlink").c_str()), ==, 0);

  std::string file_uri_in_guest = vm.export_one(host / "file.txt", SIDEBUS_EXPORT_FLAGS_NONE);
  std::string folder_uri = vm.export_one(host / "folder", SIDEBUS_EXPORT_FLAGS_DIRECTORY);
  std::string saved_uri = vm.export_one(host / "not-yet.txt", SIDEBUS_EXPORT_FLAGS_FOR_SAVE);
  const std::string file = guest_path_of(file_uri_in_guest);
  const std::string folder = guest_path_of(folder_uri);
  const std::string file_id = doc_id_of(file_uri_in_guest);
  const std::string docs = kGuestDocuments;

  auto maps_to = [&](const std::string& guest, const std::string& expected) {
    g_autoptr(GError) error = nullptr;
    auto host_path = vm.exporter->guest_path_to_host_path(guest, &error);
    g_assert_no_error(error);
    assert_cmpstring(host_path->c_str(), ==, expected);
  };
  maps_to(file, real_path(host / "file.txt"));
  maps_to(file_uri_in_guest, real_path(host / "file.txt"));
  maps_to(docs + "//" + file_id + "/file.txt/", real_path(host / "file.txt"));
  maps_to(folder, real_path(host / "folder"));
  maps_to(folder + "/sub/deeper.txt", real_path(host / "folder/sub/deeper.txt"));
  maps_to(guest_path_of(saved_uri), real_path(host.path) + "/not-yet.txt");

  // Another app on the same private bus: its documents are not this VM's.
  DocumentExporter other(*vm.bus, "org.example.Other", kGuestDocuments);
  write_file(host / "other.txt", "other");
  g_autoptr(GError) other_error = nullptr;
  auto other_uris = export_sync(other, {file_uri(host / "other.txt")}, SIDEBUS_EXPORT_FLAGS_NONE, &other_error);
  g_assert_no_error(other_error);

  struct Case {
    std::string guest_path;
    SidebusError code;
  };
  const Case cases[] = {
      {"/etc/passwd", SIDEBUS_ERROR_NOT_ALLOWED},
      {docs, SIDEBUS_ERROR_NOT_ALLOWED},
      {docs + "/" + file_id, SIDEBUS_ERROR_NOT_ALLOWED},
      {docs + "x/" + file_id + "/file.txt", SIDEBUS_ERROR_NOT_ALLOWED},
      {docs + "/" + file_id + "/../" + file_id + "/file.txt", SIDEBUS_ERROR_NOT_ALLOWED},
      {docs + "/" + file_id + "/./file.txt", SIDEBUS_ERROR_NOT_ALLOWED},
      {docs + "/../../../etc/passwd", SIDEBUS_ERROR_NOT_ALLOWED},
      {folder + "/../../etc/passwd", SIDEBUS_ERROR_NOT_ALLOWED},
      {docs + "/ffffffff0/file.txt", SIDEBUS_ERROR_NOT_ALLOWED},
      {docs + "/by-app/file.txt", SIDEBUS_ERROR_NOT_ALLOWED},
      {docs + "/" + file_id + "/other-name.txt", SIDEBUS_ERROR_NOT_ALLOWED},
      {file + "/below-a-file", SIDEBUS_ERROR_NOT_ALLOWED},
      {folder + "/link", SIDEBUS_ERROR_NOT_ALLOWED},
      {folder + "/dirlink/passwd", SIDEBUS_ERROR_NOT_ALLOWED},
      {folder + "/missing.txt", SIDEBUS_ERROR_NOT_FOUND},
      {"doc/" + file_id + "/file.txt", SIDEBUS_ERROR_NOT_ALLOWED},
      {"file://otherhost" + file, SIDEBUS_ERROR_NOT_ALLOWED},
      {"", SIDEBUS_ERROR_NOT_ALLOWED},
      {docs + "/" + file_id + "/file.txt" + std::string(1, '\0') + "/x", SIDEBUS_ERROR_NOT_ALLOWED},
      {guest_path_of(other_uris->front()), SIDEBUS_ERROR_NOT_ALLOWED},
  };
  for (const Case& c : cases) {
    g_autoptr(GError) error = nullptr;
    auto result = vm.exporter->guest_path_to_host_path(c.guest_path, &error);
    g_test_message("%s → %s", c.guest_path.c_str(), error != nullptr ? error->message : result->c_str());
    g_assert_false(result.has_value());
    g_assert_error(error, SIDEBUS_ERROR, c.code);
    // Messages may reach the guest: no host path in them.
    g_assert_null(strstr(error->message, host.path.c_str()));
  }
}

// Every process whose command line or environment mentions dir.
std::vector<std::string> processes_mentioning(const std::string& dir) {
  std::vector<std::string> found;
  g_autoptr(GDir) proc = g_dir_open("/proc", 0, nullptr);
  for (const char* entry; (entry = g_dir_read_name(proc)) != nullptr;) {
    if (!g_ascii_isdigit(entry[0]) || atoi(entry) == getpid()) continue;
    for (const char* file : {"cmdline", "environ"}) {
      g_autofree char* path = g_strdup_printf("/proc/%s/%s", entry, file);
      g_autofree char* contents = nullptr;
      gsize length = 0;
      if (!g_file_get_contents(path, &contents, &length, nullptr)) continue;
      if (std::string(contents, length).find(dir) != std::string::npos) {
        found.push_back(std::string(entry) + " (" + file + ")");
        break;
      }
    }
  }
  return found;
}

bool process_gone(pid_t pid) { return kill(pid, 0) != 0 && errno == ESRCH; }

void test_stop_leaves_nothing() {
  if (!can_run()) return;
  Vm vm;
  vm.start("org.example.Vm1");
  TempDir host("host-XXXXXX");
  write_file(host / "file.txt", "file");
  vm.export_one(host / "file.txt", SIDEBUS_EXPORT_FLAGS_WRITABLE);
  GDBusConnection* bus = vm.bus->connection();
  const pid_t pids[] = {pid_of_name(bus, "org.freedesktop.DBus"), pid_of_name(bus, kDocumentsName),
                        pid_of_name(bus, "org.freedesktop.impl.portal.PermissionStore")};
  g_assert_false(processes_mentioning(vm.runtime.path).empty());

  vm.stop();
  for (pid_t pid : pids) g_assert_true(wait_until([pid] { return process_gone(pid); }, 5000));
  g_assert_true(wait_until([&] { return processes_mentioning(vm.runtime.path).empty(); }, 5000));
  g_assert_false(is_fuse_mount(vm.runtime / "doc"));
  g_assert_false(path_exists(vm.runtime / "doc"));
  g_assert_false(path_exists(vm.runtime / "private-bus.sock"));
  g_assert_false(path_exists(vm.runtime / "private-bus.conf"));
  assert_cmpstring(read_file(host / "file.txt"), ==, "file");  // and the host file is untouched
}

void test_document_portal_restarted() {
  if (!can_run()) return;
  Vm vm;
  vm.start("org.example.Vm1");
  int restarts = 0;
  vm.bus->set_on_restarted([&] { restarts++; });
  TempDir host("host-XXXXXX");
  write_file(host / "before.txt", "before");
  std::string before = vm.export_one(host / "before.txt", SIDEBUS_EXPORT_FLAGS_NONE);
  vm.wait_until_persisted();

  pid_t portal = pid_of_name(vm.bus->connection(), kDocumentsName);
  g_assert_cmpint(kill(portal, SIGKILL), ==, 0);
  g_assert_true(wait_until([&] { return restarts == 1; }, 20000));
  g_assert_true(warned_about("xdg-document-portal"));
  g_assert_cmpint(pid_of_name(vm.bus->connection(), kDocumentsName), !=, portal);
  g_assert_true(is_fuse_mount(vm.bus->documents_mount()));

  assert_cmpstring(read_file(vm.view_of(before)), ==, "before");
  write_file(host / "after.txt", "after");
  std::string after = vm.export_one(host / "after.txt", SIDEBUS_EXPORT_FLAGS_NONE);
  assert_cmpstring(read_file(vm.view_of(after)), ==, "after");
  vm.wait_until_persisted();

  // The permission store too.
  pid_t store = pid_of_name(vm.bus->connection(), "org.freedesktop.impl.portal.PermissionStore");
  g_assert_cmpint(kill(store, SIGKILL), ==, 0);
  g_assert_true(wait_until([&] { return restarts == 2; }, 20000));
  g_assert_true(warned_about("xdg-permission-store"));
  write_file(host / "third.txt", "third");
  assert_cmpstring(read_file(vm.view_of(vm.export_one(host / "third.txt", SIDEBUS_EXPORT_FLAGS_NONE))), ==,
                  "third");
}

void test_bus_restarted() {
  if (!can_run()) return;
  Vm vm;
  vm.start("org.example.Vm1");
  int restarts = 0;
  vm.bus->set_on_restarted([&] { restarts++; });
  TempDir host("host-XXXXXX");
  write_file(host / "before.txt", "before");
  std::string before = vm.export_one(host / "before.txt", SIDEBUS_EXPORT_FLAGS_NONE);
  vm.wait_until_persisted();

  pid_t daemon = pid_of_name(vm.bus->connection(), "org.freedesktop.DBus");
  g_assert_cmpint(kill(daemon, SIGKILL), ==, 0);
  g_assert_true(wait_until([&] { return restarts == 1; }, 30000));
  g_assert_true(warned_about("lost the private bus"));
  g_assert_false(g_dbus_connection_is_closed(vm.bus->connection()));
  g_assert_cmpint(pid_of_name(vm.bus->connection(), "org.freedesktop.DBus"), !=, daemon);
  g_assert_true(name_has_owner(vm.bus->connection(), kDocumentsName));
  g_assert_true(is_fuse_mount(vm.bus->documents_mount()));

  // The exporter follows the new connection; old documents are still there.
  assert_cmpstring(read_file(vm.view_of(before)), ==, "before");
  write_file(host / "after.txt", "after");
  std::string after = vm.export_one(host / "after.txt", SIDEBUS_EXPORT_FLAGS_NONE);
  assert_cmpstring(read_file(vm.view_of(after)), ==, "after");
  g_autoptr(GError) error = nullptr;
  auto mapped = vm.exporter->guest_path_to_host_path(guest_path_of(before), &error);
  g_assert_no_error(error);
  assert_cmpstring(*mapped, ==, real_path(host / "before.txt"));
}

void test_persists_across_restart() {
  if (!can_run()) return;
  TempDir state("state-XXXXXX");
  TempDir host("host-XXXXXX");
  write_file(host / "kept.txt", "kept");
  std::string uri;
  {
    Vm first;
    first.state_dir = state.path;
    first.start("org.example.Vm1");
    uri = first.export_one(host / "kept.txt", SIDEBUS_EXPORT_FLAGS_WRITABLE);
  }  // stopped at once: the export must already be on disk
  Vm second;
  second.state_dir = state.path;
  second.start("org.example.Vm1");
  g_assert_true(document_info_succeeds(second.bus->connection(), doc_id_of(uri)));
  assert_cmpstring(read_file(second.view_of(uri)), ==, "kept");
  g_assert_cmpint(write_in_place(second.view_of(uri), "still writable"), ==, 0);
  assert_cmpstring(read_file(host / "kept.txt"), ==, "still writable");
  assert_cmpstring(second.export_one(host / "kept.txt", SIDEBUS_EXPORT_FLAGS_NONE), ==, uri);
  g_autoptr(GError) error = nullptr;
  auto host_path = second.exporter->guest_path_to_host_path(guest_path_of(uri), &error);
  g_assert_no_error(error);
  assert_cmpstring(host_path->c_str(), ==, real_path(host / "kept.txt"));
}

void test_two_vms_are_isolated() {
  if (!can_run()) return;
  Vm a, b;
  a.start("org.example.VmA");
  b.start("vm-b");  // not an app id: mapped
  assert_cmpstring(b.exporter->app_id(), ==, "dev.sidebus.vm.vm-b");
  TempDir host("host-XXXXXX");
  write_file(host / "a.txt", "for A");
  write_file(host / "b.txt", "for B");
  std::string uri_a = a.export_one(host / "a.txt", SIDEBUS_EXPORT_FLAGS_NONE);
  std::string uri_b = b.export_one(host / "b.txt", SIDEBUS_EXPORT_FLAGS_NONE);
  assert_cmpstring(read_file(a.view_of(uri_a)), ==, "for A");
  assert_cmpstring(read_file(b.view_of(uri_b)), ==, "for B");

  const std::string id_a = doc_id_of(uri_a), id_b = doc_id_of(uri_b);
  if (id_a == id_b) {
    g_test_skip("both portals drew the same random document id; nothing to compare");
    return;
  }
  // B's bus does not know A's document, by path or by id, nor does its mount show it.
  assert_cmpstring(lookup_document(b.bus->connection(), host / "a.txt"), ==, "");
  g_assert_false(document_info_succeeds(b.bus->connection(), id_a));
  g_assert_false(path_exists(b.view_of(uri_a)));
  g_assert_false(path_exists(b.exporter->guest_view_path() + "/" + id_a));
  g_assert_false(path_exists(b.bus->documents_mount() + "/" + id_a));
  g_autoptr(GError) error = nullptr;
  g_assert_false(b.exporter->guest_path_to_host_path(guest_path_of(uri_a), &error).has_value());
  g_assert_error(error, SIDEBUS_ERROR, SIDEBUS_ERROR_NOT_ALLOWED);
  // And the other way round.
  assert_cmpstring(lookup_document(a.bus->connection(), host / "b.txt"), ==, "");
  g_assert_false(path_exists(a.view_of(uri_b)));
}

void test_runtime_dir_in_use_or_stale() {
  if (!can_run()) return;
  Vm vm;
  vm.start("org.example.Vm1");
  TempDir other_state("state-XXXXXX");
  g_autoptr(GError) error = nullptr;
  auto second = PrivateBus::start({vm.runtime.path, other_state.path, "second"}, &error);
  g_assert_null(second.get());
  g_assert_error(error, G_IO_ERROR, G_IO_ERROR_EXISTS);
  g_test_message("%s", error->message);
  g_assert_true(is_fuse_mount(vm.bus->documents_mount()));  // the first one is untouched
  g_assert_true(name_has_owner(vm.bus->connection(), kDocumentsName));

  // A socket nobody listens on any more (a crashed broker) is replaced.
  Vm crashed;
  std::string socket_path = crashed.runtime / "private-bus.sock";
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un address = {};
  address.sun_family = AF_UNIX;
  g_strlcpy(address.sun_path, socket_path.c_str(), sizeof address.sun_path);
  g_assert_cmpint(bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address), ==, 0);
  close(fd);
  g_assert_true(path_exists(socket_path));
  crashed.start("org.example.Vm2");
  g_assert_true(name_has_owner(crashed.bus->connection(), kDocumentsName));
}

void test_start_failure_names_the_child() {
  if (!can_run()) return;
  // <runtime>/doc is a file: the document portal cannot mount there.
  TempDir runtime("run-XXXXXX");
  TempDir state("state-XXXXXX");
  write_file(runtime / "doc", "in the way");
  g_autoptr(GError) error = nullptr;
  auto bus = PrivateBus::start({runtime.path, state.path, "broken"}, &error);
  g_assert_null(bus.get());
  g_assert_nonnull(error);
  g_test_message("%s", error->message);
  g_assert_nonnull(strstr(error->message, "xdg-document-portal"));
  g_assert_nonnull(strstr(error->message, "exited with status 6"));
  g_assert_nonnull(strstr(error->message, "/dev/fuse"));
  // What did start is gone again; the file in the way is left alone.
  g_assert_true(wait_until([&] { return processes_mentioning(runtime.path).empty(); }, 5000));
  g_assert_false(path_exists(runtime / "private-bus.sock"));
  g_assert_false(path_exists(runtime / "private-bus.conf"));
  assert_cmpstring(read_file(runtime / "doc"), ==, "in the way");

  // A runtime directory too deep for a unix socket path is refused up front.
  std::string deep = runtime.path + "/" + std::string(100, 'd');
  g_clear_error(&error);
  bus = PrivateBus::start({deep, state.path, "deep"}, &error);
  g_assert_null(bus.get());
  g_assert_error(error, G_IO_ERROR, G_IO_ERROR_FILENAME_TOO_LONG);
}

int run_tests(int argc, char** argv) {
  g_test_init(&argc, &argv, nullptr);
  g_log_set_writer_func(log_writer, nullptr, nullptr);
  // errors.cpp also maps org.freedesktop.DBus.Error.NotSupported and
  // LimitsExceeded, which G_DBUS_ERROR owns: whichever domain registers second
  // warns. Not this test's subject: register both here, GIO's first (as in the
  // broker), without making that warning fatal.
  GLogLevelFlags fatal = g_log_set_always_fatal(GLogLevelFlags(G_LOG_FATAL_MASK));
  (void)G_DBUS_ERROR;
  (void)SIDEBUS_ERROR;
  g_log_set_always_fatal(fatal);
  g_test_add_func("/private-bus/app-id-for-vm", test_app_id_for_vm);
  g_test_add_func("/private-bus/start", test_start);
  g_test_add_func("/private-bus/start-failure-names-the-child", test_start_failure_names_the_child);
  g_test_add_func("/private-bus/export/read-only", test_export_read_only);
  g_test_add_func("/private-bus/export/writable", test_export_writable);
  g_test_add_func("/private-bus/export/for-save", test_export_for_save);
  g_test_add_func("/private-bus/export/directory", test_export_directory);
  g_test_add_func("/private-bus/export/rejects", test_export_rejects);
  g_test_add_func("/private-bus/guest-path-to-host-path", test_guest_path_to_host_path);
  g_test_add_func("/private-bus/stop-leaves-nothing", test_stop_leaves_nothing);
  g_test_add_func("/private-bus/restart/document-portal", test_document_portal_restarted);
  g_test_add_func("/private-bus/restart/bus", test_bus_restarted);
  g_test_add_func("/private-bus/persists-across-restart", test_persists_across_restart);
  g_test_add_func("/private-bus/two-vms-are-isolated", test_two_vms_are_isolated);
  g_test_add_func("/private-bus/runtime-dir-in-use-or-stale", test_runtime_dir_in_use_or_stale);
  return g_test_run();
}

}  // namespace

// A failed assertion aborts the test process without running destructors, so
// the tests run in a child and this parent removes the scratch directory (and
// any mount left in it) whatever happened. The helpers die with the child
// (PR_SET_PDEATHSIG).
int main(int argc, char** argv) {
  g_autofree char* scratch = g_dir_make_tmp("sidebus-test-private-bus-XXXXXX", nullptr);
  g_assert_nonnull(scratch);
  scratch_dir = scratch;
  pid_t child = fork();
  g_assert_cmpint(child, >=, 0);
  if (child == 0) exit(run_tests(argc, argv));  // exit(): lets LeakSanitizer run
  int status = 0;
  while (waitpid(child, &status, 0) < 0 && errno == EINTR) {
  }
  g_usleep(200 * 1000);  // the helpers get SIGTERM as the child dies; let them unmount
  remove_tree(scratch_dir);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return WEXITSTATUS(status);
}
