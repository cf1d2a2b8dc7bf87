// SPDX-License-Identifier: LGPL-2.1-or-later
// pipewire-remote.cpp — see pipewire-remote.hpp.
#include "pipewire-remote.hpp"

#include <unistd.h>

namespace sidebus::plugins {

PipeWireRoute pipewire_route(SidebusContext* context) {
  switch (sidebus_context_get_fd_transport(context)) {
    case SIDEBUS_FD_TRANSPORT_NATIVE: return PipeWireRoute::kNative;
    case SIDEBUS_FD_TRANSPORT_FORWARDED:
      return PipeWireRoute::kRelay;
    case SIDEBUS_FD_TRANSPORT_NONE:
      return PipeWireRoute::kUnavailable;
  }
  return PipeWireRoute::kUnavailable;  // a transport newer than this plugin
}

GError* pipewire_unavailable_error(SidebusContext* context, const char* what) {
  (void)context;
  return g_error_new(SIDEBUS_ERROR, SIDEBUS_ERROR_NOT_SUPPORTED,
                     "this VM's link cannot carry a PipeWire connection: it is byte-only (vsock or virtio-serial) "
                     "and its agent speaks link protocol 1, which forwards no file descriptors. The stream relay that "
                     "brings %s to a node on the VM's own PipeWire needs link protocol 2 (a current sidebus-agent); "
                     "or connect the VM over a unix-socket link that passes fds (e.g. a cross-domain channel)",
                     what);
}

GVariant* pass_pipewire_fd(SidebusContext*, GVariant* host_reply, GUnixFDList* host_fds, GUnixFDList** guest_fds,
                           gpointer, GError** error) {
  gint32 handle = -1;
  if (g_variant_is_of_type(host_reply, G_VARIANT_TYPE("(h)"))) g_variant_get(host_reply, "(h)", &handle);
  if (handle < 0 || host_fds == nullptr || handle >= g_unix_fd_list_get_length(host_fds)) {
    g_set_error(error, SIDEBUS_ERROR, SIDEBUS_ERROR_FAILED, "the host portal answered without a PipeWire remote");
    return nullptr;
  }
  int fd = g_unix_fd_list_get(host_fds, handle, error);  // a dup
  if (fd < 0) return nullptr;
  GUnixFDList* fds = g_unix_fd_list_new();
  gint index = g_unix_fd_list_append(fds, fd, error);
  close(fd);
  if (index < 0) {
    g_object_unref(fds);
    return nullptr;
  }
  *guest_fds = fds;
  return g_variant_new("(h)", index);
}

}  // namespace sidebus::plugins
