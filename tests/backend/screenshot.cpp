// SPDX-License-Identifier: LGPL-2.1-or-later
// screenshot.cpp — org.freedesktop.impl.portal.Screenshot (version 2) of the
// test backend. Screenshot answers as scripted; on success without a
// scripted "uri" it writes a real PNG (test_patterns' 64×48 gradient) into
// $SIDEBUS_TEST_SCREENSHOT_DIR (default: $XDG_CACHE_HOME/sidebus-test-backend)
// and answers its file:// URI. PickColor likewise answers
// test_patterns::kPickedColor unless a "color" is scripted.
//
// xdg-desktop-portal 1.16 asks the Access backend first for a
// non-interactive screenshot the permission store does not allow yet
// ("Allow Applications to Take Screenshots?"), on the same request handle.
#include <glib/gstdio.h>

#include <atomic>

#include "backend.hpp"
#include "png.hpp"
#include "test-impl-portal.h"
#include "test-patterns.hpp"

namespace sidebus::test_backend {
namespace {

// The directory screenshots go to, created on first use.
std::string screenshot_dir() {
  const char* dir = g_getenv("SIDEBUS_TEST_SCREENSHOT_DIR");
  g_autofree char* fallback = g_build_filename(g_get_user_cache_dir(), "sidebus-test-backend", nullptr);
  std::string path = dir != nullptr && dir[0] != '\0' ? dir : fallback;
  g_mkdir_with_parents(path.c_str(), 0755);
  return path;
}

// Writes the test picture; its file:// URI, or "" on failure.
std::string write_screenshot() {
  using namespace test_patterns;
  static std::atomic<unsigned> count{0};
  std::vector<uint8_t> rgb(3 * kScreenshotWidth * kScreenshotHeight);
  for (uint32_t y = 0; y < kScreenshotHeight; y++)
    for (uint32_t x = 0; x < kScreenshotWidth; x++) screenshot_pixel(x, y, &rgb[3 * (y * kScreenshotWidth + x)]);
  const std::string png = encode_png(kScreenshotWidth, kScreenshotHeight, rgb);
  g_autofree char* name = g_strdup_printf("screenshot-%u.png", ++count);
  g_autofree char* path = g_build_filename(screenshot_dir().c_str(), name, nullptr);
  g_autoptr(GError) error = nullptr;
  if (!g_file_set_contents(path, png.data(), static_cast<gssize>(png.size()), &error)) {
    g_warning("cannot write the screenshot: %s", error->message);
    return {};
  }
  g_autofree char* uri = g_filename_to_uri(path, nullptr, nullptr);
  return uri;
}

GVariant* call_arguments(const char* handle, const char* app_id, const char* parent_window, GVariant* options) {
  g_auto(GVariantBuilder) arguments = G_VARIANT_BUILDER_INIT(G_VARIANT_TYPE_VARDICT);
  g_variant_builder_add(&arguments, "{sv}", "handle", g_variant_new_object_path(handle));
  g_variant_builder_add(&arguments, "{sv}", "app_id", g_variant_new_string(app_id));
  g_variant_builder_add(&arguments, "{sv}", "parent_window", g_variant_new_string(parent_window));
  g_variant_builder_add(&arguments, "{sv}", "options", options);
  return g_variant_builder_end(&arguments);
}

gboolean on_screenshot(TestImplScreenshot*, GDBusMethodInvocation* invocation, const char* handle, const char* app_id,
                       const char* parent_window, GVariant* options, gpointer user_data) {
  auto* backend = static_cast<Backend*>(user_data);
  CallOptions call;
  call.results = [](guint32 response, GVariant* scripted) {
    if (response != kResponseSuccess || has_key(scripted, "uri")) return VariantPtr(g_variant_ref(scripted));
    const std::string uri = write_screenshot();
    if (uri.empty()) return VariantPtr(g_variant_ref(scripted));
    return with_default(scripted, "uri", g_variant_new_string(uri.c_str()));
  };
  backend->handle_call(invocation, "Screenshot", handle, call_arguments(handle, app_id, parent_window, options),
                       std::move(call));
  return G_DBUS_METHOD_INVOCATION_HANDLED;
}

gboolean on_pick_color(TestImplScreenshot*, GDBusMethodInvocation* invocation, const char* handle, const char* app_id,
                       const char* parent_window, GVariant* options, gpointer user_data) {
  auto* backend = static_cast<Backend*>(user_data);
  CallOptions call;
  call.results = [](guint32 response, GVariant* scripted) {
    if (response != kResponseSuccess) return VariantPtr(g_variant_ref(scripted));
    const auto& color = test_patterns::kPickedColor;
    return with_default(scripted, "color", g_variant_new("(ddd)", color[0], color[1], color[2]));
  };
  backend->handle_call(invocation, "PickColor", handle, call_arguments(handle, app_id, parent_window, options),
                       std::move(call));
  return G_DBUS_METHOD_INVOCATION_HANDLED;
}

}  // namespace

GObjectPtr<GDBusInterfaceSkeleton> screenshot_export(Backend& backend, GDBusConnection* connection, GError** error) {
  GObjectPtr<GDBusInterfaceSkeleton> skeleton(G_DBUS_INTERFACE_SKELETON(test_impl_screenshot_skeleton_new()));
  test_impl_screenshot_set_version(TEST_IMPL_SCREENSHOT(skeleton.get()), 2);
  g_signal_connect(skeleton.get(), "handle-screenshot", G_CALLBACK(on_screenshot), &backend);
  g_signal_connect(skeleton.get(), "handle-pick-color", G_CALLBACK(on_pick_color), &backend);
  if (!g_dbus_interface_skeleton_export(skeleton.get(), connection, kPortalPath, error)) return nullptr;
  return skeleton;
}

}  // namespace sidebus::test_backend
