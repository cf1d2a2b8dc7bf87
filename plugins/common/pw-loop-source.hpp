// SPDX-License-Identifier: LGPL-2.1-or-later
// pw-loop-source.hpp — a PipeWire loop run by a GLib main context: a GSource
// that iterates the pw_loop whenever its fd is readable. Shared by the host
// half of the stream relay (host-stream, host-nodes) and the guest's
// sidebus-stream-relay, which all live on GLib main loops.
#pragma once

#include <glib.h>
#include <pipewire/pipewire.h>

namespace sidebus::plugins {

// Attached to the thread-default main context; g_source_destroy() and
// g_source_unref() it before the loop goes.
GSource* attach_pw_loop(pw_loop* loop);

}  // namespace sidebus::plugins
