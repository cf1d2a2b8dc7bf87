// SPDX-License-Identifier: LGPL-2.1-or-later
// camera.cpp — org.freedesktop.portal.Camera for a VM: a video call in the
// guest uses the host's camera, after the host's own consent dialog.
//
//  - AccessCamera: the Request pattern toward the host's xdg-desktop-portal
//    (the core's helper), which asks the user (its Access dialog) or
//    answers from its permission store. No options besides handle_token
//    (the core's); the Response passes with its code only.
//  - OpenPipeWireRemote: a plain call. The host answers with a PipeWire
//    connection that sees only the cameras (media.role Camera), and only
//    after AccessCamera was granted — otherwise NotAllowed, passed on. How
//    the fd reaches the guest is decided per link (pipewire-remote.hpp): on
//    a unix-socket link it passes as it is; on a byte-only link the host's
//    cameras are relayed to nodes on the guest's own PipeWire
//    (camera-relay.hpp), and the app gets a guest PipeWire connection that
//    sees only those.
//  - IsCameraPresent: the host's value, kept current (host-properties.hpp).
//    It follows the host on every link.
//
// The host grants the camera to an app id. The broker is an unsandboxed
// host client, so with xdg-desktop-portal 1.16 that id is "" — shared with
// every VM and host app that has no id (docs/screencast.md, "Identity").
// Neither method has text the host shows, so the consent dialog cannot name
// the VM.
//
// version: the lower of 1 and the host portal's.
#include <libpeas/peas.h>

#include <utility>

#include "camera-portal.h"
#include "host-properties.hpp"
#include "pipewire-remote.hpp"
#if SIDEBUS_HAVE_RELAY
#include "camera-relay.hpp"
#endif

using sidebus::plugins::HostProperties;

namespace {

constexpr char kInterface[] = "org.freedesktop.portal.Camera";
constexpr guint32 kImplementedVersion = 1;

void on_access_results(SidebusRequest* request, guint32 response, GVariant*, gpointer) {
  sidebus_request_respond(request, response, nullptr);
}

}  // namespace

#define CAM_TYPE_PORTAL (cam_portal_get_type())
G_DECLARE_FINAL_TYPE(CamPortal, cam_portal, CAM, PORTAL, SidebusCamCameraSkeleton)

struct _CamPortal {
  SidebusCamCameraSkeleton parent_instance;
  SidebusContext* context;           // borrowed between start() and stop()
  HostProperties* host_properties;  // owned between start() and stop()
#if SIDEBUS_HAVE_RELAY
  camera::CameraRelays* relays;  // owned between start() and stop()
#endif
};

static void cam_portal_portal_iface_init(SidebusPortalInterface* iface);

// The methods are the skeleton's handle-* signals (connected in init): a
// dynamic type cannot re-implement the interface its generated parent has.
G_DEFINE_DYNAMIC_TYPE_EXTENDED(CamPortal, cam_portal, SIDEBUS_CAM_TYPE_CAMERA_SKELETON, 0,
                               G_IMPLEMENT_INTERFACE_DYNAMIC(SIDEBUS_TYPE_PORTAL, cam_portal_portal_iface_init))

static bool link_closing(CamPortal* self, GDBusMethodInvocation* invocation) {
  if (self->context != nullptr) return false;
  g_dbus_method_invocation_return_error(invocation, SIDEBUS_ERROR, SIDEBUS_ERROR_FAILED, "the VM link is closing");
  return true;
}

static gboolean handle_access_camera(SidebusCamCamera* object, GDBusMethodInvocation* invocation, GVariant* options,
                                     gpointer) {
  CamPortal* self = CAM_PORTAL(object);
  if (link_closing(self, invocation)) return G_DBUS_METHOD_INVOCATION_HANDLED;
  SidebusContext* context = self->context;
  GError* error = nullptr;
  g_autoptr(GVariant) host_options = sidebus_filter_options(context, options, nullptr, 0, &error);
  SidebusRequest* request = host_options != nullptr ? sidebus_request_new(context, invocation, options, &error) : nullptr;
  if (request == nullptr) {
    sidebus_context_reject(context, invocation, error);
    return G_DBUS_METHOD_INVOCATION_HANDLED;
  }
  sidebus_request_call_host(request, kInterface, "AccessCamera", g_variant_new("(@a{sv})", host_options),
                            on_access_results, nullptr);
  return G_DBUS_METHOD_INVOCATION_HANDLED;
}

static gboolean handle_open_pipewire_remote(SidebusCamCamera* object, GDBusMethodInvocation* invocation,
                                            GUnixFDList*, GVariant* options, gpointer) {
  CamPortal* self = CAM_PORTAL(object);
  if (link_closing(self, invocation)) return G_DBUS_METHOD_INVOCATION_HANDLED;
  SidebusContext* context = self->context;
  GError* error = nullptr;
  g_autoptr(GVariant) host_options = sidebus_filter_options(context, options, nullptr, 0, &error);
  if (host_options == nullptr) {
    sidebus_context_reject(context, invocation, error);
    return G_DBUS_METHOD_INVOCATION_HANDLED;
  }
  switch (sidebus::plugins::pipewire_route(context)) {
    case sidebus::plugins::PipeWireRoute::kNative:
      sidebus_context_forward_call(context, invocation, kInterface, "OpenPipeWireRemote",
                                   g_variant_new("(@a{sv})", host_options), nullptr,
                                   sidebus::plugins::pass_pipewire_fd, nullptr, nullptr);
      break;
    case sidebus::plugins::PipeWireRoute::kRelay:
#if SIDEBUS_HAVE_RELAY
      self->relays->open_remote(invocation);
      break;
#endif
    case sidebus::plugins::PipeWireRoute::kUnavailable:
      sidebus_context_reject(context, invocation, sidebus::plugins::pipewire_unavailable_error(context, "the camera"));
      break;
  }
  return G_DBUS_METHOD_INVOCATION_HANDLED;
}

static void cam_portal_stop(SidebusPortal* portal);

static gboolean cam_portal_start(SidebusPortal* portal, SidebusContext* context, GError** error) {
  CamPortal* self = CAM_PORTAL(portal);
  guint32 host_version = sidebus_context_get_host_version(context, kInterface);
  if (host_version == 0) {
    g_set_error(error, SIDEBUS_ERROR, SIDEBUS_ERROR_NOT_SUPPORTED, "the host portal has no Camera");
    return FALSE;
  }
  self->context = context;
#if SIDEBUS_HAVE_RELAY
  self->relays = new camera::CameraRelays(context);
#endif
  guint32 version = MIN(host_version, kImplementedVersion);
  sidebus_cam_camera_set_version(SIDEBUS_CAM_CAMERA(self), version);
  self->host_properties = new HostProperties(context, kInterface, {{"IsCameraPresent", "b"}},
                                             [self](const std::string&, GVariant* value) {
                                               sidebus_cam_camera_set_is_camera_present(SIDEBUS_CAM_CAMERA(self),
                                                                                        g_variant_get_boolean(value));
                                             });
  sidebus_cam_camera_set_is_camera_present(SIDEBUS_CAM_CAMERA(self),
                                           self->host_properties->get_boolean("IsCameraPresent"));
  sidebus_context_log(context, G_LOG_LEVEL_DEBUG, "host Camera version %u; the guest sees %u; a camera is %spresent",
                      host_version, version, self->host_properties->get_boolean("IsCameraPresent") ? "" : "not ");
  if (sidebus_context_export(context, G_DBUS_INTERFACE_SKELETON(self), error)) return TRUE;
  cam_portal_stop(portal);  // a failed start() is never stopped
  return FALSE;
}

static void cam_portal_stop(SidebusPortal* portal) {
  CamPortal* self = CAM_PORTAL(portal);
  delete std::exchange(self->host_properties, nullptr);
#if SIDEBUS_HAVE_RELAY
  delete std::exchange(self->relays, nullptr);
#endif
  self->context = nullptr;
}

// No keys besides "enabled": declaring none still has a typo in the
// section (portals.<name>.enabeld) stop the broker with the place to fix.
static const SidebusConfigKey* cam_portal_get_config_schema(SidebusPortal*, gsize* n_keys) {
  *n_keys = 0;
  return nullptr;
}

static void cam_portal_portal_iface_init(SidebusPortalInterface* iface) {
  iface->start = cam_portal_start;
  iface->stop = cam_portal_stop;
  iface->get_config_schema = cam_portal_get_config_schema;
}

static void cam_portal_init(CamPortal* self) {
  g_signal_connect(self, "handle-access-camera", G_CALLBACK(handle_access_camera), nullptr);
  g_signal_connect(self, "handle-open-pipewire-remote", G_CALLBACK(handle_open_pipewire_remote), nullptr);
}
static void cam_portal_class_init(CamPortalClass*) {}
static void cam_portal_class_finalize(CamPortalClass*) {}

extern "C" G_MODULE_EXPORT void peas_register_types(PeasObjectModule* module) {
  cam_portal_register_type(G_TYPE_MODULE(module));
  peas_object_module_register_extension_type(module, SIDEBUS_TYPE_PORTAL, CAM_TYPE_PORTAL);
}
