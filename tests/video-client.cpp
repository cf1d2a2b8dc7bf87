// video-client.cpp — an app of the picture portals (Screenshot, ScreenCast,
// Camera), as a program in the VM runs it: plain D-Bus calls on its session
// bus (DBUS_SESSION_BUS_ADDRESS), then, for the video portals, libpipewire
// on the fd OpenPipeWireRemote returned (pw_context_connect_fd) and a stream
// of the granted node. The tests run it as the guest user
// (GuestBus::run_as_guest); a person runs it against `sidebus-broker
// --debug-access DIR` (README) to see the host's screen or camera arrive,
// saved as a PNG.
//
// It prints what it saw as one GVariant (text format) on stdout:
//
//   {'outcome': <'ok' | 'cancelled' | 'failed'>, 'error': <message>,
//    'error_name': <D-Bus error name>, 'results': <the last Response's a{sv}>,
//    'bytes': <t, bytes read at the screenshot's URI>,
//    'node': <u>, 'width': <u>, 'height': <u>, 'frames': <u, frames received>,
//    'numbers': <au, their frame numbers (--tag)>, 'mismatches': <t (--tag)>,
//    'png': <s, where the last frame was saved (--png)>}
//
// Usage:
//   video-client screenshot [--interactive]
//   video-client pick-color
//   video-client screencast [--types N] [--cursor-mode N] [--persist-mode N] [--restore-token T] [--frames N]
//                           [--tag T] [--png FILE]
//   video-client camera [--frames N] [--tag T] [--png FILE]
// --tag: the red channel of the test sources' pattern (tests/backend/
// test-patterns.hpp: 192 screen cast, 64 camera); with it the frames are
// checked against the pattern and their numbers reported.
#include <gio/gunixfdlist.h>
#include <pipewire/pipewire.h>

#include <cstdio>
#include <cstring>
#include <map>
#include <optional>
#include <string>

#include "backend/png.hpp"
#include "support/files.hpp"
#include "support/pipewire-client.hpp"

using namespace sidebus::test;

namespace {

constexpr char kBusName[] = "org.freedesktop.portal.Desktop";
constexpr char kPath[] = "/org/freedesktop/portal/desktop";

struct Options {
  std::string mode;
  gboolean interactive = FALSE;
  int types = -1;
  int cursor_mode = -1;
  int persist_mode = -1;
  char* restore_token = nullptr;
  int frames = 10;
  int tag = -1;
  char* png = nullptr;
};

// What is printed at the end.
struct Report {
  GVariantBuilder builder;
  GVariant* results = nullptr;  // the last Response's
  Report() { g_variant_builder_init(&builder, G_VARIANT_TYPE_VARDICT); }
  void add(const char* key, GVariant* value) { g_variant_builder_add(&builder, "{sv}", key, value); }
  [[noreturn]] void finish(const char* outcome, const GError* error = nullptr) {
    if (results != nullptr) add("results", results);
    add("outcome", g_variant_new_string(outcome));
    if (error != nullptr) {
      add("error", g_variant_new_string(error->message));
      g_autofree char* name = g_dbus_error_get_remote_error(error);
      if (name != nullptr) add("error_name", g_variant_new_string(name));
    }
    g_autoptr(GVariant) report = g_variant_ref_sink(g_variant_builder_end(&builder));
    g_autofree char* text = g_variant_print(report, TRUE);
    std::printf("%s\n", text);
    std::fflush(stdout);
    std::exit(0);
  }
};

// A Request-returning portal call: waits for its Response.
class Portal {
 public:
  Portal() {
    g_autoptr(GError) error = nullptr;
    bus_ = g_bus_get_sync(G_BUS_TYPE_SESSION, nullptr, &error);
    if (bus_ == nullptr) {
      g_printerr("video-client: no session bus: %s\n", error->message);
      std::exit(2);
    }
    subscription_ = g_dbus_connection_signal_subscribe(
        bus_, kBusName, "org.freedesktop.portal.Request", "Response", nullptr, nullptr, G_DBUS_SIGNAL_FLAGS_NONE,
        [](GDBusConnection*, const char*, const char* path, const char*, const char*, GVariant* parameters,
           gpointer data) { static_cast<Portal*>(data)->responses_[path] = g_variant_ref(parameters); },
        this, nullptr);
  }
  GDBusConnection* bus() const { return bus_; }

  // @method's (u, a{sv}) Response; nullopt with @error when the call failed.
  std::optional<std::pair<guint32, GVariant*>> call(const char* interface, const char* method, GVariant* parameters,
                                                    GError** error) {
    g_autoptr(GVariant) reply = g_dbus_connection_call_sync(bus_, kBusName, kPath, interface, method, parameters,
                                                            G_VARIANT_TYPE("(o)"), G_DBUS_CALL_FLAGS_NONE, -1,
                                                            nullptr, error);
    if (reply == nullptr) return std::nullopt;
    const char* handle;
    g_variant_get(reply, "(&o)", &handle);
    const std::string path = handle;
    while (!responses_.contains(path)) g_main_context_iteration(nullptr, TRUE);
    guint32 response;
    GVariant* results;
    g_variant_get(responses_[path], "(u@a{sv})", &response, &results);
    return std::make_pair(response, results);
  }

 private:
  GDBusConnection* bus_ = nullptr;
  guint subscription_ = 0;
  std::map<std::string, GVariant*> responses_;
};

std::string next_token() {
  static int n = 0;
  return "video" + std::to_string(getpid()) + "_" + std::to_string(++n);
}

// a{sv} with a fresh handle_token and @extra.
GVariant* options_with_token(std::map<std::string, GVariant*> extra = {}) {
  GVariantBuilder builder;
  g_variant_builder_init(&builder, G_VARIANT_TYPE_VARDICT);
  g_variant_builder_add(&builder, "{sv}", "handle_token", g_variant_new_string(next_token().c_str()));
  for (auto& [key, value] : extra) g_variant_builder_add(&builder, "{sv}", key.c_str(), value);
  return g_variant_builder_end(&builder);
}

// The Response of a call; failed or refused calls end the program.
GVariant* answered(Report& report, std::optional<std::pair<guint32, GVariant*>> answer, GError* error) {
  if (!answer) report.finish("failed", error);
  report.results = answer->second;
  if (answer->first == 1) report.finish("cancelled");
  if (answer->first != 0) {
    report.add("response", g_variant_new_uint32(answer->first));
    report.finish("failed");
  }
  return answer->second;
}

int open_remote(Report& report, Portal& portal, const char* interface, GVariant* parameters) {
  g_autoptr(GError) error = nullptr;
  g_autoptr(GUnixFDList) fds = nullptr;
  g_autoptr(GVariant) reply = g_dbus_connection_call_with_unix_fd_list_sync(
      portal.bus(), kBusName, kPath, interface, "OpenPipeWireRemote", parameters, G_VARIANT_TYPE("(h)"),
      G_DBUS_CALL_FLAGS_NONE, -1, nullptr, &fds, nullptr, &error);
  if (reply == nullptr) report.finish("failed", error);
  gint32 index = -1;
  g_variant_get(reply, "(h)", &index);
  const int fd = fds != nullptr ? g_unix_fd_list_get(fds, index, &error) : -1;
  if (fd < 0) report.finish("failed", error);
  return fd;
}

// Streams @node on @fd until @options.frames arrived; reports them.
void consume(Report& report, const Options& options, PipeWireClient& client, uint32_t node) {
  report.add("node", g_variant_new_uint32(node));
  if (options.png != nullptr) client.keep_last_frame();
  client.consume(node, options.tag >= 0 ? static_cast<uint8_t>(options.tag) : 0);
  const bool enough = client.wait_for_frames(static_cast<size_t>(options.frames), 30s);
  PipeWireClient::Frames frames = client.frames();
  report.add("frames", g_variant_new_uint32(static_cast<guint32>(frames.numbers.size())));
  report.add("width", g_variant_new_uint32(frames.width));
  report.add("height", g_variant_new_uint32(frames.height));
  if (options.tag >= 0) {
    report.add("numbers", g_variant_new_fixed_array(G_VARIANT_TYPE_UINT32, frames.numbers.data(),
                                                   frames.numbers.size(), sizeof(uint32_t)));
    report.add("mismatches", g_variant_new_uint64(frames.mismatches));
  }
  if (options.png != nullptr) {
    std::vector<uint8_t> bgrx = client.last_frame();
    std::vector<uint8_t> rgb(bgrx.size() / 4 * 3);
    for (size_t i = 0, j = 0; i + 3 < bgrx.size(); i += 4, j += 3) {
      rgb[j] = bgrx[i + 2];
      rgb[j + 1] = bgrx[i + 1];
      rgb[j + 2] = bgrx[i];
    }
    if (!rgb.empty()) {
      write_file(options.png, sidebus::test_backend::encode_png(frames.width, frames.height, rgb));
      report.add("png", g_variant_new_string(options.png));
    }
  }
  if (!enough) {
    g_autoptr(GError) error = g_error_new(G_IO_ERROR, G_IO_ERROR_TIMED_OUT, "only %zu of %d frames arrived",
                                          frames.numbers.size(), options.frames);
    report.finish("failed", error);
  }
}

[[noreturn]] void screenshot(const Options& options) {
  Report report;
  Portal portal;
  g_autoptr(GError) error = nullptr;
  auto answer = portal.call("org.freedesktop.portal.Screenshot", "Screenshot",
                            g_variant_new("(s@a{sv})", "",
                                          options_with_token({{"interactive", g_variant_new_boolean(options.interactive)}})),
                            &error);
  GVariant* results = answered(report, answer, error);
  const char* uri = nullptr;
  if (g_variant_lookup(results, "uri", "&s", &uri)) {
    std::optional<std::string> bytes = read_file(path_of(uri));
    if (bytes) report.add("bytes", g_variant_new_uint64(bytes->size()));
  }
  report.finish("ok");
}

[[noreturn]] void pick_color() {
  Report report;
  Portal portal;
  g_autoptr(GError) error = nullptr;
  auto answer = portal.call("org.freedesktop.portal.Screenshot", "PickColor",
                            g_variant_new("(s@a{sv})", "", options_with_token()), &error);
  answered(report, answer, error);
  report.finish("ok");
}

[[noreturn]] void screencast(const Options& options) {
  constexpr char kScreenCast[] = "org.freedesktop.portal.ScreenCast";
  Report report;
  Portal portal;
  g_autoptr(GError) error = nullptr;
  auto created = portal.call(kScreenCast, "CreateSession",
                             g_variant_new("(@a{sv})", options_with_token({{"session_handle_token",
                                                                            g_variant_new_string(next_token().c_str())}})),
                             &error);
  const char* session = nullptr;
  if (!g_variant_lookup(answered(report, created, error), "session_handle", "&s", &session))
    report.finish("failed");
  std::map<std::string, GVariant*> select;
  if (options.types >= 0) select["types"] = g_variant_new_uint32(options.types);
  if (options.cursor_mode >= 0) select["cursor_mode"] = g_variant_new_uint32(options.cursor_mode);
  if (options.persist_mode >= 0) select["persist_mode"] = g_variant_new_uint32(options.persist_mode);
  if (options.restore_token != nullptr) select["restore_token"] = g_variant_new_string(options.restore_token);
  answered(report,
           portal.call(kScreenCast, "SelectSources", g_variant_new("(o@a{sv})", session, options_with_token(select)),
                       &error),
           error);
  GVariant* started = answered(
      report, portal.call(kScreenCast, "Start", g_variant_new("(os@a{sv})", session, "", options_with_token()), &error),
      error);
  g_autoptr(GVariant) streams = g_variant_lookup_value(started, "streams", G_VARIANT_TYPE("a(ua{sv})"));
  if (streams == nullptr || g_variant_n_children(streams) == 0) report.finish("failed");
  uint32_t node = 0;
  g_variant_get_child(streams, 0, "(u@a{sv})", &node, nullptr);
  {
    PipeWireClient client(open_remote(report, portal, kScreenCast, g_variant_new_parsed("(%o, @a{sv} {})", session)));
    consume(report, options, client, node);
  }
  g_dbus_connection_call_sync(portal.bus(), kBusName, session, "org.freedesktop.portal.Session", "Close", nullptr,
                              nullptr, G_DBUS_CALL_FLAGS_NONE, -1, nullptr, nullptr);
  report.finish("ok");
}

[[noreturn]] void camera(const Options& options) {
  constexpr char kCamera[] = "org.freedesktop.portal.Camera";
  Report report;
  Portal portal;
  g_autoptr(GVariant) present = g_dbus_connection_call_sync(
      portal.bus(), kBusName, kPath, "org.freedesktop.DBus.Properties", "Get",
      g_variant_new("(ss)", kCamera, "IsCameraPresent"), G_VARIANT_TYPE("(v)"), G_DBUS_CALL_FLAGS_NONE, -1, nullptr,
      nullptr);
  if (present != nullptr) {
    g_autoptr(GVariant) value = nullptr;
    g_variant_get(present, "(v)", &value);
    report.add("present", g_variant_ref(value));
  }
  g_autoptr(GError) error = nullptr;
  answered(report, portal.call(kCamera, "AccessCamera", g_variant_new("(@a{sv})", options_with_token()), &error),
           error);
  PipeWireClient client(open_remote(report, portal, kCamera, g_variant_new_parsed("(@a{sv} {},)")));
  uint32_t node = 0;
  wait_until([&] {
    for (const auto& [id, info] : client.nodes())
      if (info.media_role == "Camera") node = id;
    return node != 0;
  }, 10s);
  if (node == 0) {
    g_autoptr(GError) none = g_error_new(G_IO_ERROR, G_IO_ERROR_NOT_FOUND, "the remote shows no camera");
    report.finish("failed", none);
  }
  consume(report, options, client, node);
  report.finish("ok");
}

}  // namespace

int main(int argc, char** argv) {
  pw_init(&argc, &argv);
  Options options;
  const GOptionEntry entries[] = {
      {"interactive", 0, 0, G_OPTION_ARG_NONE, &options.interactive, "Screenshot: let the user choose", nullptr},
      {"types", 0, 0, G_OPTION_ARG_INT, &options.types, "ScreenCast: source types", "N"},
      {"cursor-mode", 0, 0, G_OPTION_ARG_INT, &options.cursor_mode, "ScreenCast: cursor mode", "N"},
      {"persist-mode", 0, 0, G_OPTION_ARG_INT, &options.persist_mode, "ScreenCast: persist mode", "N"},
      {"restore-token", 0, 0, G_OPTION_ARG_STRING, &options.restore_token, "ScreenCast: restore token", "T"},
      {"frames", 0, 0, G_OPTION_ARG_INT, &options.frames, "frames to receive (default 10)", "N"},
      {"tag", 0, 0, G_OPTION_ARG_INT, &options.tag, "check the test pattern of this tag", "T"},
      {"png", 0, 0, G_OPTION_ARG_FILENAME, &options.png, "save the last frame as a PNG", "FILE"},
      {nullptr, 0, 0, G_OPTION_ARG_NONE, nullptr, nullptr, nullptr},
  };
  g_autoptr(GOptionContext) context = g_option_context_new("screenshot | pick-color | screencast | camera");
  g_option_context_add_main_entries(context, entries, nullptr);
  g_autoptr(GError) error = nullptr;
  if (!g_option_context_parse(context, &argc, &argv, &error) || argc != 2) {
    g_printerr("video-client: %s\n", error != nullptr ? error->message : "say what to do");
    return 2;
  }
  const std::string mode = argv[1];
  if (mode == "screenshot") screenshot(options);
  if (mode == "pick-color") pick_color();
  if (mode == "screencast") screencast(options);
  if (mode == "camera") camera(options);
  g_printerr("video-client: unknown mode %s\n", mode.c_str());
  return 2;
}
