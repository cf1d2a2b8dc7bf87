// SPDX-License-Identifier: LGPL-2.1-or-later
// relay-main.cpp — sidebus-stream-relay, the guest half of the stream relay
// (docs/screencast.md, "The stream relay"): a service on the guest's
// session bus, org.sidebus.GuestRelay1 at /org/sidebus/GuestRelay1, that
// only the broker calls. It is started on demand by D-Bus activation (the
// agent stays GLib/GIO-only; this binary is built only where libpipewire
// is found), and uses the guest user's own PipeWire daemon.
//
//   CreateStream(h frames, a{sv} properties) → (u node_id)
//       frames: the socket the broker's frame records arrive on
//       (plugins/common/video-records.hpp); properties: "format" (u),
//       "width" (u), "height" (u), "framerate" ((uu)), "media_role" (s,
//       "Screen" or "Camera"), "description" (s). A producer node on the
//       guest's PipeWire; its id once PipeWire gave it one. The node lives
//       until the socket ends (the session closed, the link went).
//   OpenRemote(au node_ids) → (h remote)
//       A new connection to the guest's PipeWire that sees only those
//       nodes (its permissions cut down as xdg-desktop-portal cuts a
//       remote's), for the broker to hand to the app. The link keeps this
//       fd in the guest (KEPT, wire/channel-frames.hpp): the broker gets a
//       stand-in and names it in its reply to the app.
//
// Errors: org.sidebus.GuestRelay1.Error.NoPipeWire when the guest has no
// PipeWire daemon to connect to (the message names the socket it tried),
// org.freedesktop.DBus.Error.InvalidArgs for bad arguments,
// ...Error.Failed otherwise. Exits when the bus goes away.
#include <gio/gio.h>
#include <gio/gunixfdlist.h>
#include <pipewire/pipewire.h>
#include <spa/utils/result.h>
#include <unistd.h>

#include <cstring>
#include <map>
#include <memory>
#include <set>
#include <string>

#include "producer.hpp"
#include "pw-loop-source.hpp"

using sidebus::guest::Producer;
using sidebus::guest::ProducerOptions;
namespace video = sidebus::plugins::video;

namespace {

constexpr char kBusName[] = "org.sidebus.GuestRelay1";
constexpr char kPath[] = "/org/sidebus/GuestRelay1";
constexpr char kNoPipeWire[] = "org.sidebus.GuestRelay1.Error.NoPipeWire";
constexpr size_t kMaxStreams = 16;
constexpr char kXml[] = R"(<node>
  <interface name="org.sidebus.GuestRelay1">
    <method name="CreateStream">
      <arg type="h" name="frames" direction="in"/>
      <arg type="a{sv}" name="properties" direction="in"/>
      <arg type="u" name="node_id" direction="out"/>
    </method>
    <method name="OpenRemote">
      <arg type="au" name="node_ids" direction="in"/>
      <arg type="h" name="remote" direction="out"/>
    </method>
  </interface>
</node>)";

struct Relay {
  GMainLoop* main_loop = nullptr;
  pw_loop* loop = nullptr;
  GSource* loop_source = nullptr;
  pw_context* context = nullptr;
  uint64_t next_key = 1;
  std::map<uint64_t, std::unique_ptr<Producer>> producers;
  std::set<uint32_t> nodes;  // our producers' node ids
};
Relay relay;

std::string pipewire_socket() {
  const char* remote = g_getenv("PIPEWIRE_REMOTE");
  if (remote != nullptr && remote[0] == '/') return remote;
  const char* dir = g_getenv("PIPEWIRE_RUNTIME_DIR");
  if (dir == nullptr) dir = g_getenv("XDG_RUNTIME_DIR");
  return std::string(dir != nullptr ? dir : "$XDG_RUNTIME_DIR") + "/" + (remote != nullptr ? remote : "pipewire-0");
}

// Whether the guest has a PipeWire daemon; otherwise the error the broker passes on.
bool have_pipewire(GDBusMethodInvocation* invocation) {
  const std::string socket = pipewire_socket();
  if (g_file_test(socket.c_str(), G_FILE_TEST_EXISTS)) return true;
  g_dbus_method_invocation_return_dbus_error(
      invocation, kNoPipeWire,
      ("the VM has no PipeWire daemon: there is no " + socket +
       " for its user; install pipewire in the VM (and start it in the user's session)")
          .c_str());
  return false;
}

void create_stream(GDBusMethodInvocation* invocation, GVariant* parameters) {
  gint32 handle = -1;
  g_autoptr(GVariant) properties = nullptr;
  g_variant_get(parameters, "(h@a{sv})", &handle, &properties);
  GUnixFDList* fds = g_dbus_message_get_unix_fd_list(g_dbus_method_invocation_get_message(invocation));
  video::Format format;
  g_autofree char* role = nullptr;
  g_autofree char* description = nullptr;
  if (!g_variant_lookup(properties, "format", "u", &format.spa_format) ||
      !g_variant_lookup(properties, "width", "u", &format.width) ||
      !g_variant_lookup(properties, "height", "u", &format.height) ||
      !g_variant_lookup(properties, "framerate", "(uu)", &format.framerate_num, &format.framerate_den) ||
      format.width == 0 || format.height == 0 || format.width > video::kMaxWidth || format.height > video::kMaxHeight ||
      format.framerate_den == 0 || fds == nullptr || handle < 0 || handle >= g_unix_fd_list_get_length(fds)) {
    g_dbus_method_invocation_return_dbus_error(invocation, "org.freedesktop.DBus.Error.InvalidArgs",
                                               "CreateStream needs the frame socket, a format, a size within "
                                               "4096x4096 and a framerate");
    return;
  }
  if (relay.producers.size() >= kMaxStreams) {
    g_dbus_method_invocation_return_dbus_error(invocation, "org.freedesktop.DBus.Error.LimitsExceeded",
                                               "this VM relays 16 streams at most at once");
    return;
  }
  if (!have_pipewire(invocation)) return;
  g_variant_lookup(properties, "media_role", "s", &role);
  g_variant_lookup(properties, "description", "s", &description);
  ProducerOptions options;
  options.format = format;
  if (role != nullptr && g_strcmp0(role, "Camera") == 0) {
    options.media_role = "Camera";
    options.description = "Host camera (sidebus)";
  }
  if (description != nullptr && g_utf8_validate(description, -1, nullptr) && strlen(description) <= 256)
    options.description = description;
  int frames = g_unix_fd_list_get(fds, handle, nullptr);
  const uint64_t key = relay.next_key++;
  std::string error;
  g_object_ref(invocation);
  auto producer = Producer::start(
      relay.context, frames, options,
      [invocation](uint32_t node_id, const std::string& failure) {
        if (failure.empty()) {
          relay.nodes.insert(node_id);
          g_message("stream relay: node %u for the host's stream", node_id);
          g_dbus_method_invocation_return_value(invocation, g_variant_new("(u)", node_id));
        } else {
          g_dbus_method_invocation_return_dbus_error(invocation, "org.freedesktop.DBus.Error.Failed", failure.c_str());
        }
      },
      [key](const std::string&) {
        auto found = relay.producers.find(key);
        if (found == relay.producers.end()) return;
        relay.nodes.erase(found->second->node_id());
        relay.producers.erase(found);
      },
      &error);
  if (!producer) {
    g_dbus_method_invocation_return_dbus_error(invocation, "org.freedesktop.DBus.Error.Failed", error.c_str());
    g_object_unref(invocation);
    return;
  }
  relay.producers[key] = std::move(producer);
  g_object_unref(invocation);  // the ready callback holds the invocation until it answers
}

// A restricted remote: a new connection, its own client's permissions cut
// to the core and @nodes, a round trip so the daemon applied them, then
// its fd taken out of libpipewire.
struct RemoteOpening {
  pw_core* core = nullptr;
  spa_hook listener{};
  int seq = 0;
  bool done = false;
  std::string error;
};

void open_remote(GDBusMethodInvocation* invocation, GVariant* parameters) {
  g_autoptr(GVariant) ids = g_variant_get_child_value(parameters, 0);
  gsize n = 0;
  const auto* values = static_cast<const guint32*>(g_variant_get_fixed_array(ids, &n, sizeof(guint32)));
  if (n == 0 || n > kMaxStreams) {
    g_dbus_method_invocation_return_dbus_error(invocation, "org.freedesktop.DBus.Error.InvalidArgs",
                                               "OpenRemote needs 1 to 16 node ids");
    return;
  }
  for (gsize i = 0; i < n; i++) {
    if (!relay.nodes.contains(values[i])) {
      g_dbus_method_invocation_return_dbus_error(invocation, "org.freedesktop.DBus.Error.InvalidArgs",
                                                 "OpenRemote names a node this relay did not make");
      return;
    }
  }
  if (!have_pipewire(invocation)) return;
  RemoteOpening opening;
  opening.core =
      pw_context_connect(relay.context, pw_properties_new(PW_KEY_APP_NAME, "sidebus relayed app", nullptr), 0);
  if (opening.core == nullptr) {
    g_dbus_method_invocation_return_dbus_error(
        invocation, kNoPipeWire, (std::string("cannot connect to the VM's PipeWire: ") + g_strerror(errno)).c_str());
    return;
  }
  static const pw_core_events kEvents = {
      .version = PW_VERSION_CORE_EVENTS,
      .done =
          [](void* data, uint32_t id, int seq) {
            auto* o = static_cast<RemoteOpening*>(data);
            if (id == PW_ID_CORE && seq == o->seq) o->done = true;
          },
      .error =
          [](void* data, uint32_t id, int, int res, const char* message) {
            auto* o = static_cast<RemoteOpening*>(data);
            if (id == PW_ID_CORE) o->error = message != nullptr ? message : spa_strerror(res);
          },
  };
  pw_core_add_listener(opening.core, &opening.listener, &kEvents, &opening);
  // A round trip to a local daemon on its own connection; bounded, as the
  // broker's call waits for this answer anyway.
  auto round_trip = [&] {
    opening.done = false;
    opening.seq = pw_core_sync(opening.core, PW_ID_CORE, 0);
    const gint64 deadline = g_get_monotonic_time() + 5 * G_USEC_PER_SEC;
    while (!opening.done && opening.error.empty() && g_get_monotonic_time() < deadline)
      pw_loop_iterate(relay.loop, 100);
    return opening.done;
  };
  // The app makes its consumer through the client-node factory: it must see
  // that (as xdg-desktop-portal's remotes do), and nothing else but the core
  // and the relayed nodes.
  struct Factories {
    uint32_t client_node = SPA_ID_INVALID;
  } factories;
  static const pw_registry_events kRegistryEvents = {
      .version = PW_VERSION_REGISTRY_EVENTS,
      .global =
          [](void* data, uint32_t id, uint32_t, const char* type, uint32_t, const spa_dict* props) {
            if (strcmp(type, PW_TYPE_INTERFACE_Factory) != 0 || props == nullptr) return;
            const char* name = spa_dict_lookup(props, PW_KEY_FACTORY_NAME);
            if (name != nullptr && strcmp(name, "client-node") == 0) static_cast<Factories*>(data)->client_node = id;
          },
  };
  pw_registry* registry = pw_core_get_registry(opening.core, PW_VERSION_REGISTRY, 0);
  spa_hook registry_listener{};
  pw_registry_add_listener(registry, &registry_listener, &kRegistryEvents, &factories);
  bool ok = round_trip();
  spa_hook_remove(&registry_listener);
  pw_proxy_destroy(reinterpret_cast<pw_proxy*>(registry));
  if (ok && factories.client_node == SPA_ID_INVALID) {
    opening.error =
        "it has no client-node factory (libpipewire-module-client-node), which apps need to consume a stream";
    ok = false;
  }
  if (ok) {
    std::vector<pw_permission> permissions;
    permissions.push_back(PW_PERMISSION_INIT(PW_ID_CORE, PW_PERM_R | PW_PERM_X));
    permissions.push_back(PW_PERMISSION_INIT(factories.client_node, PW_PERM_R | PW_PERM_X));
    for (gsize i = 0; i < n; i++) permissions.push_back(PW_PERMISSION_INIT(values[i], PW_PERM_R | PW_PERM_X));
    permissions.push_back(PW_PERMISSION_INIT(PW_ID_ANY, 0));
    pw_client_update_permissions(pw_core_get_client(opening.core), uint32_t(permissions.size()), permissions.data());
    ok = round_trip();
  }
  spa_hook_remove(&opening.listener);
  int fd = ok ? pw_core_steal_fd(opening.core) : -1;
  pw_core_disconnect(opening.core);
  if (fd < 0) {
    g_dbus_method_invocation_return_dbus_error(
        invocation, "org.freedesktop.DBus.Error.Failed",
        ("the VM's PipeWire did not set up the remote: " + (opening.error.empty() ? "no answer" : opening.error))
            .c_str());
    return;
  }
  g_autoptr(GUnixFDList) list = g_unix_fd_list_new_from_array(&fd, 1);  // takes fd
  g_dbus_method_invocation_return_value_with_unix_fd_list(invocation, g_variant_new("(h)", 0), list);
}

void handle_call(GDBusConnection*, const char*, const char*, const char*, const char* method, GVariant* parameters,
                 GDBusMethodInvocation* invocation, gpointer) {
  if (g_strcmp0(method, "CreateStream") == 0)
    create_stream(invocation, parameters);
  else if (g_strcmp0(method, "OpenRemote") == 0)
    open_remote(invocation, parameters);
  else
    g_dbus_method_invocation_return_dbus_error(invocation, "org.freedesktop.DBus.Error.UnknownMethod", method);
}

const GDBusInterfaceVTable kVTable = {handle_call, nullptr, nullptr, {}};

}  // namespace

int main(int argc, char** argv) {
  pw_init(&argc, &argv);
  relay.main_loop = g_main_loop_new(nullptr, FALSE);
  relay.loop = pw_loop_new(nullptr);
  pw_loop_enter(relay.loop);
  relay.loop_source = sidebus::plugins::attach_pw_loop(relay.loop);
  relay.context = pw_context_new(relay.loop, nullptr, 0);
  if (relay.context == nullptr) {
    g_printerr("sidebus-stream-relay: cannot make a PipeWire context\n");
    return 1;
  }
  GError* error = nullptr;
  // Activated: the bus that started us; otherwise the session bus.
  const GBusType bus_type = g_getenv("DBUS_STARTER_ADDRESS") != nullptr ? G_BUS_TYPE_STARTER : G_BUS_TYPE_SESSION;
  GDBusConnection* bus = g_bus_get_sync(bus_type, nullptr, &error);
  if (bus == nullptr) {
    g_printerr("sidebus-stream-relay: no session bus: %s\n", error->message);
    return 1;
  }
  g_dbus_connection_set_exit_on_close(bus, FALSE);
  g_signal_connect(
      bus, "closed",
      G_CALLBACK(+[](GDBusConnection*, gboolean, GError*, gpointer) { g_main_loop_quit(relay.main_loop); }), nullptr);
  GDBusNodeInfo* info = g_dbus_node_info_new_for_xml(kXml, nullptr);
  if (g_dbus_connection_register_object(bus, kPath, info->interfaces[0], &kVTable, nullptr, nullptr, &error) == 0) {
    g_printerr("sidebus-stream-relay: %s\n", error->message);
    return 1;
  }
  g_bus_own_name_on_connection(
      bus, kBusName, G_BUS_NAME_OWNER_FLAGS_DO_NOT_QUEUE, nullptr,
      [](GDBusConnection*, const char* name, gpointer) {
        g_message("%s lost (taken, or the bus went away); exiting", name);
        g_main_loop_quit(relay.main_loop);
      },
      nullptr, nullptr);
  g_main_loop_run(relay.main_loop);
  relay.producers.clear();
  pw_context_destroy(relay.context);
  g_source_destroy(relay.loop_source);
  g_source_unref(relay.loop_source);
  pw_loop_leave(relay.loop);
  pw_loop_destroy(relay.loop);
  g_dbus_node_info_unref(info);
  g_object_unref(bus);
  return 0;
}
