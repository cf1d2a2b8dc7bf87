// test-filechooser.cpp — the FileChooser portal across the VM boundary, with
// real parts only: the host's xdg-desktop-portal and the test backend (told
// per test what the "user" picks), the broker with the filechooser plugin and
// its private document portal, a guest bus with the real agent, and in the
// guest a libportal application (tests/filechooser-client.cpp) or plain D-Bus
// calls where libportal has no API for what is tested.
//
// The guest documents path is a directory standing for the VM's view of the
// document portal, <runtime-dir>/doc/by-app/<vm app id>, the way a VMM shares
// it (virtiofs/9p): so the guest application reads and writes with exactly the
// permissions the VM was granted. Assertions are on what a user sees: bytes
// read at the returned guest path, bytes arriving in host files, what the
// host dialog was asked, the response codes the application gets.
#include <fcntl.h>
#include <glib/gstdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <mutex>
#include <string>
#include <vector>

#include "documents/app-id.hpp"
#include "fixture.hpp"

using namespace sidebus::test;

namespace {

constexpr char kPortalBusName[] = "org.freedesktop.portal.Desktop";
constexpr char kPortalPath[] = "/org/freedesktop/portal/desktop";
constexpr char kFileChooser[] = "org.freedesktop.portal.FileChooser";
constexpr char kInvalidArgument[] = "org.freedesktop.portal.Error.InvalidArgument";
// What the broker logs when it refuses a guest call (sidebus_context_reject).
constexpr char kRejected[] = "rejected org.freedesktop.portal.FileChooser.";
constexpr char kVmName[] = "filechooser-vm";
constexpr char kEnableFileChooser[] = R"({"portals": {"filechooser": {"enabled": true}}})";

// ---- small helpers ---------------------------------------------------------

// g_assert_cmpstr for std::string expressions (temporaries included: the
// macro keeps only the char pointers).
#define assert_str_eq(a, b)                               \
  do {                                                    \
    const std::string a_ = (a), b_ = (b);                 \
    g_assert_cmpstr(a_.c_str(), ==, b_.c_str());          \
  } while (0)

std::optional<std::string> read_file(const std::string& path) {
  g_autofree char* bytes = nullptr;
  gsize length = 0;
  if (!g_file_get_contents(path.c_str(), &bytes, &length, nullptr)) return std::nullopt;
  return std::string(bytes, length);
}

std::vector<std::string> strv(GVariant* dict, const char* key) {
  std::vector<std::string> out;
  g_autofree const char** values = nullptr;
  if (dict != nullptr && g_variant_lookup(dict, key, "^a&s", &values))
    for (const char** value = values; *value != nullptr; value++) out.emplace_back(*value);
  return out;
}

// @key's value in @dict, or nullptr.
VariantPtr lookup(GVariant* dict, const char* key) {
  return VariantPtr(dict != nullptr ? g_variant_lookup_value(dict, key, nullptr) : nullptr);
}

size_t count(const std::string& text, const std::string& needle) {
  size_t n = 0;
  for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) n++;
  return n;
}

bool has_key(GVariant* dict, const char* key) { return lookup(dict, key) != nullptr; }

std::string bytestring(GVariant* dict, const char* key) {
  VariantPtr value = lookup(dict, key);
  if (!value || !g_variant_is_of_type(value.get(), G_VARIANT_TYPE_BYTESTRING)) return "(absent)";
  return g_variant_get_bytestring(value.get());
}

void assert_same(GVariant* got, const char* expected_text, const char* type) {
  g_assert_nonnull(got);
  VariantPtr expected = parse(type, expected_text);
  g_autofree char* got_text = g_variant_print(got, TRUE);
  g_autofree char* want_text = g_variant_print(expected.get(), TRUE);
  g_assert_cmpstr(got_text, ==, want_text);
}

GObjectPtr<GDBusConnection> connect(const std::string& address) {
  g_autoptr(GError) error = nullptr;
  GDBusConnection* connection = g_dbus_connection_new_for_address_sync(
      address.c_str(),
      GDBusConnectionFlags(G_DBUS_CONNECTION_FLAGS_AUTHENTICATION_CLIENT |
                           G_DBUS_CONNECTION_FLAGS_MESSAGE_BUS_CONNECTION),
      nullptr, nullptr, &error);
  if (connection == nullptr) throw FixtureError("cannot connect to " + address + ": " + error->message);
  return GObjectPtr<GDBusConnection>(connection);
}

bool name_has_owner(GDBusConnection* connection, const char* name) {
  g_autoptr(GVariant) reply = g_dbus_connection_call_sync(
      connection, "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus", "NameHasOwner",
      g_variant_new("(s)", name), G_VARIANT_TYPE("(b)"), G_DBUS_CALL_FLAGS_NONE, 5000, nullptr, nullptr);
  gboolean has_owner = FALSE;
  if (reply != nullptr) g_variant_get(reply, "(b)", &has_owner);
  return has_owner;
}

std::string remote_error_name(const GError* error) {
  if (error == nullptr) return "(no error)";
  g_autofree char* name = g_dbus_error_get_remote_error(error);
  return name != nullptr ? name : error->message;
}

// ---- the VM ------------------------------------------------------------------

// The host portal stack, a guest bus, the broker for one VM and its agent,
// composed from the fixture's pieces so that the broker can be restarted on
// the same state directory. The guest documents path stands for the VM's
// share of the document portal (see the top of this file) and, as in a VM,
// stays the same path when the broker restarts with a new runtime directory.
class Vm {
 public:
  explicit Vm(std::string name = kVmName)
      : name_(std::move(name)),
        guest_files_("sidebus-fc-guest-files"),
        state_("sidebus-fc-state"),
        documents_(guest_files_ / "documents") {
    host_ = std::make_unique<HostPortal>();
    guest_ = std::make_unique<GuestBus>();
    start_broker();
  }
  ~Vm() {
    agent_.reset();
    broker_.reset();
    guest_.reset();
    host_.reset();
  }

  // Stops broker and agent (if running) and starts them again on the same
  // state directory, as after a host reboot or a broker update.
  void start_broker() {
    agent_.reset();
    broker_.reset();
    broker_ = std::make_unique<Broker>(BrokerOptions{
        .host_bus_address = host_->bus_address(),
        .vm_name = name_,
        .guest_documents_path = documents_,
        .state_dir = state_.path(),
        .config = {{"50-filechooser.json", kEnableFileChooser}},
    });
    // What the VMM shares into the guest: this VM's view of the mount.
    g_unlink(documents_.c_str());
    const std::string view = broker_->runtime_dir() + "/doc/by-app/" + sidebus::app_id_for_vm(name_);
    if (symlink(view.c_str(), documents_.c_str()) != 0) throw FixtureError("cannot link " + documents_);
    agent_ = std::make_unique<Agent>(
        AgentOptions{.connect = broker_->link_address(), .guest_bus_address = guest_->address()});
    if (!wait_until([&] {
          return name_has_owner(guest_->connection(), kPortalBusName) || !broker_->process().running() ||
                 !agent_->process().running();
        }) ||
        !name_has_owner(guest_->connection(), kPortalBusName))
      throw FixtureError("the portal did not appear on the guest bus; broker log:\n" + broker_->process().log());
  }

  HostPortal& host() { return *host_; }
  GuestBus& guest() { return *guest_; }
  Broker& broker() { return *broker_; }
  const std::string& documents() const { return documents_; }
  const std::string& name() const { return name_; }

  // A raw FileChooser call on the guest bus; @options is a{sv} GVariant text.
  std::unique_ptr<PortalRequest> call(const char* method, const std::string& options, const char* title = "title",
                                      GDBusConnection* connection = nullptr) {
    VariantPtr parsed = parse("a{sv}", options);
    return std::make_unique<PortalRequest>(connection ? connection : guest_->connection(), kPortalBusName,
                                           kFileChooser, method,
                                           g_variant_new("(ss@a{sv})", "x11:1234", title, parsed.get()));
  }

  // The document a guest URI names: "<documents>/<id>/<name>" → id, checking
  // the shape the guest is promised.
  std::string document_id(const std::string& guest_uri, const std::string& expected_name) {
    std::string path = path_of(guest_uri);
    std::string prefix = documents_ + "/";
    if (!path.starts_with(prefix)) throw FixtureError(guest_uri + " is not inside " + documents_);
    std::string rest = path.substr(prefix.size());
    size_t slash = rest.find('/');
    if (slash == std::string::npos || rest.substr(slash + 1) != expected_name)
      throw FixtureError(guest_uri + " is not <documents>/<doc-id>/" + expected_name);
    return rest.substr(0, slash);
  }

 private:
  std::string name_;
  TempDir guest_files_;  // first: outlives the broker that names it on its command line
  TempDir state_;
  std::string documents_;
  std::unique_ptr<HostPortal> host_;
  std::unique_ptr<GuestBus> guest_;
  std::unique_ptr<Broker> broker_;
  std::unique_ptr<Agent> agent_;
};

// What the libportal application in the guest saw and did.
struct ClientReport {
  std::string outcome;  // ok, cancelled, failed
  std::string error;
  VariantPtr results;
  std::vector<std::string> contents;
  std::vector<std::string> written;
  std::vector<std::string> write_errors;
  std::string raw;
};

ClientReport run_client(Vm& vm, std::vector<std::string> args) {
  args.insert(args.begin(), env_path("SIDEBUS_FILECHOOSER_CLIENT"));
  GuestBus::Output output = vm.guest().run_as_guest(args);
  if (!output.status.success())
    throw FixtureError("filechooser-client " + output.status.describe() + ": " + output.err + output.out);
  ClientReport report;
  report.raw = output.out;
  VariantPtr dict = parse("a{sv}", output.out);
  g_autofree char* outcome = nullptr;
  g_autofree char* error = nullptr;
  g_variant_lookup(dict.get(), "outcome", "s", &outcome);
  g_variant_lookup(dict.get(), "error", "s", &error);
  report.outcome = outcome ? outcome : "";
  report.error = error ? error : "";
  report.results = lookup(dict.get(), "results");
  if (VariantPtr contents = lookup(dict.get(), "contents")) {
    for (gsize i = 0; i < g_variant_n_children(contents.get()); i++) {
      g_autoptr(GVariant) bytes = g_variant_get_child_value(contents.get(), i);
      gsize length = 0;
      const char* data = static_cast<const char*>(g_variant_get_fixed_array(bytes, &length, 1));
      report.contents.emplace_back(data, length);
    }
  }
  report.written = strv(dict.get(), "written");
  report.write_errors = strv(dict.get(), "write_errors");
  g_test_message("guest application: %s", output.out.c_str());
  return report;
}

// Host files the "user" picks from.
struct HostFiles {
  TempDir dir{"sidebus-fc-host-files"};
  std::string add(const std::string& name, const std::string& contents) { return dir.write_file(name, contents); }
};

std::string uris_result(const std::vector<std::string>& paths) {
  std::string text = "{'uris': <[";
  for (size_t i = 0; i < paths.size(); i++) text += (i ? ", '" : "'") + uri_for(paths[i]) + "'";
  return text + (paths.empty() ? "@as []" : "") + "]>}";
}

void set_reply(Vm& vm, const char* method, guint32 response, const std::string& results) {
  VariantPtr parsed = parse("a{sv}", results);
  vm.host().set_reply(method, response, parsed.get());
}

BackendCall only_backend_call(Vm& vm) {
  std::vector<BackendCall> calls = vm.host().backend_calls();
  g_assert_cmpuint(calls.size(), ==, 1);
  return std::move(calls[0]);
}

// ---- OpenFile ------------------------------------------------------------------

constexpr char kBinary[] = "hello from the host\n\0\x01\xff end";
const std::string kBinaryContents(kBinary, sizeof kBinary - 1);

void test_open_reads_host_file() {
  Vm vm;
  HostFiles files;
  std::string host_file = files.add("report.txt", kBinaryContents);
  set_reply(vm, "OpenFile", kResponseSuccess, uris_result({host_file}));

  ClientReport report = run_client(vm, {"open", "--title", "Pick a report", "--read"});
  g_assert_cmpstr(report.outcome.c_str(), ==, "ok");
  std::vector<std::string> uris = strv(report.results.get(), "uris");
  g_assert_cmpuint(uris.size(), ==, 1);
  // The guest gets a path inside its documents directory, never the host path.
  vm.document_id(uris[0], "report.txt");
  g_assert_true(uris[0].find(files.dir.path()) == std::string::npos);
  g_assert_cmpuint(report.contents.size(), ==, 1);
  g_assert_true(report.contents[0] == kBinaryContents);

  // The host dialog: the guest's title; no guest window handle.
  BackendCall call = only_backend_call(vm);
  g_assert_cmpstr(call.method.c_str(), ==, "OpenFile");
  g_assert_cmpstr(call.title.c_str(), ==, "Pick a report");
  g_assert_cmpstr(call.parent_window.c_str(), ==, "");

  // Opened, not granted for writing (the host said nothing about writable).
  int fd = open(path_of(uris[0]).c_str(), O_WRONLY);
  g_assert_cmpint(fd, <, 0);
  g_assert_true(read_file(host_file) == kBinaryContents);
}

void test_open_multiple() {
  Vm vm;
  HostFiles files;
  std::vector<std::string> host_files = {files.add("a.txt", "first"), files.add("b/b.txt", "second"),
                                         files.add("c.txt", "third")};
  set_reply(vm, "OpenFile", kResponseSuccess, uris_result(host_files));

  ClientReport report = run_client(vm, {"open", "--multiple", "--read"});
  g_assert_cmpstr(report.outcome.c_str(), ==, "ok");
  std::vector<std::string> uris = strv(report.results.get(), "uris");
  g_assert_cmpuint(uris.size(), ==, 3);
  std::vector<std::string> ids = {vm.document_id(uris[0], "a.txt"), vm.document_id(uris[1], "b.txt"),
                                  vm.document_id(uris[2], "c.txt")};
  g_assert_true(ids[0] != ids[1] && ids[1] != ids[2] && ids[0] != ids[2]);
  g_assert_cmpuint(report.contents.size(), ==, 3);
  g_assert_cmpstr(report.contents[0].c_str(), ==, "first");
  g_assert_cmpstr(report.contents[1].c_str(), ==, "second");
  g_assert_cmpstr(report.contents[2].c_str(), ==, "third");
  assert_same(lookup(only_backend_call(vm).options.get(), "multiple").get(), "true", "b");
}

void test_open_directory() {
  Vm vm;
  HostFiles files;
  files.add("project/src/main.c", "int main(void) { return 0; }\n");
  files.add("project/README", "read me");
  const std::string project = files.dir / "project";
  set_reply(vm, "OpenFile", kResponseSuccess, uris_result({project}));

  // libportal 0.6 has no flag for directory: plain D-Bus, as GTK sends it.
  auto request = vm.call("OpenFile", "{'handle_token': <'pick_dir'>, 'directory': <true>}");
  g_assert_no_error(request->error());
  g_assert_true(request->wait_for_response());
  g_assert_cmpuint(request->response(), ==, kResponseSuccess);
  std::vector<std::string> uris = strv(request->results(), "uris");
  g_assert_cmpuint(uris.size(), ==, 1);
  vm.document_id(uris[0], "project");
  const std::string guest_dir = path_of(uris[0]);
  g_assert_true(g_file_test(guest_dir.c_str(), G_FILE_TEST_IS_DIR));
  g_assert_true(read_file(guest_dir + "/src/main.c") == "int main(void) { return 0; }\n");
  g_assert_true(read_file(guest_dir + "/README") == "read me");
  assert_same(lookup(only_backend_call(vm).options.get(), "directory").get(), "true", "b");

  // A folder inside the exported directory stands for the host folder.
  vm.host().reset_backend();
  set_reply(vm, "SaveFiles", kResponseCancelled, "{}");
  auto save = vm.call("SaveFiles", "{'current_folder': <b'" + guest_dir + "/src'>, 'files': <[b'main.h']>}");
  g_assert_no_error(save->error());
  g_assert_true(save->wait_for_response());
  assert_str_eq(bytestring(only_backend_call(vm).options.get(), "current_folder"), project + "/src");
}

void test_filters_and_choices() {
  Vm vm;
  HostFiles files;
  std::string host_file = files.add("notes.txt", "notes");
  const char* filters = "[('Text', [(uint32 0, '*.txt'), (1, 'text/plain')]), ('Images', [(0, '*.png')])]";
  const char* current_filter = "('Text', [(uint32 0, '*.txt'), (1, 'text/plain')])";
  const char* choices =
      "[('encoding', 'Encoding', [('utf8', 'Unicode (UTF-8)'), ('latin15', 'Western')], 'latin15'), "
      "('reencode', 'Reencode', @a(ss) [], 'false')]";
  set_reply(vm, "OpenFile", kResponseSuccess,
            "{'uris': <['" + uri_for(host_file) +
                "']>, 'choices': <[('encoding', 'utf8'), ('reencode', 'true')]>, "
                "'current_filter': <('Images', [(uint32 0, '*.png')])>}");

  ClientReport report =
      run_client(vm, {"open", "--filters", filters, "--current-filter", current_filter, "--choices", choices});
  g_assert_cmpstr(report.outcome.c_str(), ==, "ok");

  // The host dialog got them exactly as the application sent them…
  BackendCall call = only_backend_call(vm);
  assert_same(lookup(call.options.get(), "filters").get(), filters, "a(sa(us))");
  assert_same(lookup(call.options.get(), "current_filter").get(), current_filter, "(sa(us))");
  assert_same(lookup(call.options.get(), "choices").get(), choices, "a(ssa(ss)s)");
  // …and the application gets the user's answers back.
  assert_same(lookup(report.results.get(), "choices").get(), "[('encoding', 'utf8'), ('reencode', 'true')]",
              "a(ss)");
  assert_same(lookup(report.results.get(), "current_filter").get(), "('Images', [(uint32 0, '*.png')])",
              "(sa(us))");
}

// Every documented option of the three methods reaches the host dialog; what
// is not documented does not; guest paths arrive as the host files they
// stand for.
void test_options_reach_host() {
  Vm vm;
  HostFiles files;
  std::string host_file = files.add("docs/letter.odt", "letter");
  set_reply(vm, "OpenFile", kResponseSuccess, uris_result({host_file}));
  auto open = vm.call("OpenFile",
                      "{'handle_token': <'o1'>, 'accept_label': <'_Open it'>, 'modal': <false>, "
                      "'multiple': <false>, 'directory': <false>, "
                      "'filters': <[('Text', [(uint32 0, '*.odt')])]>, "
                      "'current_filter': <('Text', [(uint32 0, '*.odt')])>, "
                      "'choices': <[('ro', 'Read only', @a(ss) [], 'true')]>, "
                      "'x-unknown': <'dropped'>, 'parent_window': <'x11:1'>}",
                      "Open a letter");
  g_assert_no_error(open->error());
  g_assert_true(open->wait_for_response());
  std::vector<std::string> uris = strv(open->results(), "uris");
  g_assert_cmpuint(uris.size(), ==, 1);
  const std::string guest_file = path_of(uris[0]);

  BackendCall call = only_backend_call(vm);
  g_assert_cmpstr(call.title.c_str(), ==, "Open a letter");
  g_assert_cmpstr(call.parent_window.c_str(), ==, "");
  GVariant* options = call.options.get();
  assert_same(lookup(options, "accept_label").get(), "'_Open it'", "s");
  assert_same(lookup(options, "modal").get(), "false", "b");
  assert_same(lookup(options, "multiple").get(), "false", "b");
  assert_same(lookup(options, "directory").get(), "false", "b");
  assert_same(lookup(options, "filters").get(), "[('Text', [(uint32 0, '*.odt')])]", "a(sa(us))");
  assert_same(lookup(options, "current_filter").get(), "('Text', [(uint32 0, '*.odt')])", "(sa(us))");
  assert_same(lookup(options, "choices").get(), "[('ro', 'Read only', @a(ss) [], 'true')]", "a(ssa(ss)s)");
  g_assert_false(has_key(options, "x-unknown"));

  // SaveFile, pointing at the document the guest has open.
  vm.host().reset_backend();
  // A folder option naming a shared file means the folder holding it.
  const std::string guest_folder = guest_file;
  auto save = vm.call("SaveFile",
                      "{'handle_token': <'s1'>, 'accept_label': <'_Save'>, 'modal': <true>, "
                      "'filters': <[('ODF', [(uint32 1, 'application/vnd.oasis.opendocument.text')])]>, "
                      "'current_filter': <('ODF', [(uint32 1, 'application/vnd.oasis.opendocument.text')])>, "
                      "'choices': <[('fmt', 'Format', [('odt', 'ODT'), ('doc', 'Word')], 'odt')]>, "
                      "'current_name': <'letter copy.odt'>, "
                      "'current_file': <b'" + guest_file + "'>, 'current_folder': <b'" + guest_folder + "'>}",
                      "Save the letter");
  g_assert_no_error(save->error());
  g_assert_true(save->wait_for_response());
  call = only_backend_call(vm);
  g_assert_cmpstr(call.method.c_str(), ==, "SaveFile");
  g_assert_cmpstr(call.title.c_str(), ==, "Save the letter");
  options = call.options.get();
  assert_same(lookup(options, "accept_label").get(), "'_Save'", "s");
  assert_same(lookup(options, "modal").get(), "true", "b");
  assert_same(lookup(options, "filters").get(), "[('ODF', [(uint32 1, 'application/vnd.oasis.opendocument.text')])]",
              "a(sa(us))");
  assert_same(lookup(options, "current_filter").get(),
              "('ODF', [(uint32 1, 'application/vnd.oasis.opendocument.text')])", "(sa(us))");
  assert_same(lookup(options, "choices").get(), "[('fmt', 'Format', [('odt', 'ODT'), ('doc', 'Word')], 'odt')]",
              "a(ssa(ss)s)");
  assert_same(lookup(options, "current_name").get(), "'letter copy.odt'", "s");
  // The host file the guest's document stands for, and the folder holding it.
  assert_str_eq(bytestring(options, "current_file"), host_file);
  assert_str_eq(bytestring(options, "current_folder"), files.dir / "docs");

  // SaveFiles.
  vm.host().reset_backend();
  auto save_files = vm.call("SaveFiles",
                            "{'handle_token': <'s2'>, 'accept_label': <'_Export'>, 'modal': <false>, "
                            "'choices': <[('zip', 'Compress', @a(ss) [], '')]>, "
                            "'current_folder': <b'" + guest_folder + "'>, 'files': <[b'one.txt', b'two.txt']>}",
                            "Export");
  g_assert_no_error(save_files->error());
  g_assert_true(save_files->wait_for_response());
  call = only_backend_call(vm);
  g_assert_cmpstr(call.method.c_str(), ==, "SaveFiles");
  options = call.options.get();
  assert_same(lookup(options, "accept_label").get(), "'_Export'", "s");
  assert_same(lookup(options, "modal").get(), "false", "b");
  assert_same(lookup(options, "choices").get(), "[('zip', 'Compress', @a(ss) [], '')]", "a(ssa(ss)s)");
  assert_same(lookup(options, "files").get(), "[b'one.txt', b'two.txt']", "aay");
  assert_str_eq(bytestring(options, "current_folder"), files.dir / "docs");
}

// ---- responses, Close, the Request object ---------------------------------------

void test_response_codes() {
  Vm vm;
  HostFiles files;
  std::string host_file = files.add("x.txt", "x");
  for (guint32 response : {kResponseCancelled, kResponseOther}) {
    // Whatever the host adds, nothing chosen reaches the guest on failure.
    set_reply(vm, "OpenFile", response, uris_result({host_file}));
    auto request = vm.call("OpenFile", "{}");
    g_assert_no_error(request->error());
    g_assert_true(request->wait_for_response());
    g_assert_cmpuint(request->response(), ==, response);
    g_assert_cmpuint(strv(request->results(), "uris").size(), ==, 0);
  }
  set_reply(vm, "OpenFile", kResponseSuccess, uris_result({host_file}));
  auto request = vm.call("OpenFile", "{}");
  g_assert_true(request->wait_for_response());
  g_assert_cmpuint(request->response(), ==, kResponseSuccess);

  // What a libportal application sees when the user cancels.
  set_reply(vm, "OpenFile", kResponseCancelled, "{}");
  ClientReport report = run_client(vm, {"open"});
  g_assert_cmpstr(report.outcome.c_str(), ==, "cancelled");
}

void test_close_closes_host_dialog() {
  Vm vm;
  vm.host().set_reply("OpenFile", kResponseWaitForClose);
  auto request = vm.call("OpenFile", "{'handle_token': <'to_close'>}");
  g_assert_no_error(request->error());
  g_assert_true(vm.host().wait_for_backend_calls(1));
  g_assert_false(only_backend_call(vm).closed);

  g_autoptr(GError) error = nullptr;
  g_assert_true(request->close(&error));
  g_assert_no_error(error);
  g_assert_true(wait_until([&] { return only_backend_call(vm).closed; }));
  // A closed request has no Response.
  g_assert_false(request->wait_for_response(500ms));

  // libportal cancelling its call does the same.
  vm.host().reset_backend();
  vm.host().set_reply("OpenFile", kResponseWaitForClose);
  ClientReport report = run_client(vm, {"open", "--cancel-after-ms", "1000"});
  g_assert_cmpstr(report.outcome.c_str(), ==, "cancelled");
  g_assert_true(wait_until([&] {
    std::vector<BackendCall> calls = vm.host().backend_calls();
    return calls.size() == 1 && calls[0].closed;
  }));
}

void test_disconnect_closes_host_dialog() {
  Vm vm;
  vm.host().set_reply("OpenFile", kResponseWaitForClose);
  GObjectPtr<GDBusConnection> application = connect(vm.guest().address());
  auto request = vm.call("OpenFile", "{'handle_token': <'abandoned'>}", "title", application.get());
  g_assert_no_error(request->error());
  g_assert_true(vm.host().wait_for_backend_calls(1));
  g_assert_false(only_backend_call(vm).closed);

  // The application exits with the dialog still open.
  g_dbus_connection_close_sync(application.get(), nullptr, nullptr);
  g_assert_true(wait_until([&] { return only_backend_call(vm).closed; }));
}

// The Request object is at the documented path by the time the handle is
// returned, and a Response that comes at once is delivered after the reply,
// so neither an application that subscribes up front nor one that subscribes
// when it has the handle can miss it.
void test_request_object() {
  Vm vm;
  GObjectPtr<GDBusConnection> application = connect(vm.guest().address());
  std::string sender = g_dbus_connection_get_unique_name(application.get()) + 1;  // skip ':'
  for (char& c : sender)
    if (c == '.') c = '_';
  const std::string expected_handle = std::string(kPortalPath) + "/request/" + sender + "/early_bird";

  // Order of arrival of the method reply and the Response on this connection.
  // (The filter runs in GDBus's worker thread.)
  struct Arrivals {
    std::mutex lock;
    std::vector<std::string> order;
    guint32 call_serial = 0;
    size_t size() {
      std::lock_guard<std::mutex> guard(lock);
      return order.size();
    }
  } arrivals;
  guint filter = g_dbus_connection_add_filter(
      application.get(),
      [](GDBusConnection*, GDBusMessage* message, gboolean incoming, gpointer data) -> GDBusMessage* {
        auto* arrivals = static_cast<Arrivals*>(data);
        std::lock_guard<std::mutex> guard(arrivals->lock);
        if (!incoming) {
          if (g_strcmp0(g_dbus_message_get_member(message), "OpenFile") == 0)
            arrivals->call_serial = g_dbus_message_get_serial(message);
          return message;
        }
        if (g_dbus_message_get_message_type(message) == G_DBUS_MESSAGE_TYPE_METHOD_RETURN &&
            g_dbus_message_get_reply_serial(message) == arrivals->call_serial && arrivals->call_serial != 0)
          arrivals->order.push_back("reply");
        if (g_strcmp0(g_dbus_message_get_member(message), "Response") == 0)
          arrivals->order.push_back(std::string("Response@") + g_dbus_message_get_path(message));
        return message;
      },
      &arrivals, nullptr);

  vm.host().set_reply("OpenFile", kResponseSuccess, nullptr);  // the dialog answers at once
  auto request = vm.call("OpenFile", "{'handle_token': <'early_bird'>}", "title", application.get());
  g_assert_no_error(request->error());
  assert_str_eq(request->handle(), expected_handle);
  g_assert_true(request->wait_for_response());
  g_assert_cmpuint(request->response(), ==, kResponseSuccess);
  g_assert_true(wait_until([&] { return arrivals.size() >= 2; }));
  g_dbus_connection_remove_filter(application.get(), filter);
  std::lock_guard<std::mutex> guard(arrivals.lock);
  g_assert_cmpuint(arrivals.order.size(), ==, 2);
  g_assert_cmpstr(arrivals.order[0].c_str(), ==, "reply");
  assert_str_eq(arrivals.order[1], "Response@" + expected_handle);

  // While the dialog is open, the handle is a Request object the guest can see.
  vm.host().set_reply("OpenFile", kResponseWaitForClose);
  auto pending = vm.call("OpenFile", "{'handle_token': <'pending'>}", "title", application.get());
  g_assert_no_error(pending->error());
  g_autoptr(GError) error = nullptr;
  g_autoptr(GVariant) xml = g_dbus_connection_call_sync(
      application.get(), kPortalBusName, pending->handle().c_str(), "org.freedesktop.DBus.Introspectable",
      "Introspect", nullptr, G_VARIANT_TYPE("(s)"), G_DBUS_CALL_FLAGS_NONE, 10000, nullptr, &error);
  g_assert_no_error(error);
  const char* text = nullptr;
  g_variant_get(xml, "(&s)", &text);
  g_assert_nonnull(strstr(text, "org.freedesktop.portal.Request"));
}

// ---- validation -------------------------------------------------------------------

void test_invalid_options_refused() {
  Vm vm;
  const char* bad_calls[][2] = {
      {"OpenFile", "{'multiple': <'yes'>}"},                                   // wrong type
      {"OpenFile", "{'filters': <[('Text', [(uint32 7, '*.txt')])]>}"},        // no such pattern type
      {"OpenFile", "{'filters': <[('Text', @a(us) [])]>}"},                    // a filter without patterns
      {"OpenFile", "{'current_filter': <('A', [(uint32 0, '*.a')])>, 'filters': <[('B', [(uint32 0, '*.b')])]>}"},
      {"OpenFile", "{'choices': <[('c', 'C', [('a', 'A')], 'b')]>}"},          // initial choice not offered
      {"SaveFile", "{'current_file': <[byte 0x2f, 0x61]>}"},                   // no terminating NUL
      {"SaveFile", "{'current_file': <'/a/string'>}"},                         // wrong type
      {"SaveFiles", "{'files': <[b'../escape.txt']>}"},                        // not a plain file name
      {"SaveFiles", "{'files': <[b'sub/dir.txt']>}"},
  };
  for (auto& [method, options] : bad_calls) {
    auto request = vm.call(method, options);
    g_test_message("%s %s → %s", method, options, remote_error_name(request->error()).c_str());
    g_assert_nonnull(request->error());
    assert_str_eq(remote_error_name(request->error()), kInvalidArgument);
  }
  // None of them reached the host: the broker refused each one itself (the
  // host portal would refuse some of them too, and its error name would be
  // passed on).
  g_assert_cmpuint(vm.host().backend_calls().size(), ==, 0);
  g_assert_true(wait_until([&] { return count(vm.broker().process().log(), kRejected) == G_N_ELEMENTS(bad_calls); }, 5s));
}

void test_bad_handle_token_refused() {
  Vm vm;
  for (const char* options : {"{'handle_token': <'not-a-token!'>}", "{'handle_token': <'a/b'>}",
                              "{'handle_token': <''>}", "{'handle_token': <uint32 7>}"}) {
    auto request = vm.call("OpenFile", options);
    assert_str_eq(remote_error_name(request->error()), kInvalidArgument);
  }
  g_assert_cmpuint(vm.host().backend_calls().size(), ==, 0);
}

// ---- saving -------------------------------------------------------------------------

void test_save_writes_host_file() {
  Vm vm;
  HostFiles files;
  const std::string target = files.dir.make_dir("out") + "/new file.txt";  // does not exist yet
  set_reply(vm, "SaveFile", kResponseSuccess, uris_result({target}));
  ClientReport report = run_client(vm, {"save", "--current-name", "new file.txt", "--write", "saved in the VM\n"});
  g_assert_cmpstr(report.outcome.c_str(), ==, "ok");
  std::vector<std::string> uris = strv(report.results.get(), "uris");
  g_assert_cmpuint(uris.size(), ==, 1);
  vm.document_id(uris[0], "new file.txt");
  g_assert_cmpuint(report.write_errors.size(), ==, 0);
  g_assert_true(read_file(target) == "saved in the VM\n");
  assert_same(lookup(only_backend_call(vm).options.get(), "current_name").get(), "'new file.txt'", "s");

  // An existing file, saved the way editors do (temporary file, rename).
  vm.host().reset_backend();
  const std::string existing = files.add("out/existing.txt", "old contents");
  set_reply(vm, "SaveFile", kResponseSuccess, uris_result({existing}));
  report = run_client(vm, {"save", "--replace", "--write", "new contents"});
  g_assert_cmpstr(report.outcome.c_str(), ==, "ok");
  g_assert_cmpuint(report.write_errors.size(), ==, 0);
  g_assert_true(read_file(existing) == "new contents");
}

void test_save_files_writes_host_files() {
  Vm vm;
  HostFiles files;
  const std::string folder = files.dir.make_dir("export");
  set_reply(vm, "SaveFiles", kResponseSuccess, uris_result({folder + "/one.txt", folder + "/two.txt"}));
  ClientReport report =
      run_client(vm, {"save-files", "--file", "one.txt", "--file", "two.txt", "--write", "exported"});
  g_assert_cmpstr(report.outcome.c_str(), ==, "ok");
  std::vector<std::string> uris = strv(report.results.get(), "uris");
  g_assert_cmpuint(uris.size(), ==, 2);
  vm.document_id(uris[0], "one.txt");
  vm.document_id(uris[1], "two.txt");
  g_assert_cmpuint(report.write_errors.size(), ==, 0);
  g_assert_true(read_file(folder + "/one.txt") == "exported");
  g_assert_true(read_file(folder + "/two.txt") == "exported");
  assert_same(lookup(only_backend_call(vm).options.get(), "files").get(), "[b'one.txt', b'two.txt']", "aay");
}

// Guest paths the host cannot see are dropped, never passed on as host paths.
void test_guest_paths_outside_documents_dropped() {
  Vm vm;
  HostFiles files;
  const std::string secret = files.add("secret.txt", "host secret");  // exists on the host
  const std::string target = files.dir / "out.txt";
  set_reply(vm, "SaveFile", kResponseSuccess, uris_result({target}));
  ClientReport report =
      run_client(vm, {"save", "--current-file", secret, "--current-folder", files.dir.path(), "--write", "x"});
  g_assert_cmpstr(report.outcome.c_str(), ==, "ok");
  BackendCall call = only_backend_call(vm);
  g_assert_false(has_key(call.options.get(), "current_file"));
  g_assert_false(has_key(call.options.get(), "current_folder"));

  // Escapes from the documents directory, and documents that do not exist.
  const std::vector<std::string> sneaky = {
      vm.documents() + "/../../../.." + secret,
      vm.documents() + "/deadbeef/secret.txt",
      vm.documents(),
      "relative/path.txt",
  };
  for (const std::string& path : sneaky) {
    vm.host().reset_backend();
    set_reply(vm, "SaveFile", kResponseCancelled, "{}");
    auto request = vm.call("SaveFile", "{'current_file': <b'" + path + "'>, 'current_folder': <b'" + path + "'>}");
    g_assert_no_error(request->error());
    g_assert_true(request->wait_for_response());
    call = only_backend_call(vm);
    g_test_message("%s → current_file %s", path.c_str(), bytestring(call.options.get(), "current_file").c_str());
    g_assert_false(has_key(call.options.get(), "current_file"));
    g_assert_false(has_key(call.options.get(), "current_folder"));
  }
}

void test_non_file_uri_refused() {
  Vm vm;
  HostFiles files;
  const std::string host_file = files.add("fine.txt", "fine");
  set_reply(vm, "OpenFile", kResponseSuccess,
            "{'uris': <['" + uri_for(host_file) + "', 'sftp://fileserver/home/user/secret.txt']>}");
  auto request = vm.call("OpenFile", "{'multiple': <true>}");
  g_assert_no_error(request->error());
  g_assert_true(request->wait_for_response());
  g_assert_cmpuint(request->response(), ==, kResponseOther);
  g_assert_cmpuint(strv(request->results(), "uris").size(), ==, 0);
  g_autofree char* results = g_variant_print(request->results(), TRUE);
  g_assert_null(strstr(results, "fileserver"));
  g_assert_null(strstr(results, files.dir.path().c_str()));
  g_assert_true(wait_until([&] { return vm.broker().process().log().find("not a file:// URI") != std::string::npos; },
                           5s));
}

// ---- the version property -----------------------------------------------------------

guint32 version_on(GDBusConnection* connection) {
  g_autoptr(GError) error = nullptr;
  g_autoptr(GVariant) reply = g_dbus_connection_call_sync(
      connection, kPortalBusName, kPortalPath, "org.freedesktop.DBus.Properties", "Get",
      g_variant_new("(ss)", kFileChooser, "version"), G_VARIANT_TYPE("(v)"), G_DBUS_CALL_FLAGS_NONE, 10000, nullptr,
      &error);
  g_assert_no_error(error);
  g_autoptr(GVariant) value = nullptr;
  g_variant_get(reply, "(v)", &value);
  return g_variant_get_uint32(value);
}

void test_version() {
  Vm vm;
  const guint32 host_version = version_on(vm.host().connection());
  // The plugin implements version 4; the guest sees the lower of the two.
  g_assert_true(wait_until([&] { return version_on(vm.guest().connection()) == MIN(host_version, 4u); }, 5s));
}

// ---- documents: isolation and persistence ----------------------------------------

void test_second_vm_cannot_see_documents() {
  HostFiles files;
  const std::string host_file = files.add("private.txt", "only for VM one");
  Vm first("vm-one");
  set_reply(first, "OpenFile", kResponseSuccess, uris_result({host_file}));
  auto request = first.call("OpenFile", "{}");
  g_assert_true(request->wait_for_response());
  std::vector<std::string> uris = strv(request->results(), "uris");
  g_assert_cmpuint(uris.size(), ==, 1);
  const std::string doc_id = first.document_id(uris[0], "private.txt");
  g_assert_true(read_file(path_of(uris[0])) == "only for VM one");

  Vm second("vm-two");
  // Not in the second VM's documents, by any path…
  g_assert_false(g_file_test((second.documents() + "/" + doc_id).c_str(), G_FILE_TEST_EXISTS));
  g_assert_false(read_file(second.documents() + "/" + doc_id + "/private.txt").has_value());
  g_assert_false(
      g_file_test((second.broker().runtime_dir() + "/doc/" + doc_id).c_str(), G_FILE_TEST_EXISTS));
  // …and its broker will not map the first VM's document back to the host file.
  set_reply(second, "SaveFile", kResponseCancelled, "{}");
  auto save = second.call("SaveFile", "{'current_file': <b'" + second.documents() + "/" + doc_id + "/private.txt'>}");
  g_assert_true(save->wait_for_response());
  g_assert_false(has_key(only_backend_call(second).options.get(), "current_file"));
}

void test_exports_survive_broker_restart() {
  Vm vm;
  HostFiles files;
  const std::string host_file = files.add("kept.txt", "still here");
  set_reply(vm, "OpenFile", kResponseSuccess, uris_result({host_file}));
  auto request = vm.call("OpenFile", "{}");
  g_assert_true(request->wait_for_response());
  std::vector<std::string> uris = strv(request->results(), "uris");
  g_assert_cmpuint(uris.size(), ==, 1);
  const std::string doc_id = vm.document_id(uris[0], "kept.txt");

  vm.start_broker();  // a new broker process on the same state directory

  // The guest's path still works…
  g_assert_true(read_file(path_of(uris[0])) == "still here");
  // …still stands for the host file…
  vm.host().reset_backend();
  set_reply(vm, "SaveFile", kResponseCancelled, "{}");
  auto save = vm.call("SaveFile", "{'current_file': <b'" + path_of(uris[0]) + "'>}");
  g_assert_true(save->wait_for_response());
  assert_str_eq(bytestring(only_backend_call(vm).options.get(), "current_file"), host_file);
  // …and choosing the same file again gives the same document.
  set_reply(vm, "OpenFile", kResponseSuccess, uris_result({host_file}));
  auto again = vm.call("OpenFile", "{}");
  g_assert_true(again->wait_for_response());
  std::vector<std::string> again_uris = strv(again->results(), "uris");
  g_assert_cmpuint(again_uris.size(), ==, 1);
  assert_str_eq(vm.document_id(again_uris[0], "kept.txt"), doc_id);
}

}  // namespace

int main(int argc, char** argv) {
  g_test_init(&argc, &argv, nullptr);
  add_test("/filechooser/open/reads-host-file", test_open_reads_host_file);
  add_test("/filechooser/open/multiple", test_open_multiple);
  add_test("/filechooser/open/directory", test_open_directory);
  add_test("/filechooser/open/filters-and-choices", test_filters_and_choices);
  add_test("/filechooser/options-reach-host", test_options_reach_host);
  add_test("/filechooser/request/response-codes", test_response_codes);
  add_test("/filechooser/request/close", test_close_closes_host_dialog);
  add_test("/filechooser/request/client-disconnects", test_disconnect_closes_host_dialog);
  add_test("/filechooser/request/object", test_request_object);
  add_test("/filechooser/refused/invalid-options", test_invalid_options_refused);
  add_test("/filechooser/refused/bad-handle-token", test_bad_handle_token_refused);
  add_test("/filechooser/refused/non-file-uri", test_non_file_uri_refused);
  add_test("/filechooser/save/writes-host-file", test_save_writes_host_file);
  add_test("/filechooser/save-files/writes-host-files", test_save_files_writes_host_files);
  add_test("/filechooser/guest-paths/outside-documents-dropped", test_guest_paths_outside_documents_dropped);
  add_test("/filechooser/version", test_version);
  add_test("/filechooser/documents/second-vm-cannot-see", test_second_vm_cannot_see_documents);
  add_test("/filechooser/documents/survive-broker-restart", test_exports_survive_broker_restart);
  return g_test_run();
}
