// SPDX-License-Identifier: LGPL-2.1-or-later
// main-context.hpp — handing work to a GMainContext from any thread.
#pragma once

#include <glib.h>

#include <functional>

namespace sidebus {

// Runs fn on `context` from any thread, always through an idle source (never
// synchronously, unlike g_main_context_invoke(), which may run it in the
// calling thread when nobody owns the context).
void post_to_context(GMainContext* context, std::function<void()> fn);

}  // namespace sidebus
