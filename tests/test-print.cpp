// SPDX-License-Identifier: LGPL-2.1-or-later
// test-print.cpp — the Print portal across the VM boundary, real parts only:
// the host's xdg-desktop-portal (1.16) and the test backend's Print (which
// records the bytes of the document fd it is asked to print), the broker
// with the print and filechooser plugins and its private document portal, a
// guest bus with the real agent, and guest clients: the libportal
// application (handoff-client.cpp) and plain D-Bus calls.
//
// What a user notices: the host's print dialog names the VM, the bytes the
// printer gets are the guest's document, a token from PreparePrint prints
// without a second dialog for the application that got it and nobody else,
// refused calls never reach the host, and host copies of guest files are
// gone once the request is over.
#include <sys/stat.h>

#include "handoff-test.hpp"

using namespace sidebus::test;

namespace {

constexpr char kPrint[] = "org.freedesktop.portal.Print";
constexpr char kVmName[] = "dev.sidebus.PrintTest";
const std::string kPdf = "%PDF-1.4\n% the guest's report\n\x01\x02\x03 binary\n%%EOF\n";

// The support library's Vm with Print (and the FileChooser, to share
// documents); @print is the portals.print section (JSON).
VmOptions print_vm(const std::string& print = "{}", bool byte_only = false) {
  return {.name = kVmName,
          .portals = {"filechooser", "print"},
          .config = {{"60-print.json", R"({"portals": {"print": )" + print + "}}"}},
          .byte_only = byte_only};
}

std::unique_ptr<PortalRequest> prepare_print(GDBusConnection* connection, const std::string& title = "Report",
                                             const std::string& settings = "{}",
                                             const std::string& page_setup = "{}",
                                             const std::string& options = "{}") {
  VariantPtr parsed_settings = parse("a{sv}", settings);
  VariantPtr parsed_setup = parse("a{sv}", page_setup);
  VariantPtr parsed_options = with_handle_token(options);
  return std::make_unique<PortalRequest>(
      connection, kPortalBusName, kPrint, "PreparePrint",
      g_variant_new("(ss@a{sv}@a{sv}@a{sv})", "x11:1234", title.c_str(), parsed_settings.get(), parsed_setup.get(),
                    parsed_options.get()));
}

// Print("x11:1234", @title, handle 0, @options) with @fd (-1: no fd at all).
std::unique_ptr<PortalRequest> print_fd(GDBusConnection* connection, int fd, const std::string& options = "{}",
                                        const std::string& title = "Report") {
  VariantPtr parsed = with_handle_token(options);
  auto request = std::make_unique<PortalRequest>(connection, kPortalBusName, kPrint, "Print",
                                                 g_variant_new("(ssh@a{sv})", "x11:1234", title.c_str(), 0,
                                                               parsed.get()),
                                                 fd >= 0 ? std::vector<int>{fd} : std::vector<int>{});
  if (fd >= 0) close(fd);
  return request;
}

std::string printed_bytes(const BackendCall& call) { return bytes_of(lookup(call.record.get(), "data").get()); }

// ---- documents and libportal ----------------------------------------------------------

// A document the VM was given, printed by a libportal application: the
// dialog names the VM, the printer gets the host file's bytes, and the
// token of PreparePrint carries over to Print.
void test_print_document() {
  Vm vm(print_vm());
  SharedDocument document(vm, "report.pdf", kPdf);
  vm.host().set_reply("PreparePrint", kResponseSuccess);
  vm.host().set_reply("Print", kResponseSuccess);
  ClientReport report = run_handoff_client(vm, {"print", document.guest_path, "--prepare", "--title", "Q3 report"});
  assert_str_eq(report.outcome, "ok");
  g_assert_nonnull(report.results.get());
  guint32 token = 0;
  g_assert_true(g_variant_lookup(report.results.get(), "token", "u", &token));
  assert_str_eq(lookup_string(lookup(report.results.get(), "settings").get(), "printer"), "sidebus-test-printer");
  assert_str_eq(lookup_string(lookup(report.results.get(), "page-setup").get(), "PPDName"), "iso_a4");

  std::vector<BackendCall> prepared = calls_of(vm.host(), "PreparePrint");
  g_assert_cmpuint(prepared.size(), ==, 1);
  assert_str_eq(prepared[0].title, std::string("[") + kVmName + "] Q3 report");
  assert_str_eq(prepared[0].parent_window, "");
  std::vector<BackendCall> printed = calls_of(vm.host(), "Print");
  g_assert_cmpuint(printed.size(), ==, 1);
  assert_str_eq(printed[0].title, std::string("[") + kVmName + "] Q3 report");
  g_assert_true(printed_bytes(printed[0]) == kPdf);
  assert_same(lookup(printed[0].options.get(), "token").get(), "u", std::to_string(token));
  g_assert_cmpuint(host_copies(vm, "print").size(), ==, 0);  // a document is printed as itself
}

// A libportal application printing a file of its own (not a document): the
// host prints a copy of it. An O_PATH fd of such a file is refused: the
// broker would read it with its own rights, not the application's.
void test_libportal_guest_file() {
  Vm vm(print_vm());
  std::string guest_file = vm.guest_files().write_file("notes.pdf", kPdf);
  vm.host().set_reply("Print", kResponseSuccess);
  ClientReport report = run_handoff_client(vm, {"print", guest_file, "--title", "Notes"});
  assert_str_eq(report.outcome, "ok");
  std::vector<BackendCall> printed = calls_of(vm.host(), "Print");
  g_assert_cmpuint(printed.size(), ==, 1);
  g_assert_true(printed_bytes(printed[0]) == kPdf);
  assert_str_eq(printed[0].title, std::string("[") + kVmName + "] Notes");
  g_assert_false(has_key(printed[0].options.get(), "token"));  // libportal's 0: no token
  g_assert_true(wait_until([&] { return host_copies(vm, "print").empty(); }));

  auto opath = print_fd(vm.guest().connection(), open_guest_file(guest_file, O_PATH));
  assert_error(opath->error(), kNotAllowed, "O_PATH");
  g_assert_cmpuint(calls_of(vm.host(), "Print").size(), ==, 1);
}

// ---- copies -----------------------------------------------------------------------------

// A file the guest application wrote (not a document) is printed from a host
// copy; the host gets an fd of it, and the copy's name is gone from the
// broker's directory before the host has even answered.
void test_print_guest_file() {
  Vm vm(print_vm());
  std::string guest_file = vm.guest_files().write_file("tmp/print-job.pdf", kPdf);
  vm.host().set_reply("Print", kResponseSuccess, nullptr, 1000);
  auto request = print_fd(vm.guest().connection(), open_guest_file(guest_file));
  g_assert_no_error(request->error());
  g_assert_true(vm.host().wait_for_backend_calls(1));
  g_assert_true(printed_bytes(calls_of(vm.host(), "Print").at(0)) == kPdf);
  g_assert_cmpuint(host_copies(vm, "print").size(), ==, 0);
  g_assert_true(request->wait_for_response());
  g_assert_cmpuint(request->response(), ==, kResponseSuccess);
}

// The fd is treated by what it is, whatever made it: a pipe or a socket is
// read to its end, a (sealed) memfd — what fd forwarding makes of a file's
// content on a byte-only link — is copied like a file. What the guest wrote
// is printed.
void test_print_streams_and_memfds() {
  Vm vm(print_vm());
  vm.host().set_reply("Print", kResponseSuccess);
  const std::vector<std::pair<const char*, int>> fds = {
      {"pipe", pipe_with(kPdf)}, {"socket", socket_with(kPdf)}, {"memfd", sealed_memfd("forwarded.pdf", kPdf)}};
  for (const auto& [what, fd] : fds) {
    g_test_message("printing a %s", what);
    auto request = print_fd(vm.guest().connection(), fd);
    g_assert_no_error(request->error());
    g_assert_true(request->wait_for_response());
    g_assert_cmpuint(request->response(), ==, kResponseSuccess);
    g_assert_true(printed_bytes(calls_of(vm.host(), "Print").back()) == kPdf);
  }
  g_assert_cmpuint(calls_of(vm.host(), "Print").size(), ==, 3);
  g_assert_true(wait_until([&] { return host_copies(vm, "print").empty(); }));
}

// ---- refusals ---------------------------------------------------------------------------

void test_refused_documents() {
  Vm vm(print_vm(R"({"copy_outside_documents": false})"));
  std::string guest_file = vm.guest_files().write_file("notes.pdf", kPdf);
  auto outside = print_fd(vm.guest().connection(), open_guest_file(guest_file));
  assert_error(outside->error(), kNotAllowed, "portals.print.copy_outside_documents");
  auto folder = print_fd(vm.guest().connection(), open_guest_file(vm.guest_files().path(), O_RDONLY | O_DIRECTORY));
  assert_error(folder->error(), kNotAllowed, "directory");
  auto no_fd = print_fd(vm.guest().connection(), -1);
  assert_error(no_fd->error(), kInvalidArgument, "handle 0");
  int null_fd = open_guest_file("/dev/null");
  auto device = print_fd(vm.guest().connection(), null_fd);
  assert_error(device->error(), kNotAllowed, "character device");
  g_assert_cmpuint(vm.host().backend_calls().size(), ==, 0);
  assert_portal_up(vm, kPrint);
}

void test_oversize() {
  Vm vm(print_vm(R"({"max_copy_size": 16})"));
  std::string guest_file = vm.guest_files().write_file("big.pdf", kPdf);
  auto big = print_fd(vm.guest().connection(), open_guest_file(guest_file));
  assert_error(big->error(), kLimitsExceeded, "portals.print.max_copy_size");
  auto big_pipe = print_fd(vm.guest().connection(), pipe_with(kPdf));
  assert_error(big_pipe->error(), kLimitsExceeded, "more than 16 bytes");
  g_assert_true(wait_until([&] { return host_copies(vm, "print").empty(); }));
  // Small enough passes.
  vm.host().set_reply("Print", kResponseSuccess);
  auto small = print_fd(vm.guest().connection(), pipe_with("tiny"));
  g_assert_no_error(small->error());
  g_assert_true(small->wait_for_response());
  g_assert_cmpuint(small->response(), ==, kResponseSuccess);
  g_assert_cmpuint(vm.host().backend_calls().size(), ==, 1);
}

// Titles, settings, page setups and options by table; refusals name what is
// wrong, and nothing reaches the host.
void test_refused_inputs() {
  Vm vm(print_vm());
  struct Case {
    std::string title, settings, page_setup, options;
    const char* reason;
  };
  const std::vector<Case> cases = {
      {"a\x01title", "{}", "{}", "{}", "the title contains the control character U+0001"},
      {"\u202etxt.exe", "{}", "{}", "{}", "bidirectional"},
      {std::string(2000, 'x'), "{}", "{}", "{}", "the title is longer than"},
      {"t", "{'orientation': <'sideways'>}", "{}", "{}", "settings: option 'orientation': must be one of"},
      {"t", "{'n-copies': <'0'>}", "{}", "{}", "option 'n-copies'"},
      {"t", "{'n-copies': <2>}", "{}", "{}", "option 'n-copies' must be of type 's'"},
      {"t", "{'page-ranges': <'1;rm -rf'>}", "{}", "{}", "page ranges"},
      {"t", "{'output-basename': <'../x'>}", "{}", "{}", "not a file name"},
      {"t", "{}", "{'Width': <-1.0>}", "{}", "page_setup: option 'Width'"},
      {"t", "{}", "{'Orientation': <'upside'>}", "{}", "page_setup: option 'Orientation'"},
      {"t", "{}", "{}", "{'modal': <'yes'>}", "options: option 'modal' must be of type 'b'"},
      {"t", "{}", "{}", "{'supported_output_file_formats': <['exe']>}", "pdf, ps, svg"},
      {"t", "{}", "{}", "{'accept_label': <'a\\nb'>}", "control character"},
  };
  for (const Case& c : cases) {
    g_test_message("PreparePrint %s", c.reason);
    auto request = prepare_print(vm.guest().connection(), c.title, c.settings, c.page_setup, c.options);
    assert_error(request->error(), kInvalidArgument, c.reason);
  }
  g_assert_cmpuint(vm.host().backend_calls().size(), ==, 0);

  // Unknown keys are dropped, output-uri (a path on the host) never crosses.
  vm.host().set_reply("PreparePrint", kResponseSuccess);
  auto request = prepare_print(vm.guest().connection(), "t",
                               "{'orientation': <'landscape'>, 'output-uri': <'file:///root/.bashrc'>,"
                               " 'unknown': <'x'>, 'n-copies': <'2'>}",
                               "{'PPDName': <'iso_a5'>, 'Width': <148.0>}", "{'modal': <false>, 'extra': <1>}");
  g_assert_no_error(request->error());
  g_assert_true(request->wait_for_response());
  BackendCall call = std::move(calls_of(vm.host(), "PreparePrint").at(0));
  assert_same(lookup(call.record.get(), "settings").get(), "a{sv}",
              "{'orientation': <'landscape'>, 'n-copies': <'2'>}");
  assert_same(lookup(call.record.get(), "page_setup").get(), "a{sv}", "{'PPDName': <'iso_a5'>, 'Width': <148.0>}");
  assert_same(call.options.get(), "a{sv}", "{'modal': <false>}");
  assert_portal_up(vm, kPrint);
}

// The host's print-to-file location is a host path: the guest never sees it.
void test_host_paths_hidden() {
  Vm vm(print_vm());
  vm.host().set_reply("PreparePrint", kResponseSuccess,
                      "{'settings': <{'printer': <'Print to File'>, 'output-uri': <'file:///home/host-user/out.pdf'>,"
                      " 'output-file-format': <'pdf'>}>, 'token': <uint32 77>}");
  auto request = prepare_print(vm.guest().connection());
  g_assert_true(request->wait_for_response());
  g_assert_cmpuint(request->response(), ==, kResponseSuccess);
  assert_same(lookup(request->results(), "settings").get(), "a{sv}",
              "{'printer': <'Print to File'>, 'output-file-format': <'pdf'>}");
  assert_same(lookup(request->results(), "token").get(), "u", "77");
}

// ---- tokens -----------------------------------------------------------------------------

// A token prints without a dialog, so it is good only for the guest client
// that prepared it, and once; other tokens are refused, not passed on.
void test_tokens_per_client() {
  Vm vm(print_vm());
  SharedDocument document(vm, "report.pdf", kPdf);
  vm.host().set_reply("PreparePrint", kResponseSuccess);
  vm.host().set_reply("Print", kResponseSuccess);
  auto prepared = prepare_print(vm.guest().connection());
  g_assert_true(prepared->wait_for_response());
  guint32 token = 0;
  g_assert_true(g_variant_lookup(prepared->results(), "token", "u", &token));
  std::string with_token = "{'token': <uint32 " + std::to_string(token) + ">}";

  GObjectPtr<GDBusConnection> other = connect(vm.guest().address());
  auto stolen = print_fd(other.get(), open_guest_file(document.guest_path), with_token);
  assert_error(stolen->error(), kNotAllowed, "was not given to this client by PreparePrint");
  auto guessed = print_fd(vm.guest().connection(), open_guest_file(document.guest_path),
                          "{'token': <uint32 " + std::to_string(token + 1000) + ">}");
  assert_error(guessed->error(), kNotAllowed, "PreparePrint");
  g_assert_cmpuint(calls_of(vm.host(), "Print").size(), ==, 0);

  auto own = print_fd(vm.guest().connection(), open_guest_file(document.guest_path), with_token);
  g_assert_no_error(own->error());
  g_assert_true(own->wait_for_response());
  g_assert_cmpuint(own->response(), ==, kResponseSuccess);
  BackendCall printed = std::move(calls_of(vm.host(), "Print").at(0));
  assert_same(lookup(printed.options.get(), "token").get(), "u", std::to_string(token));
  g_assert_true(printed_bytes(printed) == kPdf);

  auto again = print_fd(vm.guest().connection(), open_guest_file(document.guest_path), with_token);
  assert_error(again->error(), kNotAllowed, "PreparePrint");
}

// ---- answers ----------------------------------------------------------------------------

// The user cancelling the dialog (1) or the backend failing (2) reaches the
// guest, for both methods; a copy goes when its request does.
void test_cancel_and_other() {
  Vm vm(print_vm());
  std::string guest_file = vm.guest_files().write_file("job.pdf", kPdf);
  for (guint32 response : {kResponseCancelled, kResponseOther}) {
    vm.host().set_reply("PreparePrint", response);
    vm.host().set_reply("Print", response);
    auto prepared = prepare_print(vm.guest().connection());
    g_assert_true(prepared->wait_for_response());
    g_assert_cmpuint(prepared->response(), ==, response);
    g_assert_false(has_key(prepared->results(), "token"));
    auto printed = print_fd(vm.guest().connection(), open_guest_file(guest_file));
    g_assert_true(printed->wait_for_response());
    g_assert_cmpuint(printed->response(), ==, response);
    g_assert_true(wait_until([&] { return host_copies(vm, "print").empty(); }));
  }
  // libportal sees the same.
  vm.host().set_reply("PreparePrint", kResponseCancelled);
  assert_str_eq(run_handoff_client(vm, {"prepare"}).outcome, "cancelled");
  vm.host().set_reply("PreparePrint", kResponseOther);
  assert_str_eq(run_handoff_client(vm, {"prepare"}).outcome, "failed");
  // A backend error is response 2.
  vm.host().set_reply("Print", kResponseDBusError);
  auto failed = print_fd(vm.guest().connection(), open_guest_file(guest_file));
  g_assert_true(failed->wait_for_response());
  g_assert_cmpuint(failed->response(), ==, kResponseOther);
}

// Closing the request from the guest reaches the host dialog; no copy is left.
void test_close() {
  Vm vm(print_vm());
  std::string guest_file = vm.guest_files().write_file("job.pdf", kPdf);
  vm.host().set_reply("Print", kResponseWaitForClose);
  auto request = print_fd(vm.guest().connection(), open_guest_file(guest_file));
  g_assert_no_error(request->error());
  g_assert_true(vm.host().wait_for_backend_calls(1));
  g_assert_true(request->close());
  g_assert_true(wait_until([&] { return calls_of(vm.host(), "Print").at(0).closed; }));
  g_assert_true(wait_until([&] { return host_copies(vm, "print").empty(); }));
}

// ---- version, byte-only links ----------------------------------------------------------

void test_version() {
  Vm vm(print_vm());
  VariantPtr host_version = portal_property(vm.host().connection(), kPrint, "version");
  VariantPtr guest_version = portal_property(vm.guest().connection(), kPrint, "version");
  g_assert_cmpuint(g_variant_get_uint32(guest_version.get()), ==, MIN(g_variant_get_uint32(host_version.get()), 4u));
}

// A byte-only link forwards fds (link protocol 2): a document crosses as a
// reference and is printed as the host file itself, a guest file crosses as
// its content and is printed from a copy.
void test_byte_only_link() {
  Vm vm(print_vm("{}", true));
  SharedDocument document(vm, "report.pdf", kPdf);
  vm.host().set_reply("Print", kResponseSuccess);
  auto printed_document = print_fd(vm.guest().connection(), open_guest_file(document.guest_path));
  g_assert_no_error(printed_document->error());
  g_assert_true(printed_document->wait_for_response());
  g_assert_cmpuint(printed_document->response(), ==, kResponseSuccess);
  g_assert_true(printed_bytes(calls_of(vm.host(), "Print").at(0)) == kPdf);

  const std::string notes = "%PDF-1.4\n% the guest's own notes\n%%EOF\n";
  std::string guest_file = vm.guest_files().write_file("notes.pdf", notes);
  auto printed_file = print_fd(vm.guest().connection(), open_guest_file(guest_file));
  g_assert_no_error(printed_file->error());
  g_assert_true(printed_file->wait_for_response());
  g_assert_cmpuint(printed_file->response(), ==, kResponseSuccess);
  g_assert_true(printed_bytes(calls_of(vm.host(), "Print").at(1)) == notes);
}

// An agent of link protocol 1 carries no fds: Print says so, PreparePrint
// (no fd) works.
void test_protocol_1_link() {
  VmOptions options = print_vm("{}", true);
  options.agent_args = {"--link-protocol", "1"};
  Vm vm(options);
  auto no_fd = print_fd(vm.guest().connection(), -1);
  assert_error(no_fd->error(), kNotSupported, "cannot carry file descriptors");
  vm.host().set_reply("PreparePrint", kResponseSuccess);
  auto prepared = prepare_print(vm.guest().connection());
  g_assert_true(prepared->wait_for_response());
  g_assert_cmpuint(prepared->response(), ==, kResponseSuccess);
}

}  // namespace

int main(int argc, char** argv) {
  g_test_init(&argc, &argv, nullptr);
  add_test("/print/document", test_print_document);
  add_test("/print/libportal-guest-file", test_libportal_guest_file);
  add_test("/print/guest-file", test_print_guest_file);
  add_test("/print/streams-and-memfds", test_print_streams_and_memfds);
  add_test("/print/refused-documents", test_refused_documents);
  add_test("/print/oversize", test_oversize);
  add_test("/print/refused-inputs", test_refused_inputs);
  add_test("/print/host-paths-hidden", test_host_paths_hidden);
  add_test("/print/tokens-per-client", test_tokens_per_client);
  add_test("/print/cancel-and-other", test_cancel_and_other);
  add_test("/print/close", test_close);
  add_test("/print/version", test_version);
  add_test("/print/byte-only-link", test_byte_only_link);
  add_test("/print/protocol-1-link", test_protocol_1_link);
  return g_test_run();
}
