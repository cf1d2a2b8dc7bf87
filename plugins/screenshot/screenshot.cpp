// screenshot.cpp — org.freedesktop.portal.Screenshot for a VM: the guest
// asks, the host's own screenshot UI (and its permission dialog) answers,
// and the picture appears inside the guest.
//
// Both methods are the Request pattern toward the host's xdg-desktop-portal
// (the core's helper: Response, Close and a vanishing caller are handled
// there), with the guest's options filtered by a table first:
//  - Screenshot: "modal" and "interactive". The broker is an unsandboxed
//    host client, so the host answers with a plain host URI (the PNG its
//    backend wrote). That must not reach the guest: it is exported through
//    this VM's document portal, read-only — a screenshot is something the
//    guest receives, not a host file it may change — and the guest gets
//    file://<guest-documents-path>/<doc-id>/<name>, as for a FileChooser
//    result. A host answer that is not a file:// URI, or an export that
//    fails, reaches the guest as 2 (other): never a host location.
//  - PickColor: no options; the Response's "color" (ddd) passes as it is.
// parent_window is always "" on the host: a guest window handle names a
// window on the guest's display. Neither method has a title or any other
// text the host shows, so the host's dialogs cannot name the VM (its
// permission dialog says "an application"); the broker's log lines do.
//
// version: the lower of what this plugin implements (2: "interactive") and
// the host portal's.
#include <libpeas/peas.h>
#include <sidebus-plugin.h>

#include <cstring>

#include "screenshot-portal.h"

namespace {

constexpr char kInterface[] = "org.freedesktop.portal.Screenshot";
constexpr guint32 kImplementedVersion = 2;

const SidebusOption kScreenshotOptions[] = {
    {"modal", "b", nullptr, {}},
    {"interactive", "b", nullptr, {}},
};

// ---- Screenshot's Response ----------------------------------------------------

struct Exporting {
  SidebusRequest* request;  // a reference
  static void destroy(gpointer data) {
    auto* self = static_cast<Exporting*>(data);
    sidebus_request_unref(self->request);
    delete self;
  }
};

void on_exported(SidebusContext* context, char** guest_uris, const GError* error, gpointer user_data) {
  auto* exporting = static_cast<Exporting*>(user_data);
  if (guest_uris == nullptr || guest_uris[0] == nullptr) {
    sidebus_context_log(context, G_LOG_LEVEL_WARNING, "Screenshot: could not share the screenshot with the VM: %s",
                        error != nullptr ? error->message : "no document");
    sidebus_request_respond(exporting->request, SIDEBUS_RESPONSE_OTHER, nullptr);
    return;
  }
  sidebus_context_log(context, G_LOG_LEVEL_DEBUG, "Screenshot: exported to the guest as %s", guest_uris[0]);
  g_auto(GVariantBuilder) results = G_VARIANT_BUILDER_INIT(G_VARIANT_TYPE_VARDICT);
  g_variant_builder_add(&results, "{sv}", "uri", g_variant_new_string(guest_uris[0]));
  sidebus_request_respond(exporting->request, SIDEBUS_RESPONSE_SUCCESS, g_variant_builder_end(&results));
}

void on_screenshot_results(SidebusRequest* request, guint32 response, GVariant* host_results, gpointer) {
  SidebusContext* context = sidebus_request_get_context(request);
  if (response != SIDEBUS_RESPONSE_SUCCESS) {
    sidebus_request_respond(request, response, nullptr);
    return;
  }
  const char* uri = nullptr;
  if (!g_variant_lookup(host_results, "uri", "&s", &uri)) {
    sidebus_context_log(context, G_LOG_LEVEL_WARNING, "Screenshot: the host answered success without a uri; "
                                                      "answering 'other' (2)");
    sidebus_request_respond(request, SIDEBUS_RESPONSE_OTHER, nullptr);
    return;
  }
  const char* scheme = g_uri_peek_scheme(uri);
  if (scheme == nullptr || strcmp(scheme, "file") != 0) {
    // Only local files can be exported; anything else would hand the guest
    // a host location it cannot use and should not learn.
    sidebus_context_log(context, G_LOG_LEVEL_WARNING,
                        "Screenshot: the host answered %s, which is not a file:// URI; only local files can be shared "
                        "with the VM, answering 'other' (2)",
                        scheme != nullptr ? scheme : "a URI without a scheme");
    sidebus_request_respond(request, SIDEBUS_RESPONSE_OTHER, nullptr);
    return;
  }
  const char* uris[] = {uri, nullptr};
  sidebus_context_export_uris_async(context, uris, SIDEBUS_EXPORT_FLAGS_NONE, on_exported,
                                    new Exporting{sidebus_request_ref(request)}, Exporting::destroy);
}

// ---- PickColor's Response -----------------------------------------------------

void on_pick_color_results(SidebusRequest* request, guint32 response, GVariant* host_results, gpointer) {
  g_auto(GVariantBuilder) results = G_VARIANT_BUILDER_INIT(G_VARIANT_TYPE_VARDICT);
  g_autoptr(GVariant) color = g_variant_lookup_value(host_results, "color", G_VARIANT_TYPE("(ddd)"));
  if (response == SIDEBUS_RESPONSE_SUCCESS && color != nullptr)
    g_variant_builder_add(&results, "{sv}", "color", color);
  sidebus_request_respond(request, response, g_variant_builder_end(&results));
}

}  // namespace

// ---- The portal object ----------------------------------------------------------

#define SHOT_TYPE_PORTAL (shot_portal_get_type())
G_DECLARE_FINAL_TYPE(ShotPortal, shot_portal, SHOT, PORTAL, SidebusShotScreenshotSkeleton)

struct _ShotPortal {
  SidebusShotScreenshotSkeleton parent_instance;
  SidebusContext* context;  // borrowed between start() and stop()
};

static void shot_portal_portal_iface_init(SidebusPortalInterface* iface);

// The methods are the skeleton's handle-* signals (connected in init): a
// dynamic type cannot re-implement the interface its generated parent has.
G_DEFINE_DYNAMIC_TYPE_EXTENDED(ShotPortal, shot_portal, SIDEBUS_SHOT_TYPE_SCREENSHOT_SKELETON, 0,
                               G_IMPLEMENT_INTERFACE_DYNAMIC(SIDEBUS_TYPE_PORTAL, shot_portal_portal_iface_init))

static gboolean forward(ShotPortal* self, GDBusMethodInvocation* invocation, const char* method, GVariant* options,
                        const SidebusOption* table, gsize n_entries, SidebusResultsFunc on_results) {
  SidebusContext* context = self->context;
  if (context == nullptr) {  // dispatched after the link went away
    g_dbus_method_invocation_return_error(invocation, SIDEBUS_ERROR, SIDEBUS_ERROR_FAILED, "the VM link is closing");
    return G_DBUS_METHOD_INVOCATION_HANDLED;
  }
  GError* error = nullptr;
  g_autoptr(GVariant) host_options = sidebus_filter_options(context, options, table, n_entries, &error);
  if (host_options == nullptr) {
    sidebus_context_reject(context, invocation, error);
    return G_DBUS_METHOD_INVOCATION_HANDLED;
  }
  SidebusRequest* request = sidebus_request_new(context, invocation, options, &error);
  if (request == nullptr) {
    sidebus_context_reject(context, invocation, error);
    return G_DBUS_METHOD_INVOCATION_HANDLED;
  }
  sidebus_request_call_host(request, kInterface, method, g_variant_new("(s@a{sv})", "", host_options), on_results,
                            nullptr);
  return G_DBUS_METHOD_INVOCATION_HANDLED;
}

static gboolean handle_screenshot(SidebusShotScreenshot* object, GDBusMethodInvocation* invocation, const char*,
                                  GVariant* options, gpointer) {
  return forward(SHOT_PORTAL(object), invocation, "Screenshot", options, kScreenshotOptions,
                 G_N_ELEMENTS(kScreenshotOptions), on_screenshot_results);
}

static gboolean handle_pick_color(SidebusShotScreenshot* object, GDBusMethodInvocation* invocation, const char*,
                                  GVariant* options, gpointer) {
  return forward(SHOT_PORTAL(object), invocation, "PickColor", options, nullptr, 0, on_pick_color_results);
}

static gboolean shot_portal_start(SidebusPortal* portal, SidebusContext* context, GError** error) {
  ShotPortal* self = SHOT_PORTAL(portal);
  guint32 host_version = sidebus_context_get_host_version(context, kInterface);
  if (host_version == 0) {
    g_set_error(error, SIDEBUS_ERROR, SIDEBUS_ERROR_NOT_SUPPORTED, "the host portal has no Screenshot");
    return FALSE;
  }
  self->context = context;
  guint32 version = MIN(host_version, kImplementedVersion);
  sidebus_shot_screenshot_set_version(SIDEBUS_SHOT_SCREENSHOT(self), version);
  sidebus_context_log(context, G_LOG_LEVEL_DEBUG, "host Screenshot version %u; the guest sees %u", host_version,
                      version);
  return sidebus_context_export(context, G_DBUS_INTERFACE_SKELETON(self), error);
}

static void shot_portal_stop(SidebusPortal* portal) { SHOT_PORTAL(portal)->context = nullptr; }

// No keys besides "enabled": declaring none still has a typo in the
// section (portals.<name>.enabeld) stop the broker with the place to fix.
static const SidebusConfigKey* shot_portal_get_config_schema(SidebusPortal*, gsize* n_keys) {
  *n_keys = 0;
  return nullptr;
}

static void shot_portal_portal_iface_init(SidebusPortalInterface* iface) {
  iface->start = shot_portal_start;
  iface->stop = shot_portal_stop;
  iface->get_config_schema = shot_portal_get_config_schema;
}

static void shot_portal_init(ShotPortal* self) {
  g_signal_connect(self, "handle-screenshot", G_CALLBACK(handle_screenshot), nullptr);
  g_signal_connect(self, "handle-pick-color", G_CALLBACK(handle_pick_color), nullptr);
}
static void shot_portal_class_init(ShotPortalClass*) {}
static void shot_portal_class_finalize(ShotPortalClass*) {}

extern "C" G_MODULE_EXPORT void peas_register_types(PeasObjectModule* module) {
  shot_portal_register_type(G_TYPE_MODULE(module));
  peas_object_module_register_extension_type(module, SIDEBUS_TYPE_PORTAL, SHOT_TYPE_PORTAL);
}
