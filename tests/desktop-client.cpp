// desktop-client.cpp — a guest application for the desktop portal tests
// (tests/desktop-portals.hpp, GuestApp): it uses the portals the way real
// applications do — libportal 0.6 for notifications, inhibition and the
// session monitor, GIO's own portal implementations (GNetworkMonitorPortal,
// GProxyResolverPortal, chosen with GTK_USE_PORTAL=1) for the network — and
// prints one line per event on stdout. It reads commands, one per line, from
// fd 3 and exits when fd 3 closes.
//
//   desktop-client notify ID [--title T] [--body B] [--button LABEL=ACTION]… [--default-action A] [--icon NAME]
//       added | add-failed MESSAGE
//       invoked ID ACTION PARAMETER          (each ActionInvoked it gets; PARAMETER as GVariant text)
//     commands: add ID TITLE → added ID | add-failed ID MESSAGE
//               remove ID → removed ID
//   desktop-client inhibit FLAGS REASON
//       inhibited | inhibit-failed MESSAGE
//     commands: uninhibit → uninhibited
//   desktop-client monitor
//       monitoring | monitor-failed MESSAGE
//       state SCREENSAVER-ACTIVE SESSION-STATE   (each session-state-changed; 0/1, 1..3)
//     commands: query-end-response → responded; stop → stopped
//   desktop-client network [--reach HOST:PORT] [--lookup URI] [--connect HOST:PORT]
//       monitor TYPE                         (the GNetworkMonitor GIO chose)
//       status AVAILABLE METERED CONNECTIVITY  (once the portal answered; 0/1, 1..4)
//       changed AVAILABLE METERED CONNECTIVITY (each later network-changed)
//       reach HOST yes | reach HOST no MESSAGE
//       resolver TYPE                        (the GProxyResolver GIO chose)
//       proxies P1 P2 …  | lookup-failed MESSAGE
//       connected | connect-failed MESSAGE   (a GSocketClient to HOST:PORT, proxies and all)
#include <gio/gio.h>
#include <gio/gunixinputstream.h>
#include <libportal/portal.h>

#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

GMainLoop* loop = nullptr;
XdpPortal* portal = nullptr;

G_GNUC_PRINTF(1, 2) void say(const char* format, ...) {
  va_list args;
  va_start(args, format);
  vprintf(format, args);
  va_end(args);
  putchar('\n');
  fflush(stdout);
}

[[noreturn]] void usage(const char* message) {
  fprintf(stderr, "desktop-client: %s\n", message);
  exit(2);
}

// ---- commands on fd 3 --------------------------------------------------------------

using CommandFunc = void (*)(const std::vector<std::string>& words);
CommandFunc on_command = nullptr;

void read_next_command(GDataInputStream* input);

void on_command_line(GObject* source, GAsyncResult* result, gpointer) {
  auto* input = G_DATA_INPUT_STREAM(source);
  g_autoptr(GError) error = nullptr;
  g_autofree char* line = g_data_input_stream_read_line_finish_utf8(input, result, nullptr, &error);
  if (line == nullptr) {  // fd 3 closed: the test is done with us
    g_main_loop_quit(loop);
    return;
  }
  std::vector<std::string> words;
  g_auto(GStrv) split = g_strsplit(line, " ", 3);
  for (char** word = split; *word != nullptr; word++) words.emplace_back(*word);
  if (!words.empty() && on_command != nullptr) on_command(words);
  read_next_command(input);
}

void read_next_command(GDataInputStream* input) {
  g_data_input_stream_read_line_async(input, G_PRIORITY_DEFAULT, nullptr, on_command_line, nullptr);
}

void listen_for_commands() {
  GInputStream* fd3 = g_unix_input_stream_new(3, TRUE);
  GDataInputStream* input = g_data_input_stream_new(fd3);
  g_object_unref(fd3);
  read_next_command(input);  // lives as long as the process
}

// ---- notify ----------------------------------------------------------------------

void on_added(GObject* source, GAsyncResult* result, gpointer data) {
  g_autofree char* id = static_cast<char*>(data);
  g_autoptr(GError) error = nullptr;
  if (xdp_portal_add_notification_finish(XDP_PORTAL(source), result, &error))
    say("added %s", id);
  else
    say("add-failed %s %s", id, error->message);
}

void on_action_invoked(XdpPortal*, const char* id, const char* action, GVariant* parameter, gpointer) {
  g_autofree char* shown = parameter != nullptr ? g_variant_print(parameter, FALSE) : g_strdup("none");
  say("invoked %s %s %s", id, action, shown);
}

void add_notification(const char* id, GVariant* notification) {
  xdp_portal_add_notification(portal, id, notification, XDP_NOTIFICATION_FLAG_NONE, nullptr, on_added, g_strdup(id));
}

void notify_command(const std::vector<std::string>& words) {
  if (words[0] == "add" && words.size() == 3) {
    add_notification(words[1].c_str(), g_variant_new_parsed("{'title': <%s>}", words[2].c_str()));
  } else if (words[0] == "remove" && words.size() == 2) {
    xdp_portal_remove_notification(portal, words[1].c_str());
    say("removed %s", words[1].c_str());
  }
}

void run_notify(int argc, char** argv) {
  if (argc < 1) usage("notify ID …");
  const char* id = argv[0];
  g_auto(GVariantBuilder) notification = G_VARIANT_BUILDER_INIT(G_VARIANT_TYPE_VARDICT);
  g_auto(GVariantBuilder) buttons = G_VARIANT_BUILDER_INIT(G_VARIANT_TYPE("aa{sv}"));
  bool has_buttons = false;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string option = argv[i];
    const char* value = argv[i + 1];
    if (option == "--title" || option == "--body" || option == "--default-action") {
      g_variant_builder_add(&notification, "{sv}", option.c_str() + 2, g_variant_new_string(value));
    } else if (option == "--icon") {
      g_autoptr(GIcon) icon = g_themed_icon_new(value);
      g_variant_builder_add(&notification, "{sv}", "icon", g_icon_serialize(icon));
    } else if (option == "--button") {
      const char* equals = strchr(value, '=');
      if (equals == nullptr) usage("--button LABEL=ACTION");
      g_autofree char* label = g_strndup(value, equals - value);
      g_variant_builder_add_parsed(&buttons, "{'label': <%s>, 'action': <%s>}", label, equals + 1);
      has_buttons = true;
    } else {
      usage("unknown notify option");
    }
  }
  if (has_buttons) g_variant_builder_add(&notification, "{sv}", "buttons", g_variant_builder_end(&buttons));
  g_signal_connect(portal, "notification-action-invoked", G_CALLBACK(on_action_invoked), nullptr);
  on_command = notify_command;
  add_notification(id, g_variant_builder_end(&notification));
}

// ---- inhibit ---------------------------------------------------------------------

int inhibit_id = -1;

void on_inhibited(GObject* source, GAsyncResult* result, gpointer) {
  g_autoptr(GError) error = nullptr;
  inhibit_id = xdp_portal_session_inhibit_finish(XDP_PORTAL(source), result, &error);
  if (inhibit_id > 0)
    say("inhibited");
  else
    say("inhibit-failed %s", error->message);
}

void inhibit_command(const std::vector<std::string>& words) {
  if (words[0] == "uninhibit" && inhibit_id > 0) {
    xdp_portal_session_uninhibit(portal, inhibit_id);
    inhibit_id = -1;
    say("uninhibited");
  }
}

void run_inhibit(int argc, char** argv) {
  if (argc != 2) usage("inhibit FLAGS REASON");
  on_command = inhibit_command;
  xdp_portal_session_inhibit(portal, nullptr, argv[1], static_cast<XdpInhibitFlags>(atoi(argv[0])), nullptr,
                             on_inhibited, nullptr);
}

// ---- monitor ---------------------------------------------------------------------

void on_monitoring(GObject* source, GAsyncResult* result, gpointer) {
  g_autoptr(GError) error = nullptr;
  if (xdp_portal_session_monitor_start_finish(XDP_PORTAL(source), result, &error))
    say("monitoring");
  else
    say("monitor-failed %s", error->message);
}

void on_session_state(XdpPortal*, gboolean screensaver_active, XdpLoginSessionState state, gpointer) {
  say("state %d %d", screensaver_active ? 1 : 0, static_cast<int>(state));
}

void monitor_command(const std::vector<std::string>& words) {
  if (words[0] == "query-end-response") {
    xdp_portal_session_monitor_query_end_response(portal);
    say("responded");
  } else if (words[0] == "stop") {
    xdp_portal_session_monitor_stop(portal);
    say("stopped");
  }
}

void run_monitor() {
  on_command = monitor_command;
  g_signal_connect(portal, "session-state-changed", G_CALLBACK(on_session_state), nullptr);
  xdp_portal_session_monitor_start(portal, nullptr, XDP_SESSION_MONITOR_FLAG_NONE, nullptr, on_monitoring, nullptr);
}

// ---- network ---------------------------------------------------------------------

struct NetworkSteps {
  std::string reach;
  std::string lookup;
  std::string connect;
  bool status_printed = false;
  guint timeout = 0;
};
NetworkSteps network;

void print_state(const char* what) {
  GNetworkMonitor* monitor = g_network_monitor_get_default();
  say("%s %d %d %d", what, g_network_monitor_get_network_available(monitor) ? 1 : 0,
      g_network_monitor_get_network_metered(monitor) ? 1 : 0,
      static_cast<int>(g_network_monitor_get_connectivity(monitor)));
}

// host:port → (host, port); exits on a malformed argument.
std::pair<std::string, guint16> host_and_port(const std::string& text) {
  size_t colon = text.rfind(':');
  if (colon == std::string::npos) usage("HOST:PORT expected");
  return {text.substr(0, colon), static_cast<guint16>(atoi(text.c_str() + colon + 1))};
}

void next_network_step();

void on_reached(GObject* source, GAsyncResult* result, gpointer) {
  g_autoptr(GError) error = nullptr;
  if (g_network_monitor_can_reach_finish(G_NETWORK_MONITOR(source), result, &error))
    say("reach %s yes", network.reach.c_str());
  else
    say("reach %s no %s", network.reach.c_str(), error->message);
  network.reach.clear();
  next_network_step();
}

void on_looked_up(GObject* source, GAsyncResult* result, gpointer) {
  g_autoptr(GError) error = nullptr;
  g_auto(GStrv) proxies = g_proxy_resolver_lookup_finish(G_PROXY_RESOLVER(source), result, &error);
  if (proxies == nullptr) {
    say("lookup-failed %s", error->message);
  } else {
    g_autofree char* joined = g_strjoinv(" ", proxies);
    say("proxies %s", joined);
  }
  network.lookup.clear();
  next_network_step();
}

void on_connected(GObject* source, GAsyncResult* result, gpointer) {
  g_autoptr(GError) error = nullptr;
  g_autoptr(GSocketConnection) connection =
      g_socket_client_connect_to_host_finish(G_SOCKET_CLIENT(source), result, &error);
  if (connection != nullptr)
    say("connected");
  else
    say("connect-failed %s", error->message);
  network.connect.clear();
  next_network_step();
}

// One step after the other, so the report's order is fixed.
void next_network_step() {
  if (!network.reach.empty()) {
    auto [host, port] = host_and_port(network.reach);
    g_autoptr(GSocketConnectable) address = g_network_address_new(host.c_str(), port);
    g_network_monitor_can_reach_async(g_network_monitor_get_default(), address, nullptr, on_reached, nullptr);
  } else if (!network.lookup.empty()) {
    GProxyResolver* resolver = g_proxy_resolver_get_default();
    say("resolver %s", G_OBJECT_TYPE_NAME(resolver));
    g_proxy_resolver_lookup_async(resolver, network.lookup.c_str(), nullptr, on_looked_up, nullptr);
  } else if (!network.connect.empty()) {
    say("resolver %s", G_OBJECT_TYPE_NAME(g_proxy_resolver_get_default()));
    auto [host, port] = host_and_port(network.connect);
    GSocketClient* client = g_socket_client_new();  // proxies on by default, as in applications
    g_socket_client_connect_to_host_async(client, host.c_str(), port, nullptr, on_connected, nullptr);
    g_object_unref(client);  // the operation holds it
  }
}

void on_network_changed(GNetworkMonitor*, gboolean, gpointer) {
  if (network.status_printed) {
    print_state("changed");
    return;
  }
  // GNetworkMonitorPortal starts "unavailable, local" and asks the portal
  // (GetStatus); its first network-changed carries the portal's answer.
  network.status_printed = true;
  if (network.timeout != 0) g_source_remove(network.timeout);
  network.timeout = 0;
  print_state("status");
  next_network_step();
}

void run_network(int argc, char** argv) {
  for (int i = 0; i + 1 < argc; i += 2) {
    std::string option = argv[i];
    if (option == "--reach")
      network.reach = argv[i + 1];
    else if (option == "--lookup")
      network.lookup = argv[i + 1];
    else if (option == "--connect")
      network.connect = argv[i + 1];
    else
      usage("unknown network option");
  }
  GNetworkMonitor* monitor = g_network_monitor_get_default();
  say("monitor %s", G_OBJECT_TYPE_NAME(monitor));
  g_signal_connect(monitor, "network-changed", G_CALLBACK(on_network_changed), nullptr);
  // A monitor that never hears from the portal: say what it believes.
  network.timeout = g_timeout_add_seconds(
      5,
      [](gpointer) -> gboolean {
        network.timeout = 0;
        if (!network.status_printed) on_network_changed(nullptr, FALSE, nullptr);
        return G_SOURCE_REMOVE;
      },
      nullptr);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) usage("notify | inhibit | monitor | network …");
  std::string command = argv[1];
  loop = g_main_loop_new(nullptr, FALSE);
  if (command != "network") portal = xdp_portal_new();
  listen_for_commands();
  if (command == "notify")
    run_notify(argc - 2, argv + 2);
  else if (command == "inhibit")
    run_inhibit(argc - 2, argv + 2);
  else if (command == "monitor")
    run_monitor();
  else if (command == "network")
    run_network(argc - 2, argv + 2);
  else
    usage("unknown command");
  g_main_loop_run(loop);
  g_clear_object(&portal);
  g_main_loop_unref(loop);
  return 0;
}
