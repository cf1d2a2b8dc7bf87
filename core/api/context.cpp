// SPDX-License-Identifier: LGPL-2.1-or-later
// context.cpp — the sidebus_context_* accessors of the public plugin API,
// export of skeletons, logging with the VM and portal named, rejecting guest
// input, and a context's release at teardown. (Forwarding is forward.cpp,
// file export export.cpp, requests request.cpp, sessions session.cpp.)
#include "api/context.hpp"

#include <sys/stat.h>

#include <cstdarg>
#include <cstring>

#include "documents/forwarded-documents.hpp"
#include "api/errors.hpp"
#include "api/host-portal.hpp"
#include "api/portal-link.hpp"

namespace sidebus {

bool reject_unless_owner(SidebusContext* context, GDBusMethodInvocation* invocation, const std::string& owner,
                         const std::string& what) {
  const char* caller = g_dbus_method_invocation_get_sender(invocation);
  if (g_strcmp0(caller, owner.c_str()) == 0) return true;
  sidebus_context_reject(context, invocation,
                         g_error_new(SIDEBUS_ERROR, SIDEBUS_ERROR_NOT_ALLOWED, "%s is not the caller that owns %s",
                                     caller, what.c_str()));
  return false;
}

bool PendingWork::complete() {
  if (context == nullptr) return false;
  context->pending.erase(this);  // the completion holds its own reference
  return true;
}

}  // namespace sidebus

void _SidebusContext::add_pending(std::shared_ptr<sidebus::PendingWork> work) {
  work->context = this;
  sidebus::PendingWork* key = work.get();
  pending.emplace(key, std::move(work));
}

void _SidebusContext::release() {
  if (link == nullptr) return;
  if (started && extension) {
    SidebusPortalInterface* iface = SIDEBUS_PORTAL_GET_IFACE(extension.get());
    if (iface->stop != nullptr) iface->stop(SIDEBUS_PORTAL(extension.get()));
  }
  started = false;
  if (lifetime) g_cancellable_cancel(lifetime.get());
  for (auto& [id, subscription] : host_signals) g_dbus_connection_signal_unsubscribe(link->host(), subscription);
  host_signals.clear();
  for (auto& [id, watch] : client_watches) link->clients().unwatch(watch);
  client_watches.clear();
  for (auto& [key, work] : pending) {
    work->context = nullptr;
    work->release_user_data();
  }
  pending.clear();
  for (auto& skeleton : exported) g_dbus_interface_skeleton_unexport(skeleton.get());
  exported.clear();
  extension.reset();
  link = nullptr;
}

extern "C" {

GDBusConnection* sidebus_context_get_guest_connection(SidebusContext* context) {
  return context->link != nullptr ? context->link->guest() : nullptr;
}
GDBusConnection* sidebus_context_get_host_connection(SidebusContext* context) {
  return context->link != nullptr ? context->link->host() : nullptr;
}
const char* sidebus_context_get_vm_name(SidebusContext* context) {
  return context->link != nullptr ? context->link->options().vm_name.c_str() : "";
}
const char* sidebus_context_get_portal_name(SidebusContext* context) { return context->portal_name.c_str(); }
JsonObject* sidebus_context_get_config(SidebusContext* context) { return context->config; }

guint32 sidebus_context_get_host_version(SidebusContext* context, const char* interface_name) {
  return context->link != nullptr ? context->link->host_portal().version(interface_name) : 0;
}

GVariant* sidebus_context_get_host_property(SidebusContext* context, const char* interface_name,
                                            const char* property_name) {
  if (context->link == nullptr) return nullptr;
  return context->link->host_portal().property(interface_name, property_name).release();
}

gboolean sidebus_context_export_at(SidebusContext* context, GDBusInterfaceSkeleton* skeleton, const char* bus_name,
                                   const char* object_path, GError** error) {
  if (context->link == nullptr) {
    g_set_error(error, SIDEBUS_ERROR, SIDEBUS_ERROR_FAILED, "the link is closing");
    return FALSE;
  }
  if (!g_dbus_is_name(bus_name) || g_dbus_is_unique_name(bus_name)) {
    g_set_error(error, SIDEBUS_ERROR, SIDEBUS_ERROR_INVALID_ARGUMENT, "“%s” is not a well-known bus name", bus_name);
    return FALSE;
  }
  if (!g_dbus_interface_skeleton_export(skeleton, context->link->guest(), object_path, error)) return FALSE;
  context->exported.push_back(sidebus::retain(skeleton));
  context->link->add_bus_name(bus_name);
  return TRUE;
}

gboolean sidebus_context_export(SidebusContext* context, GDBusInterfaceSkeleton* skeleton, GError** error) {
  return sidebus_context_export_at(context, skeleton, SIDEBUS_PORTAL_BUS_NAME, SIDEBUS_PORTAL_OBJECT_PATH, error);
}

char* sidebus_context_dialog_title(SidebusContext* context, const char* guest_title) {
  gsize length = strnlen(guest_title, SIDEBUS_MAX_TITLE_LENGTH);
  // Cut on a character boundary, then made valid whatever the guest sent.
  const char* end = guest_title + length;
  if (length == SIDEBUS_MAX_TITLE_LENGTH) {
    while (end > guest_title && (static_cast<unsigned char>(*end) & 0xc0) == 0x80) end--;
  }
  g_autofree char* title = g_utf8_make_valid(guest_title, end - guest_title);
  const std::string& prefix = context->link != nullptr ? context->link->options().dialog_title_prefix : "";
  return g_strconcat(prefix.c_str(), title, nullptr);
}

void sidebus_context_log(SidebusContext* context, GLogLevelFlags level, const char* format, ...) {
  va_list args;
  va_start(args, format);
  g_autofree char* message = g_strdup_vprintf(format, args);
  va_end(args);
  const GLogField fields[] = {
      {"GLIB_DOMAIN", "sidebus", -1},
      {"MESSAGE", message, -1},
      {"SIDEBUS_VM", sidebus_context_get_vm_name(context), -1},
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
  if (error == nullptr) {
    // A plugin bug; the guest still gets an answer.
    g_critical("%s: sidebus_context_reject() without an error", context->portal_name.c_str());
    error = g_error_new(SIDEBUS_ERROR, SIDEBUS_ERROR_FAILED, "the portal failed");
  }
  g_autoptr(GError) owned = sidebus::error_to_dbus(error);
  sidebus_context_log(context, G_LOG_LEVEL_WARNING, "rejected %s.%s from %s: %s",
                      g_dbus_method_invocation_get_interface_name(invocation),
                      g_dbus_method_invocation_get_method_name(invocation),
                      g_dbus_method_invocation_get_sender(invocation), owned->message);
  g_dbus_method_invocation_return_gerror(invocation, owned);
}

SidebusFdTransport sidebus_context_get_fd_transport(SidebusContext* context) {
  return context->link != nullptr ? context->link->options().fd_transport : SIDEBUS_FD_TRANSPORT_NONE;
}

gboolean sidebus_context_require_fds(SidebusContext* context, GError** error) {
  if (sidebus_context_get_fd_transport(context) != SIDEBUS_FD_TRANSPORT_NONE) return TRUE;
  g_set_error(error, G_DBUS_ERROR, G_DBUS_ERROR_NOT_SUPPORTED,
              "this VM's link (%s) cannot carry file descriptors; use a unix-socket link that passes fds, or an "
              "agent that speaks link protocol 2",
              context->link != nullptr ? context->link->options().transport.c_str() : "closed");
  return FALSE;
}

gboolean sidebus_context_get_forwarded_document(SidebusContext* context, int fd, char** guest_path,
                                                gboolean* writable) {
  if (guest_path) *guest_path = nullptr;
  if (writable) *writable = FALSE;
  if (sidebus_context_get_fd_transport(context) != SIDEBUS_FD_TRANSPORT_FORWARDED) return FALSE;
  const auto& forwarded = context->link->options().forwarded_documents;
  struct stat st;
  if (!forwarded || fstat(fd, &st) != 0) return FALSE;
  auto entry = forwarded->find(st.st_dev, st.st_ino);
  if (!entry) return FALSE;
  if (guest_path) *guest_path = g_strdup(entry->guest_path.c_str());
  if (writable) *writable = entry->writable;
  return TRUE;
}

}  // extern "C"
