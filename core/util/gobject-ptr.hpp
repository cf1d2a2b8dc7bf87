// SPDX-License-Identifier: LGPL-2.1-or-later
// gobject-ptr.hpp — the one owning pointer for GLib's reference-counted
// types in C++ code: GObjectPtr<T> (any GObject), VariantPtr (GVariant, kept
// sunk). Ownership is visible in the type, and every exit
// path drops its reference.
#pragma once

#include <gio/gio.h>

#include <memory>

namespace sidebus {

struct GObjectUnref {
  void operator()(gpointer object) const { g_object_unref(object); }
};
template <typename T>
using GObjectPtr = std::unique_ptr<T, GObjectUnref>;

// Takes over a reference the caller owns (a _new() or a _finish() result).
template <typename T>
GObjectPtr<T> adopt(T* object) {
  return GObjectPtr<T>(object);
}
// Takes a new reference of a borrowed object.
template <typename T>
GObjectPtr<T> retain(T* object) {
  return GObjectPtr<T>(object != nullptr ? static_cast<T*>(g_object_ref(object)) : nullptr);
}

struct VariantUnref {
  void operator()(GVariant* variant) const { g_variant_unref(variant); }
};
using VariantPtr = std::unique_ptr<GVariant, VariantUnref>;
// Sinks a floating variant, or takes over a reference the caller owns.
inline VariantPtr adopt_variant(GVariant* variant) {
  return VariantPtr(variant != nullptr ? g_variant_ref_sink(variant) : nullptr);
}

}  // namespace sidebus
