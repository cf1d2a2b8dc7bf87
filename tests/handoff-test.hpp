// handoff-test.hpp — what test-print, test-email and test-wallpaper share:
// the libportal application in the guest (handoff-client.cpp) and its
// report, guest calls with fds, documents shared with the VM, and a look
// into the broker's directories of host copies. Header-only: the three test
// programs include it; the support library (tests/support/) stays the place
// for what every test needs.
#pragma once

#include <fcntl.h>
#include <ftw.h>
#include <glib/gstdio.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <string>
#include <vector>

#include "support/assert.hpp"
#include "support/files.hpp"
#include "support/host-portal.hpp"
#include "support/vm.hpp"

namespace sidebus::test {

inline constexpr char kNotSupported[] = "org.freedesktop.DBus.Error.NotSupported";
inline constexpr char kLimitsExceeded[] = "org.freedesktop.DBus.Error.LimitsExceeded";

inline void assert_error(const GError* error, const char* name, const char* message_part) {
  if (error == nullptr) g_error("the call succeeded; expected %s (“%s”)", name, message_part);
  assert_str_eq(remote_error_name(error), name);
  if (strstr(error->message, message_part) == nullptr)
    g_error("error message “%s” does not mention “%s”", error->message, message_part);
}

// What the libportal application in the guest saw.
struct ClientReport {
  std::string outcome;  // ok, cancelled, failed
  std::string error;
  VariantPtr results;   // PreparePrint's, when it ran
  std::string raw;
};

inline ClientReport run_handoff_client(Vm& vm, std::vector<std::string> args) {
  args.insert(args.begin(), env_path("SIDEBUS_HANDOFF_CLIENT"));
  GuestBus::Output output = vm.guest().run_as_guest(args);
  if (!output.status.success())
    throw FixtureError("handoff-client " + output.status.describe() + ": " + output.err + output.out);
  g_test_message("guest application: %s", output.out.c_str());
  ClientReport report;
  report.raw = output.out;
  VariantPtr dict = parse("a{sv}", output.out);
  report.outcome = lookup_string_or(dict.get(), "outcome");
  report.error = lookup_string_or(dict.get(), "error");
  report.results = lookup_optional(dict.get(), "results");
  return report;
}

// A guest file opened as an application opens it (-1: FixtureError).
inline int open_guest_file(const std::string& path, int flags = O_RDONLY) {
  int fd = open(path.c_str(), flags | O_CLOEXEC);
  if (fd < 0) throw FixtureError("cannot open " + path + ": " + g_strerror(errno));
  return fd;
}

// The read end of a pipe that carries @contents and then ends.
inline int pipe_with(const std::string& contents) {
  int fds[2];
  if (pipe(fds) != 0) throw FixtureError("pipe failed");
  if (write(fds[1], contents.data(), contents.size()) != ssize_t(contents.size())) throw FixtureError("pipe write");
  close(fds[1]);
  return fds[0];
}

// A sealed memfd named @name holding @contents: what fd forwarding on a
// byte-only link makes of a guest file's content (DESIGN.md, "Link v2").
inline int sealed_memfd(const char* name, const std::string& contents) {
  int fd = memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0 || write(fd, contents.data(), contents.size()) != ssize_t(contents.size()) ||
      fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL) != 0)
    throw FixtureError("memfd failed");
  return fd;
}

// One end of a socket pair that carries @contents and then ends.
inline int socket_with(const std::string& contents) {
  int fds[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) throw FixtureError("socketpair failed");
  if (write(fds[1], contents.data(), contents.size()) != ssize_t(contents.size())) throw FixtureError("socket write");
  close(fds[1]);
  return fds[0];
}

// A host file with known contents, shared with the guest as a document
// through the FileChooser (the VM needs "filechooser" enabled).
struct SharedDocument {
  TempDir host_files{"sidebus-desktop-host-files"};
  std::string host_path;
  std::string guest_path;
  std::string contents;

  SharedDocument(Vm& vm, const std::string& name, std::string bytes) : contents(std::move(bytes)) {
    host_path = host_files.write_file("shared/" + name, contents);
    guest_path = vm.share_document(host_path);
  }
};

// The entries of the broker's private directories of host copies for
// @portal (<runtime>/sidebus-<portal>-…): each copy is one numbered
// directory there. Paths of the copies' files.
inline std::vector<std::string> host_copies(Vm& vm, const std::string& portal) {
  std::vector<std::string> copies;
  std::string runtime = vm.broker().dir() / "xdg-runtime";
  g_autoptr(GDir) dir = g_dir_open(runtime.c_str(), 0, nullptr);
  while (const char* name = dir ? g_dir_read_name(dir) : nullptr) {
    if (!g_str_has_prefix(name, ("sidebus-" + portal + "-").c_str())) continue;
    std::string store = runtime + "/" + name;
    g_autoptr(GDir) numbers = g_dir_open(store.c_str(), 0, nullptr);
    while (const char* number = numbers ? g_dir_read_name(numbers) : nullptr) {
      std::string copy_dir = store + "/" + number;
      g_autoptr(GDir) files = g_dir_open(copy_dir.c_str(), 0, nullptr);
      while (const char* file = files ? g_dir_read_name(files) : nullptr) copies.push_back(copy_dir + "/" + file);
    }
  }
  return copies;
}

// Deletes @path and everything under it (a test's own files), if it exists.
inline void remove_tree_for_test(const std::string& path) {
  nftw(
      path.c_str(), [](const char* entry, const struct stat*, int, struct FTW*) { return remove(entry); }, 16,
      FTW_DEPTH | FTW_PHYS);
}

// The backend calls of @method.
inline std::vector<BackendCall> calls_of(HostPortal& host, const char* method) {
  std::vector<BackendCall> calls;
  for (BackendCall& call : host.backend_calls())
    if (call.method == method) calls.push_back(std::move(call));
  return calls;
}

// The broker is still there for well-behaved clients: the portal's version
// property answers.
inline void assert_portal_up(Vm& vm, const char* interface) {
  VariantPtr version = portal_property(vm.guest().connection(), interface, "version");
  g_assert_cmpuint(g_variant_get_uint32(version.get()), >=, 1);
}

}  // namespace sidebus::test
