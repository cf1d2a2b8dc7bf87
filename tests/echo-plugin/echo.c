/* echo.c — a portal plugin written the way a third party would: plain C,
 * built only against the installed sidebus-plugin.h (see
 * tests/test-out-of-tree-plugin.cpp, which compiles this file against an
 * installed prefix). The tests also load it from the build tree.
 *
 * It exports dev.sidebus.test.Echo on the portal object:
 *   Echo(s) → s                 the string, unchanged
 *   ReadFd(h) → s               the first bytes read from the fd the guest sent
 *   OpenPipe(s) → h             a pipe the plugin wrote the string into (an fd
 *                               in a reply, host → guest)
 *   GetConfig() → s             this plugin's configuration section as JSON
 *   CreateMonitor(a{sv}) → o    a session-based portal call: the host's
 *                               Inhibit.CreateMonitor, whose Response carries
 *                               the guest's session handle
 *   SessionState(o) → s         "active" for the caller's own session; other
 *                               clients get NotAllowed
 *   HostVersion(s) → v          a plain call forwarded to the host portal
 *                               (Properties.Get of that interface's version)
 *   RequestsFreed() → u         how many of CreateMonitor's requests the core
 *                               has freed so far (their destroy notify ran)
 *   WatchSettings()             from now on, every host Settings.SettingChanged
 *                               reaches the caller as the signal
 *                               SettingSeen(s namespace, s key), until it
 *                               leaves the bus
 * and declares its configuration keys: "greeting" and "vm", strings the tests
 * set to tell configurations apart (GetConfig shows them).
 */
#include <sidebus-plugin.h>
#include <libpeas/peas.h>
#include <glib-unix.h>
#include <string.h>
#include <unistd.h>

#define ECHO_INTERFACE "dev.sidebus.test.Echo"

static const char echo_xml[] =
    "<node>"
    "  <interface name='" ECHO_INTERFACE "'>"
    "    <method name='Echo'><arg type='s' direction='in'/><arg type='s' direction='out'/></method>"
    "    <method name='ReadFd'><arg type='h' direction='in'/><arg type='s' direction='out'/></method>"
    "    <method name='OpenPipe'><arg type='s' direction='in'/><arg type='h' direction='out'/></method>"
    "    <method name='GetConfig'><arg type='s' direction='out'/></method>"
    "    <method name='CreateMonitor'><arg type='a{sv}' direction='in'/><arg type='o' direction='out'/></method>"
    "    <method name='SessionState'><arg type='o' direction='in'/><arg type='s' direction='out'/></method>"
    "    <method name='HostVersion'><arg type='s' direction='in'/><arg type='v' direction='out'/></method>"
    "    <method name='RequestsFreed'><arg type='u' direction='out'/></method>"
    "    <method name='WatchSettings'/>"
    "    <signal name='SettingSeen'><arg type='s'/><arg type='s'/></signal>"
    "  </interface>"
    "</node>";

#define ECHO_TYPE_PORTAL (echo_portal_get_type ())
G_DECLARE_FINAL_TYPE (EchoPortal, echo_portal, ECHO, PORTAL, GObject)

struct _EchoPortal {
  GObject parent_instance;
  SidebusContext *context;
  guint registration_id;
};

static void echo_portal_iface_init (SidebusPortalInterface *iface);

G_DEFINE_DYNAMIC_TYPE_EXTENDED (EchoPortal, echo_portal, G_TYPE_OBJECT, 0,
                                G_IMPLEMENT_INTERFACE_DYNAMIC (SIDEBUS_TYPE_PORTAL, echo_portal_iface_init))

static void
read_fd (EchoPortal *self, GDBusMethodInvocation *invocation, GVariant *parameters)
{
  GError *error = NULL;
  gint32 handle;
  GUnixFDList *fds = g_dbus_message_get_unix_fd_list (g_dbus_method_invocation_get_message (invocation));
  char buffer[256];
  ssize_t n;
  int fd;

  if (!sidebus_context_require_fds (self->context, &error))
    {
      sidebus_context_reject (self->context, invocation, error);
      return;
    }
  g_variant_get (parameters, "(h)", &handle);
  if (fds == NULL || handle < 0 || handle >= g_unix_fd_list_get_length (fds))
    {
      sidebus_context_reject (self->context, invocation,
                              g_error_new (SIDEBUS_ERROR, SIDEBUS_ERROR_INVALID_ARGUMENT, "bad fd handle %d", handle));
      return;
    }
  fd = g_unix_fd_list_get (fds, handle, &error);
  if (fd < 0)
    {
      sidebus_context_reject (self->context, invocation, error);
      return;
    }
  n = read (fd, buffer, sizeof buffer - 1);
  close (fd);
  buffer[n > 0 ? n : 0] = '\0';
  g_dbus_method_invocation_return_value (invocation, g_variant_new ("(s)", buffer));
}

static void
open_pipe (EchoPortal *self, GDBusMethodInvocation *invocation, GVariant *parameters)
{
  GError *error = NULL;
  const char *text;
  int fds[2];
  g_autoptr(GUnixFDList) fd_list = NULL;

  if (!sidebus_context_require_fds (self->context, &error))
    {
      sidebus_context_reject (self->context, invocation, error);
      return;
    }
  g_variant_get (parameters, "(&s)", &text);
  if (!g_unix_open_pipe (fds, FD_CLOEXEC, &error))
    {
      sidebus_context_reject (self->context, invocation, error);
      return;
    }
  if (write (fds[1], text, strlen (text)) < 0)
    g_warning ("echo: writing the pipe failed");
  close (fds[1]);
  fd_list = g_unix_fd_list_new_from_array (&fds[0], 1);  /* takes fds[0] */
  g_dbus_method_invocation_return_value_with_unix_fd_list (invocation, g_variant_new ("(h)", 0), fd_list);
}

/* Across the plugin's instances: a request may be freed after its link. */
static guint requests_freed;

static void
count_freed_request (gpointer data)
{
  requests_freed++;
}

/* CreateMonitor: the core makes the guest's Request and Session, the host
 * makes its own, and the host's Response (passed on as it is: NULL results
 * func) reaches the guest with the guest's session handle in it. */
static void
create_monitor (EchoPortal *self, GDBusMethodInvocation *invocation, GVariant *parameters)
{
  GError *error = NULL;
  g_autoptr(GVariant) options = NULL;
  SidebusSession *session = NULL;
  SidebusRequest *request;

  g_variant_get (parameters, "(@a{sv})", &options);
  request = sidebus_request_new_with_session (self->context, invocation, options, &session, &error);
  if (request == NULL)
    {
      sidebus_context_reject (self->context, invocation, error);
      return;
    }
  sidebus_request_call_host_full (request, "org.freedesktop.portal.Inhibit", "CreateMonitor",
                                  g_variant_new ("(s@a{sv})", "", g_variant_new ("a{sv}", NULL)), NULL, NULL, NULL,
                                  count_freed_request);
}

static void
session_state (EchoPortal *self, GDBusMethodInvocation *invocation, GVariant *parameters)
{
  GError *error = NULL;
  const char *handle;

  g_variant_get (parameters, "(&o)", &handle);
  if (sidebus_context_lookup_session (self->context, invocation, handle, &error) == NULL)
    {
      sidebus_context_reject (self->context, invocation, error);
      return;
    }
  g_dbus_method_invocation_return_value (invocation, g_variant_new ("(s)", "active"));
}

/* HostVersion: forward_call passes the host's reply on (its "(v)" is ours). */
static void
host_version (EchoPortal *self, GDBusMethodInvocation *invocation, GVariant *parameters)
{
  const char *interface;

  g_variant_get (parameters, "(&s)", &interface);
  sidebus_context_forward_call (self->context, invocation, "org.freedesktop.DBus.Properties", "Get",
                                g_variant_new ("(ss)", interface, "version"), NULL, NULL, NULL, NULL);
}

/* WatchSettings: one host signal subscription per watching client, dropped
 * when that client leaves (its guest client watch) or at stop(). */
typedef struct {
  EchoPortal *self;
  char *client;
  guint subscription;
} SettingsWatch;

static void
settings_watch_free (gpointer data)
{
  SettingsWatch *watch = data;
  g_free (watch->client);
  g_free (watch);
}

static void
on_setting_changed (SidebusContext *context, const char *object_path, const char *signal_name, GVariant *parameters,
                    gpointer user_data)
{
  SettingsWatch *watch = user_data;
  const char *namespace_, *key;

  if (!g_variant_is_of_type (parameters, G_VARIANT_TYPE ("(ssv)")))
    return;
  g_variant_get (parameters, "(&s&sv)", &namespace_, &key, NULL);
  sidebus_context_emit_guest_signal (context, watch->client, NULL, ECHO_INTERFACE, "SettingSeen",
                                     g_variant_new ("(ss)", namespace_, key));
}

static void
on_watcher_vanished (SidebusContext *context, const char *sender, gpointer user_data)
{
  SettingsWatch *watch = user_data;
  sidebus_context_unsubscribe_host_signal (context, watch->subscription);  /* frees the watch */
}

static void
watch_settings (EchoPortal *self, GDBusMethodInvocation *invocation)
{
  SettingsWatch *watch = g_new0 (SettingsWatch, 1);

  watch->self = self;
  watch->client = g_strdup (g_dbus_method_invocation_get_sender (invocation));
  watch->subscription = sidebus_context_subscribe_host_signal (self->context, "org.freedesktop.portal.Settings",
                                                               "SettingChanged", NULL, on_setting_changed, watch,
                                                               settings_watch_free);
  sidebus_context_watch_guest_client (self->context, watch->client, on_watcher_vanished, watch, NULL);
  g_dbus_method_invocation_return_value (invocation, NULL);
}

static void
handle_method (GDBusConnection *connection, const char *sender, const char *path, const char *interface,
               const char *method, GVariant *parameters, GDBusMethodInvocation *invocation, gpointer user_data)
{
  EchoPortal *self = user_data;

  if (g_str_equal (method, "Echo"))
    {
      g_dbus_method_invocation_return_value (invocation, g_variant_ref (parameters));
    }
  else if (g_str_equal (method, "ReadFd"))
    {
      read_fd (self, invocation, parameters);
    }
  else if (g_str_equal (method, "OpenPipe"))
    {
      open_pipe (self, invocation, parameters);
    }
  else if (g_str_equal (method, "CreateMonitor"))
    {
      create_monitor (self, invocation, parameters);
    }
  else if (g_str_equal (method, "SessionState"))
    {
      session_state (self, invocation, parameters);
    }
  else if (g_str_equal (method, "HostVersion"))
    {
      host_version (self, invocation, parameters);
    }
  else if (g_str_equal (method, "RequestsFreed"))
    {
      g_dbus_method_invocation_return_value (invocation, g_variant_new ("(u)", requests_freed));
    }
  else if (g_str_equal (method, "WatchSettings"))
    {
      watch_settings (self, invocation);
    }
  else if (g_str_equal (method, "GetConfig"))
    {
      g_autoptr(JsonNode) node = json_node_new (JSON_NODE_OBJECT);
      g_autofree char *json = NULL;
      json_node_set_object (node, sidebus_context_get_config (self->context));
      json = json_to_string (node, FALSE);
      g_dbus_method_invocation_return_value (invocation, g_variant_new ("(s)", json));
    }
}

static const GDBusInterfaceVTable echo_vtable = { handle_method, NULL, NULL, { 0 } };

static gboolean
echo_portal_start (SidebusPortal *portal, SidebusContext *context, GError **error)
{
  EchoPortal *self = ECHO_PORTAL (portal);
  g_autoptr(GDBusNodeInfo) info = g_dbus_node_info_new_for_xml (echo_xml, error);

  if (info == NULL)
    return FALSE;
  self->context = context;
  self->registration_id = g_dbus_connection_register_object (sidebus_context_get_guest_connection (context),
                                                             SIDEBUS_PORTAL_OBJECT_PATH, info->interfaces[0],
                                                             &echo_vtable, self, NULL, error);
  sidebus_context_log (context, G_LOG_LEVEL_DEBUG, "echo portal started for VM %s",
                       sidebus_context_get_vm_name (context));
  return self->registration_id != 0;
}

static void
echo_portal_stop (SidebusPortal *portal)
{
  EchoPortal *self = ECHO_PORTAL (portal);

  if (self->registration_id != 0)
    g_dbus_connection_unregister_object (sidebus_context_get_guest_connection (self->context), self->registration_id);
  self->registration_id = 0;
  self->context = NULL;
}

static const SidebusConfigKey echo_config_keys[] = {
  { .key = "greeting", .type = SIDEBUS_CONFIG_STRING },
  { .key = "vm", .type = SIDEBUS_CONFIG_STRING },
};

static const SidebusConfigKey *
echo_portal_get_config_schema (SidebusPortal *portal, gsize *n_keys)
{
  *n_keys = G_N_ELEMENTS (echo_config_keys);
  return echo_config_keys;
}

static void
echo_portal_iface_init (SidebusPortalInterface *iface)
{
  iface->start = echo_portal_start;
  iface->stop = echo_portal_stop;
  iface->get_config_schema = echo_portal_get_config_schema;
}

static void echo_portal_init (EchoPortal *self) {}
static void echo_portal_class_init (EchoPortalClass *klass) {}
static void echo_portal_class_finalize (EchoPortalClass *klass) {}

G_MODULE_EXPORT void
peas_register_types (PeasObjectModule *module)
{
  echo_portal_register_type (G_TYPE_MODULE (module));
  peas_object_module_register_extension_type (module, SIDEBUS_TYPE_PORTAL, ECHO_TYPE_PORTAL);
}
