// SPDX-License-Identifier: LGPL-2.1-or-later
// pw-loop-source.cpp — see pw-loop-source.hpp.
#include "pw-loop-source.hpp"

namespace sidebus::plugins {
namespace {

struct LoopSource {
  GSource base;
  pw_loop* loop;
};

gboolean dispatch_loop(GSource* source, GSourceFunc, gpointer) {
  pw_loop_iterate(reinterpret_cast<LoopSource*>(source)->loop, 0);
  return G_SOURCE_CONTINUE;
}

GSourceFuncs kLoopSourceFuncs = {nullptr, nullptr, dispatch_loop, nullptr, nullptr, nullptr};

}  // namespace

GSource* attach_pw_loop(pw_loop* loop) {
  GSource* source = g_source_new(&kLoopSourceFuncs, sizeof(LoopSource));
  reinterpret_cast<LoopSource*>(source)->loop = loop;
  g_source_add_unix_fd(source, pw_loop_get_fd(loop), static_cast<GIOCondition>(G_IO_IN | G_IO_ERR));
  g_source_attach(source, g_main_context_get_thread_default());
  return source;
}

}  // namespace sidebus::plugins
