// SPDX-License-Identifier: LGPL-2.1-or-later
// errors.cpp — SIDEBUS_ERROR, registered under the D-Bus error names that
// xdg-desktop-portal uses, so a GError returned to the guest arrives as
// org.freedesktop.portal.Error.InvalidArgument and so on. NOT_SUPPORTED and
// LIMITS_EXCEEDED stand for names GIO has already registered for G_DBUS_ERROR
// (a D-Bus name maps to one GError only), so sidebus_error_to_dbus()
// translates them before they leave the broker.
#include "api/errors.hpp"
#include "sidebus-plugin.h"

static const GDBusErrorEntry sidebus_error_entries[] = {
    {SIDEBUS_ERROR_FAILED, "org.freedesktop.portal.Error.Failed"},
    {SIDEBUS_ERROR_INVALID_ARGUMENT, "org.freedesktop.portal.Error.InvalidArgument"},
    {SIDEBUS_ERROR_NOT_FOUND, "org.freedesktop.portal.Error.NotFound"},
    {SIDEBUS_ERROR_EXISTS, "org.freedesktop.portal.Error.Exists"},
    {SIDEBUS_ERROR_NOT_ALLOWED, "org.freedesktop.portal.Error.NotAllowed"},
    {SIDEBUS_ERROR_CANCELLED, "org.freedesktop.portal.Error.Cancelled"},
    {SIDEBUS_ERROR_WINDOW_DESTROYED, "org.freedesktop.portal.Error.WindowDestroyed"},
};

extern "C" GQuark sidebus_error_quark(void) {
  static gsize quark = 0;
  g_dbus_error_register_error_domain("sidebus-error-quark", &quark, sidebus_error_entries,
                                     G_N_ELEMENTS(sidebus_error_entries));
  return static_cast<GQuark>(quark);
}

namespace sidebus {

GError* error_to_dbus(GError* error) {
  if (error->domain != SIDEBUS_ERROR) return error;
  if (error->code == SIDEBUS_ERROR_NOT_SUPPORTED) {
    error->domain = G_DBUS_ERROR;
    error->code = G_DBUS_ERROR_NOT_SUPPORTED;
  } else if (error->code == SIDEBUS_ERROR_LIMITS_EXCEEDED) {
    error->domain = G_DBUS_ERROR;
    error->code = G_DBUS_ERROR_LIMITS_EXCEEDED;
  }
  return error;
}

}  // namespace sidebus
