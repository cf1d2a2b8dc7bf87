// test-email.cpp — the Email portal across the VM boundary, real parts only:
// the host's xdg-desktop-portal (1.16, which turns attachment fds into the
// paths it hands the backend) and the test backend's Email (which records
// the bytes of every attachment it gets), the broker with the email and
// filechooser plugins and its private document portal, a guest bus with the
// real agent, and guest clients: the libportal application
// (handoff-client.cpp) and plain D-Bus calls.
//
// What a user notices: the composer gets the recipients, subject and body
// the guest application asked for and the attachments' bytes; a document is
// attached as the host file itself, anything else as a host copy that is
// deleted when nobody needs it any more; refused calls never open a composer.
#include "handoff-test.hpp"

using namespace sidebus::test;

namespace {

constexpr char kEmail[] = "org.freedesktop.portal.Email";
constexpr char kVmName[] = "dev.sidebus.EmailTest";
const std::string kMinutes = "minutes of the meeting\n\x01\x02 binary too\n";
const std::string kPicture = "\x89PNG\r\n\x1a\n a picture of the guest's";

// The support library's Vm with Email (and the FileChooser, to share
// documents); @email is the portals.email section (JSON).
VmOptions email_vm(const std::string& email = "{}", bool byte_only = false) {
  return {.name = kVmName,
          .portals = {"filechooser", "email"},
          .config = {{"60-email.json", R"({"portals": {"email": )" + email + "}}"}},
          .byte_only = byte_only};
}

// ComposeEmail("x11:1234", @options + attachment_fds [0, …, n-1]) with @fds
// (closed here); @handles overrides the attachment_fds value (text).
std::unique_ptr<PortalRequest> compose(GDBusConnection* connection, const std::string& options,
                                       const std::vector<int>& fds = {}, const std::string& handles = "") {
  std::string text = options;
  std::string value = handles;
  if (value.empty() && !fds.empty()) {
    value = "[";
    for (size_t i = 0; i < fds.size(); i++) value += (i ? ", handle " : "handle ") + std::to_string(i);
    value += "]";
  }
  if (!value.empty()) {
    text.pop_back();  // "}"
    text += std::string(text.size() > 1 ? ", " : "") + "'attachment_fds': <" + value + ">}";
  }
  VariantPtr parsed = with_handle_token(text);
  auto request = std::make_unique<PortalRequest>(connection, kPortalBusName, kEmail, "ComposeEmail",
                                                 g_variant_new("(s@a{sv})", "x11:1234", parsed.get()), fds);
  for (int fd : fds) close(fd);
  return request;
}

// The bytes of each attachment the composer got.
std::vector<std::string> attachment_bytes(const BackendCall& call) {
  std::vector<std::string> bytes;
  VariantPtr data = lookup(call.record.get(), "attachment_data");
  for (gsize i = 0; i < g_variant_n_children(data.get()); i++) {
    g_autoptr(GVariant) one = g_variant_get_child_value(data.get(), i);
    bytes.push_back(bytes_of(one));
  }
  return bytes;
}

BackendCall only_compose(Vm& vm) {
  std::vector<BackendCall> calls = calls_of(vm.host(), "ComposeEmail");
  g_assert_cmpuint(calls.size(), ==, 1);
  return std::move(calls[0]);
}

// ---- libportal, documents and copies ---------------------------------------------------

// A libportal application sends a message with a shared document and a file
// of its own attached: the composer gets everything, the document as the host
// file behind it, the other file as a host copy with its name.
void test_compose_with_attachments() {
  Vm vm(email_vm());
  SharedDocument document(vm, "minutes.txt", kMinutes);
  std::string picture = vm.guest_files().write_file("Pictures/cat.png", kPicture);
  vm.host().set_reply("ComposeEmail", kResponseSuccess);
  ClientReport report = run_handoff_client(
      vm, {"email", "--address", "ada@example.com", "--address", "grace.hopper+navy@example.org", "--cc",
           "alan_turing@example.net", "--bcc", "x-y@sub.example.com", "--subject", "Minutes & a cat", "--body",
           "Attached.\n\tThe minutes, and a cat.\n", "--attach", document.guest_path, "--attach", picture});
  assert_str_eq(report.outcome, "ok");
  BackendCall call = only_compose(vm);
  assert_same(lookup(call.options.get(), "addresses").get(), "as",
              "['ada@example.com', 'grace.hopper+navy@example.org']");
  assert_same(lookup(call.options.get(), "cc").get(), "as", "['alan_turing@example.net']");
  assert_same(lookup(call.options.get(), "bcc").get(), "as", "['x-y@sub.example.com']");
  assert_str_eq(lookup_string(call.options.get(), "subject"), "Minutes & a cat");
  assert_str_eq(lookup_string(call.options.get(), "body"), "Attached.\n\tThe minutes, and a cat.\n");
  assert_str_eq(call.parent_window, "");
  std::vector<std::string> paths = strv(call.options.get(), "attachments");
  g_assert_cmpuint(paths.size(), ==, 2);
  assert_str_eq(paths[0], document.host_path);
  g_assert_true(g_str_has_prefix(paths[1].c_str(), (vm.broker().dir() / "xdg-runtime/sidebus-email-").c_str()));
  g_autofree char* copy_name = g_path_get_basename(paths[1].c_str());
  g_assert_cmpstr(copy_name, ==, "cat.png");
  std::vector<std::string> bytes = attachment_bytes(call);
  g_assert_cmpuint(bytes.size(), ==, 2);
  g_assert_true(bytes[0] == kMinutes);
  g_assert_true(bytes[1] == kPicture);
  // The composer reads attachments after the portal answered: the copy stays.
  g_assert_cmpuint(host_copies(vm, "email").size(), ==, 1);
}

// A copy is kept keep_copies_for seconds after the composer opened; one of a
// request that did not succeed goes at once; all go with the link.
void test_copy_lifetimes() {
  Vm vm(email_vm(R"({"keep_copies_for": 2})"));
  std::string notes = vm.guest_files().write_file("notes.txt", kMinutes);
  vm.host().set_reply("ComposeEmail", kResponseSuccess);
  auto sent = compose(vm.guest().connection(), "{'subject': <'kept'>}", {open_guest_file(notes)});
  g_assert_no_error(sent->error());
  g_assert_true(sent->wait_for_response());
  g_assert_cmpuint(sent->response(), ==, kResponseSuccess);
  g_assert_cmpuint(host_copies(vm, "email").size(), ==, 1);
  g_assert_true(wait_until([&] { return host_copies(vm, "email").empty(); }, 10s));

  for (guint32 response : {kResponseCancelled, kResponseOther}) {
    vm.host().set_reply("ComposeEmail", response);
    auto failed = compose(vm.guest().connection(), "{}", {open_guest_file(notes)});
    g_assert_true(failed->wait_for_response());
    g_assert_cmpuint(failed->response(), ==, response);
    g_assert_true(wait_until([&] { return host_copies(vm, "email").empty(); }, 1s));
  }

  // A pipe and a memfd (what fd forwarding makes of a file on a byte-only
  // link) are copied like files; the memfd's name names the copy.
  vm.host().set_reply("ComposeEmail", kResponseSuccess);
  auto again = compose(vm.guest().connection(), "{}",
                       {open_guest_file(notes), pipe_with("from a pipe"), sealed_memfd("forwarded report.txt", kMinutes)});
  g_assert_true(again->wait_for_response());
  g_assert_cmpuint(host_copies(vm, "email").size(), ==, 3);
  BackendCall call = std::move(calls_of(vm.host(), "ComposeEmail").back());
  std::vector<std::string> bytes = attachment_bytes(call);
  g_assert_cmpuint(bytes.size(), ==, 3);
  g_assert_true(bytes[1] == "from a pipe");
  g_assert_true(bytes[2] == kMinutes);
  std::vector<std::string> paths = strv(call.options.get(), "attachments");
  g_autofree char* pipe_name = g_path_get_basename(paths.at(1).c_str());
  g_autofree char* memfd_name = g_path_get_basename(paths.at(2).c_str());
  g_assert_cmpstr(pipe_name, ==, "attachment");
  g_assert_cmpstr(memfd_name, ==, "forwarded_report.txt");  // made safe for a mailto: URI
  vm.stop_agent();
  g_assert_true(wait_until([&] { return host_copies(vm, "email").empty(); }));
}

// keep_copies_for 0: deleted as soon as the host answered.
void test_copies_deleted_at_once() {
  Vm vm(email_vm(R"({"keep_copies_for": 0})"));
  std::string notes = vm.guest_files().write_file("notes.txt", kMinutes);
  vm.host().set_reply("ComposeEmail", kResponseSuccess);
  auto sent = compose(vm.guest().connection(), "{}", {open_guest_file(notes)});
  g_assert_true(sent->wait_for_response());
  g_assert_cmpuint(sent->response(), ==, kResponseSuccess);
  g_assert_true(attachment_bytes(only_compose(vm)).at(0) == kMinutes);
  g_assert_true(wait_until([&] { return host_copies(vm, "email").empty(); }, 2s));
}

// ---- refusals ---------------------------------------------------------------------------

void test_refused_fields() {
  Vm vm(email_vm());
  struct Case {
    std::string options;
    const char* reason;
  };
  const std::vector<Case> cases = {
      {"{'address': <'not an address'>}", "is not an e-mail address"},
      {"{'address': <'a?attachment=/etc/passwd&b@example.com'>}", "is not an e-mail address"},
      {"{'addresses': <['ok@example.com', \"o'brien@example.com\"]>}", "option 'addresses': [1]"},
      {"{'cc': <['a..b@example.com']>}", "option 'cc'"},
      {"{'bcc': <['a@-example.com']>}", "option 'bcc'"},
      {"{'address': <'ünï@example.com'>}", "is not an e-mail address"},
      {"{'address': <'" + std::string(250, 'a') + "@example.com'>}", "is not an e-mail address"},
      {"{'addresses': <@as [" + [] {
         std::string many;
         for (int i = 0; i < 101; i++) many += std::string(i ? ", " : "") + "'a" + std::to_string(i) + "@example.com'";
         return many;
       }() + "]>}",
       "101 addresses, at most 100"},
      {"{'subject': <'two\\nlines'>}", "the subject contains the control character U+000A"},
      {"{'subject': <'" + std::string(201, 's') + "'>}", "longer than 200 characters"},
      {"{'body': <'bell\\u0007'>}", "the body contains the control character U+0007"},
      {"{'body': <'" + std::string(70000, 'b') + "'>}", "the body is longer than"},
      {"{'subject': <1>}", "option 'subject' must be of type 's'"},
      {"{'activation_token': <'a b\\u0001'>}", "not printable ASCII"},
  };
  for (const Case& c : cases) {
    g_test_message("ComposeEmail %.100s", c.options.c_str());
    auto request = compose(vm.guest().connection(), c.options);
    assert_error(request->error(), kInvalidArgument, c.reason);
  }
  g_assert_cmpuint(vm.host().backend_calls().size(), ==, 0);
  assert_portal_up(vm, kEmail);
}

void test_refused_attachments() {
  Vm vm(email_vm(R"({"max_attachments": 2, "max_copy_size": 32})"));
  std::string notes = vm.guest_files().write_file("notes.txt", "short notes");
  std::string big = vm.guest_files().write_file("big.bin", std::string(33, 'x'));
  auto too_many = compose(vm.guest().connection(), "{}",
                          {open_guest_file(notes), open_guest_file(notes), open_guest_file(notes)});
  assert_error(too_many->error(), kLimitsExceeded, "3 attachments, at most 2 (portals.email.max_attachments)");
  auto oversize = compose(vm.guest().connection(), "{}", {open_guest_file(notes), open_guest_file(big)});
  assert_error(oversize->error(), kLimitsExceeded, "portals.email.max_copy_size");
  auto oversize_pipe = compose(vm.guest().connection(), "{}", {pipe_with(std::string(64, 'p'))});
  assert_error(oversize_pipe->error(), kLimitsExceeded, "more than 32 bytes");
  auto wrong_type = compose(vm.guest().connection(), "{}", {}, "['/etc/passwd']");
  assert_error(wrong_type->error(), kInvalidArgument, "option 'attachment_fds' must be of type 'ah'");
  auto no_fd = compose(vm.guest().connection(), "{}", {}, "[handle 0]");
  assert_error(no_fd->error(), kInvalidArgument, "handle 0");
  auto folder = compose(vm.guest().connection(), "{}", {open_guest_file(vm.guest_files().path(), O_RDONLY | O_DIRECTORY)});
  assert_error(folder->error(), kNotAllowed, "directory");
  auto opath = compose(vm.guest().connection(), "{}", {open_guest_file(notes, O_PATH)});
  assert_error(opath->error(), kNotAllowed, "O_PATH");
  g_assert_true(wait_until([&] { return host_copies(vm, "email").empty(); }));
  g_assert_cmpuint(vm.host().backend_calls().size(), ==, 0);
  assert_portal_up(vm, kEmail);
}

// Without copy permission only documents can be attached.
void test_outside_documents_refused() {
  Vm vm(email_vm(R"({"copy_outside_documents": false})"));
  SharedDocument document(vm, "minutes.txt", kMinutes);
  std::string notes = vm.guest_files().write_file("notes.txt", "guest notes");
  auto refused = compose(vm.guest().connection(), "{}", {open_guest_file(document.guest_path), open_guest_file(notes)});
  assert_error(refused->error(), kNotAllowed, "portals.email.copy_outside_documents");
  g_assert_cmpuint(calls_of(vm.host(), "ComposeEmail").size(), ==, 0);
  vm.host().set_reply("ComposeEmail", kResponseSuccess);
  auto document_only = compose(vm.guest().connection(), "{'address': <'ada@example.com'>}",
                               {open_guest_file(document.guest_path)});
  g_assert_no_error(document_only->error());
  g_assert_true(document_only->wait_for_response());
  g_assert_cmpuint(document_only->response(), ==, kResponseSuccess);
  BackendCall call = only_compose(vm);
  assert_same(lookup(call.options.get(), "attachments").get(), "as", "['" + document.host_path + "']");
  g_assert_true(attachment_bytes(call).at(0) == kMinutes);
}

// ---- answers ----------------------------------------------------------------------------

void test_cancel_and_other() {
  Vm vm(email_vm());
  for (guint32 response : {kResponseCancelled, kResponseOther}) {
    vm.host().set_reply("ComposeEmail", response);
    auto request = compose(vm.guest().connection(), "{'subject': <'Hi'>}");
    g_assert_true(request->wait_for_response());
    g_assert_cmpuint(request->response(), ==, response);
  }
  vm.host().set_reply("ComposeEmail", kResponseCancelled);
  assert_str_eq(run_handoff_client(vm, {"email", "--subject", "Hi"}).outcome, "cancelled");
  vm.host().set_reply("ComposeEmail", kResponseDBusError);
  assert_str_eq(run_handoff_client(vm, {"email", "--subject", "Hi"}).outcome, "failed");
}

// ---- version, byte-only links ----------------------------------------------------------

void test_version() {
  Vm vm(email_vm());
  VariantPtr host_version = portal_property(vm.host().connection(), kEmail, "version");
  VariantPtr guest_version = portal_property(vm.guest().connection(), kEmail, "version");
  g_assert_cmpuint(g_variant_get_uint32(guest_version.get()), ==, MIN(g_variant_get_uint32(host_version.get()), 4u));
}

// A link that cannot carry fds: a message without attachments goes, one with
// attachment_fds is NotSupported (until fd forwarding).
void test_byte_only_link() {
  Vm vm(email_vm("{}", true));
  vm.host().set_reply("ComposeEmail", kResponseSuccess);
  auto plain = compose(vm.guest().connection(), "{'address': <'ada@example.com'>, 'subject': <'no files'>}");
  g_assert_no_error(plain->error());
  g_assert_true(plain->wait_for_response());
  g_assert_cmpuint(plain->response(), ==, kResponseSuccess);
  assert_str_eq(lookup_string(only_compose(vm).options.get(), "subject"), "no files");
  auto attached = compose(vm.guest().connection(), "{}", {}, "[handle 0]");
  assert_error(attached->error(), kNotSupported, "cannot carry file descriptors");
}

}  // namespace

int main(int argc, char** argv) {
  g_test_init(&argc, &argv, nullptr);
  add_test("/email/compose-with-attachments", test_compose_with_attachments);
  add_test("/email/copy-lifetimes", test_copy_lifetimes);
  add_test("/email/copies-deleted-at-once", test_copies_deleted_at_once);
  add_test("/email/refused-fields", test_refused_fields);
  add_test("/email/refused-attachments", test_refused_attachments);
  add_test("/email/outside-documents-refused", test_outside_documents_refused);
  add_test("/email/cancel-and-other", test_cancel_and_other);
  add_test("/email/version", test_version);
  add_test("/email/byte-only-link", test_byte_only_link);
  return g_test_run();
}
