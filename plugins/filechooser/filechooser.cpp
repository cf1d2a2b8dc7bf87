// SPDX-License-Identifier: LGPL-2.1-or-later
// filechooser.cpp — org.freedesktop.portal.FileChooser for a VM.
//
// The portal object subclasses the gdbus-codegen skeleton and is exported at
// /org/freedesktop/portal/desktop on the guest bus (one instance per guest
// link). Each method does the same three steps: filter the guest's options
// (filechooser-options.cpp), create the guest Request and make the same call
// on the host's xdg-desktop-portal (the core's Request helper: Response,
// Close and a vanishing caller are handled there), and map the host's Response
// back (filechooser-results.cpp).
//
// The title goes to the host with the VM's name in front
// (sidebus_context_dialog_title), so a guest cannot pose as a host app.
// parent_window is always sent to the host as "": a guest window handle
// (x11:…, wayland:…) names a window on the guest's display, which the host
// compositor has never heard of; passing it on could at best be ignored and
// at worst name an unrelated host window.
//
// The version property is the lower of what this plugin implements and what
// the host portal reports (read by the core before the guest sees the
// portal), so a guest never relies on an option the host would ignore.
#include <libpeas/peas.h>

#include <cstring>

#include "filechooser-portal.h"
#include "filechooser.hpp"

namespace filechooser {

namespace {
constexpr gsize kMaxTitleLength = 1024;
}

const char* method_name(Method method) {
  switch (method) {
    case Method::OpenFile: return "OpenFile";
    case Method::SaveFile: return "SaveFile";
    case Method::SaveFiles: return "SaveFiles";
  }
  g_assert_not_reached();
}

}  // namespace filechooser

using filechooser::Method;

#define FC_TYPE_PORTAL (fc_portal_get_type())
G_DECLARE_FINAL_TYPE(FcPortal, fc_portal, FC, PORTAL, SidebusFcFileChooserSkeleton)

struct _FcPortal {
  SidebusFcFileChooserSkeleton parent_instance;
  SidebusContext* context;  // borrowed between start() and stop()
};

static void fc_portal_portal_iface_init(SidebusPortalInterface* iface);

// The FileChooser methods are the skeleton's handle-* signals, connected in
// fc_portal_init(): a dynamic type cannot re-implement an interface its
// (static, generated) parent already implements.
G_DEFINE_DYNAMIC_TYPE_EXTENDED(FcPortal, fc_portal, SIDEBUS_FC_TYPE_FILE_CHOOSER_SKELETON, 0,
                               G_IMPLEMENT_INTERFACE_DYNAMIC(SIDEBUS_TYPE_PORTAL, fc_portal_portal_iface_init))

// ---- the three methods --------------------------------------------------

static gboolean handle_call(SidebusFcFileChooser* object, GDBusMethodInvocation* invocation, Method method,
                            const char* title, GVariant* guest_options) {
  FcPortal* self = FC_PORTAL(object);
  SidebusContext* context = self->context;
  if (context == nullptr) {  // dispatched after the link went away
    g_dbus_method_invocation_return_error(invocation, SIDEBUS_ERROR, SIDEBUS_ERROR_FAILED, "the VM link is closing");
    return G_DBUS_METHOD_INVOCATION_HANDLED;
  }
  if (strlen(title) > filechooser::kMaxTitleLength) {
    sidebus_context_reject(context, invocation,
                           g_error_new(SIDEBUS_ERROR, SIDEBUS_ERROR_INVALID_ARGUMENT,
                                       "the title is longer than %zu bytes", filechooser::kMaxTitleLength));
    return G_DBUS_METHOD_INVOCATION_HANDLED;
  }

  GError* error = nullptr;
  g_autoptr(GVariant) host_options = filechooser::host_options_for(context, method, guest_options, &error);
  if (host_options == nullptr) {
    sidebus_context_reject(context, invocation, error);
    return G_DBUS_METHOD_INVOCATION_HANDLED;
  }
  SidebusRequest* request = sidebus_request_new(context, invocation, guest_options, &error);
  if (request == nullptr) {
    sidebus_context_reject(context, invocation, error);
    return G_DBUS_METHOD_INVOCATION_HANDLED;
  }

  gboolean directory = FALSE;
  if (method == Method::OpenFile) g_variant_lookup(host_options, "directory", "b", &directory);
  g_autofree char* host_title = sidebus_context_dialog_title(context, title);
  sidebus_request_call_host_full(request, filechooser::kInterface, filechooser::method_name(method),
                                 g_variant_new("(ss@a{sv})", "", host_title, host_options), nullptr,
                                 filechooser::on_host_results, new filechooser::CallInfo{method, directory != FALSE},
                                 filechooser::CallInfo::destroy);
  return G_DBUS_METHOD_INVOCATION_HANDLED;
}

static gboolean handle_open_file(SidebusFcFileChooser* object, GDBusMethodInvocation* invocation, const char*,
                                 const char* title, GVariant* options, gpointer) {
  return handle_call(object, invocation, Method::OpenFile, title, options);
}

static gboolean handle_save_file(SidebusFcFileChooser* object, GDBusMethodInvocation* invocation, const char*,
                                 const char* title, GVariant* options, gpointer) {
  return handle_call(object, invocation, Method::SaveFile, title, options);
}

static gboolean handle_save_files(SidebusFcFileChooser* object, GDBusMethodInvocation* invocation, const char*,
                                  const char* title, GVariant* options, gpointer) {
  return handle_call(object, invocation, Method::SaveFiles, title, options);
}

// ---- SidebusPortal --------------------------------------------------------

static gboolean fc_portal_start(SidebusPortal* portal, SidebusContext* context, GError** error) {
  FcPortal* self = FC_PORTAL(portal);
  guint host_version = sidebus_context_get_host_version(context, filechooser::kInterface);
  if (host_version == 0) {
    g_set_error(error, SIDEBUS_ERROR, SIDEBUS_ERROR_NOT_SUPPORTED, "the host portal has no FileChooser");
    return FALSE;
  }
  self->context = context;
  guint version = MIN(host_version, filechooser::kImplementedVersion);
  sidebus_fc_file_chooser_set_version(SIDEBUS_FC_FILE_CHOOSER(self), version);
  sidebus_context_log(context, G_LOG_LEVEL_DEBUG, "host FileChooser version %u; the guest sees %u", host_version,
                      version);
  return sidebus_context_export(context, G_DBUS_INTERFACE_SKELETON(self), error);
}

static void fc_portal_stop(SidebusPortal* portal) { FC_PORTAL(portal)->context = nullptr; }

static void fc_portal_portal_iface_init(SidebusPortalInterface* iface) {
  iface->start = fc_portal_start;
  iface->stop = fc_portal_stop;
}

static void fc_portal_init(FcPortal* self) {
  g_signal_connect(self, "handle-open-file", G_CALLBACK(handle_open_file), nullptr);
  g_signal_connect(self, "handle-save-file", G_CALLBACK(handle_save_file), nullptr);
  g_signal_connect(self, "handle-save-files", G_CALLBACK(handle_save_files), nullptr);
}
static void fc_portal_class_init(FcPortalClass*) {}
static void fc_portal_class_finalize(FcPortalClass*) {}

extern "C" G_MODULE_EXPORT void peas_register_types(PeasObjectModule* module) {
  fc_portal_register_type(G_TYPE_MODULE(module));
  peas_object_module_register_extension_type(module, SIDEBUS_TYPE_PORTAL, FC_TYPE_PORTAL);
}
