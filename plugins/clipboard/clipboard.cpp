// SPDX-License-Identifier: LGPL-2.1-or-later
// clipboard.cpp — the clipboard plugin's libpeas extension: one
// FileTransferPortal (file-transfer.hpp) per guest link, and the schema of
// portals.clipboard. The clipboard's text and images, and the transfer key
// itself, cross on the Wayland clipboard (docs/clipboard.md); this plugin
// moves the files.
#include <libpeas/peas.h>
#include <sidebus-plugin.h>

#include "file-transfer.hpp"

#define CLIPBOARD_TYPE_PORTAL (clipboard_portal_get_type())
G_DECLARE_FINAL_TYPE(ClipboardPortal, clipboard_portal, CLIPBOARD, PORTAL, GObject)

struct _ClipboardPortal {
  GObject parent_instance;
  sidebus::clipboard::FileTransferPortal* portal;  // between start() and stop()
};

static void clipboard_portal_iface_init(SidebusPortalInterface* iface);

G_DEFINE_DYNAMIC_TYPE_EXTENDED(ClipboardPortal, clipboard_portal, G_TYPE_OBJECT, 0,
                               G_IMPLEMENT_INTERFACE_DYNAMIC(SIDEBUS_TYPE_PORTAL, clipboard_portal_iface_init))

static gboolean clipboard_portal_start(SidebusPortal* portal, SidebusContext* context, GError** error) {
  ClipboardPortal* self = CLIPBOARD_PORTAL(portal);
  auto started = sidebus::clipboard::FileTransferPortal::start(context, error);
  if (!started) return FALSE;
  delete self->portal;
  self->portal = started.release();
  return TRUE;
}

static void clipboard_portal_stop(SidebusPortal* portal) {
  ClipboardPortal* self = CLIPBOARD_PORTAL(portal);
  delete self->portal;
  self->portal = nullptr;
}

static void clipboard_portal_finalize(GObject* object) {
  delete CLIPBOARD_PORTAL(object)->portal;
  G_OBJECT_CLASS(clipboard_portal_parent_class)->finalize(object);
}

static const SidebusConfigKey* clipboard_portal_get_config_schema(SidebusPortal*, gsize* n_keys) {
  *n_keys = sidebus::clipboard::kNumConfigKeys;
  return sidebus::clipboard::kConfigKeys;
}

static void clipboard_portal_iface_init(SidebusPortalInterface* iface) {
  iface->start = clipboard_portal_start;
  iface->stop = clipboard_portal_stop;
  iface->get_config_schema = clipboard_portal_get_config_schema;
}

static void clipboard_portal_init(ClipboardPortal* self) { self->portal = nullptr; }
static void clipboard_portal_class_init(ClipboardPortalClass* klass) {
  G_OBJECT_CLASS(klass)->finalize = clipboard_portal_finalize;
}
static void clipboard_portal_class_finalize(ClipboardPortalClass*) {}

extern "C" G_MODULE_EXPORT void peas_register_types(PeasObjectModule* module) {
  clipboard_portal_register_type(G_TYPE_MODULE(module));
  peas_object_module_register_extension_type(module, SIDEBUS_TYPE_PORTAL, CLIPBOARD_TYPE_PORTAL);
}
