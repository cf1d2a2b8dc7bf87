// test-wallpaper.cpp — the Wallpaper portal across the VM boundary, real
// parts only: the host's xdg-desktop-portal (1.16, which asks its Access
// backend unless a preview is shown, and turns SetWallpaperFile's fd into a
// file:// URI of its path) and the test backend's Wallpaper (which records
// the URI and the bytes behind it), the broker with the wallpaper and
// filechooser plugins and its private document portal, a guest bus with the
// real agent, and guest clients: the libportal application
// (handoff-client.cpp) and plain D-Bus calls.
//
// What a user notices: the picture the host shows is the guest's, as the
// host file behind its document (or a copy the administrator allowed); the
// host user is shown every picture first; links the host would have to
// download are refused; a copy that became the wallpaper stays after the VM
// has gone, and replaces the VM's earlier one.
#include <algorithm>

#include "handoff-test.hpp"

using namespace sidebus::test;

namespace {

constexpr char kWallpaper[] = "org.freedesktop.portal.Wallpaper";
constexpr char kVmName[] = "dev.sidebus.WallpaperTest";
const std::string kPicture = "\x89PNG\r\n\x1a\n sunset over the guest's sea";
const TempDir* data_home = nullptr;  // the broker's $XDG_DATA_HOME, set in main()

VmOptions wallpaper_vm(const std::string& wallpaper = "{}", bool byte_only = false) {
  return {.name = kVmName,
          .portals = {"filechooser", "wallpaper"},
          .config = {{"60-wallpaper.json", R"({"portals": {"wallpaper": )" + wallpaper + "}}"}},
          .byte_only = byte_only};
}

std::unique_ptr<PortalRequest> set_uri(GDBusConnection* connection, const std::string& uri,
                                       const std::string& options = "{}") {
  VariantPtr parsed = with_handle_token(options);
  return std::make_unique<PortalRequest>(connection, kPortalBusName, kWallpaper, "SetWallpaperURI",
                                         g_variant_new("(ss@a{sv})", "x11:1234", uri.c_str(), parsed.get()));
}

// SetWallpaperFile with @fd (closed here; -1: the handle names no fd).
std::unique_ptr<PortalRequest> set_file(GDBusConnection* connection, int fd, const std::string& options = "{}") {
  VariantPtr parsed = with_handle_token(options);
  auto request = std::make_unique<PortalRequest>(connection, kPortalBusName, kWallpaper, "SetWallpaperFile",
                                                 g_variant_new("(sh@a{sv})", "x11:1234", 0, parsed.get()),
                                                 fd >= 0 ? std::vector<int>{fd} : std::vector<int>{});
  if (fd >= 0) close(fd);
  return request;
}

BackendCall last_set(Vm& vm) {
  std::vector<BackendCall> calls = calls_of(vm.host(), "SetWallpaperURI");
  g_assert_cmpuint(calls.size(), >=, 1);
  return std::move(calls.back());
}

std::string file_data(const BackendCall& call) { return bytes_of(lookup(call.record.get(), "file_data").get()); }

// The VM's kept copies: <data home>/sidebus/wallpapers/<vm>/<target>-<time>/<name>.
std::vector<std::string> kept_copies() {
  std::vector<std::string> copies;
  std::string root = *data_home / (std::string("sidebus/wallpapers/") + kVmName);
  g_autoptr(GDir) dir = g_dir_open(root.c_str(), 0, nullptr);
  while (const char* name = dir ? g_dir_read_name(dir) : nullptr) {
    std::string copy_dir = root + "/" + name;
    g_autoptr(GDir) files = g_dir_open(copy_dir.c_str(), 0, nullptr);
    while (const char* file = files ? g_dir_read_name(files) : nullptr) copies.push_back(copy_dir + "/" + file);
  }
  std::sort(copies.begin(), copies.end());
  return copies;
}

void forget_kept_copies() { remove_tree_for_test(*data_home / "sidebus"); }

// ---- documents ---------------------------------------------------------------------------

// A document as a file:// URI: the host shows the host file behind it, in a
// preview the host user confirms (forced: the guest asked for none), and
// the Access question is never asked.
void test_document_uri() {
  Vm vm(wallpaper_vm());
  SharedDocument document(vm, "sunset.png", kPicture);
  vm.host().set_reply("SetWallpaperURI", kResponseSuccess);
  auto request = set_uri(vm.guest().connection(), uri_for(document.guest_path),
                         "{'show-preview': <false>, 'set-on': <'lockscreen'>}");
  g_assert_no_error(request->error());
  g_assert_true(request->wait_for_response());
  g_assert_cmpuint(request->response(), ==, kResponseSuccess);
  BackendCall call = last_set(vm);
  assert_str_eq(lookup_string(call.record.get(), "uri"), uri_for(document.host_path));
  g_assert_true(file_data(call) == kPicture);
  assert_same(lookup(call.options.get(), "show-preview").get(), "b", "true");
  assert_str_eq(lookup_string(call.options.get(), "set-on"), "lockscreen");
  assert_str_eq(call.parent_window, "");
  g_assert_cmpuint(calls_of(vm.host(), "AccessDialog").size(), ==, 0);
}

// libportal sends a file:// picture as SetWallpaperFile with an fd: a
// document's fd is the host file too.
void test_document_file_libportal() {
  Vm vm(wallpaper_vm());
  SharedDocument document(vm, "sunset.png", kPicture);
  vm.host().set_reply("SetWallpaperURI", kResponseSuccess);
  ClientReport report =
      run_handoff_client(vm, {"wallpaper", uri_for(document.guest_path), "--target", "background"});
  assert_str_eq(report.outcome, "ok");
  BackendCall call = last_set(vm);
  assert_str_eq(lookup_string(call.record.get(), "uri"), uri_for(document.host_path));
  g_assert_true(file_data(call) == kPicture);
  assert_str_eq(lookup_string(call.options.get(), "set-on"), "background");
  assert_same(lookup(call.options.get(), "show-preview").get(), "b", "true");
}

// Why the preview is forced: without it the host portal asks once, for
// every unsandboxed host client and VM alike, and never again.
void test_preview_as_asked() {
  Vm vm(wallpaper_vm(R"({"always_show_preview": false})"));
  SharedDocument document(vm, "sunset.png", kPicture);
  vm.host().set_reply("AccessDialog", kResponseSuccess);
  vm.host().set_reply("SetWallpaperURI", kResponseSuccess);
  for (int i = 0; i < 2; i++) {
    auto request = set_uri(vm.guest().connection(), uri_for(document.guest_path), "{'show-preview': <false>}");
    g_assert_true(request->wait_for_response());
    g_assert_cmpuint(request->response(), ==, kResponseSuccess);
    assert_same(lookup(last_set(vm).options.get(), "show-preview").get(), "b", "false");
  }
  std::vector<BackendCall> asked = calls_of(vm.host(), "AccessDialog");
  g_assert_cmpuint(asked.size(), ==, 1);
  assert_str_eq(asked[0].title, "Allow Applications to Set Backgrounds?");
}

// ---- refusals ----------------------------------------------------------------------------

void test_refused() {
  Vm vm(wallpaper_vm());
  const std::string docs = vm.documents();
  struct Case {
    std::string uri, options;
    const char* error;
    const char* reason;
  };
  const std::vector<Case> cases = {
      {"https://example.com/sunset.png", "{}", kNotAllowed, "Download the picture in the VM"},
      {"http://10.0.0.1/admin", "{}", kNotAllowed, "the host would fetch a http URI itself"},
      {"smb://server/share/pic.png", "{}", kNotAllowed, "only the VM's documents"},
      {"file:///etc/passwd", "{}", kNotAllowed, "outside the VM's documents directory"},
      {"file://" + docs + "/../../etc/passwd", "{}", kNotAllowed, "“.” or “..”"},
      {"file://" + docs + "/nodoc/x.png", "{}", kNotAllowed, "x.png"},
      {"not a uri", "{}", kInvalidArgument, "not an absolute URI"},
      {"file://" + docs + "/x", "{'set-on': <'everywhere'>}", kInvalidArgument, "option 'set-on'"},
      {"file://" + docs + "/x", "{'show-preview': <'yes'>}", kInvalidArgument, "must be of type 'b'"},
  };
  for (const Case& c : cases) {
    g_test_message("SetWallpaperURI %s %s", c.uri.c_str(), c.options.c_str());
    auto request = set_uri(vm.guest().connection(), c.uri, c.options);
    assert_error(request->error(), c.error, c.reason);
  }
  // A file of the guest's own is not copied unless the administrator says so.
  std::string guest_file = vm.guest_files().write_file("sunset.png", kPicture);
  auto outside = set_file(vm.guest().connection(), open_guest_file(guest_file));
  assert_error(outside->error(), kNotAllowed, "portals.wallpaper.copy_outside_documents");
  auto no_fd = set_file(vm.guest().connection(), -1);
  assert_error(no_fd->error(), kInvalidArgument, "handle 0");
  g_assert_cmpuint(vm.host().backend_calls().size(), ==, 0);
  assert_portal_up(vm, kWallpaper);
}

// ---- copies -------------------------------------------------------------------------------

// copy_outside_documents: the host shows a copy, kept in the user's data
// directory after the VM has gone; a new wallpaper for the same target
// replaces it, one the host refused is deleted at once.
void test_copies() {
  forget_kept_copies();
  Vm vm(wallpaper_vm(R"({"copy_outside_documents": true, "max_copy_size": 4096})"));
  std::string sunset = vm.guest_files().write_file("Pictures/sunset.png", kPicture);
  std::string dawn = vm.guest_files().write_file("Pictures/dawn.png", "dawn, in bytes");
  vm.host().set_reply("SetWallpaperURI", kResponseSuccess);

  auto first = set_file(vm.guest().connection(), open_guest_file(sunset), "{'set-on': <'background'>}");
  g_assert_no_error(first->error());
  g_assert_true(first->wait_for_response());
  g_assert_cmpuint(first->response(), ==, kResponseSuccess);
  std::string first_uri = lookup_string(last_set(vm).record.get(), "uri");
  g_test_message("the host shows %s", first_uri.c_str());
  std::vector<std::string> kept = kept_copies();
  g_assert_cmpuint(kept.size(), ==, 1);
  assert_str_eq(uri_for(kept[0]), first_uri);
  g_assert_true(g_str_has_suffix(kept[0].c_str(), "/sunset.png"));
  g_assert_true(file_data(last_set(vm)) == kPicture);

  // The lock screen gets its own; refused ones go at once.
  auto lock = set_file(vm.guest().connection(), pipe_with("a piped picture"), "{'set-on': <'lockscreen'>}");
  g_assert_true(lock->wait_for_response());
  g_assert_cmpuint(lock->response(), ==, kResponseSuccess);
  g_assert_true(file_data(last_set(vm)) == "a piped picture");
  g_assert_cmpuint(kept_copies().size(), ==, 2);
  vm.host().set_reply("SetWallpaperURI", kResponseCancelled);
  auto cancelled = set_file(vm.guest().connection(), open_guest_file(dawn), "{'set-on': <'background'>}");
  g_assert_true(cancelled->wait_for_response());
  g_assert_cmpuint(cancelled->response(), ==, kResponseCancelled);
  g_assert_cmpuint(kept_copies().size(), ==, 2);

  // A new background replaces the old one; "both" replaces both.
  vm.host().set_reply("SetWallpaperURI", kResponseSuccess);
  auto second = set_file(vm.guest().connection(), open_guest_file(dawn), "{'set-on': <'background'>}");
  g_assert_true(second->wait_for_response());
  kept = kept_copies();
  g_assert_cmpuint(kept.size(), ==, 2);
  g_assert_false(g_file_test(path_of(first_uri).c_str(), G_FILE_TEST_EXISTS));
  auto both = set_file(vm.guest().connection(), open_guest_file(sunset));
  g_assert_true(both->wait_for_response());
  kept = kept_copies();
  g_assert_cmpuint(kept.size(), ==, 1);
  assert_str_eq(uri_for(kept[0]), lookup_string(last_set(vm).record.get(), "uri"));

  // Too large for a copy.
  std::string big = vm.guest_files().write_file("big.png", std::string(5000, 'x'));
  auto oversize = set_file(vm.guest().connection(), open_guest_file(big));
  assert_error(oversize->error(), kLimitsExceeded, "portals.wallpaper.max_copy_size");

  // The wallpaper outlives the VM's link.
  vm.stop_agent();
  wait_until([] { return false; }, 500ms);
  g_assert_cmpuint(kept_copies().size(), ==, 1);
  assert_str_eq(read_file(kept[0]).value_or(""), kPicture);
}

// ---- answers, version, byte-only links ---------------------------------------------------

void test_cancel_and_other() {
  Vm vm(wallpaper_vm());
  SharedDocument document(vm, "sunset.png", kPicture);
  for (guint32 response : {kResponseCancelled, kResponseOther}) {
    vm.host().set_reply("SetWallpaperURI", response);
    auto request = set_uri(vm.guest().connection(), uri_for(document.guest_path));
    g_assert_true(request->wait_for_response());
    g_assert_cmpuint(request->response(), ==, response);
  }
  vm.host().set_reply("SetWallpaperURI", kResponseCancelled);
  assert_str_eq(run_handoff_client(vm, {"wallpaper", uri_for(document.guest_path)}).outcome, "cancelled");
  vm.host().set_reply("SetWallpaperURI", kResponseOther);
  assert_str_eq(run_handoff_client(vm, {"wallpaper", uri_for(document.guest_path)}).outcome, "failed");
}

void test_version() {
  Vm vm(wallpaper_vm());
  VariantPtr host_version = portal_property(vm.host().connection(), kWallpaper, "version");
  VariantPtr guest_version = portal_property(vm.guest().connection(), kWallpaper, "version");
  g_assert_cmpuint(g_variant_get_uint32(guest_version.get()), ==, MIN(g_variant_get_uint32(host_version.get()), 1u));
}

// A link that cannot carry fds: SetWallpaperFile says so (until fd
// forwarding); a document's URI needs no fd and works.
void test_byte_only_link() {
  Vm vm(wallpaper_vm("{}", true));
  auto no_fd = set_file(vm.guest().connection(), -1);
  assert_error(no_fd->error(), kNotSupported, "cannot carry file descriptors");
  SharedDocument document(vm, "sunset.png", kPicture);
  vm.host().set_reply("SetWallpaperURI", kResponseSuccess);
  auto request = set_uri(vm.guest().connection(), uri_for(document.guest_path));
  g_assert_no_error(request->error());
  g_assert_true(request->wait_for_response());
  g_assert_cmpuint(request->response(), ==, kResponseSuccess);
  assert_str_eq(lookup_string(last_set(vm).record.get(), "uri"), uri_for(document.host_path));
}

}  // namespace

int main(int argc, char** argv) {
  g_test_init(&argc, &argv, nullptr);
  // Kept wallpapers go to the broker's $XDG_DATA_HOME: the test's own.
  auto data = std::make_unique<TempDir>("sidebus-wallpaper-data");
  data_home = data.get();
  g_setenv("XDG_DATA_HOME", data->path().c_str(), TRUE);
  add_test("/wallpaper/document-uri", test_document_uri);
  add_test("/wallpaper/document-file-libportal", test_document_file_libportal);
  add_test("/wallpaper/preview-as-asked", test_preview_as_asked);
  add_test("/wallpaper/refused", test_refused);
  add_test("/wallpaper/copies", test_copies);
  add_test("/wallpaper/cancel-and-other", test_cancel_and_other);
  add_test("/wallpaper/version", test_version);
  add_test("/wallpaper/byte-only-link", test_byte_only_link);
  int status = g_test_run();
  data_home = nullptr;
  data.reset();
  return status;
}
