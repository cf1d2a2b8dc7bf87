// SPDX-License-Identifier: LGPL-2.1-or-later
// test-openuri.cpp — the OpenURI portal across the VM boundary, real parts
// only: the host's xdg-desktop-portal (1.16) choosing and launching a real
// host application, the test backend's AppChooser where the portal asks the
// "user", the broker with the openuri and filechooser plugins and its private
// document portal, a guest bus with the real agent, and guest clients (plain
// D-Bus calls, gdbus, gio open).
//
// The host application is a recorder: a .desktop file (Exec=recorder.sh %u)
// registered as the default for the test's schemes and for text/plain and
// folders, through XDG_DATA_DIRS (set in main(), so the host portal and the
// broker see it; guest clients are given XDG_DATA_DIRS=/nonexistent so that
// they cannot open anything locally and must use the portal). Every launch
// leaves one file with its argv and environment, so the tests assert exactly
// what the host was asked to open — and that refused calls never got there.
//
// Guest documents live at the broker's default guest documents path, this
// VM's view of the document mount (<broker runtime>/doc/by-app/<app id>):
// clients of the guest bus run on this machine, so they open document files
// there and send real fds.
#include <fcntl.h>
#include <glib/gstdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <string>
#include <vector>

#include "support/assert.hpp"
#include "support/files.hpp"
#include "support/vm.hpp"

using namespace sidebus::test;

namespace {

constexpr char kOpenUri[] = "org.freedesktop.portal.OpenURI";
constexpr char kNotSupported[] = "org.freedesktop.DBus.Error.NotSupported";
// A valid app id: the document portal grants documents to it.
constexpr char kVmName[] = "dev.sidebus.OpenUriTest";
constexpr char kRecorderId[] = "sidebus-test-recorder";
constexpr Timeout kNothingHappens = 1500ms;

// ---- small helpers ---------------------------------------------------------

void assert_error(const GError* error, const char* name, const char* message_part) {
  g_assert_nonnull(error);
  assert_str_eq(remote_error_name(error), name);
  if (strstr(error->message, message_part) == nullptr)
    g_error("error message “%s” does not mention “%s”", error->message, message_part);
}

// ---- the host's application -------------------------------------------------

// One launch of the recorder: its arguments and what the portal put in its
// environment.
struct Launch {
  // GIO expands Exec's %u to a plain path for local files: args holds URIs
  // either way (see launches()).
  std::vector<std::string> args;
  std::string activation_token;
  std::string parent_window;
};

class HostApplication {
 public:
  HostApplication() : dir_("sidebus-ou-app") {
    opened_ = dir_.make_dir("opened");
    recorder_ = dir_.write_file("recorder.sh",
                                "#!/bin/sh\n"
                                "# The test's host application: records each launch in its own file.\n"
                                "tmp=\"" +
                                    opened_ +
                                    "/.$$\"\n"
                                    "{\n"
                                    "  printf 'token=%s\\n' \"${XDG_ACTIVATION_TOKEN-}\"\n"
                                    "  printf 'parent=%s\\n' \"${PARENT_WINDOW_ID-}\"\n"
                                    "  for arg in \"$@\"; do printf 'arg=%s\\n' \"$arg\"; done\n"
                                    "} > \"$tmp\"\n"
                                    "mv \"$tmp\" \"" +
                                    opened_ + "/$$\"\n");
    chmod(recorder_.c_str(), 0755);
    const char* types[] = {"x-scheme-handler/https",
                           "x-scheme-handler/http",
                           "x-scheme-handler/mailto",
                           "x-scheme-handler/sidebus-test",
                           "text/plain",
                           "inode/directory"};
    std::string mime_types, defaults;
    for (const char* type : types) {
      mime_types += std::string(type) + ";";
      defaults += std::string(type) + "=" + kRecorderId + ".desktop\n";
    }
    dir_.write_file(std::string("share/applications/") + kRecorderId + ".desktop",
                    "[Desktop Entry]\n"
                    "Type=Application\n"
                    "Name=sidebus test recorder\n"
                    "Exec=" +
                        recorder_ +
                        " %u\n"
                        "MimeType=" +
                        mime_types +
                        "\n"
                        "NoDisplay=true\n");
    dir_.write_file("share/applications/mimeapps.list", "[Default Applications]\n" + defaults);
  }

  std::string data_dir() const { return dir_ / "share"; }

  std::vector<Launch> launches() const {
    std::vector<Launch> launches;
    g_autoptr(GDir) dir = g_dir_open(opened_.c_str(), 0, nullptr);
    while (const char* name = dir ? g_dir_read_name(dir) : nullptr) {
      if (name[0] == '.') continue;
      Launch launch;
      g_auto(GStrv) lines = g_strsplit(read_file(opened_ + "/" + name).value_or("").c_str(), "\n", -1);
      for (char** line = lines; *line != nullptr; line++) {
        if (g_str_has_prefix(*line, "arg="))
          launch.args.emplace_back((*line)[4] == '/' ? uri_for(*line + 4) : std::string(*line + 4));
        if (g_str_has_prefix(*line, "token=")) launch.activation_token = *line + 6;
        if (g_str_has_prefix(*line, "parent=")) launch.parent_window = *line + 7;
      }
      launches.push_back(std::move(launch));
    }
    return launches;
  }

  // Waits for @count launches in all; returns them (fewer on timeout).
  std::vector<Launch> wait_for_launches(size_t count, Timeout timeout = kDefaultTimeout) const {
    wait_until([&] { return launches().size() >= count; }, timeout);
    return launches();
  }

  void forget() const {
    g_autoptr(GDir) dir = g_dir_open(opened_.c_str(), 0, nullptr);
    std::vector<std::string> names;
    while (const char* name = dir ? g_dir_read_name(dir) : nullptr) names.emplace_back(name);
    for (const std::string& name : names) g_unlink((opened_ + "/" + name).c_str());
  }

 private:
  TempDir dir_;
  std::string opened_;
  std::string recorder_;
};

HostApplication* host_application = nullptr;  // created in main()

// ---- requests with an fd --------------------------------------------------------

// OpenFile / OpenDirectory with @fd as handle 0 (fd < 0: the handle is sent
// without any fd); @options as they are.
std::unique_ptr<PortalRequest> fd_request(GDBusConnection* connection, const char* method, int fd,
                                          const std::string& options = "{}") {
  VariantPtr parsed = parse("a{sv}", options);
  return std::make_unique<PortalRequest>(connection, kPortalBusName, kOpenUri, method,
                                         g_variant_new("(sh@a{sv})", "x11:1234", 0, parsed.get()),
                                         fd >= 0 ? std::vector<int>{fd} : std::vector<int>{});
}

// ---- the VM ------------------------------------------------------------------

// How the guest reaches the broker.
enum class Link {
  Native,     // unix socket that passes fds (SCM_RIGHTS)
  ByteOnly,   // unix:PATH,nofds at the broker (hybrid vsock, a VMM's chardev): fds forwarded
  VsockLike,  // byte-only at both ends, as vsock is (the agent connects to unix:PATH,nofds): fds forwarded
  Protocol1,  // byte-only, and an agent of link protocol 1: no fds at all
};

const char* link_name(Link link) {
  switch (link) {
    case Link::Native:
      return "native";
    case Link::ByteOnly:
      return "byte-only";
    case Link::VsockLike:
      return "vsock-like";
    case Link::Protocol1:
      return "protocol-1";
  }
  return "?";
}

struct OpenUriVmOptions {
  // The portals.openuri section (JSON); enabled is added.
  std::string openuri = "{}";
  Link link = Link::Native;
  // The guest documents path is a symlink to this VM's by-app view of the
  // document mount, as a VMM shares it (test-filechooser's layout); by
  // default it is the view itself.
  bool symlinked_documents = false;
};

// The support library's Vm with OpenURI and FileChooser enabled, and a host
// "user" who picks the recorder whenever the host portal asks.
class OpenUriVm : public Vm {
 public:
  explicit OpenUriVm(OpenUriVmOptions options = {})
      : Vm({.name = kVmName,
            .portals = {"filechooser", "openuri"},
            .config = {{"60-openuri.json", R"({"portals": {"openuri": )" + options.openuri + "}}"}},
            .byte_only = options.link != Link::Native,
            .documents = options.symlinked_documents ? GuestDocuments::kSymlinkToView
                                                     : GuestDocuments::kBrokerDefault,
            .agent_byte_only = options.link == Link::VsockLike,
            .agent_args = options.link == Link::Protocol1 ? std::vector<std::string>{"--link-protocol", "1"}
                                                          : std::vector<std::string>{}}) {
    host_application->forget();
    if (options.link == Link::ByteOnly || options.link == Link::VsockLike) {
      // What the broker said when the link came up: this is the framed link.
      if (!wait_until([&] { return broker().process().log().find("fds forwarded") != std::string::npos; }))
        throw FixtureError("the byte-only link does not forward fds; broker log:\n" + broker().process().log());
    }
    host().set_reply("ChooseApplication", kResponseSuccess, std::string("{'choice': <'") + kRecorderId + "'>}");
  }

  // OpenFile / OpenDirectory with an fd of @path (flags for open()).
  std::unique_ptr<PortalRequest> open_fd(const char* method, const std::string& path, int flags = O_RDONLY,
                                         const std::string& options = "{}") {
    int fd = open(path.c_str(), flags | O_CLOEXEC);
    if (fd < 0) throw FixtureError("cannot open " + path + ": " + g_strerror(errno));
    auto request = fd_request(guest().connection(), method, fd, options);
    close(fd);
    return request;
  }

  // Nothing (more than @expected launches) reached the host application,
  // checked after a quiet moment.
  void assert_nothing_launched(size_t expected = 0) {
    wait_until([] { return false; }, kNothingHappens);
    std::vector<Launch> launches = host_application->launches();
    if (launches.size() > expected)
      g_error("the host application was launched %zu times, expected %zu; first with %s", launches.size(), expected,
              launches[0].args.empty() ? "(nothing)" : launches[0].args[0].c_str());
  }
};

// The document a test opens: a host file with known contents, shared with
// the guest through the FileChooser.
struct SharedDocument {
  TempDir host_files{"sidebus-ou-host-files"};
  std::string host_path;
  std::string guest_path;

  SharedDocument(Vm& vm, const char* name = "report.txt", const char* contents = "the host's report\n") {
    host_path = host_files.write_file(std::string("folder/") + name, contents);
    guest_path = vm.share_document(host_path);
  }
};

// ---- OpenURI -------------------------------------------------------------------

// A link clicked in the guest reaches the host's handler byte for byte; the
// guest's window handle does not; no dialog for http(s) (the host default).
void test_https_reaches_handler() {
  OpenUriVm vm;
  const std::string uri = "https://example.com/a%20b/%C3%A9t%C3%A9?q=1&r=%2F#frag";
  auto request = vm.open_uri(uri);
  g_assert_null(request->error());
  g_assert_true(request->wait_for_response());
  g_assert_cmpuint(request->response(), ==, kResponseSuccess);
  auto launches = host_application->wait_for_launches(1);
  g_assert_cmpuint(launches.size(), ==, 1);
  g_assert_cmpuint(launches[0].args.size(), ==, 1);
  assert_str_eq(launches[0].args[0], uri);
  assert_str_eq(launches[0].parent_window, "");  // "x11:1234" means nothing on the host
  g_assert_cmpuint(vm.host().backend_calls().size(), ==, 0);
}

// Refused URIs get a D-Bus error naming the reason and never reach the host.
void test_refused_uris() {
  OpenUriVm vm;
  struct Case {
    std::string uri;
    const char* error;
    const char* reason;
  };
  const std::string docs = vm.broker().runtime_dir() + "/doc";
  const std::vector<Case> cases = {
      {"sidebus-test:hello", kNotAllowed, "portals.openuri.schemes"},
      {"javascript:alert(1)", kNotAllowed, "the scheme “javascript” is not allowed"},
      {"file:///etc/passwd", kNotAllowed, "outside the VM's documents directory"},
      {"file://" + docs + "/../../../etc/passwd", kNotAllowed, "“.” or “..”"},
      {"file://" + docs + "/%2e%2e/%2E%2e/etc/passwd", kNotAllowed, "“.” or “..”"},
      {"file://" + docs + "/x/.%2e/y", kNotAllowed, "“.” or “..”"},
      {"file://" + docs + "/a%2fb/c", kNotAllowed, "encoded “/”"},
      {"file://" + docs + "/a%00b/c", kInvalidArgument, "NUL"},
      {"https://example.com/a%00b", kInvalidArgument, "NUL"},
      {"https://example.com/%zz", kInvalidArgument, "percent-escape"},
      {"file://otherhost" + docs + "/1234/x", kNotAllowed, "only local files"},
      {"file:relative/path", kInvalidArgument, "absolute path"},
      {"https://example.com/%ff%fe", kInvalidArgument, "UTF-8"},
      {"https://exa mple.com/", kInvalidArgument, "a space"},
      {"https://example.com/\x01", kInvalidArgument, "control character"},
      {"https://example.com/\u202egnp.exe", kInvalidArgument, "U+202E"},
      {"not a uri", kInvalidArgument, "a space"},
      {"no-scheme-here", kInvalidArgument, "not a valid absolute URI"},
      {"", kInvalidArgument, "empty"},
      {"https://example.com/" + std::string(40000, 'a'), kInvalidArgument, "longer than"},
  };
  for (const Case& c : cases) {
    g_test_message("OpenURI %.80s", c.uri.c_str());
    auto request = vm.open_uri(c.uri);
    assert_error(request->error(), c.error, c.reason);
  }
  // The file:// refusals name the documents directory they must be in.
  auto request = vm.open_uri("file:///etc/passwd");
  g_assert_nonnull(strstr(request->error()->message, docs.c_str()));
  vm.assert_nothing_launched();
  g_assert_cmpuint(vm.host().backend_calls().size(), ==, 0);
}

// A URI that is not UTF-8 cannot even be written as a D-Bus string: the guest
// bus drops the sender that tries (here, raw bytes on its socket), and
// nothing reaches the broker or the host. (Percent-encoded bytes that are not
// UTF-8 are refused by the portal: test_refused_uris.)
void test_non_utf8_on_the_wire() {
  OpenUriVm vm;
  g_autoptr(GError) error = nullptr;
  g_autoptr(GIOStream) stream = g_dbus_address_get_stream_sync(vm.guest().address().c_str(), nullptr, nullptr, &error);
  g_assert_no_error(error);
  GOutputStream* out = g_io_stream_get_output_stream(stream);
  GInputStream* in = g_io_stream_get_input_stream(stream);
  auto write_all = [&](const void* data, gsize size) {
    g_assert_true(g_output_stream_write_all(out, data, size, nullptr, nullptr, &error));
  };
  auto read_line = [&] {
    std::string line;
    char c;
    while (g_input_stream_read(in, &c, 1, nullptr, nullptr) == 1 && c != '\n') line += c;
    return line;
  };
  g_autofree char* uid = g_strdup_printf("%u", getuid());
  g_autofree char* hex_uid = g_strdup("");
  for (const char* c = uid; *c; c++) {
    char* longer = g_strdup_printf("%s%02x", hex_uid, *c);
    g_free(hex_uid);
    hex_uid = longer;
  }
  std::string auth = std::string(1, '\0') + "AUTH EXTERNAL " + hex_uid + "\r\n";
  write_all(auth.data(), auth.size());
  g_assert_true(g_str_has_prefix(read_line().c_str(), "OK"));
  write_all("BEGIN\r\n", 7);

  auto send = [&](GDBusMessage* message, guint32 serial, const char* placeholder, const char* replacement) {
    g_dbus_message_set_serial(message, serial);
    gsize size = 0;
    g_autofree guchar* blob = g_dbus_message_to_blob(message, &size, G_DBUS_CAPABILITY_FLAGS_NONE, &error);
    g_assert_no_error(error);
    if (placeholder != nullptr) {
      guchar* at = static_cast<guchar*>(memmem(blob, size, placeholder, strlen(placeholder)));
      g_assert_nonnull(at);
      memcpy(at, replacement, strlen(replacement));  // same length: the message stays well-formed but for UTF-8
    }
    write_all(blob, size);
  };
  g_autoptr(GDBusMessage) hello =
      g_dbus_message_new_method_call("org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus", "Hello");
  send(hello, 1, nullptr, nullptr);
  g_autoptr(GDBusMessage) call = g_dbus_message_new_method_call(kPortalBusName, kPortalPath, kOpenUri, "OpenURI");
  g_dbus_message_set_body(call, g_variant_new("(ssa{sv})", "", "https://example.com/PLACEHOLDER", nullptr));
  send(call, 2, "PLACEHOLDER", "\xff\xfe\xfd\xc0\xaf-bytes");

  // The bus answers Hello, then hangs up on us: read to the end.
  bool closed = wait_until(
      [&] {
        char buffer[4096];
        GSocket* socket = g_socket_connection_get_socket(G_SOCKET_CONNECTION(stream));
        if (!g_socket_condition_check(socket, G_IO_IN)) return false;
        gssize n = g_input_stream_read(in, buffer, sizeof buffer, nullptr, nullptr);
        return n <= 0;
      },
      10s);
  g_assert_true(closed);
  vm.assert_nothing_launched();
  // The portal is still there for well-behaved clients.
  auto request = vm.open_uri("https://example.com/after");
  g_assert_true(request->wait_for_response());
  g_assert_cmpuint(host_application->wait_for_launches(1).size(), ==, 1);
}

// portals.openuri.schemes replaces the default list.
void test_configured_schemes() {
  OpenUriVm vm({.openuri = R"({"schemes": ["https", "sidebus-test"]})"});
  auto allowed = vm.open_uri("SIDEBUS-TEST:hello/world");  // schemes are case-insensitive
  g_assert_null(allowed->error());
  g_assert_true(allowed->wait_for_response());
  g_assert_cmpuint(allowed->response(), ==, kResponseSuccess);
  auto refused = vm.open_uri("mailto:someone@example.com");  // a default, but not in this list
  assert_error(refused->error(), kNotAllowed, "allowed: https, sidebus-test");
  auto launches = host_application->wait_for_launches(1);
  g_assert_cmpuint(launches.size(), ==, 1);
  assert_str_eq(launches[0].args.at(0), "SIDEBUS-TEST:hello/world");
  vm.assert_nothing_launched(1);
}

// ask, activation_token and writable travel; wrong types are refused;
// unknown options are dropped.
void test_options() {
  OpenUriVm vm;
  // activation_token: 1.16 hands it to the application it launches directly
  // (from the chooser path it takes the backend's token instead).
  auto direct = vm.open_uri("https://example.com/token",
                            "{'activation_token': <'token-1234_TIME42'>, 'writable': <false>, "
                            "'unknown': <'dropped'>}");
  g_assert_null(direct->error());
  g_assert_true(direct->wait_for_response());
  g_assert_cmpuint(direct->response(), ==, kResponseSuccess);
  auto launches = host_application->wait_for_launches(1);
  g_assert_cmpuint(launches.size(), ==, 1);
  assert_str_eq(launches[0].activation_token, "token-1234_TIME42");
  g_assert_cmpuint(vm.host().backend_calls().size(), ==, 0);  // the default browser, no dialog

  // ask: the host portal asks the user instead of using the default browser.
  host_application->forget();
  auto asked = vm.open_uri("https://example.com/ask", "{'ask': <true>}");
  g_assert_null(asked->error());
  g_assert_true(asked->wait_for_response());
  g_assert_cmpuint(asked->response(), ==, kResponseSuccess);
  auto calls = vm.host().backend_calls();
  g_assert_cmpuint(calls.size(), ==, 1);
  assert_str_eq(calls[0].method, "ChooseApplication");
  assert_str_eq(calls[0].parent_window, "");
  g_assert_cmpuint(host_application->wait_for_launches(1).size(), ==, 1);

  auto wrong_type = vm.open_uri("https://example.com/x", "{'ask': <'yes'>}");
  assert_error(wrong_type->error(), kInvalidArgument, "option 'ask' must be of type 'b'");
  auto bad_token = vm.open_uri("https://example.com/x", "{'activation_token': <'a\\nb'>}");
  assert_error(bad_token->error(), kInvalidArgument, "activation_token");
  auto bad_handle = vm.open_uri("https://example.com/x", "{'handle_token': <'no/slashes'>}");
  g_assert_nonnull(bad_handle->error());
}

// The host application's dialog: cancelling it, failing, and closing the
// request from the guest, as with the FileChooser.
void test_cancel_and_close() {
  OpenUriVm vm;
  vm.host().set_reply("ChooseApplication", kResponseCancelled);
  auto cancelled = vm.open_uri("https://example.com/cancel", "{'ask': <true>}");
  g_assert_true(cancelled->wait_for_response());
  g_assert_cmpuint(cancelled->response(), ==, kResponseCancelled);

  vm.host().set_reply("ChooseApplication", kResponseDBusError);
  auto failed = vm.open_uri("https://example.com/fail", "{'ask': <true>}");
  g_assert_true(failed->wait_for_response());
  g_assert_cmpuint(failed->response(), ==, kResponseOther);

  vm.host().reset_backend();
  vm.host().set_reply("ChooseApplication", kResponseWaitForClose);
  auto closed = vm.open_uri("https://example.com/close", "{'ask': <true>}");
  g_assert_null(closed->error());
  g_assert_true(vm.host().wait_for_backend_calls(1));
  g_autoptr(GError) error = nullptr;
  g_assert_true(closed->close(&error));
  g_assert_no_error(error);
  g_assert_true(wait_until([&] {
    auto calls = vm.host().backend_calls();
    return calls.size() == 1 && calls[0].closed;
  }));
  g_assert_false(closed->wait_for_response(kNothingHappens));  // a closed request has no Response
  vm.assert_nothing_launched();
}

// ---- documents ---------------------------------------------------------------------

// A document the guest got from the FileChooser opens as the host file it
// stands for: through OpenFile (fd), OpenURI (its file:// URI) and
// OpenDirectory (the host folder that holds it).
void test_open_document(Link link) {
  OpenUriVm vm({.link = link});
  SharedDocument document(vm);
  assert_str_eq(read_file(document.guest_path).value_or("(unreadable)"), "the host's report\n");
  const std::string host_uri = uri_for(document.host_path);

  auto by_fd = vm.open_fd("OpenFile", document.guest_path);
  g_assert_null(by_fd->error());
  g_assert_true(by_fd->wait_for_response());
  g_assert_cmpuint(by_fd->response(), ==, kResponseSuccess);
  auto launches = host_application->wait_for_launches(1);
  g_assert_cmpuint(launches.size(), ==, 1);
  assert_str_eq(launches[0].args.at(0), host_uri);
  host_application->forget();

  auto by_uri = vm.open_uri(uri_for(document.guest_path), "{'writable': <true>}");
  g_assert_null(by_uri->error());
  g_assert_true(by_uri->wait_for_response());
  g_assert_cmpuint(by_uri->response(), ==, kResponseSuccess);
  launches = host_application->wait_for_launches(1);
  g_assert_cmpuint(launches.size(), ==, 1);
  assert_str_eq(launches[0].args.at(0), host_uri);
  host_application->forget();

  // 1.16 shows folders through org.freedesktop.FileManager1 or, as here
  // where there is none, by opening the folder with its default handler.
  auto folder = vm.open_fd("OpenDirectory", document.guest_path);
  g_assert_null(folder->error());
  g_assert_true(folder->wait_for_response());
  g_assert_cmpuint(folder->response(), ==, kResponseSuccess);
  launches = host_application->wait_for_launches(1);
  g_assert_cmpuint(launches.size(), ==, 1);
  g_autofree char* host_folder = g_path_get_dirname(document.host_path.c_str());
  assert_str_eq(launches[0].args.at(0), uri_for(host_folder));

  // writable needs a writable fd.
  auto read_only = vm.open_fd("OpenFile", document.guest_path, O_RDONLY, "{'writable': <true>}");
  assert_error(read_only->error(), kNotAllowed, "read-only");

  // A document id the VM was not given, or a wrong name, is refused by the core.
  std::string other = document.guest_path.substr(0, document.guest_path.rfind('/')) + "/other.txt";
  auto wrong_name = vm.open_uri(uri_for(other));
  assert_error(wrong_name->error(), kNotAllowed, "other.txt");
}

// The same through a documents path that is a symlink: the fd's path is the
// resolved one, and still names the document.
void test_symlinked_documents() {
  OpenUriVm vm({.symlinked_documents = true});
  SharedDocument document(vm);
  g_assert_true(g_str_has_prefix(document.guest_path.c_str(), (vm.guest_files() / "documents/").c_str()));
  auto by_fd = vm.open_fd("OpenFile", document.guest_path);
  g_assert_null(by_fd->error());
  g_assert_true(by_fd->wait_for_response());
  g_assert_cmpuint(by_fd->response(), ==, kResponseSuccess);
  auto by_uri = vm.open_uri(uri_for(document.guest_path));
  g_assert_null(by_uri->error());
  g_assert_true(by_uri->wait_for_response());
  auto launches = host_application->wait_for_launches(2);
  g_assert_cmpuint(launches.size(), ==, 2);
  for (const Launch& launch : launches) assert_str_eq(launch.args.at(0), uri_for(document.host_path));
}

// An fd of a guest file outside the documents directory is refused by
// default, with the configuration key that would allow a copy.
void test_outside_documents_refused(Link link) {
  OpenUriVm vm({.link = link});
  std::string guest_file = vm.guest_files().write_file("notes.txt", "the guest's notes\n");
  auto request = vm.open_fd("OpenFile", guest_file);
  assert_error(request->error(), kNotAllowed, "portals.openuri.copy_outside_documents");
  auto folder = vm.open_fd("OpenDirectory", vm.guest_files().path(), O_RDONLY | O_DIRECTORY);
  if (link == Link::Native)
    assert_error(folder->error(), kNotAllowed, "not in the VM's documents directory");
  else  // a folder outside the documents cannot even cross a byte-only link
    assert_error(folder->error(), kNotSupported, "a directory outside the VM's documents");
  // Not a file at all.
  int pipe_fds[2];
  g_assert_cmpint(pipe(pipe_fds), ==, 0);
  auto piped = fd_request(vm.guest().connection(), "OpenFile", pipe_fds[0], "{}");
  close(pipe_fds[0]);
  close(pipe_fds[1]);
  assert_error(piped->error(), kNotAllowed, "pipe");
  // A handle that names no fd of the message.
  auto no_fd = fd_request(vm.guest().connection(), "OpenFile", -1, "{}");
  assert_error(no_fd->error(), kInvalidArgument, "handle 0");
  vm.assert_nothing_launched();
}

// copy_outside_documents: the host application gets a host copy, which is
// deleted when the request fails and when the VM's link goes away.
void test_copy_outside_documents(Link link) {
  OpenUriVm vm({.openuri = R"({"copy_outside_documents": true})", .link = link});
  std::string guest_file = vm.guest_files().write_file("sub/notes.txt", "the guest's notes\n");
  auto request = vm.open_fd("OpenFile", guest_file);
  g_assert_null(request->error());
  g_assert_true(request->wait_for_response());
  g_assert_cmpuint(request->response(), ==, kResponseSuccess);
  auto launches = host_application->wait_for_launches(1);
  g_assert_cmpuint(launches.size(), ==, 1);
  std::string copy = path_of(launches[0].args.at(0));
  g_test_message("the host opened the copy %s", copy.c_str());
  g_assert_true(g_str_has_prefix(copy.c_str(), (vm.broker().dir() / "xdg-runtime/sidebus-openuri-").c_str()));
  g_autofree char* copy_name = g_path_get_basename(copy.c_str());
  g_assert_cmpstr(copy_name, ==, "notes.txt");
  assert_str_eq(read_file(copy).value_or("(unreadable)"), "the guest's notes\n");
  struct stat st;
  g_assert_cmpint(stat(copy.c_str(), &st), ==, 0);
  g_assert_cmpuint(st.st_mode & 0777, ==, 0600);

  // A copy nobody opens is deleted at once.
  vm.host().set_reply("ChooseApplication", kResponseCancelled);
  host_application->forget();
  auto cancelled = vm.open_fd("OpenFile", guest_file, O_RDONLY, "{'ask': <true>}");
  g_assert_true(cancelled->wait_for_response());
  g_assert_cmpuint(cancelled->response(), ==, kResponseCancelled);
  g_autofree char* copies_dir = g_path_get_dirname(copy.c_str());
  g_autofree char* store_dir = g_path_get_dirname(copies_dir);
  g_autoptr(GDir) dir = g_dir_open(store_dir, 0, nullptr);
  int entries = 0;
  while (g_dir_read_name(dir) != nullptr) entries++;
  g_assert_cmpint(entries, ==, 1);  // only the first, opened copy

  // Folders are not copied; O_PATH fds neither on a native link (the broker
  // would read with its own rights). Over a byte-only link the agent reads
  // the file itself, with the guest's rights, and the copy is of that.
  auto folder = vm.open_fd("OpenFile", vm.guest_files().path() + "/sub", O_RDONLY | O_DIRECTORY);
  if (link == Link::Native) {
    assert_error(folder->error(), kNotAllowed, "only files are copied");
    auto opath = vm.open_fd("OpenFile", guest_file, O_PATH);
    assert_error(opath->error(), kNotAllowed, "O_PATH");
  } else {
    assert_error(folder->error(), kNotSupported, "a directory outside the VM's documents");
    vm.host().set_reply("ChooseApplication", kResponseSuccess, std::string("{'choice': <'") + kRecorderId + "'>}");
    host_application->forget();
    auto opath = vm.open_fd("OpenFile", guest_file, O_PATH);
    g_assert_null(opath->error());
    g_assert_true(opath->wait_for_response());
    g_assert_cmpuint(opath->response(), ==, kResponseSuccess);
    auto opened = host_application->wait_for_launches(1);
    g_assert_cmpuint(opened.size(), ==, 1);
    assert_str_eq(read_file(path_of(opened[0].args.at(0))).value_or("(unreadable)"), "the guest's notes\n");
  }

  // The link goes away: every copy goes with it.
  vm.stop_agent();
  g_assert_true(wait_until([&] { return !g_file_test(store_dir, G_FILE_TEST_EXISTS); }));
}

// ---- SchemeSupported, version, byte-only links ---------------------------------------

bool scheme_supported(Vm& vm, const char* scheme, GError** error) {
  VariantPtr options = parse("a{sv}", "{'unknown': <1>}");  // SchemeSupported has no options: dropped
  g_autoptr(GVariant) reply =
      g_dbus_connection_call_sync(vm.guest().connection(), kPortalBusName, kPortalPath, kOpenUri, "SchemeSupported",
                                  g_variant_new("(s@a{sv})", scheme, options.get()), G_VARIANT_TYPE("(b)"),
                                  G_DBUS_CALL_FLAGS_NONE, 10000, nullptr, error);
  gboolean supported = FALSE;
  if (reply != nullptr) g_variant_get(reply, "(b)", &supported);
  return supported;
}

void test_scheme_supported() {
  OpenUriVm vm({.openuri = R"({"schemes": ["https", "sidebus-test", "sidebus-nohandler"]})"});
  g_autoptr(GError) error = nullptr;
  g_assert_true(scheme_supported(vm, "https", &error));
  g_assert_no_error(error);
  g_assert_true(scheme_supported(vm, "SIDEBUS-TEST", &error));
  g_assert_no_error(error);
  g_assert_false(scheme_supported(vm, "sidebus-nohandler", &error));  // allowed, but the host has no handler
  g_assert_no_error(error);
  g_assert_false(scheme_supported(vm, "http", &error));  // the host has a handler, the VM may not use it
  g_assert_no_error(error);
  for (const char* bad : {"", "1abc", "ht tp", "https:"}) {
    g_assert_false(scheme_supported(vm, bad, &error));
    assert_error(error, kInvalidArgument, "not a URI scheme");
    g_clear_error(&error);
  }
  g_assert_cmpuint(vm.host().backend_calls().size(), ==, 0);
}

// version: what the host portal announces (1.16: 3), never more than we implement.
void test_version() {
  OpenUriVm vm;
  VariantPtr host_version = portal_property(vm.host().connection(), kOpenUri, "version");
  VariantPtr guest_version = portal_property(vm.guest().connection(), kOpenUri, "version");
  g_assert_cmpuint(g_variant_get_uint32(guest_version.get()), ==, MIN(g_variant_get_uint32(host_version.get()), 5u));
  // The guest sees the whole version 5 interface (SchemeSupported included).
  std::string xml = vm.guest_introspect();
  g_assert_nonnull(strstr(xml.c_str(), "SchemeSupported"));
}

// A link that cannot carry fds (byte-only, an agent of protocol 1):
// OpenFile and OpenDirectory say so; links still open.
void test_byte_only_link() {
  OpenUriVm vm({.link = Link::Protocol1});
  auto no_fd = fd_request(vm.guest().connection(), "OpenFile", -1, "{}");
  assert_error(no_fd->error(), kNotSupported, "cannot carry file descriptors");
  auto no_fd_dir = fd_request(vm.guest().connection(), "OpenDirectory", -1, "{}");
  assert_error(no_fd_dir->error(), kNotSupported, "cannot carry file descriptors");
  // With a real fd the guest bus itself refuses: the broker's end never
  // negotiated fd passing.
  std::string guest_file = vm.guest_files().write_file("notes.txt", "x");
  auto with_fd = vm.open_fd("OpenFile", guest_file);
  g_assert_nonnull(with_fd->error());
  g_test_message("a real fd on a byte-only link: %s", with_fd->error()->message);
  auto link = vm.open_uri("https://example.com/byte-only");
  g_assert_true(link->wait_for_response());
  g_assert_cmpuint(link->response(), ==, kResponseSuccess);
  auto launches = host_application->wait_for_launches(1);
  g_assert_cmpuint(launches.size(), ==, 1);
  assert_str_eq(launches[0].args.at(0), "https://example.com/byte-only");
}

// ---- real guest clients --------------------------------------------------------------

// gdbus call and gio open (GLib's own portal client: GTK_USE_PORTAL=1, and no
// handler of its own) in the guest.
void test_real_clients() {
  OpenUriVm vm;
  SharedDocument document(vm);
  auto gdbus = vm.guest().run_as_guest({"gdbus", "call", "--session", "--dest", kPortalBusName, "--object-path",
                                        kPortalPath, "--method", "org.freedesktop.portal.OpenURI.OpenURI", "",
                                        "https://example.com/from-gdbus", "{}"});
  g_assert_true(gdbus.status.success());
  g_assert_nonnull(strstr(gdbus.out.c_str(), "/org/freedesktop/portal/desktop/request/"));
  auto launches = host_application->wait_for_launches(1);
  g_assert_cmpuint(launches.size(), ==, 1);
  assert_str_eq(launches[0].args.at(0), "https://example.com/from-gdbus");
  host_application->forget();

  auto gio_link = vm.guest().run_as_guest(
      {"env", "GTK_USE_PORTAL=1", "XDG_DATA_DIRS=/nonexistent", "gio", "open", "https://example.com/from-gio"});
  g_test_message("gio open (link): %s %s", gio_link.out.c_str(), gio_link.err.c_str());
  g_assert_true(gio_link.status.success());
  launches = host_application->wait_for_launches(1);
  g_assert_cmpuint(launches.size(), ==, 1);
  assert_str_eq(launches[0].args.at(0), "https://example.com/from-gio");
  host_application->forget();

  auto gio_file = vm.guest().run_as_guest(
      {"env", "GTK_USE_PORTAL=1", "XDG_DATA_DIRS=/nonexistent", "gio", "open", document.guest_path});
  g_test_message("gio open (document): %s %s", gio_file.out.c_str(), gio_file.err.c_str());
  g_assert_true(gio_file.status.success());
  launches = host_application->wait_for_launches(1);
  g_assert_cmpuint(launches.size(), ==, 1);
  assert_str_eq(launches[0].args.at(0), uri_for(document.host_path));

  auto gio_refused = vm.guest().run_as_guest(
      {"env", "GTK_USE_PORTAL=1", "XDG_DATA_DIRS=/nonexistent", "gio", "open", "sidebus-test:nope"});
  g_assert_false(gio_refused.status.success());
  g_test_message("gio open (refused): %s", gio_refused.err.c_str());
  g_assert_nonnull(strstr(gio_refused.err.c_str(), "portals.openuri.schemes"));
}

}  // namespace

int main(int argc, char** argv) {
  g_test_init(&argc, &argv, nullptr);
  // The host application is registered through XDG_DATA_DIRS before any
  // child starts, so the host portal and the broker (both host processes)
  // find it; HostPortal gives the portal its own XDG_DATA_HOME and config.
  auto application = std::make_unique<HostApplication>();
  host_application = application.get();
  const char* data_dirs = g_getenv("XDG_DATA_DIRS");
  std::string value = application->data_dir() + ":" +
                      (data_dirs != nullptr && *data_dirs != '\0' ? data_dirs : "/usr/local/share:/usr/share");
  g_setenv("XDG_DATA_DIRS", value.c_str(), TRUE);

  add_test("/openuri/uri/https-reaches-handler", test_https_reaches_handler);
  add_test("/openuri/uri/refused", test_refused_uris);
  add_test("/openuri/uri/non-utf8-on-the-wire", test_non_utf8_on_the_wire);
  add_test("/openuri/uri/configured-schemes", test_configured_schemes);
  add_test("/openuri/uri/options", test_options);
  add_test("/openuri/uri/cancel-and-close", test_cancel_and_close);
  for (Link link : {Link::Native, Link::ByteOnly, Link::VsockLike}) {
    std::string suffix = std::string("/") + link_name(link);
    add_test(("/openuri/document/open" + suffix).c_str(), [link] { test_open_document(link); });
    add_test(("/openuri/document/outside-refused" + suffix).c_str(), [link] { test_outside_documents_refused(link); });
    add_test(("/openuri/document/copy-outside" + suffix).c_str(), [link] { test_copy_outside_documents(link); });
  }
  add_test("/openuri/document/symlinked-documents", test_symlinked_documents);
  add_test("/openuri/scheme-supported", test_scheme_supported);
  add_test("/openuri/version", test_version);
  add_test("/openuri/byte-only-link-protocol-1", test_byte_only_link);
  add_test("/openuri/real-clients", test_real_clients);
  int status = g_test_run();
  host_application = nullptr;
  application.reset();
  return status;
}
