// SPDX-License-Identifier: LGPL-2.1-or-later
// screen-cast.cpp — org.freedesktop.impl.portal.ScreenCast (version 4) of the
// test backend, with a real PipeWire stream.
//  - CreateSession exports an org.freedesktop.impl.portal.Session at the
//    session handle (Backend::export_session) and answers as scripted.
//  - SelectSources is recorded as the portal sends it: xdg-desktop-portal
//    1.16 passes "types", "multiple", "cursor_mode", "persist_mode", and
//    instead of the app's "restore_token" the "restore_data" (suv) this
//    backend returned for it earlier, if it still has it.
//  - Start, on success, creates the session's video source
//    (video-source.hpp: test_patterns::kScreenCastTag, SetVideoFormat's size
//    and rate, default 320×240 at 30 fps) and answers "streams"
//    [(node id, {"source_type", "size", "position", "id"})]; when
//    SelectSources asked to persist, also "persist_mode" and "restore_data"
//    ("sidebus-test", 1, <{"stream": <"monitor-0">}>), which the portal
//    turns into the app's restore_token. Scripted results override these.
//  - Closing the session (the portal's Session.Close or CloseSession)
//    destroys the source: its consumers see the node go.
#include <map>

#include "backend.hpp"
#include "test-backend-control.h"
#include "test-impl-portal.h"
#include "test-patterns.hpp"
#include "video-source.hpp"

namespace sidebus::test_backend {
namespace {

constexpr guint32 kSourceMonitor = 1;
constexpr guint32 kSourceWindow = 2;
constexpr guint32 kCursorModes = 1 | 2 | 4;  // hidden, embedded, metadata

struct ScreenCastSession {
  guint32 source_type = kSourceMonitor;
  guint32 persist_mode = 0;
  std::unique_ptr<VideoSource> source;
};

struct ScreenCastState {
  Backend* backend = nullptr;
  VideoFormat format;
  std::map<std::string, ScreenCastSession> sessions;  // by session handle
  gulong format_handler = 0;

  ~ScreenCastState() {
    g_signal_handler_disconnect(backend->control(), format_handler);
    backend->remove_reset_hooks(this);
  }

  // Start's results for @session_handle, from the scripted ones.
  VariantPtr start_results(const std::string& session_handle, GVariant* scripted);
};

VariantPtr ScreenCastState::start_results(const std::string& session_handle, GVariant* scripted) {
  auto found = sessions.find(session_handle);
  if (found == sessions.end()) return VariantPtr(g_variant_ref(scripted));
  ScreenCastSession& session = found->second;
  if (!session.source) {
    VideoSourceOptions options;
    options.node_name = "sidebus-test-screen-cast";
    options.description = "sidebus test screen cast of " + session_handle;
    options.tag = test_patterns::kScreenCastTag;
    options.format = format;
    std::string error;
    session.source = VideoSource::start(options, &error);
    if (!session.source) {
      g_warning("ScreenCast.Start: no video source: %s", error.c_str());
      return VariantPtr(g_variant_ref(scripted));
    }
  }
  const VideoFormat& size = session.source->format();
  g_auto(GVariantBuilder) properties = G_VARIANT_BUILDER_INIT(G_VARIANT_TYPE_VARDICT);
  g_variant_builder_add(&properties, "{sv}", "source_type", g_variant_new_uint32(session.source_type));
  g_variant_builder_add(&properties, "{sv}", "size",
                        g_variant_new("(ii)", static_cast<gint32>(size.width), static_cast<gint32>(size.height)));
  g_variant_builder_add(&properties, "{sv}", "position", g_variant_new("(ii)", 0, 0));
  g_variant_builder_add(&properties, "{sv}", "id", g_variant_new_string("monitor-0"));
  GVariant* stream = g_variant_new("(u@a{sv})", session.source->node_id(), g_variant_builder_end(&properties));
  VariantPtr results = with_default(scripted, "streams", g_variant_new_array(nullptr, &stream, 1));
  if (session.persist_mode != 0) {
    results = with_default(results.get(), "persist_mode", g_variant_new_uint32(session.persist_mode));
    results = with_default(results.get(), "restore_data",
                           g_variant_new_parsed("('sidebus-test', uint32 1, <{'stream': <'monitor-0'>}>)"));
  }
  return results;
}

gboolean on_create_session(TestImplScreenCast*, GDBusMethodInvocation* invocation, const char* handle,
                           const char* session_handle, const char* app_id, GVariant* options, gpointer user_data) {
  auto* state = static_cast<ScreenCastState*>(user_data);
  g_auto(GVariantBuilder) arguments = G_VARIANT_BUILDER_INIT(G_VARIANT_TYPE_VARDICT);
  g_variant_builder_add(&arguments, "{sv}", "handle", g_variant_new_object_path(handle));
  g_variant_builder_add(&arguments, "{sv}", "session_handle", g_variant_new_object_path(session_handle));
  g_variant_builder_add(&arguments, "{sv}", "app_id", g_variant_new_string(app_id));
  g_variant_builder_add(&arguments, "{sv}", "options", options);
  const std::string key = session_handle;
  g_autoptr(GError) error = nullptr;
  if (!state->backend->export_session(
          session_handle, [state, key] { state->sessions.erase(key); }, &error)) {
    state->backend->record_call("CreateSession", g_variant_builder_end(&arguments));
    g_dbus_method_invocation_return_gerror(invocation, error);
    return G_DBUS_METHOD_INVOCATION_HANDLED;
  }
  state->sessions[key] = ScreenCastSession{};
  state->backend->handle_call(invocation, "CreateSession", handle, g_variant_builder_end(&arguments));
  return G_DBUS_METHOD_INVOCATION_HANDLED;
}

gboolean on_select_sources(TestImplScreenCast*, GDBusMethodInvocation* invocation, const char* handle,
                           const char* session_handle, const char* app_id, GVariant* options, gpointer user_data) {
  auto* state = static_cast<ScreenCastState*>(user_data);
  g_auto(GVariantBuilder) arguments = G_VARIANT_BUILDER_INIT(G_VARIANT_TYPE_VARDICT);
  g_variant_builder_add(&arguments, "{sv}", "handle", g_variant_new_object_path(handle));
  g_variant_builder_add(&arguments, "{sv}", "session_handle", g_variant_new_object_path(session_handle));
  g_variant_builder_add(&arguments, "{sv}", "app_id", g_variant_new_string(app_id));
  g_variant_builder_add(&arguments, "{sv}", "options", options);
  auto found = state->sessions.find(session_handle);
  if (found != state->sessions.end()) {
    guint32 types = kSourceMonitor;
    g_variant_lookup(options, "types", "u", &types);
    found->second.source_type = (types & kSourceMonitor) != 0 ? kSourceMonitor : kSourceWindow;
    g_variant_lookup(options, "persist_mode", "u", &found->second.persist_mode);
  }
  state->backend->handle_call(invocation, "SelectSources", handle, g_variant_builder_end(&arguments));
  return G_DBUS_METHOD_INVOCATION_HANDLED;
}

gboolean on_start(TestImplScreenCast*, GDBusMethodInvocation* invocation, const char* handle,
                  const char* session_handle, const char* app_id, const char* parent_window, GVariant* options,
                  gpointer user_data) {
  auto* state = static_cast<ScreenCastState*>(user_data);
  g_auto(GVariantBuilder) arguments = G_VARIANT_BUILDER_INIT(G_VARIANT_TYPE_VARDICT);
  g_variant_builder_add(&arguments, "{sv}", "handle", g_variant_new_object_path(handle));
  g_variant_builder_add(&arguments, "{sv}", "session_handle", g_variant_new_object_path(session_handle));
  g_variant_builder_add(&arguments, "{sv}", "app_id", g_variant_new_string(app_id));
  g_variant_builder_add(&arguments, "{sv}", "parent_window", g_variant_new_string(parent_window));
  g_variant_builder_add(&arguments, "{sv}", "options", options);
  CallOptions call;
  const std::string key = session_handle;
  call.results = [state, key](guint32 response, GVariant* scripted) {
    if (response != kResponseSuccess) return VariantPtr(g_variant_ref(scripted));
    return state->start_results(key, scripted);
  };
  state->backend->handle_call(invocation, "Start", handle, g_variant_builder_end(&arguments), std::move(call));
  return G_DBUS_METHOD_INVOCATION_HANDLED;
}

gboolean on_set_video_format(TestControlBackend* control, GDBusMethodInvocation* invocation, guint32 width,
                             guint32 height, guint32 framerate, gpointer user_data) {
  auto* state = static_cast<ScreenCastState*>(user_data);
  if (width < test_patterns::kCounterPixels || height == 0 || framerate == 0 || width > 8192 || height > 8192) {
    g_dbus_method_invocation_return_dbus_error(invocation, "org.freedesktop.DBus.Error.InvalidArgs",
                                               "width 4..8192, height 1..8192, framerate > 0");
    return G_DBUS_METHOD_INVOCATION_HANDLED;
  }
  state->format = VideoFormat{width, height, framerate};
  test_control_backend_complete_set_video_format(control, invocation);
  return G_DBUS_METHOD_INVOCATION_HANDLED;
}

}  // namespace

GObjectPtr<GDBusInterfaceSkeleton> screen_cast_export(Backend& backend, GDBusConnection* connection, GError** error) {
  GObjectPtr<GDBusInterfaceSkeleton> skeleton(G_DBUS_INTERFACE_SKELETON(test_impl_screen_cast_skeleton_new()));
  TestImplScreenCast* screen_cast = TEST_IMPL_SCREEN_CAST(skeleton.get());
  test_impl_screen_cast_set_available_source_types(screen_cast, kSourceMonitor | kSourceWindow);
  test_impl_screen_cast_set_available_cursor_modes(screen_cast, kCursorModes);
  test_impl_screen_cast_set_version(screen_cast, 4);
  auto owned = std::make_unique<ScreenCastState>();
  owned->backend = &backend;
  ScreenCastState* state = attach_state(skeleton.get(), std::move(owned));
  state->format_handler =
      g_signal_connect(backend.control(), "handle-set-video-format", G_CALLBACK(on_set_video_format), state);
  backend.add_reset_hook(state, [state] { state->format = VideoFormat{}; });
  g_signal_connect(skeleton.get(), "handle-create-session", G_CALLBACK(on_create_session), state);
  g_signal_connect(skeleton.get(), "handle-select-sources", G_CALLBACK(on_select_sources), state);
  g_signal_connect(skeleton.get(), "handle-start", G_CALLBACK(on_start), state);
  if (!g_dbus_interface_skeleton_export(skeleton.get(), connection, kPortalPath, error)) return nullptr;
  return skeleton;
}

}  // namespace sidebus::test_backend
