// SPDX-License-Identifier: LGPL-2.1-or-later
// filechooser-paths.cpp — guest paths in options (current_folder,
// current_file) mean nothing on the host: the host cannot see the guest's
// file system. The one exception is the guest documents directory, where
// every entry stands for a host file the user already chose; the core maps
// those back. Anything else is dropped — never passed on as if it were a host
// path, which would let a guest point the host dialog at host files of its
// choosing, or learn from the dialog what exists on the host.
#include <cstring>

#include "filechooser.hpp"

namespace filechooser {

char* host_path_for_guest_path(SidebusContext* context, const char* key, const char* guest_path) {
  g_autoptr(GError) error = nullptr;
  g_autofree char* host_path = sidebus_context_guest_path_to_host_path(context, guest_path, &error);
  if (host_path == nullptr) {
    sidebus_context_log(context, G_LOG_LEVEL_MESSAGE,
                        "dropping option '%s': %s; only paths inside the guest documents directory %s stand for host "
                        "files",
                        key, error->message, sidebus_context_get_guest_documents_path(context));
    return nullptr;
  }
  // A folder option naming a shared file (an app passing the file it has
  // open) means the folder that holds it, as xdg-desktop-portal resolves it.
  if (strcmp(key, "current_folder") == 0 && !g_file_test(host_path, G_FILE_TEST_IS_DIR)) {
    g_autofree char* file = g_steal_pointer(&host_path);
    host_path = g_path_get_dirname(file);
  }
  sidebus_context_log(context, G_LOG_LEVEL_DEBUG, "option '%s': guest %s → host %s", key, guest_path, host_path);
  return g_steal_pointer(&host_path);
}

}  // namespace filechooser
