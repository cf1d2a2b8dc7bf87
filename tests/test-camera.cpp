// SPDX-License-Identifier: LGPL-2.1-or-later
// test-camera.cpp — the Camera portal across the VM boundary, real parts
// only: a PipeWire daemon of the test's own (HostPipeWire) with the test
// camera on it (sidebus-test-camera: a Video/Source node, media.role
// Camera, painting frame-numbered pictures), the host's xdg-desktop-portal
// 1.16 (which has no Camera backend: it asks the user through the test
// backend's Access dialog and finds cameras on PipeWire), the broker with
// the camera plugin, a guest bus and the real agent.
//
// xdg-desktop-portal 1.16 counts cameras only while it connects to PipeWire
// (tests/test-backends.cpp), so a camera must exist before the host portal
// starts, i.e. before the Vm.
//
// The app in the VM is this test on the guest bus: IsCameraPresent, then
// AccessCamera (the user's scripted answer), then OpenPipeWireRemote and a
// stream of the camera node on the fd it got (PipeWireClient), asserting on
// the pixels and frame numbers; on a byte-only link the consent still works
// and OpenPipeWireRemote fails at once, saying why.
#include <gio/gunixfdlist.h>

#include <cstring>
#include <memory>
#include <string>

#include "backend/test-patterns.hpp"
#include "support/assert.hpp"
#include "support/dbus.hpp"
#include "support/host-pipewire.hpp"
#include "support/pipewire-client.hpp"
#include "support/variant.hpp"
#include "support/vm.hpp"

using namespace sidebus::test;
namespace patterns = sidebus::test_patterns;

namespace {

constexpr char kCamera[] = "org.freedesktop.portal.Camera";
constexpr char kNotSupported[] = "org.freedesktop.DBus.Error.NotSupported";

bool skip_without_pipewire() {
  g_autofree char* program = g_find_program_in_path("pipewire");
  if (program != nullptr) return false;
  g_test_skip("no pipewire program in PATH (package pipewire-bin)");
  return true;
}

// A host with PipeWire (and a camera on it, if @with_camera) and a VM with
// the camera portal. Members in start order.
struct CameraVm {
  HostPipeWire pipewire;
  uint32_t camera_node = 0;
  std::unique_ptr<ChildProcess> camera;
  std::unique_ptr<Vm> vm;
  explicit CameraVm(bool with_camera = true, bool byte_only = false) {
    if (with_camera) camera = start_test_camera(pipewire, &camera_node);
    vm = std::make_unique<Vm>(VmOptions{.name = "camera-vm",
                                        .portals = {"camera"},
                                        .byte_only = byte_only,
                                        .host = HostPortalOptions{.env = pipewire.env()}});
  }
  ~CameraVm() { vm.reset(); }  // the portal before its camera and PipeWire
  GDBusConnection* guest() { return vm->guest().connection(); }
};

bool camera_present(GDBusConnection* guest) {
  return g_variant_get_boolean(portal_property(guest, kCamera, "IsCameraPresent").get());
}

guint32 access_camera(GDBusConnection* guest) {
  VariantPtr options = with_handle_token("{}");
  PortalRequest request(guest, kPortalBusName, kCamera, "AccessCamera", g_variant_new("(@a{sv})", options.get()));
  g_assert_no_error(request.error());
  g_assert_true(request.wait_for_response());
  return request.response();
}

// OpenPipeWireRemote: the fd, or -1 with @error_name (and @message) set.
int open_remote(GDBusConnection* guest, std::string* error_name, std::string* message = nullptr) {
  g_autoptr(GError) error = nullptr;
  g_autoptr(GUnixFDList) fds = nullptr;
  g_autoptr(GVariant) reply = g_dbus_connection_call_with_unix_fd_list_sync(
      guest, kPortalBusName, kPortalPath, kCamera, "OpenPipeWireRemote", g_variant_new_parsed("(@a{sv} {},)"),
      G_VARIANT_TYPE("(h)"), G_DBUS_CALL_FLAGS_NONE, 30000, nullptr, &fds, nullptr, &error);
  if (reply == nullptr) {
    *error_name = remote_error_name(error);
    if (message != nullptr) *message = error->message;
    return -1;
  }
  gint32 index = -1;
  g_variant_get(reply, "(h)", &index);
  g_assert_cmpint(g_unix_fd_list_get_length(fds), ==, 1);
  const int fd = g_unix_fd_list_get(fds, index, &error);
  g_assert_no_error(error);
  return fd;
}

size_t access_dialogs(HostPortal& host) {
  size_t n = 0;
  for (const BackendCall& call : host.backend_calls()) n += call.method == "AccessDialog";
  return n;
}

// The guest sees what the host sees: a camera, or none.
void test_presence() {
  if (skip_without_pipewire()) return;
  {
    CameraVm with(/*with_camera=*/true);
    g_assert_true(camera_present(with.guest()));
    assert_same(portal_property(with.guest(), kCamera, "version").get(), "u", "1");
  }
  CameraVm without(/*with_camera=*/false);
  g_assert_false(camera_present(without.guest()));
}

// The user lets the app use the camera: the app in the VM sees the camera
// node, and only it, and gets its frames.
void test_access_and_stream() {
  if (skip_without_pipewire()) return;
  CameraVm cam;
  cam.vm->host().set_reply("AccessDialog", kResponseSuccess);
  g_assert_cmpuint(access_camera(cam.guest()), ==, kResponseSuccess);
  g_assert_cmpuint(access_dialogs(cam.vm->host()), ==, 1);

  std::string error_name;
  const int fd = open_remote(cam.guest(), &error_name);
  g_assert_cmpint(fd, >=, 0);
  PipeWireClient app(fd);
  g_assert_true(wait_until([&] { return app.sees(cam.camera_node); }));
  PipeWireClient::Node node = app.nodes().at(cam.camera_node);
  g_assert_cmpstr(node.media_role.c_str(), ==, "Camera");
  g_assert_cmpstr(node.media_class.c_str(), ==, "Video/Source");
  app.consume(cam.camera_node, patterns::kCameraTag);
  g_assert_true(app.wait_for_frames(10));
  assert_good_frames(app.frames(), 320, 240);

  // Remembered: no second question.
  g_assert_cmpuint(access_camera(cam.guest()), ==, kResponseSuccess);
  g_assert_cmpuint(access_dialogs(cam.vm->host()), ==, 1);
}

// A program in the VM, as the guest user: the camera is there, the user
// agrees, its frames arrive.
void test_guest_app() {
  if (skip_without_pipewire()) return;
  CameraVm cam;
  cam.vm->host().set_reply("AccessDialog", kResponseSuccess);
  GuestBus::Output output = cam.vm->guest().run_as_guest(
      {env_path("SIDEBUS_VIDEO_CLIENT"), "camera", "--frames", "10", "--tag", std::to_string(patterns::kCameraTag)},
      60s);
  g_assert_true(output.status.success());
  VariantPtr report = parse("a{sv}", output.out);
  assert_str_eq(lookup_string(report.get(), "outcome"), "ok");
  assert_same(lookup(report.get(), "present").get(), "b", "true");
  assert_same(lookup(report.get(), "node").get(), "u", std::to_string(cam.camera_node));
  assert_same(lookup(report.get(), "mismatches").get(), "t", "0");
  g_assert_cmpuint(g_variant_get_uint32(lookup(report.get(), "frames").get()), >=, 10);
}

// The user says no: AccessCamera answers 1, and there is no camera for the app.
void test_denied() {
  if (skip_without_pipewire()) return;
  CameraVm cam;
  cam.vm->host().set_reply("AccessDialog", kResponseCancelled);
  g_assert_cmpuint(access_camera(cam.guest()), ==, kResponseCancelled);
  std::string error_name;
  g_assert_cmpint(open_remote(cam.guest(), &error_name), ==, -1);
  assert_str_eq(error_name, kNotAllowed);
}

// ---- byte-only links: the stream relay ----------------------------------------

bool skip_without_relay() {
  if (skip_without_pipewire()) return true;
  if (g_getenv("SIDEBUS_STREAM_RELAY") != nullptr) return false;
  g_test_skip("sidebus-stream-relay was not built (no libpipewire)");
  return true;
}

// A camera VM on a byte-only link, with a PipeWire of its own and the
// guest's sidebus-stream-relay (started on demand by the guest bus).
struct RelayCameraVm {
  HostPipeWire pipewire;
  HostPipeWire guest_pipewire;
  uint32_t camera_node = 0;
  std::unique_ptr<ChildProcess> camera;
  std::unique_ptr<Vm> vm;
  RelayCameraVm() {
    camera = start_test_camera(pipewire, &camera_node);
    vm = std::make_unique<Vm>(
        VmOptions{.name = "camera-relay-vm",
                  .portals = {"camera"},
                  .byte_only = true,
                  .host = HostPortalOptions{.env = pipewire.env()},
                  .guest_services = {
                      {"org.sidebus.GuestRelay1", "/usr/bin/env PIPEWIRE_RUNTIME_DIR=" + guest_pipewire.runtime_dir() +
                                                      " " + env_path("SIDEBUS_STREAM_RELAY")}}});
  }
  ~RelayCameraVm() { vm.reset(); }
  GDBusConnection* guest() { return vm->guest().connection(); }
  size_t host_video_consumers() { return video_consumers(pipewire); }
};

// The whole way on a byte-only link: the user lets the app use the camera,
// and the app in the VM gets a guest PipeWire connection that sees one
// node — the host's camera, relayed to the VM's PipeWire — and its frames.
void test_relay_stream() {
  if (skip_without_relay()) return;
  RelayCameraVm cam;
  g_assert_true(camera_present(cam.guest()));
  cam.vm->host().set_reply("AccessDialog", kResponseSuccess);
  g_assert_cmpuint(access_camera(cam.guest()), ==, kResponseSuccess);
  std::string error_name;
  const int fd = open_remote(cam.guest(), &error_name);
  assert_str_eq(error_name, "");
  PipeWireClient app(fd);
  g_assert_true(wait_until([&] { return app.nodes().size() == 1; }));
  const auto [node_id, node] = *app.nodes().begin();
  g_assert_cmpstr(node.media_role.c_str(), ==, "Camera");
  g_assert_cmpstr(node.media_class.c_str(), ==, "Video/Source");
  app.consume(node_id, patterns::kCameraTag);
  g_assert_true(app.wait_for_frames(10));
  assert_good_frames(app.frames(), 320, 240);
  g_assert_cmpuint(cam.host_video_consumers(), ==, 1);  // the broker's relay, the host's only consumer
  // A second remote of the same app: the same relayed camera.
  PipeWireClient again(open_remote(cam.guest(), &error_name));
  g_assert_true(wait_until([&] { return again.sees(node_id); }));
}

// A program in the VM, as the guest user, uses the camera through the
// relay; when it quits, the host's camera is no longer consumed for it.
void test_relay_guest_app() {
  if (skip_without_relay()) return;
  RelayCameraVm cam;
  cam.vm->host().set_reply("AccessDialog", kResponseSuccess);
  const std::string png = cam.vm->guest_files() / "relayed.png";
  GuestBus::Output output = cam.vm->guest().run_as_guest({env_path("SIDEBUS_VIDEO_CLIENT"), "camera", "--frames", "10",
                                                          "--tag", std::to_string(patterns::kCameraTag), "--png", png},
                                                         60s);
  g_assert_true(output.status.success());
  VariantPtr report = parse("a{sv}", output.out);
  assert_str_eq(lookup_string(report.get(), "outcome"), "ok");
  assert_same(lookup(report.get(), "mismatches").get(), "t", "0");
  // The frame a person would look at, saved by the app in the VM.
  g_autofree char* picture = nullptr;
  gsize picture_size = 0;
  g_assert_true(g_file_get_contents(png.c_str(), &picture, &picture_size, nullptr));
  g_assert_true(picture_size > 8 && memcmp(picture, "\x89PNG\r\n\x1a\n", 8) == 0);
  // SIDEBUS_KEEP_RELAYED_PNG=FILE keeps it for a person to look at
  // (docs/screencast.md, "See a relayed frame").
  if (const char* keep = g_getenv("SIDEBUS_KEEP_RELAYED_PNG")) {
    g_autoptr(GError) error = nullptr;
    if (!g_file_set_contents(keep, picture, picture_size, &error)) g_error("cannot keep the frame: %s", error->message);
    g_test_message("the relayed frame is in %s", keep);
  }
  g_assert_cmpuint(g_variant_get_uint32(lookup(report.get(), "frames").get()), >=, 10);
  g_assert_true(wait_until([&] { return cam.host_video_consumers() == 0; }));
  g_assert_true(cam.vm->broker().process().running());
}

// Without the user's consent the host gives no remote: NotAllowed, as on
// any link, and no relay starts.
void test_relay_denied() {
  if (skip_without_relay()) return;
  RelayCameraVm cam;
  cam.vm->host().set_reply("AccessDialog", kResponseCancelled);
  g_assert_cmpuint(access_camera(cam.guest()), ==, kResponseCancelled);
  std::string error_name;
  g_assert_cmpint(open_remote(cam.guest(), &error_name), ==, -1);
  assert_str_eq(error_name, kNotAllowed);
  g_assert_cmpuint(cam.host_video_consumers(), ==, 0);
}

// A byte-only link whose agent forwards no fds (link protocol 1): the
// relay's frame socket cannot cross; OpenPipeWireRemote says so at once.
void test_byte_only_link_v1() {
  if (skip_without_pipewire()) return;
  HostPipeWire pipewire;
  uint32_t camera_node = 0;
  std::unique_ptr<ChildProcess> camera = start_test_camera(pipewire, &camera_node);
  auto vm = std::make_unique<Vm>(VmOptions{.name = "camera-v1-vm",
                                           .portals = {"camera"},
                                           .byte_only = true,
                                           .host = HostPortalOptions{.env = pipewire.env()},
                                           .agent_args = {"--link-protocol", "1"}});
  GDBusConnection* guest = vm->guest().connection();
  g_assert_true(camera_present(guest));
  vm->host().set_reply("AccessDialog", kResponseSuccess);
  g_assert_cmpuint(access_camera(guest), ==, kResponseSuccess);
  std::string error_name, message;
  const gint64 asked = g_get_monotonic_time();
  g_assert_cmpint(open_remote(guest, &error_name, &message), ==, -1);
  g_assert_cmpint(g_get_monotonic_time() - asked, <, 5 * G_USEC_PER_SEC);
  assert_str_eq(error_name, kNotSupported);
  g_assert_nonnull(strstr(message.c_str(), "cannot carry a PipeWire connection"));
  g_assert_nonnull(strstr(message.c_str(), "the camera"));
  g_assert_true(vm->broker().process().running());
  vm.reset();
}

}  // namespace

int main(int argc, char** argv) {
  g_test_init(&argc, &argv, nullptr);
  pw_init(&argc, &argv);
  add_test("/camera/presence", test_presence);
  add_test("/camera/access-and-stream", test_access_and_stream);
  add_test("/camera/guest-app", test_guest_app);
  add_test("/camera/denied", test_denied);
  add_test("/camera/relay/stream", test_relay_stream);
  add_test("/camera/relay/guest-app", test_relay_guest_app);
  add_test("/camera/relay/denied", test_relay_denied);
  add_test("/camera/byte-only-link-v1", test_byte_only_link_v1);
  return g_test_run();
}
