// SPDX-License-Identifier: LGPL-2.1-or-later
// camera.cpp — sidebus-test-camera: a camera for xdg-desktop-portal's Camera
// portal in the tests. xdg-desktop-portal 1.16 has no camera backend
// interface: it watches PipeWire itself and counts the nodes whose
// media.class is "Video/Source" and media.role is "Camera" (src/camera.c,
// global_added_cb). This program makes such a node (video-source.hpp: the
// frame-numbered pattern with test_patterns::kCameraTag), gives it to the
// portal's camera clients and links the consumers that ask for it, as a
// session manager would.
//
//   sidebus-test-camera [--width W] [--height H] [--framerate F] [--name NODE_NAME]
//
// Connects to $PIPEWIRE_RUNTIME_DIR's (else $XDG_RUNTIME_DIR's) pipewire-0,
// prints "sidebus-test-camera: node <id>" once the node exists, and runs
// until SIGTERM or SIGINT; the node goes away with it.
#include <glib-unix.h>
#include <glib.h>

#include <cstdio>

#include "test-patterns.hpp"
#include "video-source.hpp"

using namespace sidebus::test_backend;

namespace {

gboolean quit(gpointer loop) {
  g_main_loop_quit(static_cast<GMainLoop*>(loop));
  return G_SOURCE_REMOVE;
}

}  // namespace

int main(int argc, char** argv) {
  gint width = 320, height = 240, framerate = 30;
  g_autofree char* name = nullptr;
  const GOptionEntry entries[] = {
      {"width", 0, 0, G_OPTION_ARG_INT, &width, "Frame width", "W"},
      {"height", 0, 0, G_OPTION_ARG_INT, &height, "Frame height", "H"},
      {"framerate", 0, 0, G_OPTION_ARG_INT, &framerate, "Frames per second", "F"},
      {"name", 0, 0, G_OPTION_ARG_STRING, &name, "node.name", "NODE_NAME"},
      {nullptr, 0, 0, G_OPTION_ARG_NONE, nullptr, nullptr, nullptr},
  };
  g_autoptr(GOptionContext) context = g_option_context_new("- a PipeWire camera node for the sidebus tests");
  g_option_context_add_main_entries(context, entries, nullptr);
  g_autoptr(GError) error = nullptr;
  if (!g_option_context_parse(context, &argc, &argv, &error) || width < 4 || height < 1 || framerate < 1) {
    g_printerr("sidebus-test-camera: %s\n", error != nullptr ? error->message : "bad size or rate");
    return 2;
  }

  VideoSourceOptions options;
  options.node_name = name != nullptr ? name : "sidebus-test-camera";
  options.description = "sidebus test camera";
  options.media_role = "Camera";
  options.tag = sidebus::test_patterns::kCameraTag;
  options.format = {static_cast<uint32_t>(width), static_cast<uint32_t>(height), static_cast<uint32_t>(framerate)};
  options.grant_camera_clients = true;
  std::string failure;
  std::unique_ptr<VideoSource> camera = VideoSource::start(options, &failure);
  if (!camera) {
    g_printerr("sidebus-test-camera: %s\n", failure.c_str());
    return 1;
  }
  g_print("sidebus-test-camera: node %u\n", camera->node_id());
  fflush(stdout);

  g_autoptr(GMainLoop) loop = g_main_loop_new(nullptr, FALSE);
  g_unix_signal_add(SIGTERM, quit, loop);
  g_unix_signal_add(SIGINT, quit, loop);
  g_main_loop_run(loop);
  g_print("sidebus-test-camera: %u frames sent\n", camera->frames_sent());
  return 0;
}
