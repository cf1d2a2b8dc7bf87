/* sidebus-plugin.h — the public API between the sidebus broker and its portal plugins.
 *
 * A portal plugin is a libpeas module (`<name>.plugin` + `lib<name>.so` in the
 * broker's plugin directory) that registers one GObject type implementing
 * SidebusPortal. For every guest link the broker creates a fresh instance,
 * calls start() with a SidebusContext for that link and stop() when the link
 * goes away; the instance is then dropped. Everything a plugin needs from the
 * core goes through the context: the guest and host connections, its JSON
 * configuration section, option validation, the portal Request pattern, file
 * export and the link's fd capability.
 *
 * The guest is untrusted: plugins validate every argument (use
 * sidebus_filter_options() for option dictionaries) and answer bad input with
 * a SIDEBUS_ERROR, which reaches the guest as org.freedesktop.portal.Error.*.
 *
 * ABI: structs here are opaque or padded; new functions are only ever added.
 * Compare SIDEBUS_PLUGIN_API_VERSION at build time if you need something new.
 */
#pragma once

#include <gio/gio.h>
#include <gio/gunixfdlist.h>
#include <json-glib/json-glib.h>

G_BEGIN_DECLS

#define SIDEBUS_PLUGIN_API_VERSION 1

/* Where every portal front-end interface lives on the guest bus. */
#define SIDEBUS_PORTAL_BUS_NAME "org.freedesktop.portal.Desktop"
#define SIDEBUS_PORTAL_OBJECT_PATH "/org/freedesktop/portal/desktop"

/* ---- Errors --------------------------------------------------------------
 * Registered as the D-Bus errors xdg-desktop-portal uses, so returning one of
 * these with g_dbus_method_invocation_return_gerror() gives the guest the
 * proper error name. NOT_SUPPORTED and LIMITS_EXCEEDED map to names GIO owns
 * (G_DBUS_ERROR): return those through sidebus_context_reject(), which
 * translates them. */
#define SIDEBUS_ERROR (sidebus_error_quark ())
typedef enum {
  SIDEBUS_ERROR_FAILED,           /* org.freedesktop.portal.Error.Failed */
  SIDEBUS_ERROR_INVALID_ARGUMENT, /* org.freedesktop.portal.Error.InvalidArgument */
  SIDEBUS_ERROR_NOT_FOUND,        /* org.freedesktop.portal.Error.NotFound */
  SIDEBUS_ERROR_EXISTS,           /* org.freedesktop.portal.Error.Exists */
  SIDEBUS_ERROR_NOT_ALLOWED,      /* org.freedesktop.portal.Error.NotAllowed */
  SIDEBUS_ERROR_CANCELLED,        /* org.freedesktop.portal.Error.Cancelled */
  SIDEBUS_ERROR_WINDOW_DESTROYED, /* org.freedesktop.portal.Error.WindowDestroyed */
  SIDEBUS_ERROR_NOT_SUPPORTED,    /* org.freedesktop.DBus.Error.NotSupported */
  SIDEBUS_ERROR_LIMITS_EXCEEDED,  /* org.freedesktop.DBus.Error.LimitsExceeded */
} SidebusError;
GQuark sidebus_error_quark (void);

/* ---- The per-link context ------------------------------------------------ */
typedef struct _SidebusContext SidebusContext;

/* The guest session bus (through the link) and the host bus where the real
 * xdg-desktop-portal runs. Borrowed; valid until stop(). */
GDBusConnection *sidebus_context_get_guest_connection (SidebusContext *context);
GDBusConnection *sidebus_context_get_host_connection (SidebusContext *context);

/* --vm-name: names the VM in logs; the app id documents are granted to. */
const char *sidebus_context_get_vm_name (SidebusContext *context);
/* The plugin's module name, e.g. "filechooser". */
const char *sidebus_context_get_portal_name (SidebusContext *context);
/* This plugin's section of the merged JSON configuration
 * (`{"portals": {"<name>": {...}}}`); never NULL, borrowed. */
JsonObject *sidebus_context_get_config (SidebusContext *context);

/* Exports @skeleton at SIDEBUS_PORTAL_OBJECT_PATH on the guest connection.
 * The core unexports it when the link goes away. */
gboolean sidebus_context_export (SidebusContext *context, GDBusInterfaceSkeleton *skeleton, GError **error);

/* Structured log line carrying SIDEBUS_VM and SIDEBUS_PORTAL fields.
 * G_LOG_LEVEL_DEBUG lines only show with --verbose. */
void sidebus_context_log (SidebusContext *context, GLogLevelFlags level, const char *format, ...) G_GNUC_PRINTF (3, 4);

/* Reports a rejected guest input once: logs it (warning) and returns it to the
 * caller as a D-Bus error. Takes ownership of @error. */
void sidebus_context_reject (SidebusContext *context, GDBusMethodInvocation *invocation, GError *error);

/* ---- Option dictionaries (validated by a table) -------------------------- */
typedef gboolean (*SidebusOptionValidator) (SidebusContext *context, const char *key, GVariant *value, GError **error);
typedef struct {
  const char *key;                 /* option name */
  const char *type;                /* expected GVariant type string, e.g. "a(sa(us))" */
  SidebusOptionValidator validate; /* optional: extra checks on the value */
} SidebusOption;

/* Returns a new (non-floating) a{sv} with only the keys in @table, each type-checked and
 * validated; unknown keys are dropped (logged at debug level). A wrong type
 * or a failed validator is an error (InvalidArgument). "handle_token" and
 * "session_handle_token" are never copied: the core owns those. */
GVariant *sidebus_filter_options (SidebusContext *context, GVariant *options, const SidebusOption *table, gsize n_entries,
                                  GError **error);

/* ---- The Request pattern --------------------------------------------------
 * A guest call such as FileChooser.OpenFile returns a request object path at
 * once and later emits org.freedesktop.portal.Request::Response there. The
 * helper below maps that onto the same pattern on the host portal:
 *
 *   request = sidebus_request_new (ctx, invocation, options, &error);
 *   sidebus_request_call_host (request, "org.freedesktop.portal.FileChooser",
 *                              "OpenFile", host_parameters, on_results, data);
 *
 * sidebus_request_new validates the guest's handle_token and exports the
 * guest request object before anything is returned. call_host puts the core's
 * own handle_token into the last a{sv} of @parameters, subscribes to the host
 * Response, makes the host call and returns the guest request path to the
 * guest. When the host responds, @on_results runs (or the results are passed
 * on unchanged if it is NULL); it must eventually call
 * sidebus_request_respond(), possibly later, after asynchronous work.
 * Request.Close from the guest closes the host request; a guest caller that
 * leaves the bus has its requests closed on the host. */
typedef struct _SidebusRequest SidebusRequest;

typedef void (*SidebusResultsFunc) (SidebusRequest *request, guint32 response, GVariant *host_results, gpointer user_data);

SidebusRequest *sidebus_request_new (SidebusContext *context, GDBusMethodInvocation *invocation, GVariant *options,
                                     GError **error);
/* The core holds a pending request; take a reference to keep it across
 * asynchronous work (e.g. in on_results). A request that was closed or whose
 * link went away meanwhile ignores sidebus_request_respond(). */
SidebusRequest *sidebus_request_ref (SidebusRequest *request);
void sidebus_request_unref (SidebusRequest *request);
const char *sidebus_request_get_guest_path (SidebusRequest *request);
/* The guest's unique bus name that made the call. */
const char *sidebus_request_get_sender (SidebusRequest *request);
SidebusContext *sidebus_request_get_context (SidebusRequest *request);
void sidebus_request_call_host (SidebusRequest *request, const char *interface_name, const char *method_name,
                                GVariant *parameters, SidebusResultsFunc on_results, gpointer user_data);
/* The same for host methods with 'h' arguments (OpenURI.OpenFile): @fd_list
 * (may be NULL) travels with the host call and the handles in @parameters
 * index it. The fds go to the host bus only. */
void sidebus_request_call_host_with_fds (SidebusRequest *request, const char *interface_name, const char *method_name,
                                         GVariant *parameters, GUnixFDList *fd_list, SidebusResultsFunc on_results,
                                         gpointer user_data);
/* Emits Response on the guest request object and retires the request.
 * @results: a{sv}, may be NULL (empty). */
void sidebus_request_respond (SidebusRequest *request, guint32 response, GVariant *results);

/* Portal response codes. */
#define SIDEBUS_RESPONSE_SUCCESS 0
#define SIDEBUS_RESPONSE_CANCELLED 1
#define SIDEBUS_RESPONSE_OTHER 2

/* ---- File export -----------------------------------------------------------
 * Host files become guest files through this VM's private document portal,
 * granted to the VM's app id, and appear at
 * file://<guest-documents-path>/<doc-id>/<basename>. */
typedef enum {
  SIDEBUS_EXPORT_FLAGS_NONE = 0,
  SIDEBUS_EXPORT_FLAGS_WRITABLE = 1 << 0,  /* the guest may write */
  SIDEBUS_EXPORT_FLAGS_DIRECTORY = 1 << 1, /* export directories as directories */
  SIDEBUS_EXPORT_FLAGS_FOR_SAVE = 1 << 2,  /* the file may not exist yet: export it by name in its parent */
} SidebusExportFlags;

/* Exports each host URI (file:// only) and returns the guest URIs, in order.
 * NULL-terminated in and out. Fails as a whole on the first bad URI. */
char **sidebus_context_export_uris (SidebusContext *context, const char *const *host_uris, SidebusExportFlags flags,
                                    GError **error);
/* Maps a guest path inside the guest documents directory back to the host
 * file it stands for; anything else is an error (NotAllowed). */
char *sidebus_context_guest_path_to_host_path (SidebusContext *context, const char *guest_path, GError **error);
/* The directory where exported documents appear inside the guest. */
const char *sidebus_context_get_guest_documents_path (SidebusContext *context);

/* ---- File descriptors -------------------------------------------------------
 * How fds cross this link. NATIVE: unix-socket links pass them as they are.
 * NONE: byte-only links (vsock, virtio-serial); the guest bus never hands fds
 * to the broker and the broker must not send any. FORWARDED: byte-only link
 * with fd forwarding (fd content carried as channels of the link). */
typedef enum {
  SIDEBUS_FD_TRANSPORT_NONE,
  SIDEBUS_FD_TRANSPORT_NATIVE,
  SIDEBUS_FD_TRANSPORT_FORWARDED,
} SidebusFdTransport;
SidebusFdTransport sidebus_context_get_fd_transport (SidebusContext *context);
/* TRUE if fds can cross; otherwise sets a NOT_SUPPORTED error that names the link. */
gboolean sidebus_context_require_fds (SidebusContext *context, GError **error);

/* ---- The plugin interface (libpeas extension point) ---------------------- */
#define SIDEBUS_TYPE_PORTAL (sidebus_portal_get_type ())
G_DECLARE_INTERFACE (SidebusPortal, sidebus_portal, SIDEBUS, PORTAL, GObject)

struct _SidebusPortalInterface {
  GTypeInterface parent_iface;

  /* Export the portal's interface(s) with sidebus_context_export(). */
  gboolean (*start) (SidebusPortal *portal, SidebusContext *context, GError **error);
  /* The link is going away; outstanding requests are retired by the core. */
  void (*stop) (SidebusPortal *portal);

  gpointer padding[8];
};

G_END_DECLS
