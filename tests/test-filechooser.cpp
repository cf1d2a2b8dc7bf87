// SPDX-License-Identifier: LGPL-2.1-or-later
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

#include "support/assert.hpp"
#include "support/files.hpp"
#include "support/vm.hpp"

using namespace sidebus::test;

namespace {

constexpr char kFileChooser[] = "org.freedesktop.portal.FileChooser";
// What the broker logs when it refuses a guest call (sidebus_context_reject).
constexpr char kRejected[] = "rejected org.freedesktop.portal.FileChooser.";
constexpr char kVmName[] = "filechooser-vm";

// ---- small helpers ---------------------------------------------------------

size_t count(const std::string& text, const std::string& needle) {
  size_t n = 0;
  for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) n++;
  return n;
}

// The VM of these tests: the FileChooser enabled, the guest documents path
// a symlink to the VM's document view (see the top of this file).
VmOptions vm_options(std::string name = kVmName) { return {.name = std::move(name), .portals = {"filechooser"}}; }

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
  report.results = lookup_optional(dict.get(), "results");
  if (VariantPtr contents = lookup_optional(dict.get(), "contents")) {
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


BackendCall only_backend_call(Vm& vm) {
  std::vector<BackendCall> calls = vm.host().backend_calls();
  g_assert_cmpuint(calls.size(), ==, 1);
  return std::move(calls[0]);
}

// ---- OpenFile ------------------------------------------------------------------

// The host dialog names the VM (broker.dialog_title_prefix), so a guest cannot
// pose as a host application; the administrator sets the prefix, or none.
void test_title_names_the_vm() {
  struct Case {
    const char* config;  // broker section, "" for the default
    const char* expected;
  };
  const Case cases[] = {
      {"", "[filechooser-vm] Export the report"},
      {R"({"broker": {"dialog_title_prefix": "VM {vm} asks: "}})", "VM filechooser-vm asks: Export the report"},
      {R"({"broker": {"dialog_title_prefix": ""}})", "Export the report"},
  };
  for (const Case& c : cases) {
    VmOptions options = vm_options();
    if (*c.config != '\0') options.config = {{"60-title.json", c.config}};
    Vm vm(options);
    vm.host().set_reply("OpenFile", kResponseCancelled, nullptr);
    auto request = vm.file_chooser("OpenFile", "{'handle_token': <'title_check'>}", "Export the report");
    g_assert_no_error(request->error());
    g_assert_true(request->wait_for_response());
    assert_str_eq(only_backend_call(vm).title, c.expected);
  }
  // A guest's title cannot push the prefix out: it is cut after 1024 bytes.
  Vm vm(vm_options());
  vm.host().set_reply("OpenFile", kResponseCancelled, nullptr);
  std::string long_title(1024, 't');
  auto request = vm.file_chooser("OpenFile", "{'handle_token': <'long_title'>}", long_title.c_str());
  g_assert_true(request->wait_for_response());
  assert_str_eq(only_backend_call(vm).title, "[filechooser-vm] " + long_title);
}

constexpr char kBinary[] = "hello from the host\n\0\x01\xff end";
const std::string kBinaryContents(kBinary, sizeof kBinary - 1);

void test_open_reads_host_file() {
  Vm vm(vm_options());
  HostFiles files;
  std::string host_file = files.add("report.txt", kBinaryContents);
  vm.host().set_reply("OpenFile", kResponseSuccess, uris_result({host_file}));

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
  g_assert_cmpstr(call.title.c_str(), ==, "[filechooser-vm] Pick a report");
  g_assert_cmpstr(call.parent_window.c_str(), ==, "");

  // Opened, not granted for writing (the host said nothing about writable).
  int fd = open(path_of(uris[0]).c_str(), O_WRONLY);
  g_assert_cmpint(fd, <, 0);
  g_assert_true(read_file(host_file) == kBinaryContents);
}

void test_open_multiple() {
  Vm vm(vm_options());
  HostFiles files;
  std::vector<std::string> host_files = {files.add("a.txt", "first"), files.add("b/b.txt", "second"),
                                         files.add("c.txt", "third")};
  vm.host().set_reply("OpenFile", kResponseSuccess, uris_result(host_files));

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
  assert_same(lookup(only_backend_call(vm).options.get(), "multiple").get(), "b", "true");
}

void test_open_directory() {
  Vm vm(vm_options());
  HostFiles files;
  files.add("project/src/main.c", "int main(void) { return 0; }\n");
  files.add("project/README", "read me");
  const std::string project = files.dir / "project";
  vm.host().set_reply("OpenFile", kResponseSuccess, uris_result({project}));

  // libportal 0.6 has no flag for directory: plain D-Bus, as GTK sends it.
  auto request = vm.file_chooser("OpenFile", "{'handle_token': <'pick_dir'>, 'directory': <true>}");
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
  assert_same(lookup(only_backend_call(vm).options.get(), "directory").get(), "b", "true");

  // A folder inside the exported directory stands for the host folder.
  vm.host().reset_backend();
  vm.host().set_reply("SaveFiles", kResponseCancelled, "{}");
  auto save = vm.file_chooser("SaveFiles", "{'current_folder': <b'" + guest_dir + "/src'>, 'files': <[b'main.h']>}");
  g_assert_no_error(save->error());
  g_assert_true(save->wait_for_response());
  assert_str_eq(bytestring(only_backend_call(vm).options.get(), "current_folder"), project + "/src");
}

void test_filters_and_choices() {
  Vm vm(vm_options());
  HostFiles files;
  std::string host_file = files.add("notes.txt", "notes");
  const char* filters = "[('Text', [(uint32 0, '*.txt'), (1, 'text/plain')]), ('Images', [(0, '*.png')])]";
  const char* current_filter = "('Text', [(uint32 0, '*.txt'), (1, 'text/plain')])";
  const char* choices =
      "[('encoding', 'Encoding', [('utf8', 'Unicode (UTF-8)'), ('latin15', 'Western')], 'latin15'), "
      "('reencode', 'Reencode', @a(ss) [], 'false')]";
  vm.host().set_reply("OpenFile", kResponseSuccess,
            "{'uris': <['" + uri_for(host_file) +
                "']>, 'choices': <[('encoding', 'utf8'), ('reencode', 'true')]>, "
                "'current_filter': <('Images', [(uint32 0, '*.png')])>}");

  ClientReport report =
      run_client(vm, {"open", "--filters", filters, "--current-filter", current_filter, "--choices", choices});
  g_assert_cmpstr(report.outcome.c_str(), ==, "ok");

  // The host dialog got them exactly as the application sent them…
  BackendCall call = only_backend_call(vm);
  assert_same(lookup(call.options.get(), "filters").get(), "a(sa(us))", filters);
  assert_same(lookup(call.options.get(), "current_filter").get(), "(sa(us))", current_filter);
  assert_same(lookup(call.options.get(), "choices").get(), "a(ssa(ss)s)", choices);
  // …and the application gets the user's answers back.
  assert_same(lookup(report.results.get(), "choices").get(), "a(ss)", "[('encoding', 'utf8'), ('reencode', 'true')]");
  assert_same(lookup(report.results.get(), "current_filter").get(), "(sa(us))", "('Images', [(uint32 0, '*.png')])");
}

// Every documented option of the three methods reaches the host dialog; what
// is not documented does not; guest paths arrive as the host files they
// stand for.
void test_options_reach_host() {
  Vm vm(vm_options());
  HostFiles files;
  std::string host_file = files.add("docs/letter.odt", "letter");
  vm.host().set_reply("OpenFile", kResponseSuccess, uris_result({host_file}));
  auto open = vm.file_chooser("OpenFile",
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
  g_assert_cmpstr(call.title.c_str(), ==, "[filechooser-vm] Open a letter");
  g_assert_cmpstr(call.parent_window.c_str(), ==, "");
  GVariant* options = call.options.get();
  assert_same(lookup(options, "accept_label").get(), "s", "'_Open it'");
  assert_same(lookup(options, "modal").get(), "b", "false");
  assert_same(lookup(options, "multiple").get(), "b", "false");
  assert_same(lookup(options, "directory").get(), "b", "false");
  assert_same(lookup(options, "filters").get(), "a(sa(us))", "[('Text', [(uint32 0, '*.odt')])]");
  assert_same(lookup(options, "current_filter").get(), "(sa(us))", "('Text', [(uint32 0, '*.odt')])");
  assert_same(lookup(options, "choices").get(), "a(ssa(ss)s)", "[('ro', 'Read only', @a(ss) [], 'true')]");
  g_assert_false(has_key(options, "x-unknown"));

  // SaveFile, pointing at the document the guest has open.
  vm.host().reset_backend();
  // A folder option naming a shared file means the folder holding it.
  const std::string guest_folder = guest_file;
  auto save = vm.file_chooser("SaveFile",
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
  g_assert_cmpstr(call.title.c_str(), ==, "[filechooser-vm] Save the letter");
  options = call.options.get();
  assert_same(lookup(options, "accept_label").get(), "s", "'_Save'");
  assert_same(lookup(options, "modal").get(), "b", "true");
  assert_same(lookup(options, "filters").get(), "a(sa(us))",
              "[('ODF', [(uint32 1, 'application/vnd.oasis.opendocument.text')])]");
  assert_same(lookup(options, "current_filter").get(), "(sa(us))",
              "('ODF', [(uint32 1, 'application/vnd.oasis.opendocument.text')])");
  assert_same(lookup(options, "choices").get(), "a(ssa(ss)s)",
              "[('fmt', 'Format', [('odt', 'ODT'), ('doc', 'Word')], 'odt')]");
  assert_same(lookup(options, "current_name").get(), "s", "'letter copy.odt'");
  // The host file the guest's document stands for, and the folder holding it.
  assert_str_eq(bytestring(options, "current_file"), host_file);
  assert_str_eq(bytestring(options, "current_folder"), files.dir / "docs");

  // SaveFiles.
  vm.host().reset_backend();
  auto save_files = vm.file_chooser("SaveFiles",
                            "{'handle_token': <'s2'>, 'accept_label': <'_Export'>, 'modal': <false>, "
                            "'choices': <[('zip', 'Compress', @a(ss) [], '')]>, "
                            "'current_folder': <b'" + guest_folder + "'>, 'files': <[b'one.txt', b'two.txt']>}",
                            "Export");
  g_assert_no_error(save_files->error());
  g_assert_true(save_files->wait_for_response());
  call = only_backend_call(vm);
  g_assert_cmpstr(call.method.c_str(), ==, "SaveFiles");
  options = call.options.get();
  assert_same(lookup(options, "accept_label").get(), "s", "'_Export'");
  assert_same(lookup(options, "modal").get(), "b", "false");
  assert_same(lookup(options, "choices").get(), "a(ssa(ss)s)", "[('zip', 'Compress', @a(ss) [], '')]");
  assert_same(lookup(options, "files").get(), "aay", "[b'one.txt', b'two.txt']");
  assert_str_eq(bytestring(options, "current_folder"), files.dir / "docs");
}

// ---- responses, Close, the Request object ---------------------------------------

void test_response_codes() {
  Vm vm(vm_options());
  HostFiles files;
  std::string host_file = files.add("x.txt", "x");
  for (guint32 response : {kResponseCancelled, kResponseOther}) {
    // Whatever the host adds, nothing chosen reaches the guest on failure.
    vm.host().set_reply("OpenFile", response, uris_result({host_file}));
    auto request = vm.file_chooser("OpenFile", "{}");
    g_assert_no_error(request->error());
    g_assert_true(request->wait_for_response());
    g_assert_cmpuint(request->response(), ==, response);
    g_assert_cmpuint(strv(request->results(), "uris").size(), ==, 0);
  }
  vm.host().set_reply("OpenFile", kResponseSuccess, uris_result({host_file}));
  auto request = vm.file_chooser("OpenFile", "{}");
  g_assert_true(request->wait_for_response());
  g_assert_cmpuint(request->response(), ==, kResponseSuccess);

  // What a libportal application sees when the user cancels.
  vm.host().set_reply("OpenFile", kResponseCancelled, "{}");
  ClientReport report = run_client(vm, {"open"});
  g_assert_cmpstr(report.outcome.c_str(), ==, "cancelled");
}

void test_close_closes_host_dialog() {
  Vm vm(vm_options());
  vm.host().set_reply("OpenFile", kResponseWaitForClose);
  auto request = vm.file_chooser("OpenFile", "{'handle_token': <'to_close'>}");
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
  Vm vm(vm_options());
  vm.host().set_reply("OpenFile", kResponseWaitForClose);
  GObjectPtr<GDBusConnection> application = connect(vm.guest().address());
  auto request = vm.file_chooser("OpenFile", "{'handle_token': <'abandoned'>}", "title", application.get());
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
  Vm vm(vm_options());
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
  auto request = vm.file_chooser("OpenFile", "{'handle_token': <'early_bird'>}", "title", application.get());
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
  auto pending = vm.file_chooser("OpenFile", "{'handle_token': <'pending'>}", "title", application.get());
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
  Vm vm(vm_options());
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
    auto request = vm.file_chooser(method, options);
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
  Vm vm(vm_options());
  for (const char* options : {"{'handle_token': <'not-a-token!'>}", "{'handle_token': <'a/b'>}",
                              "{'handle_token': <''>}", "{'handle_token': <uint32 7>}"}) {
    auto request = vm.file_chooser("OpenFile", options);
    assert_str_eq(remote_error_name(request->error()), kInvalidArgument);
  }
  g_assert_cmpuint(vm.host().backend_calls().size(), ==, 0);
}

// ---- saving -------------------------------------------------------------------------

void test_save_writes_host_file() {
  Vm vm(vm_options());
  HostFiles files;
  const std::string target = files.dir.make_dir("out") + "/new file.txt";  // does not exist yet
  vm.host().set_reply("SaveFile", kResponseSuccess, uris_result({target}));
  ClientReport report = run_client(vm, {"save", "--current-name", "new file.txt", "--write", "saved in the VM\n"});
  g_assert_cmpstr(report.outcome.c_str(), ==, "ok");
  std::vector<std::string> uris = strv(report.results.get(), "uris");
  g_assert_cmpuint(uris.size(), ==, 1);
  vm.document_id(uris[0], "new file.txt");
  g_assert_cmpuint(report.write_errors.size(), ==, 0);
  g_assert_true(read_file(target) == "saved in the VM\n");
  assert_same(lookup(only_backend_call(vm).options.get(), "current_name").get(), "s", "'new file.txt'");

  // An existing file, saved the way editors do (temporary file, rename).
  vm.host().reset_backend();
  const std::string existing = files.add("out/existing.txt", "old contents");
  vm.host().set_reply("SaveFile", kResponseSuccess, uris_result({existing}));
  report = run_client(vm, {"save", "--replace", "--write", "new contents"});
  g_assert_cmpstr(report.outcome.c_str(), ==, "ok");
  g_assert_cmpuint(report.write_errors.size(), ==, 0);
  g_assert_true(read_file(existing) == "new contents");
}

void test_save_files_writes_host_files() {
  Vm vm(vm_options());
  HostFiles files;
  const std::string folder = files.dir.make_dir("export");
  vm.host().set_reply("SaveFiles", kResponseSuccess, uris_result({folder + "/one.txt", folder + "/two.txt"}));
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
  assert_same(lookup(only_backend_call(vm).options.get(), "files").get(), "aay", "[b'one.txt', b'two.txt']");
}

// Guest paths the host cannot see are dropped, never passed on as host paths.
void test_guest_paths_outside_documents_dropped() {
  Vm vm(vm_options());
  HostFiles files;
  const std::string secret = files.add("secret.txt", "host secret");  // exists on the host
  const std::string target = files.dir / "out.txt";
  vm.host().set_reply("SaveFile", kResponseSuccess, uris_result({target}));
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
    vm.host().set_reply("SaveFile", kResponseCancelled, "{}");
    auto request =
        vm.file_chooser("SaveFile", "{'current_file': <b'" + path + "'>, 'current_folder': <b'" + path + "'>}");
    g_assert_no_error(request->error());
    g_assert_true(request->wait_for_response());
    call = only_backend_call(vm);
    g_test_message("%s → current_file %s", path.c_str(), bytestring(call.options.get(), "current_file").c_str());
    g_assert_false(has_key(call.options.get(), "current_file"));
    g_assert_false(has_key(call.options.get(), "current_folder"));
  }
}

void test_non_file_uri_refused() {
  Vm vm(vm_options());
  HostFiles files;
  const std::string host_file = files.add("fine.txt", "fine");
  vm.host().set_reply("OpenFile", kResponseSuccess,
            "{'uris': <['" + uri_for(host_file) + "', 'sftp://fileserver/home/user/secret.txt']>}");
  auto request = vm.file_chooser("OpenFile", "{'multiple': <true>}");
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
  return g_variant_get_uint32(portal_property(connection, kFileChooser, "version").get());
}

void test_version() {
  Vm vm(vm_options());
  const guint32 host_version = version_on(vm.host().connection());
  // The plugin implements version 4; the guest sees the lower of the two.
  g_assert_true(wait_until([&] { return version_on(vm.guest().connection()) == MIN(host_version, 4u); }, 5s));
}

// ---- documents: isolation and persistence ----------------------------------------

void test_second_vm_cannot_see_documents() {
  HostFiles files;
  const std::string host_file = files.add("private.txt", "only for VM one");
  Vm first(vm_options("vm-one"));
  first.host().set_reply("OpenFile", kResponseSuccess, uris_result({host_file}));
  auto request = first.file_chooser("OpenFile", "{}");
  g_assert_true(request->wait_for_response());
  std::vector<std::string> uris = strv(request->results(), "uris");
  g_assert_cmpuint(uris.size(), ==, 1);
  const std::string doc_id = first.document_id(uris[0], "private.txt");
  g_assert_true(read_file(path_of(uris[0])) == "only for VM one");

  Vm second(vm_options("vm-two"));
  // Not in the second VM's documents, by any path…
  g_assert_false(g_file_test((second.documents() + "/" + doc_id).c_str(), G_FILE_TEST_EXISTS));
  g_assert_false(read_file(second.documents() + "/" + doc_id + "/private.txt").has_value());
  g_assert_false(
      g_file_test((second.broker().runtime_dir() + "/doc/" + doc_id).c_str(), G_FILE_TEST_EXISTS));
  // …and its broker will not map the first VM's document back to the host file.
  second.host().set_reply("SaveFile", kResponseCancelled, "{}");
  auto save =
      second.file_chooser("SaveFile", "{'current_file': <b'" + second.documents() + "/" + doc_id + "/private.txt'>}");
  g_assert_true(save->wait_for_response());
  g_assert_false(has_key(only_backend_call(second).options.get(), "current_file"));
}

void test_exports_survive_broker_restart() {
  Vm vm(vm_options());
  HostFiles files;
  const std::string host_file = files.add("kept.txt", "still here");
  vm.host().set_reply("OpenFile", kResponseSuccess, uris_result({host_file}));
  auto request = vm.file_chooser("OpenFile", "{}");
  g_assert_true(request->wait_for_response());
  std::vector<std::string> uris = strv(request->results(), "uris");
  g_assert_cmpuint(uris.size(), ==, 1);
  const std::string doc_id = vm.document_id(uris[0], "kept.txt");

  vm.restart_broker();  // a new broker process on the same state directory

  // The guest's path still works…
  g_assert_true(read_file(path_of(uris[0])) == "still here");
  // …still stands for the host file…
  vm.host().reset_backend();
  vm.host().set_reply("SaveFile", kResponseCancelled, "{}");
  auto save = vm.file_chooser("SaveFile", "{'current_file': <b'" + path_of(uris[0]) + "'>}");
  g_assert_true(save->wait_for_response());
  assert_str_eq(bytestring(only_backend_call(vm).options.get(), "current_file"), host_file);
  // …and choosing the same file again gives the same document.
  vm.host().set_reply("OpenFile", kResponseSuccess, uris_result({host_file}));
  auto again = vm.file_chooser("OpenFile", "{}");
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
  add_test("/filechooser/title-names-the-vm", test_title_names_the_vm);
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
