// SPDX-License-Identifier: LGPL-2.1-or-later
// agent-main.cpp — sidebus-agent, the guest side: connects out to the broker
// and splices that link into the guest session bus (AgentSession), keeping it
// up with exponential backoff.
//
// Lifecycle:
// * Configuration: --connect, else $CREDENTIALS_DIRECTORY/sidebus.connect (a
//   full address), else $CREDENTIALS_DIRECTORY/sidebus.port (vsock:2:PORT).
// * One agent per guest bus: it claims dev.sidebus.Agent (DO_NOT_QUEUE) on its
//   own small connection; a second instance (say, D-Bus activation while the
//   first is reconnecting) exits 0 at once.
// * That connection's "closed" signal means the guest bus went away: exit 0.
// * Link lost or broker absent/refusing: retry after 100 ms, doubling up to
//   10 s; a link that lived more than 5 s resets the delay.
// * Link protocol: 2 (fds forwarded over byte-only links), or what
//   --link-protocol says. A broker that refuses the version (a sidebus 0.1
//   broker speaks 1 only) is asked again at once with protocol 1, and for as
//   long as this agent runs: the link then works as with that broker's own
//   agent (no fds over byte-only links).
// * SIGTERM/SIGINT: clean exit (0).
#include <gio/gio.h>
#include <glib-unix.h>

#include <algorithm>
#include <clocale>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>

#include "util/gobject-ptr.hpp"
#include "agent/agent-session.hpp"
#include "link/address.hpp"
#include "link/connect.hpp"
#include "util/log.hpp"
#include "sidebus-config.h"

namespace {

constexpr guint kFirstDelayMs = 100;
constexpr guint kMaxDelayMs = 10 * 1000;
constexpr gint64 kStableLinkUsec = 5 * G_USEC_PER_SEC;
constexpr const char* kAgentBusName = "dev.sidebus.Agent";


struct Agent {
  std::string connect_address;
  std::string bus_address;
  std::unique_ptr<GMainLoop, decltype(&g_main_loop_unref)> loop{g_main_loop_new(nullptr, FALSE), g_main_loop_unref};
  sidebus::GObjectPtr<GDBusConnection> bus;  // our own, for the name and "closed"
  std::unique_ptr<sidebus::AgentSession> session;
  guint retry_source = 0;
  guint delay_ms = kFirstDelayMs;
  gint64 connected_at = 0;
  std::string last_failure;  // to log a repeated failure only once
  int exit_code = 0;
  guint32 protocol = 2;  // the link protocol offered

  void quit(int code) {
    exit_code = code;
    g_main_loop_quit(loop.get());
  }

  void schedule_retry() {
    guint delay = delay_ms;
    delay_ms = std::min(delay_ms * 2, kMaxDelayMs);
    retry_source = g_timeout_add(
        delay,
        [](gpointer data) -> gboolean {
          auto* agent = static_cast<Agent*>(data);
          agent->retry_source = 0;
          agent->try_connect();
          return G_SOURCE_REMOVE;
        },
        this);
  }

  void report_failure(const char* message) {
    if (last_failure != message) {
      g_message("%s; retrying with backoff (up to %u s)", message, kMaxDelayMs / 1000);
      last_failure = message;
    } else {
      g_debug("%s; retrying in %u ms", message, delay_ms);
    }
  }

  void try_connect() {
    GError* error = nullptr;
    bool carries_fds = false;
    sidebus::UniqueFd link = sidebus::connect_link(connect_address, &carries_fds, &error);
    if (link)
      session = sidebus::AgentSession::start(
          std::move(link), carries_fds, connect_address, bus_address,
          [this](bool guest_bus_gone, GError* error) { on_session_closed(guest_bus_gone, error); }, &error,
          protocol);
    if (!session) {
      if (protocol > 1 && g_error_matches(error, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED)) {
        g_message("%s; the broker speaks an older link protocol: linking with protocol 1 (no file descriptors over "
                  "byte-only links; update sidebus on the host)",
                  error->message);
        g_error_free(error);
        protocol = 1;
        delay_ms = kFirstDelayMs;
        schedule_retry();
        return;
      }
      report_failure(error->message);
      g_error_free(error);
      schedule_retry();
      return;
    }
    connected_at = g_get_monotonic_time();
    last_failure.clear();
    g_message("linked the guest bus to the broker at %s (link protocol %u%s)", connect_address.c_str(),
              session->protocol_version(), session->framed() ? ", file descriptors forwarded" : "");
  }

  void on_session_closed(bool guest_bus_gone, GError* error) {
    session.reset();
    if (g_get_monotonic_time() - connected_at > kStableLinkUsec) delay_ms = kFirstDelayMs;
    g_message("the link to the broker closed (%s)%s", error ? error->message : "end of stream",
              guest_bus_gone ? " from the guest bus side" : "");
    schedule_retry();  // if the bus is really gone, our own connection's "closed" ends us
  }
};

// $CREDENTIALS_DIRECTORY/name, trimmed; empty if absent.
std::string read_credential(const char* name) {
  const char* directory = g_getenv("CREDENTIALS_DIRECTORY");
  if (!directory || !*directory) return {};
  g_autofree char* path = g_build_filename(directory, name, nullptr);
  g_autofree char* contents = nullptr;
  gsize length = 0;
  if (!g_file_get_contents(path, &contents, &length, nullptr)) return {};
  if (length > 4096 || strlen(contents) != length) {
    g_warning("ignoring credential %s: not a short text file", path);
    return {};
  }
  return g_strstrip(contents);
}

bool claim_agent_name(GDBusConnection* bus, bool* owned, GError** error) {
  std::unique_ptr<GVariant, decltype(&g_variant_unref)> reply(
      g_dbus_connection_call_sync(bus, "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus",
                                  "RequestName", g_variant_new("(su)", kAgentBusName, 4u /* DO_NOT_QUEUE */),
                                  G_VARIANT_TYPE("(u)"), G_DBUS_CALL_FLAGS_NONE, -1, nullptr, error),
      g_variant_unref);
  if (!reply) return false;
  guint32 result = 0;
  g_variant_get(reply.get(), "(u)", &result);
  *owned = result == 1 /* PRIMARY_OWNER */ || result == 4 /* ALREADY_OWNER */;
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  setlocale(LC_ALL, "");  // messages quote with “ ” and name paths in the user's encoding
  g_autofree char* connect = nullptr;
  g_autofree char* bus = nullptr;
  gboolean verbose = FALSE, version = FALSE;
  gint link_protocol = 2;
  GOptionEntry entries[] = {
      {"connect", 0, 0, G_OPTION_ARG_STRING, &connect,
       "Where the broker is: vsock:[CID:]PORT, unix:PATH[,nofds], virtio-serial:/dev/virtio-ports/NAME", "ADDR"},
      {"bus", 0, 0, G_OPTION_ARG_STRING, &bus, "Guest session bus address (default: $DBUS_SESSION_BUS_ADDRESS)",
       "ADDR"},
      {"link-protocol", 0, 0, G_OPTION_ARG_INT, &link_protocol,
       "Link protocol to offer: 2 (default; forwards fds over byte-only links) or 1", "N"},
      {"verbose", 'v', 0, G_OPTION_ARG_NONE, &verbose, "Log debug messages", nullptr},
      {"version", 0, 0, G_OPTION_ARG_NONE, &version, "Print the version and exit", nullptr},
      {},
  };
  std::unique_ptr<GOptionContext, decltype(&g_option_context_free)> options(
      g_option_context_new("- link this VM's session bus to the sidebus broker on the host"), g_option_context_free);
  g_option_context_add_main_entries(options.get(), entries, nullptr);
  g_option_context_set_description(
      options.get(),
      "Without --connect, the address comes from the systemd credential sidebus.connect (a full address)\n"
      "or sidebus.port (a vsock port on the host), read from $CREDENTIALS_DIRECTORY.\n");
  GError* error = nullptr;
  if (!g_option_context_parse(options.get(), &argc, &argv, &error)) {
    fprintf(stderr, "sidebus-agent: %s (see --help)\n", error->message);
    g_error_free(error);
    return 2;
  }
  if (version) {
    g_print("sidebus-agent %s\n", SIDEBUS_VERSION);
    return 0;
  }
  sidebus::log::setup("sidebus-agent", "", verbose);
  signal(SIGPIPE, SIG_IGN);

  if (link_protocol < 1 || link_protocol > 2) {
    fprintf(stderr, "sidebus-agent: --link-protocol must be 1 or 2\n");
    return 2;
  }
  Agent agent;
  agent.protocol = guint32(link_protocol);
  if (connect) {
    agent.connect_address = connect;
  } else if (std::string address = read_credential("sidebus.connect"); !address.empty()) {
    agent.connect_address = address;
  } else if (std::string port = read_credential("sidebus.port"); !port.empty()) {
    agent.connect_address = "vsock:2:" + port;
  } else {
    fprintf(stderr,
            "sidebus-agent: no broker address: pass --connect ADDR or provide the systemd credential "
            "sidebus.connect or sidebus.port\n");
    return 2;
  }
  sidebus::LinkAddress parsed;
  if (!sidebus::parse_connect_address(agent.connect_address, &parsed, &error)) {
    g_printerr("sidebus-agent: %s: %s\n", connect ? "--connect" : "the credential", error->message);
    g_error_free(error);
    return 2;
  }
  agent.bus_address = bus ? bus : (g_getenv("DBUS_SESSION_BUS_ADDRESS") ?: "");
  if (agent.bus_address.empty()) {
    fprintf(stderr, "sidebus-agent: no guest bus: pass --bus ADDR or set DBUS_SESSION_BUS_ADDRESS\n");
    return 2;
  }
  if (!g_dbus_is_supported_address(agent.bus_address.c_str(), &error)) {
    g_printerr("sidebus-agent: %s %s: %s; give the guest session bus, e.g. unix:path=/run/user/1000/bus\n",
               bus ? "--bus" : "DBUS_SESSION_BUS_ADDRESS", agent.bus_address.c_str(), error->message);
    g_error_free(error);
    return 2;
  }

  agent.bus.reset(
      g_dbus_connection_new_for_address_sync(agent.bus_address.c_str(),
                                             GDBusConnectionFlags(G_DBUS_CONNECTION_FLAGS_AUTHENTICATION_CLIENT |
                                                                  G_DBUS_CONNECTION_FLAGS_MESSAGE_BUS_CONNECTION),
                                             nullptr, nullptr, &error));
  if (!agent.bus) {
    g_warning("cannot connect to the guest bus at %s: %s", agent.bus_address.c_str(), error->message);
    g_error_free(error);
    return 1;
  }
  g_dbus_connection_set_exit_on_close(agent.bus.get(), FALSE);
  bool owned = false;
  if (!claim_agent_name(agent.bus.get(), &owned, &error)) {
    g_warning("cannot claim %s on the guest bus: %s", kAgentBusName, error->message);
    g_error_free(error);
    return 1;
  }
  if (!owned) {
    g_message("another sidebus-agent already serves this guest bus (it owns %s); exiting", kAgentBusName);
    return 0;
  }
  g_signal_connect(agent.bus.get(), "closed", G_CALLBACK(+[](GDBusConnection*, gboolean, GError*, gpointer data) {
                     g_message("the guest bus went away; exiting");
                     static_cast<Agent*>(data)->quit(0);
                   }),
                   &agent);
  auto on_signal = [](gpointer data) -> gboolean {
    g_debug("terminating on signal");
    static_cast<Agent*>(data)->quit(0);
    return G_SOURCE_CONTINUE;
  };
  guint sigterm = g_unix_signal_add(SIGTERM, on_signal, &agent);
  guint sigint = g_unix_signal_add(SIGINT, on_signal, &agent);

  agent.try_connect();
  g_main_loop_run(agent.loop.get());

  g_source_remove(sigterm);
  g_source_remove(sigint);
  if (agent.retry_source) g_source_remove(agent.retry_source);
  agent.session.reset();
  g_signal_handlers_disconnect_by_data(agent.bus.get(), &agent);
  return agent.exit_code;
}
