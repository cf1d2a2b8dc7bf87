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
// parent_window is always sent to the host as "": a guest window handle
// (x11:…, wayland:…) names a window on the guest's display, which the host
// compositor has never heard of; passing it on could at best be ignored and
// at worst name an unrelated host window.
//
// The version property is the lower of what this plugin implements and what
// the host portal reports (read once when the link comes up), so a guest
// never relies on an option the host would ignore.
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

gpointer call_info_to_pointer(CallInfo info) {
  return GUINT_TO_POINTER((static_cast<guint>(info.method) << 1) | (info.directory ? 1u : 0u));
}

CallInfo call_info_from_pointer(gpointer pointer) {
  guint bits = GPOINTER_TO_UINT(pointer);
  return CallInfo{static_cast<Method>(bits >> 1), (bits & 1u) != 0};
}

}  // namespace filechooser

using filechooser::Method;

#define FC_TYPE_PORTAL (fc_portal_get_type())
G_DECLARE_FINAL_TYPE(FcPortal, fc_portal, FC, PORTAL, SidebusFcFileChooserSkeleton)

struct _FcPortal {
  SidebusFcFileChooserSkeleton parent_instance;
  SidebusContext* context;      // borrowed between start() and stop()
  GCancellable* version_query;  // the host version Get, cancelled by stop()
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
  const filechooser::CallInfo call{method, directory != FALSE};
  sidebus_request_call_host(request, filechooser::kInterface, filechooser::method_name(method),
                            g_variant_new("(ss@a{sv})", "", title, host_options), filechooser::on_host_results,
                            filechooser::call_info_to_pointer(call));
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

// ---- version --------------------------------------------------------------

static void on_host_version(GObject* source, GAsyncResult* result, gpointer user_data) {
  g_autoptr(FcPortal) self = FC_PORTAL(user_data);
  g_autoptr(GError) error = nullptr;
  g_autoptr(GVariant) reply = g_dbus_connection_call_finish(G_DBUS_CONNECTION(source), result, &error);
  if (g_error_matches(error, G_IO_ERROR, G_IO_ERROR_CANCELLED) || self->context == nullptr) return;
  if (reply == nullptr) {
    g_dbus_error_strip_remote_error(error);
    sidebus_context_log(self->context, G_LOG_LEVEL_WARNING,
                        "cannot read the host portal's FileChooser version (%s); telling the guest %u", error->message,
                        filechooser::kImplementedVersion);
    return;
  }
  g_autoptr(GVariant) value = nullptr;
  g_variant_get(reply, "(v)", &value);
  if (!g_variant_is_of_type(value, G_VARIANT_TYPE_UINT32)) return;
  guint host_version = g_variant_get_uint32(value);
  guint version = MIN(host_version, filechooser::kImplementedVersion);
  sidebus_fc_file_chooser_set_version(SIDEBUS_FC_FILE_CHOOSER(self), version);
  sidebus_context_log(self->context, G_LOG_LEVEL_DEBUG, "host FileChooser version %u; the guest sees %u", host_version,
                      version);
}

// ---- SidebusPortal --------------------------------------------------------

static gboolean fc_portal_start(SidebusPortal* portal, SidebusContext* context, GError** error) {
  FcPortal* self = FC_PORTAL(portal);
  self->context = context;
  self->version_query = g_cancellable_new();
  sidebus_fc_file_chooser_set_version(SIDEBUS_FC_FILE_CHOOSER(self), filechooser::kImplementedVersion);
  g_dbus_connection_call(sidebus_context_get_host_connection(context), SIDEBUS_PORTAL_BUS_NAME,
                         SIDEBUS_PORTAL_OBJECT_PATH, "org.freedesktop.DBus.Properties", "Get",
                         g_variant_new("(ss)", filechooser::kInterface, "version"), G_VARIANT_TYPE("(v)"),
                         G_DBUS_CALL_FLAGS_NONE, -1, self->version_query, on_host_version, g_object_ref(self));
  return sidebus_context_export(context, G_DBUS_INTERFACE_SKELETON(self), error);
}

static void fc_portal_stop(SidebusPortal* portal) {
  FcPortal* self = FC_PORTAL(portal);
  if (self->version_query != nullptr) g_cancellable_cancel(self->version_query);
  self->context = nullptr;
}

static void fc_portal_finalize(GObject* object) {
  g_clear_object(&FC_PORTAL(object)->version_query);
  G_OBJECT_CLASS(fc_portal_parent_class)->finalize(object);
}

static void fc_portal_portal_iface_init(SidebusPortalInterface* iface) {
  iface->start = fc_portal_start;
  iface->stop = fc_portal_stop;
}

static void fc_portal_init(FcPortal* self) {
  g_signal_connect(self, "handle-open-file", G_CALLBACK(handle_open_file), nullptr);
  g_signal_connect(self, "handle-save-file", G_CALLBACK(handle_save_file), nullptr);
  g_signal_connect(self, "handle-save-files", G_CALLBACK(handle_save_files), nullptr);
}
static void fc_portal_class_init(FcPortalClass* klass) { G_OBJECT_CLASS(klass)->finalize = fc_portal_finalize; }
static void fc_portal_class_finalize(FcPortalClass*) {}

extern "C" G_MODULE_EXPORT void peas_register_types(PeasObjectModule* module) {
  fc_portal_register_type(G_TYPE_MODULE(module));
  peas_object_module_register_extension_type(module, SIDEBUS_TYPE_PORTAL, FC_TYPE_PORTAL);
}
