// SPDX-License-Identifier: LGPL-2.1-or-later
// main-context.cpp — see main-context.hpp.
#include "util/main-context.hpp"

namespace sidebus {

void post_to_context(GMainContext* context, std::function<void()> fn) {
  GSource* source = g_idle_source_new();
  g_source_set_priority(source, G_PRIORITY_DEFAULT);
  g_source_set_callback(
      source,
      [](gpointer data) -> gboolean {
        (*static_cast<std::function<void()>*>(data))();
        return G_SOURCE_REMOVE;
      },
      new std::function<void()>(std::move(fn)),
      [](gpointer data) { delete static_cast<std::function<void()>*>(data); });
  g_source_attach(source, context);
  g_source_unref(source);
}

}  // namespace sidebus
