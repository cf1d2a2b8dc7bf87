// SPDX-License-Identifier: LGPL-2.1-or-later
// filechooser.hpp — the pieces of the FileChooser plugin and how they meet.
//
// filechooser.cpp          the portal object on the guest bus: one handler per
//                          method, each validating, then handing the call to
//                          the core's Request helper toward the host portal
// filechooser-options.cpp  the option tables: what each method accepts from
//                          the guest, type-checked, validated and capped
// filechooser-paths.cpp    guest paths in options (current_folder, …) → the
//                          host files they stand for, or dropped
// filechooser-results.cpp  the host's Response → the guest's: chosen host
//                          files exported through the document portal
#pragma once

#include <sidebus-plugin.h>

namespace filechooser {

inline constexpr char kInterface[] = "org.freedesktop.portal.FileChooser";
// Version 4 adds current_folder to OpenFile. The guest is told the lower of
// this and the host portal's version.
inline constexpr guint kImplementedVersion = 4;

enum class Method : guint { OpenFile, SaveFile, SaveFiles };
const char* method_name(Method method);

// What the result mapping needs to know about the call: the request's user
// data, released by the core with destroy().
struct CallInfo {
  Method method;
  bool directory;  // OpenFile with directory=true: folders were chosen
  static void destroy(gpointer info) { delete static_cast<CallInfo*>(info); }
};

// The options to send to the host portal for @method: only the keys the
// method documents, each type-checked and validated (InvalidArgument
// otherwise), guest paths translated or dropped. A new non-floating a{sv}.
GVariant* host_options_for(SidebusContext* context, Method method, GVariant* guest_options, GError** error);

// The host file a guest path (inside the guest documents directory) stands
// for; nullptr when it stands for none — the caller drops the option. Logs
// why once. @key names the option in that log line.
char* host_path_for_guest_path(SidebusContext* context, const char* key, const char* guest_path);

// SidebusResultsFunc: the host's Response becomes the guest's, with every
// chosen host file exported to the guest. user_data: a CallInfo.
void on_host_results(SidebusRequest* request, guint32 response, GVariant* host_results, gpointer user_data);

}  // namespace filechooser
