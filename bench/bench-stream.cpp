// SPDX-License-Identifier: LGPL-2.1-or-later
// bench-stream.cpp — what the stream relay costs (docs/screencast.md, "The
// stream relay"): a 1280×720 BGRx screen cast at 30 frames/s through the
// relay on a byte-only link, against the same stream consumed directly on
// the host, in one run.
//
// The topology is the tests' (tests/support/vm.hpp): a host PipeWire daemon
// and a guest one (separate daemons, separate runtime directories), the
// host's xdg-desktop-portal with the test backend, whose Start makes a real
// video source painting frame-numbered pictures (SetVideoFormat 1280×720 at
// 30 frames/s), the broker with the screencast plugin on a byte-only link
// (unix:PATH,nofds: link protocol 2, fds forwarded), the agent, and the
// guest's sidebus-stream-relay started on demand.
//
// One session is started, then two phases of --seconds each:
//  - direct: this process consumes the host's source node on the host's
//    PipeWire (as an app on the host would); the relay is running meanwhile
//    (no guest consumer, so the guest node drops what it gets);
//  - relayed: this process, as the app in the VM, consumes the guest node
//    through the remote OpenPipeWireRemote gave it; the direct consumer is
//    gone.
// For each: frames delivered per second, latency (the consumer's clock
// minus the source's timestamp at painting, both CLOCK_MONOTONIC: one
// machine), and CPU per delivered frame: the consumer (this process), the
// relay's host end (sidebus-broker), its guest end (sidebus-agent and
// sidebus-stream-relay) and both PipeWire daemons. Ratios relayed/direct
// at the end. Prints; asserts nothing about time.
//
// Usage: bench-stream [--seconds N] [--width W --height H --fps F]
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <map>
#include <numeric>
#include <string>
#include <vector>

#include "backend/test-patterns.hpp"
#include "bench-env.h"
#include "process-cpu.hpp"
#include "support/dbus.hpp"
#include "support/host-pipewire.hpp"
#include "support/pipewire-client.hpp"
#include "support/vm.hpp"

using namespace sidebus::test;
using sidebus::bench::cpu_ms_between;
using sidebus::bench::take_cpu_snapshot;

namespace {

constexpr char kScreenCast[] = "org.freedesktop.portal.ScreenCast";

double process_cpu_ms() {
  timespec now{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &now);
  return double(now.tv_sec) * 1e3 + double(now.tv_nsec) / 1e6;
}

VariantPtr request(GDBusConnection* guest, const char* method, GVariant* parameters) {
  PortalRequest call(guest, kPortalBusName, kScreenCast, method, parameters);
  if (call.error() != nullptr) throw FixtureError(std::string(method) + ": " + call.error()->message);
  if (!call.wait_for_response() || call.response() != kResponseSuccess)
    throw FixtureError(std::string(method) + " did not succeed");
  return VariantPtr(g_variant_ref(call.results()));
}

int open_remote(GDBusConnection* guest, const std::string& session) {
  g_autoptr(GError) error = nullptr;
  g_autoptr(GUnixFDList) fds = nullptr;
  g_autoptr(GVariant) reply = g_dbus_connection_call_with_unix_fd_list_sync(
      guest, kPortalBusName, kPortalPath, kScreenCast, "OpenPipeWireRemote",
      g_variant_new_parsed("(%o, @a{sv} {})", session.c_str()), G_VARIANT_TYPE("(h)"), G_DBUS_CALL_FLAGS_NONE, 30000,
      nullptr, &fds, nullptr, &error);
  if (reply == nullptr) throw FixtureError(std::string("OpenPipeWireRemote: ") + error->message);
  return g_unix_fd_list_get(fds, 0, nullptr);
}

int connect_unix(const std::string& path) {
  const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  g_strlcpy(address.sun_path, path.c_str(), sizeof(address.sun_path));
  if (connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0)
    throw FixtureError("cannot connect to " + path);
  return fd;
}

struct Figures {
  double fps = 0;
  double latency_median_ms = 0, latency_p95_ms = 0;
  size_t frames = 0;
  size_t mismatches = 0;
  std::map<std::string, double> cpu_ms;  // by part
  double consumer_ms = 0;
  double per_frame(double ms) const { return frames > 0 ? ms / double(frames) : 0; }
};

double percentile(std::vector<int64_t> values, double p) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  return double(values[std::min(values.size() - 1, size_t(p * double(values.size())))]) / 1e6;
}

// Consumes @node on @client for @seconds: the figures of that window.
Figures measure(PipeWireClient& client, uint32_t node, int seconds) {
  client.consume(node, sidebus::test_patterns::kScreenCastTag);
  if (!client.wait_for_frames(5, 20s)) throw FixtureError("no frames arrived");
  const PipeWireClient::Frames start = client.frames();
  const auto cpu_before = take_cpu_snapshot();
  const double own_before = process_cpu_ms();
  const gint64 began = g_get_monotonic_time();
  wait_until([] { return false; }, std::chrono::milliseconds(seconds * 1000));
  const PipeWireClient::Frames end = client.frames();
  const double elapsed = double(g_get_monotonic_time() - began) / 1e6;
  Figures figures;
  figures.consumer_ms = process_cpu_ms() - own_before;
  figures.cpu_ms = cpu_ms_between(cpu_before, take_cpu_snapshot());
  figures.frames = end.numbers.size() - start.numbers.size();
  figures.fps = double(figures.frames) / elapsed;
  figures.mismatches = end.mismatches - start.mismatches;
  std::vector<int64_t> latencies(end.latencies_ns.begin() + long(start.latencies_ns.size()), end.latencies_ns.end());
  figures.latency_median_ms = percentile(latencies, 0.5);
  figures.latency_p95_ms = percentile(latencies, 0.95);
  return figures;
}

double part(const Figures& f, const char* prefix) {
  double sum = 0;
  for (const auto& [label, ms] : f.cpu_ms)
    if (label.rfind(prefix, 0) == 0) sum += ms;
  return sum;
}

void print(const char* name, const Figures& f) {
  std::printf("%-9s %7.1f %9.2f %8.2f %10.3f %10.3f %10.3f %10.3f %8zu\n", name, f.fps, f.latency_median_ms,
              f.latency_p95_ms, f.per_frame(f.consumer_ms), f.per_frame(part(f, "sidebus-broker")),
              f.per_frame(part(f, "sidebus-agent") + part(f, "sidebus-stream-relay")), f.per_frame(part(f, "pipewire")),
              f.mismatches);
}

}  // namespace

int main(int argc, char** argv) {
  int seconds = 10, width = 1280, height = 720, fps = 30;
  const GOptionEntry entries[] = {
      {"seconds", 0, 0, G_OPTION_ARG_INT, &seconds, "Seconds each phase measures (10)", "N"},
      {"width", 0, 0, G_OPTION_ARG_INT, &width, "Source width (1280)", "W"},
      {"height", 0, 0, G_OPTION_ARG_INT, &height, "Source height (720)", "H"},
      {"fps", 0, 0, G_OPTION_ARG_INT, &fps, "Source frames per second (30)", "F"},
      {},
  };
  g_autoptr(GOptionContext) context = g_option_context_new("- the stream relay against a direct consumer");
  g_option_context_add_main_entries(context, entries, nullptr);
  g_autoptr(GError) error = nullptr;
  if (!g_option_context_parse(context, &argc, &argv, &error)) {
    std::fprintf(stderr, "bench-stream: %s\n", error->message);
    return 2;
  }
  bench_env_defaults();
  pw_init(&argc, &argv);
  if (g_getenv("SIDEBUS_STREAM_RELAY") == nullptr || *g_getenv("SIDEBUS_STREAM_RELAY") == '\0') {
    std::fprintf(stderr, "bench-stream: sidebus-stream-relay was not built (no libpipewire)\n");
    return 77;
  }
  try {
    HostPipeWire host_pipewire;
    HostPipeWire guest_pipewire;
    Vm vm(VmOptions{.name = "bench-stream",
                    .portals = {"screencast"},
                    .byte_only = true,
                    .host = HostPortalOptions{.env = host_pipewire.env()},
                    .guest_services = {{"org.sidebus.GuestRelay1",
                                        "/usr/bin/env PIPEWIRE_RUNTIME_DIR=" + guest_pipewire.runtime_dir() + " " +
                                            env_path("SIDEBUS_STREAM_RELAY")}}});
    for (const char* method : {"CreateSession", "SelectSources", "Start"})
      vm.host().set_reply(method, kResponseSuccess);
    vm.host().call_backend("SetVideoFormat", g_variant_new("(uuu)", width, height, fps));
    GDBusConnection* guest = vm.guest().connection();
    VariantPtr created = request(
        guest, "CreateSession", g_variant_new_parsed("({'handle_token': <'b1'>, 'session_handle_token': <'bench'>},)"));
    const std::string session = lookup_string(created.get(), "session_handle");
    request(guest, "SelectSources",
            g_variant_new_parsed("(%o, {'handle_token': <'b2'>, 'types': <uint32 1>})", session.c_str()));
    VariantPtr started =
        request(guest, "Start", g_variant_new_parsed("(%o, '', {'handle_token': <'b3'>})", session.c_str()));
    g_autoptr(GVariant) streams = g_variant_lookup_value(started.get(), "streams", G_VARIANT_TYPE("a(ua{sv})"));
    guint32 guest_node = 0;
    g_variant_get_child(streams, 0, "(u@a{sv})", &guest_node, nullptr);

    std::printf("bench-stream: %dx%d BGRx at %d frames/s, %d s a phase, byte-only link (link protocol 2)\n", width,
                height, fps, seconds);
    Figures direct, relayed;
    {
      PipeWireClient host_app(connect_unix(host_pipewire.socket_path()));
      uint32_t host_node = 0;
      wait_until([&] {
        for (const auto& [id, node] : host_app.nodes())
          if (node.name == "sidebus-test-screen-cast") host_node = id;
        return host_node != 0;
      });
      if (host_node == 0) throw FixtureError("the host's source node is not there");
      direct = measure(host_app, host_node, seconds);
    }
    {
      PipeWireClient guest_app(open_remote(guest, session));
      relayed = measure(guest_app, guest_node, seconds);
    }
    std::printf("\n%-9s %7s %9s %8s %10s %10s %10s %10s %8s\n", "", "frames/s", "lat p50", "lat p95", "consumer",
                "host end", "guest end", "pipewire", "bad");
    std::printf("%-9s %7s %9s %8s %10s %10s %10s %10s %8s\n", "", "", "ms", "ms", "ms/frame", "ms/frame", "ms/frame",
                "ms/frame", "frames");
    print("direct", direct);
    print("relayed", relayed);
    const double direct_cpu = direct.per_frame(direct.consumer_ms + part(direct, "pipewire"));
    const double relayed_cpu =
        relayed.per_frame(relayed.consumer_ms + part(relayed, "pipewire") + part(relayed, "sidebus-broker") +
                          part(relayed, "sidebus-agent") + part(relayed, "sidebus-stream-relay"));
    std::printf(
        "\nrelayed/direct: frames/s %.2f, latency p50 %.2f (+%.2f ms), CPU per frame %.2f (%.3f vs %.3f ms,"
        " consumer + PipeWire + relay)\n",
        relayed.fps / direct.fps, relayed.latency_median_ms / std::max(direct.latency_median_ms, 1e-6),
        relayed.latency_median_ms - direct.latency_median_ms, relayed_cpu / std::max(direct_cpu, 1e-6), relayed_cpu,
        direct_cpu);
    std::printf("(direct: the relay runs meanwhile without a guest consumer; its own cost is in 'host end' there.)\n");
  } catch (const std::exception& failure) {
    std::fprintf(stderr, "bench-stream: %s\n", failure.what());
    return 1;
  }
  return 0;
}
