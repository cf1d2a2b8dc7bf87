/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* sidebus-plugin.h — the public API between the sidebus broker and its portal plugins.
 *
 * A portal plugin is a libpeas module (`<name>.plugin` + `lib<name>.so` in the
 * broker's plugin directory) that registers one GObject type implementing
 * SidebusPortal. For every guest link the broker creates a fresh instance,
 * calls start() with a SidebusContext for that link and stop() when the link
 * goes away; the instance is then dropped. Everything a plugin needs from the
 * core goes through the context: the guest and host connections, its JSON
 * configuration section (checked against the schema the plugin declares),
 * the host portal's interface versions, option validation, the Request and
 * Session patterns, forwarding of plain calls and signals, file export and
 * the link's fd capability.
 *
 * Everything a plugin starts through the context (requests, sessions, host
 * signal subscriptions, guest client watches, exports) belongs to the link:
 * when the link goes away the core retires it in one fixed order — guest
 * objects unexported, host requests and sessions closed, then the plugins'
 * stop(), then the connections closed — so no callback of the API runs after
 * stop() returned, and a plugin's user data is released through its
 * GDestroyNotify.
 *
 * The guest is untrusted: plugins validate every argument (use
 * sidebus_filter_options() for option dictionaries) and answer bad input with
 * sidebus_context_reject(), which logs once and returns the proper D-Bus
 * error (org.freedesktop.portal.Error.*).
 *
 * ABI: structs here are opaque, or padded for growth (SidebusOption,
 * SidebusConfigKey, SidebusPortalInterface); new functions are only ever
 * added. SIDEBUS_PLUGIN_API_VERSION changes when a plugin must be rebuilt;
 * the broker loads only plugins whose .plugin file declares its version.
 *
 * API 2 (sidebus 0.2) — what changed since 1:
 *  - sessions (SidebusSession), forwarding of plain calls with fds both ways,
 *    host signal subscriptions, guest signals and guest client watches;
 *  - sidebus_context_export_at() serves an interface under another bus name;
 *  - the host portal's versions are read once by the core
 *    (sidebus_context_get_host_version);
 *  - export is asynchronous (sidebus_context_export_uris_async); the
 *    synchronous sidebus_context_export_uris() is gone;
 *  - every callback that takes user data takes a GDestroyNotify
 *    (sidebus_request_call_host_full);
 *  - plugins declare their configuration keys (get_config_schema);
 *  - host dialog titles carry the VM's name (sidebus_context_dialog_title);
 *  - SidebusOption is padded.
 */
#pragma once

#include <gio/gio.h>
#include <gio/gunixfdlist.h>
#include <json-glib/json-glib.h>

G_BEGIN_DECLS

#define SIDEBUS_PLUGIN_API_VERSION 2

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
 * (`{"portals": {"<name>": {...}}}`), already checked against the plugin's
 * schema at start-up; never NULL, borrowed. */
JsonObject *sidebus_context_get_config (SidebusContext *context);

/* The "version" property of @interface_name on the host portal, read once by
 * the core before the guest could see the portal; 0 if the host portal has
 * no such interface. A plugin tells the guest the lower of this and what it
 * implements. */
guint32 sidebus_context_get_host_version (SidebusContext *context, const char *interface_name);
/* Any other property of a host portal interface, read at the same time
 * (e.g. ScreenCast's AvailableSourceTypes); NULL if the host has none.
 * A new reference. */
GVariant *sidebus_context_get_host_property (SidebusContext *context, const char *interface_name,
                                             const char *property_name);

/* Exports @skeleton at SIDEBUS_PORTAL_OBJECT_PATH on the guest connection.
 * The core unexports it when the link goes away. */
gboolean sidebus_context_export (SidebusContext *context, GDBusInterfaceSkeleton *skeleton, GError **error);
/* The same at @object_path, and the broker also owns @bus_name on the guest
 * bus (e.g. org.freedesktop.portal.Documents at
 * /org/freedesktop/portal/documents for FileTransfer). Names are claimed once
 * every plugin has started, together with SIDEBUS_PORTAL_BUS_NAME. */
gboolean sidebus_context_export_at (SidebusContext *context, GDBusInterfaceSkeleton *skeleton, const char *bus_name,
                                    const char *object_path, GError **error);

/* The title a host dialog shows for a title the guest sent: the
 * administrator's prefix (broker.dialog_title_prefix, default "[<vm-name>] ")
 * first, so a guest cannot pose as a host application, then @guest_title
 * (cut to SIDEBUS_MAX_TITLE_LENGTH bytes, made valid UTF-8). Free with g_free. */
#define SIDEBUS_MAX_TITLE_LENGTH 1024
char *sidebus_context_dialog_title (SidebusContext *context, const char *guest_title);

/* Structured log line carrying SIDEBUS_VM and SIDEBUS_PORTAL fields.
 * G_LOG_LEVEL_DEBUG lines only show with --verbose. */
void sidebus_context_log (SidebusContext *context, GLogLevelFlags level, const char *format, ...) G_GNUC_PRINTF (3, 4);

/* Reports a rejected guest input once: logs it (warning) and returns it to the
 * caller as a D-Bus error. Takes ownership of @error; a NULL @error answers
 * org.freedesktop.portal.Error.Failed (and logs a critical: it is a bug). */
void sidebus_context_reject (SidebusContext *context, GDBusMethodInvocation *invocation, GError *error);

/* ---- Option dictionaries (validated by a table) -------------------------- */
typedef gboolean (*SidebusOptionValidator) (SidebusContext *context, const char *key, GVariant *value, GError **error);
typedef struct {
  const char *key;                 /* option name */
  const char *type;                /* expected GVariant type string, e.g. "a(sa(us))" */
  SidebusOptionValidator validate; /* optional: extra checks on the value */
  gpointer reserved[2];            /* zero */
} SidebusOption;

/* At most this many keys in one options dictionary from the guest; more is
 * InvalidArgument before any key is looked at. */
#define SIDEBUS_MAX_OPTIONS 256

/* Returns a new (non-floating) a{sv} with only the keys in @table, each
 * type-checked and validated; unknown keys are dropped (one debug line per
 * call names how many and the first). A wrong type, a failed validator or
 * more than SIDEBUS_MAX_OPTIONS keys is an error (InvalidArgument).
 * "handle_token" and "session_handle_token" are never copied: the core owns
 * those. */
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
 * own handle_token into the last a{sv} of @parameters, makes the host call
 * and returns the guest request path to the guest. When the host responds,
 * @on_results runs (or the results are passed on unchanged if it is NULL); it
 * must eventually call sidebus_request_respond(), possibly later, after
 * asynchronous work. Request.Close from the guest (only by the caller that
 * made the request) closes the host request; a guest caller that leaves the
 * bus, a link that goes away and a host portal that exits retire it too (the
 * last one answers the guest with response 2). At most
 * broker.max_pending_requests requests per VM are pending at once. */
typedef struct _SidebusRequest SidebusRequest;
typedef struct _SidebusSession SidebusSession;

typedef void (*SidebusResultsFunc) (SidebusRequest *request, guint32 response, GVariant *host_results, gpointer user_data);

SidebusRequest *sidebus_request_new (SidebusContext *context, GDBusMethodInvocation *invocation, GVariant *options,
                                     GError **error);
/* For methods that create a session (ScreenCast.CreateSession,
 * Inhibit.CreateMonitor, …): also checks @options' session_handle_token and
 * exports the guest's org.freedesktop.portal.Session at
 * /org/freedesktop/portal/desktop/session/<sender>/<token>. call_host puts
 * the core's own session_handle_token into the host call. When the request
 * is answered with success, the session starts (its "session_handle" in the
 * guest's results is the guest session path); any other answer, or a request
 * retired before it, ends it. @session: borrowed, valid until it ends (take a
 * reference to keep it longer). */
SidebusRequest *sidebus_request_new_with_session (SidebusContext *context, GDBusMethodInvocation *invocation,
                                                  GVariant *options, SidebusSession **session, GError **error);
/* The core holds a pending request; take a reference to keep it across
 * asynchronous work (e.g. in on_results). A request that was closed or whose
 * link went away meanwhile ignores sidebus_request_respond(). */
SidebusRequest *sidebus_request_ref (SidebusRequest *request);
void sidebus_request_unref (SidebusRequest *request);
const char *sidebus_request_get_guest_path (SidebusRequest *request);
/* The guest's unique bus name that made the call. */
const char *sidebus_request_get_sender (SidebusRequest *request);
/* NULL once the request is retired. */
SidebusContext *sidebus_request_get_context (SidebusRequest *request);
/* The session a sidebus_request_new_with_session() request creates, or NULL. */
SidebusSession *sidebus_request_get_session (SidebusRequest *request);
void sidebus_request_call_host (SidebusRequest *request, const char *interface_name, const char *method_name,
                                GVariant *parameters, SidebusResultsFunc on_results, gpointer user_data);
/* The same, for host methods with 'h' arguments (OpenURI.OpenFile): @fd_list
 * (may be NULL) travels with the host call and the handles in @parameters
 * index it; the fds go to the host bus only. @destroy_notify (may be NULL)
 * releases @user_data when the request is freed, after @on_results ran for
 * the last time or never will. */
void sidebus_request_call_host_full (SidebusRequest *request, const char *interface_name, const char *method_name,
                                     GVariant *parameters, GUnixFDList *fd_list, SidebusResultsFunc on_results,
                                     gpointer user_data, GDestroyNotify destroy_notify);
/* Emits Response on the guest request object and retires the request.
 * @results: a{sv}, may be NULL (empty); floating is fine. */
void sidebus_request_respond (SidebusRequest *request, guint32 response, GVariant *results);

/* Portal response codes. */
#define SIDEBUS_RESPONSE_SUCCESS 0
#define SIDEBUS_RESPONSE_CANCELLED 1
#define SIDEBUS_RESPONSE_OTHER 2

/* ---- Sessions ---------------------------------------------------------------
 * A guest session (org.freedesktop.portal.Session: Close, Closed, version)
 * stands for one host session. It belongs to the guest client that created
 * it: only that client may name it in later calls, and its leaving the bus
 * ends the session. It ends once, whoever ends it — the guest's Close, the
 * host's Closed, the caller leaving, the link going away, the host portal
 * exiting, or sidebus_session_close() — and then the guest gets Closed (but
 * not after its own Close), the host session is closed (unless the host
 * closed it), the closed func runs and the session data is destroyed. At most
 * broker.max_sessions sessions per VM. */
typedef void (*SidebusSessionClosedFunc) (SidebusSession *session, gpointer user_data);

/* The session @session_handle (a guest session path) if it is active on this
 * link and belongs to the caller of @invocation; otherwise NULL with
 * SIDEBUS_ERROR_NOT_FOUND (no such session) or SIDEBUS_ERROR_NOT_ALLOWED
 * (another client's). Borrowed. */
SidebusSession *sidebus_context_lookup_session (SidebusContext *context, GDBusMethodInvocation *invocation,
                                                const char *session_handle, GError **error);
SidebusSession *sidebus_session_ref (SidebusSession *session);
void sidebus_session_unref (SidebusSession *session);
const char *sidebus_session_get_guest_path (SidebusSession *session);
/* The host session path (known once the session started). */
const char *sidebus_session_get_host_path (SidebusSession *session);
const char *sidebus_session_get_sender (SidebusSession *session);
/* NULL once the session ended. */
SidebusContext *sidebus_session_get_context (SidebusSession *session);
gboolean sidebus_session_is_active (SidebusSession *session);
/* Plugin state that lives as long as the session: @destroy runs when it ends
 * (or when replaced). */
void sidebus_session_set_data (SidebusSession *session, gpointer data, GDestroyNotify destroy);
gpointer sidebus_session_get_data (SidebusSession *session);
/* Runs once when the session ends, before its data is destroyed. */
void sidebus_session_set_closed_func (SidebusSession *session, SidebusSessionClosedFunc func, gpointer user_data,
                                      GDestroyNotify destroy_notify);
/* Ends the session from the plugin's side; @details (a{sv}, may be NULL) go
 * with the guest's Closed. */
void sidebus_session_close (SidebusSession *session, GVariant *details);

/* ---- Forwarding plain calls and signals -------------------------------------
 * A method that answers directly (no Request), e.g. ScreenCast.OpenPipeWireRemote
 * or Settings.Read, is forwarded with sidebus_context_forward_call(): the host
 * call is made on the host portal object, and its reply — with its fds — or
 * its error, under the host's error name, answers @invocation. @on_reply may
 * rewrite the reply first. Fds in the reply reach the guest only where the
 * link carries them; elsewhere the guest gets NotSupported. */
typedef GVariant *(*SidebusReplyFunc) (SidebusContext *context, GVariant *host_reply, GUnixFDList *host_fds,
                                       GUnixFDList **guest_fds, gpointer user_data, GError **error);
/* @parameters: the host call's arguments (floating is fine); @fd_list: fds
 * for the host call (may be NULL). @on_reply (may be NULL: the reply and its
 * fds as they are) returns the guest's reply tuple (floating is fine) and
 * sets *guest_fds to the fds it references (or leaves it NULL), or returns
 * NULL with @error set to fail the guest's call. @destroy_notify releases
 * @user_data after the reply, or when the link goes away first. */
void sidebus_context_forward_call (SidebusContext *context, GDBusMethodInvocation *invocation,
                                   const char *interface_name, const char *method_name, GVariant *parameters,
                                   GUnixFDList *fd_list, SidebusReplyFunc on_reply, gpointer user_data,
                                   GDestroyNotify destroy_notify);

typedef void (*SidebusHostSignalFunc) (SidebusContext *context, const char *object_path, const char *signal_name,
                                       GVariant *parameters, gpointer user_data);
/* Subscribes to @signal_name (NULL: every signal) of @interface_name emitted
 * by the host portal at @object_path (NULL: any object). Runs on the main
 * context until unsubscribed or stop(); returns a subscription id. */
guint sidebus_context_subscribe_host_signal (SidebusContext *context, const char *interface_name,
                                             const char *signal_name, const char *object_path,
                                             SidebusHostSignalFunc func, gpointer user_data,
                                             GDestroyNotify destroy_notify);
void sidebus_context_unsubscribe_host_signal (SidebusContext *context, guint subscription_id);
/* Emits a signal on the guest bus: to one guest client's unique name
 * (@destination) or to every client (NULL), from @object_path (NULL: the
 * portal object). @parameters: floating is fine. */
void sidebus_context_emit_guest_signal (SidebusContext *context, const char *destination, const char *object_path,
                                        const char *interface_name, const char *signal_name, GVariant *parameters);

/* Runs once when guest client @sender (a unique name) leaves the guest bus,
 * unless unwatched or the link goes away first. One bus watch per client is
 * shared by every request, session and plugin watching it. */
typedef void (*SidebusClientVanishedFunc) (SidebusContext *context, const char *sender, gpointer user_data);
guint sidebus_context_watch_guest_client (SidebusContext *context, const char *sender, SidebusClientVanishedFunc func,
                                          gpointer user_data, GDestroyNotify destroy_notify);
void sidebus_context_unwatch_guest_client (SidebusContext *context, guint watch_id);

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

/* @guest_uris (NULL-terminated, in the order asked; borrowed) or @error. */
typedef void (*SidebusExportFunc) (SidebusContext *context, char **guest_uris, const GError *error, gpointer user_data);
/* Exports each host URI (file:// only; NULL-terminated) without blocking the
 * broker: batched calls to the document portal. Fails as a whole on the
 * first bad URI. @done runs on the main context, unless the link goes away
 * first; @destroy_notify releases @user_data in either case. */
void sidebus_context_export_uris_async (SidebusContext *context, const char *const *host_uris,
                                        SidebusExportFlags flags, SidebusExportFunc done, gpointer user_data,
                                        GDestroyNotify destroy_notify);
/* Maps a guest path inside the guest documents directory back to the host
 * file it stands for; anything else is an error (NotAllowed). Answered from
 * the broker's own index of this VM's documents: no round trip. */
char *sidebus_context_guest_path_to_host_path (SidebusContext *context, const char *guest_path, GError **error);
/* The directory where exported documents appear inside the guest. */
const char *sidebus_context_get_guest_documents_path (SidebusContext *context);

/* ---- File descriptors -------------------------------------------------------
 * How fds cross this link. NATIVE: unix-socket links pass them as they are.
 * NONE: byte-only links (vsock, virtio-serial) without fd forwarding; the
 * guest bus never hands fds to the broker and the broker must not send any.
 * FORWARDED: byte-only link with fd forwarding (fd content carried as
 * channels of the link). */
typedef enum {
  SIDEBUS_FD_TRANSPORT_NONE,
  SIDEBUS_FD_TRANSPORT_NATIVE,
  SIDEBUS_FD_TRANSPORT_FORWARDED,
} SidebusFdTransport;
SidebusFdTransport sidebus_context_get_fd_transport (SidebusContext *context);
/* TRUE if fds can cross; otherwise sets a NOT_SUPPORTED error that names the link. */
gboolean sidebus_context_require_fds (SidebusContext *context, GError **error);
/* On a FORWARDED link a guest fd of one of its documents arrives as the host
 * file itself (the link mapped the document; other regular files arrive as a
 * sealed copy of their content). For such an fd: TRUE, with the document's
 * guest path (@guest_path, free it) and whether the VM may write it
 * (@writable; an O_PATH fd says nothing about that). FALSE for any other fd,
 * and on other links. Either out argument may be NULL. */
gboolean sidebus_context_get_forwarded_document (SidebusContext *context, int fd, char **guest_path,
                                                 gboolean *writable);

/* ---- Configuration schema ----------------------------------------------------
 * A plugin declares the keys of its configuration section; the broker checks
 * every drop-in against it at start-up, so an unknown key (a typo), a wrong
 * type or a value the validator refuses stops the broker with the file, line,
 * column and key. "enabled" is the core's and always allowed. */
typedef enum {
  SIDEBUS_CONFIG_BOOLEAN,
  SIDEBUS_CONFIG_INTEGER,      /* within [min, max] */
  SIDEBUS_CONFIG_STRING,
  SIDEBUS_CONFIG_STRING_ARRAY,
} SidebusConfigType;
/* Refuses a risky or malformed value with the reason (the message says what
 * is wrong and what to do; the core adds where). @value is never JSON null. */
typedef gboolean (*SidebusConfigValidator) (const char *key, JsonNode *value, GError **error);
typedef struct {
  const char *key;
  SidebusConfigType type;
  gint64 min, max;                 /* SIDEBUS_CONFIG_INTEGER only */
  SidebusConfigValidator validate; /* optional */
  gpointer reserved[4];            /* zero */
} SidebusConfigKey;

/* ---- The plugin interface (libpeas extension point) ---------------------- */
#define SIDEBUS_TYPE_PORTAL (sidebus_portal_get_type ())
G_DECLARE_INTERFACE (SidebusPortal, sidebus_portal, SIDEBUS, PORTAL, GObject)

struct _SidebusPortalInterface {
  GTypeInterface parent_iface;

  /* Export the portal's interface(s) with sidebus_context_export(). */
  gboolean (*start) (SidebusPortal *portal, SidebusContext *context, GError **error);
  /* The link is going away; the core has already retired its requests and
   * sessions. */
  void (*stop) (SidebusPortal *portal);
  /* The keys of the plugin's configuration section (API 2). Called on an
   * instance that is never started, at broker start-up. NULL: the section is
   * not checked. */
  const SidebusConfigKey *(*get_config_schema) (SidebusPortal *portal, gsize *n_keys);

  gpointer padding[7];
};

G_END_DECLS
