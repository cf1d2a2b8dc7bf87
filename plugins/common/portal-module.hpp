// SPDX-License-Identifier: LGPL-2.1-or-later
// portal-module.hpp — the libpeas side of an in-tree plugin whose portal is
// a C++ class, Impl, with
//   static std::unique_ptr<Impl> start(SidebusContext*, GError**);
// and lives from SidebusPortal's start() to its stop(); the plugin's
// configuration keys are a span (empty: nothing but "enabled").
//
//   SIDEBUS_PORTAL_MODULE(PrintPortal, print_portal, sidebus::print::Print,
//                         std::span<const SidebusConfigKey>(sidebus::print::kConfigKeys))
//
// defines the GObject type PrintPortal (a dynamic type of the plugin's
// module, implementing SidebusPortal) and peas_register_types(). Written
// once here so that every plugin's extension behaves the same; plugins whose
// extension is a generated skeleton (FileChooser, Screenshot) keep their own.
#pragma once

#include <libpeas/peas.h>

#include <span>

#include "sidebus-plugin.h"

#define SIDEBUS_PORTAL_MODULE(TypeName, type_name, Impl, config_keys)                                       \
  struct TypeName {                                                                                          \
    GObject parent_instance;                                                                                 \
    Impl* portal; /* between start() and stop() */                                                          \
  };                                                                                                         \
  struct TypeName##Class {                                                                                   \
    GObjectClass parent_class;                                                                               \
  };                                                                                                         \
  static void type_name##_iface_init(SidebusPortalInterface* iface);                                         \
  G_DEFINE_DYNAMIC_TYPE_EXTENDED(TypeName, type_name, G_TYPE_OBJECT, 0,                                      \
                                 G_IMPLEMENT_INTERFACE_DYNAMIC(SIDEBUS_TYPE_PORTAL, type_name##_iface_init)) \
  static gboolean type_name##_start(SidebusPortal* portal, SidebusContext* context, GError** error) {        \
    auto* self = reinterpret_cast<TypeName*>(portal);                                                        \
    auto started = Impl::start(context, error);                                                             \
    if (!started) return FALSE;                                                                              \
    delete self->portal;                                                                                     \
    self->portal = started.release();                                                                        \
    return TRUE;                                                                                             \
  }                                                                                                          \
  static void type_name##_stop(SidebusPortal* portal) {                                                      \
    auto* self = reinterpret_cast<TypeName*>(portal);                                                        \
    delete self->portal;                                                                                     \
    self->portal = nullptr;                                                                                  \
  }                                                                                                          \
  static const SidebusConfigKey* type_name##_get_config_schema(SidebusPortal*, gsize* n_keys) {              \
    std::span<const SidebusConfigKey> keys = config_keys;                                                    \
    *n_keys = keys.size();                                                                                   \
    return keys.empty() ? nullptr : keys.data();                                                             \
  }                                                                                                          \
  static void type_name##_iface_init(SidebusPortalInterface* iface) {                                        \
    iface->start = type_name##_start;                                                                        \
    iface->stop = type_name##_stop;                                                                          \
    iface->get_config_schema = type_name##_get_config_schema;                                                \
  }                                                                                                          \
  static void type_name##_finalize(GObject* object) {                                                        \
    delete reinterpret_cast<TypeName*>(object)->portal;                                                      \
    G_OBJECT_CLASS(type_name##_parent_class)->finalize(object);                                              \
  }                                                                                                          \
  static void type_name##_init(TypeName* self) { self->portal = nullptr; }                                   \
  static void type_name##_class_init(TypeName##Class* klass) {                                               \
    G_OBJECT_CLASS(klass)->finalize = type_name##_finalize;                                                  \
  }                                                                                                          \
  static void type_name##_class_finalize(TypeName##Class*) {}                                                \
  extern "C" G_MODULE_EXPORT void peas_register_types(PeasObjectModule* module) {                            \
    type_name##_register_type(G_TYPE_MODULE(module));                                                        \
    peas_object_module_register_extension_type(module, SIDEBUS_TYPE_PORTAL, type_name##_get_type());         \
  }
