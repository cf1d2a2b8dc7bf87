// SPDX-License-Identifier: LGPL-2.1-or-later
// host-pipewire.cpp — HostPipeWire (see host-pipewire.hpp): the daemon's
// configuration, its start, and the round trip that says it is up.
#include "support/host-pipewire.hpp"

#include <pipewire/pipewire.h>

#include <mutex>

namespace sidebus::test {
namespace {

// What the portals need and nothing else. link.max-buffers 16: older
// clients cannot handle more.
constexpr char kConfig[] = R"(# Written by the sidebus test support (tests/support/host-pipewire.cpp).
context.properties = {
    core.daemon = true
    core.name = pipewire-0
    link.max-buffers = 16
    log.level = 3
}
context.spa-libs = {
    support.* = support/libspa-support
}
context.modules = [
    { name = libpipewire-module-protocol-native }
    { name = libpipewire-module-client-node }
    { name = libpipewire-module-access }
    { name = libpipewire-module-adapter }
    { name = libpipewire-module-link-factory }
]
context.objects = [ ]
context.exec = [ ]
)";

void ensure_pipewire_initialized() {
  static std::once_flag once;
  std::call_once(once, [] { pw_init(nullptr, nullptr); });
}

struct RoundTrip {
  pw_main_loop* loop = nullptr;
  int seq = 0;
  bool done = false;
};

const pw_core_events kRoundTripEvents = {
    .version = PW_VERSION_CORE_EVENTS,
    .done =
        [](void* data, uint32_t id, int seq) {
          auto* trip = static_cast<RoundTrip*>(data);
          if (id != PW_ID_CORE || seq != trip->seq) return;
          trip->done = true;
          pw_main_loop_quit(trip->loop);
        },
    .error = [](void* data, uint32_t, int, int,
                const char*) { pw_main_loop_quit(static_cast<RoundTrip*>(data)->loop); },
};

}  // namespace

bool pipewire_answers(const std::string& socket_path, Timeout timeout) {
  if (!g_file_test(socket_path.c_str(), G_FILE_TEST_EXISTS)) return false;
  ensure_pipewire_initialized();
  RoundTrip trip;
  trip.loop = pw_main_loop_new(nullptr);
  pw_loop* loop = pw_main_loop_get_loop(trip.loop);
  pw_context* context = pw_context_new(loop, nullptr, 0);
  pw_core* core =
      context != nullptr
          ? pw_context_connect(context, pw_properties_new(PW_KEY_REMOTE_NAME, socket_path.c_str(), nullptr), 0)
          : nullptr;
  if (core != nullptr) {
    spa_hook listener{};
    pw_core_add_listener(core, &listener, &kRoundTripEvents, &trip);
    spa_source* timer = pw_loop_add_timer(
        loop, [](void* data, uint64_t) { pw_main_loop_quit(static_cast<RoundTrip*>(data)->loop); }, &trip);
    const auto ms = timeout.count();
    timespec expiry{static_cast<time_t>(ms / 1000), static_cast<long>(ms % 1000) * 1000000L};
    pw_loop_update_timer(loop, timer, &expiry, nullptr, false);
    trip.seq = pw_core_sync(core, PW_ID_CORE, 0);
    pw_main_loop_run(trip.loop);
    pw_loop_destroy_source(loop, timer);
    spa_hook_remove(&listener);
    pw_core_disconnect(core);
  }
  if (context != nullptr) pw_context_destroy(context);
  pw_main_loop_destroy(trip.loop);
  return trip.done;
}

HostPipeWire::HostPipeWire() : dir_("sidebus-test-pipewire") {
  runtime_dir_ = dir_.make_dir("runtime", 0700);
  const std::string config = dir_.write_file("pipewire.conf", kConfig);
  daemon_ = std::make_unique<ChildProcess>(SpawnOptions{
      .name = "pipewire",
      .argv = {"pipewire", "-c", config},
      .env = {{"PIPEWIRE_RUNTIME_DIR", runtime_dir_}, {"XDG_RUNTIME_DIR", runtime_dir_}, {"HOME", dir_.path()}},
      // Its own socket only, and no session bus to find (module-portal is not loaded anyway).
      .unset_env = {"PIPEWIRE_REMOTE", "PIPEWIRE_CORE", "DBUS_SESSION_BUS_ADDRESS"},
      .cwd = dir_.path(),
      .stdout_path = dir_ / "pipewire.log",
  });
  if (!wait_until([&] { return !daemon_->running() || pipewire_answers(socket_path()); }, 10s) || !daemon_->running())
    throw FixtureError("pipewire did not come up (its log is printed below)");
}

HostPipeWire::~HostPipeWire() { daemon_.reset(); }

}  // namespace sidebus::test
