// plugin-api.cpp — the sidebus_context_* functions of the public plugin API:
// thin accessors over the link a plugin instance serves, export of its
// skeletons, logging with the VM and portal named, and the entry points for
// file export and fd capability.
#include <cstdarg>
#include <cstring>

#include "documents/document-export.hpp"
#include "api/link-scope.hpp"
#include "api/request.hpp"
#include "api/errors.hpp"

namespace sidebus {

LinkScope::LinkScope() = default;
LinkScope::~LinkScope() = default;

}  // namespace sidebus

_SidebusContext::~_SidebusContext() {
  for (GDBusInterfaceSkeleton* skeleton : exported) {
    g_dbus_interface_skeleton_unexport(skeleton);
    g_object_unref(skeleton);
  }
}

extern "C" {

GDBusConnection* sidebus_context_get_guest_connection(SidebusContext* context) { return context->link->guest; }
GDBusConnection* sidebus_context_get_host_connection(SidebusContext* context) { return context->link->host; }
const char* sidebus_context_get_vm_name(SidebusContext* context) { return context->link->vm_name.c_str(); }
const char* sidebus_context_get_portal_name(SidebusContext* context) { return context->portal_name.c_str(); }
JsonObject* sidebus_context_get_config(SidebusContext* context) { return context->config; }

gboolean sidebus_context_export(SidebusContext* context, GDBusInterfaceSkeleton* skeleton, GError** error) {
  if (!g_dbus_interface_skeleton_export(skeleton, context->link->guest, SIDEBUS_PORTAL_OBJECT_PATH, error))
    return FALSE;
  context->exported.push_back(static_cast<GDBusInterfaceSkeleton*>(g_object_ref(skeleton)));
  return TRUE;
}

void sidebus_context_log(SidebusContext* context, GLogLevelFlags level, const char* format, ...) {
  va_list args;
  va_start(args, format);
  g_autofree char* message = g_strdup_vprintf(format, args);
  va_end(args);
  const GLogField fields[] = {
      {"GLIB_DOMAIN", "sidebus", -1},
      {"MESSAGE", message, -1},
      {"SIDEBUS_VM", context->link->vm_name.c_str(), -1},
      {"SIDEBUS_PORTAL", context->portal_name.c_str(), -1},
      {"PRIORITY", level & G_LOG_LEVEL_ERROR      ? "3"
                   : level & G_LOG_LEVEL_CRITICAL ? "4"
                   : level & G_LOG_LEVEL_WARNING  ? "4"
                   : level & G_LOG_LEVEL_MESSAGE  ? "5"
                   : level & G_LOG_LEVEL_INFO     ? "6"
                                                  : "7",
       -1},
  };
  g_log_structured_array(level, fields, G_N_ELEMENTS(fields));
}

void sidebus_context_reject(SidebusContext* context, GDBusMethodInvocation* invocation, GError* error) {
  g_autoptr(GError) owned = sidebus::error_to_dbus(error);
  sidebus_context_log(context, G_LOG_LEVEL_WARNING, "rejected %s.%s from %s: %s",
                      g_dbus_method_invocation_get_interface_name(invocation),
                      g_dbus_method_invocation_get_method_name(invocation),
                      g_dbus_method_invocation_get_sender(invocation), owned->message);
  g_dbus_method_invocation_return_gerror(invocation, owned);
}

char** sidebus_context_export_uris(SidebusContext* context, const char* const* host_uris, SidebusExportFlags flags,
                                   GError** error) {
  if (context->link->exporter == nullptr) {
    g_set_error(error, G_DBUS_ERROR, G_DBUS_ERROR_NOT_SUPPORTED, "file export is not available for this VM");
    return nullptr;
  }
  std::vector<std::string> uris;
  for (const char* const* uri = host_uris; *uri != nullptr; uri++) uris.emplace_back(*uri);
  auto exported = context->link->exporter->export_uris(uris, flags, error);
  if (!exported) return nullptr;
  char** result = g_new0(char*, exported->size() + 1);
  for (size_t i = 0; i < exported->size(); i++) result[i] = g_strdup((*exported)[i].c_str());
  return result;
}

char* sidebus_context_guest_path_to_host_path(SidebusContext* context, const char* guest_path, GError** error) {
  if (context->link->exporter == nullptr) {
    g_set_error(error, G_DBUS_ERROR, G_DBUS_ERROR_NOT_SUPPORTED, "file export is not available for this VM");
    return nullptr;
  }
  auto host_path = context->link->exporter->guest_path_to_host_path(guest_path, error);
  return host_path ? g_strdup(host_path->c_str()) : nullptr;
}

const char* sidebus_context_get_guest_documents_path(SidebusContext* context) {
  return context->link->exporter != nullptr ? context->link->exporter->guest_documents_path().c_str() : "";
}

SidebusFdTransport sidebus_context_get_fd_transport(SidebusContext* context) { return context->link->fd_transport; }

gboolean sidebus_context_require_fds(SidebusContext* context, GError** error) {
  if (context->link->fd_transport != SIDEBUS_FD_TRANSPORT_NONE) return TRUE;
  g_set_error(error, G_DBUS_ERROR, G_DBUS_ERROR_NOT_SUPPORTED,
              "this VM's link (%s) cannot carry file descriptors; use a unix-socket link that passes fds",
              context->link->transport.c_str());
  return FALSE;
}

}  // extern "C"
