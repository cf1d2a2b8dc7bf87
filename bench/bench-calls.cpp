// SPDX-License-Identifier: LGPL-2.1-or-later
// bench-calls.cpp — plain calls in a tight loop: what the link and the
// broker's limits cost a well-behaved app that makes many small calls.
//
//  1. Properties.Get of FileChooser's version, back to back: through sidebus
//     (guest bus → agent → link → broker, answered there) and on the host bus
//     (xdg-desktop-portal answers). The mean over the median says whether a
//     tail appears (a rate limit that makes well-behaved clients wait shows
//     as a mean far above the median).
//  2. An echo of 4 KiB strings, back to back: through sidebus (the test
//     plugin's dev.sidebus.test.Echo.Echo, answered by the broker) and, as the
//     baseline, the same method served on the host bus by a thread of this
//     program; MiB/s each way.
// Usage: bench-calls [--calls N]
#include <gio/gio.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <atomic>
#include <numeric>
#include <string>
#include <thread>
#include <vector>

#include "bench-env.h"
#include "support/topology.hpp"

using namespace sidebus::test;
using Clock = std::chrono::steady_clock;

namespace {

constexpr char kEchoInterface[] = "dev.sidebus.test.Echo";
constexpr char kEchoBusName[] = "dev.sidebus.bench.Echo";

struct Stats {
  double mean_us = 0, median_us = 0, p99_us = 0;
};

Stats stats_of(std::vector<double> samples) {
  std::sort(samples.begin(), samples.end());
  return {std::accumulate(samples.begin(), samples.end(), 0.0) / double(samples.size()), samples[samples.size() / 2],
          samples[std::min(samples.size() - 1, samples.size() * 99 / 100)]};
}

// @calls synchronous calls made one after the other; microseconds each.
std::vector<double> tight_loop(int calls, GDBusConnection* connection, const char* bus_name, const char* path,
                               const char* interface, const char* method, GVariant* parameters) {
  g_autoptr(GVariant) owned = g_variant_ref_sink(parameters);
  std::vector<double> samples;
  samples.reserve(size_t(calls));
  for (int i = 0; i < calls; i++) {
    g_autoptr(GError) error = nullptr;
    const auto start = Clock::now();
    g_autoptr(GVariant) reply = g_dbus_connection_call_sync(connection, bus_name, path, interface, method, owned,
                                                            nullptr, G_DBUS_CALL_FLAGS_NONE, 30000, nullptr, &error);
    samples.push_back(std::chrono::duration<double, std::micro>(Clock::now() - start).count());
    if (reply == nullptr) throw FixtureError(std::string(interface) + "." + method + ": " + error->message);
  }
  return samples;
}

// The echo baseline: dev.sidebus.test.Echo.Echo on the host bus, served by
// a thread with its own main context and connection.
class HostEcho {
 public:
  explicit HostEcho(const std::string& address) : thread_([this, address] { serve(address); }) {
    while (!ready_.load()) g_usleep(1000);
  }
  ~HostEcho() {
    g_main_loop_quit(loop_);
    thread_.join();
  }

 private:
  void serve(const std::string& address) {
    g_autoptr(GMainContext) context = g_main_context_new();
    g_main_context_push_thread_default(context);
    loop_ = g_main_loop_new(context, FALSE);
    {
      GObjectPtr<GDBusConnection> connection = connect(address);
      g_autoptr(GDBusNodeInfo) node = g_dbus_node_info_new_for_xml(
          "<node><interface name='dev.sidebus.test.Echo'><method name='Echo'><arg type='s' direction='in'/>"
          "<arg type='s' direction='out'/></method></interface></node>",
          nullptr);
      static const GDBusInterfaceVTable vtable = {
          [](GDBusConnection*, const char*, const char*, const char*, const char*, GVariant* parameters,
             GDBusMethodInvocation* invocation, gpointer) {
            g_dbus_method_invocation_return_value(invocation, g_variant_new("(@s)", g_variant_get_child_value(parameters, 0)));
          },
          nullptr, nullptr, {}};
      guint id = g_dbus_connection_register_object(connection.get(), "/", node->interfaces[0], &vtable, nullptr,
                                                   nullptr, nullptr);
      g_autoptr(GVariant) owned = g_dbus_connection_call_sync(
          connection.get(), "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus", "RequestName",
          g_variant_new("(su)", kEchoBusName, 0u), nullptr, G_DBUS_CALL_FLAGS_NONE, -1, nullptr, nullptr);
      ready_ = true;
      g_main_loop_run(loop_);
      g_dbus_connection_unregister_object(connection.get(), id);
    }
    g_main_loop_unref(loop_);
    g_main_context_pop_thread_default(context);
  }

  GMainLoop* loop_ = nullptr;
  std::atomic<bool> ready_{false};
  std::thread thread_;
};

}  // namespace

int main(int argc, char** argv) {
  int calls = 20000;
  const GOptionEntry entries[] = {{"calls", 'n', 0, G_OPTION_ARG_INT, &calls, "Calls per loop (20000)", "N"}, {}};
  g_autoptr(GOptionContext) context = g_option_context_new("- tight loops of plain calls through sidebus");
  g_option_context_add_main_entries(context, entries, nullptr);
  g_autoptr(GError) error = nullptr;
  if (!g_option_context_parse(context, &argc, &argv, &error) || calls < 100) {
    g_printerr("bench-calls: %s\n", error ? error->message : "--calls must be ≥ 100");
    return 2;
  }
  bench_env_defaults();
  try {
    Topology topology(TopologyOptions{
        .broker = {.config = {{"50-bench.json",
                               R"({"portals": {"filechooser": {"enabled": true}, "echo": {"enabled": true}}})"}},
                   .extra_args = {"--plugin-dir", env_path("SIDEBUS_TEST_PLUGIN_DIR")},
                   .verbose = false},
    });
    GDBusConnection* guest = topology.guest().connection();
    GDBusConnection* host = topology.host().connection();
    HostEcho host_echo(topology.host().bus_address());

    auto get_version = [&](GDBusConnection* connection, int n) {
      return tight_loop(n, connection, kPortalBusName, kPortalPath, "org.freedesktop.DBus.Properties", "Get",
                        g_variant_new("(ss)", "org.freedesktop.portal.FileChooser", "version"));
    };
    get_version(guest, 200);  // warm up
    get_version(host, 200);
    const Stats through = stats_of(get_version(guest, calls)), direct = stats_of(get_version(host, calls));
    std::printf("\n1. Properties.Get (FileChooser version), %d calls back to back\n", calls);
    std::printf("  %-30s %9s %9s %9s %12s\n", "", "mean µs", "median µs", "p99 µs", "mean/median");
    std::printf("  %-30s %9.1f %9.1f %9.1f %12.2f  (goal ≤ 1.3 %s)\n", "through sidebus", through.mean_us,
                through.median_us, through.p99_us, through.mean_us / through.median_us,
                through.mean_us / through.median_us <= 1.3 ? "met" : "MISSED");
    std::printf("  %-30s %9.1f %9.1f %9.1f %12.2f\n", "host bus, xdg-desktop-portal", direct.mean_us,
                direct.median_us, direct.p99_us, direct.mean_us / direct.median_us);
    std::printf("  median ratio sidebus/host %.2f\n", through.median_us / direct.median_us);

    const std::string payload(4096, 'x');
    auto echo = [&](GDBusConnection* connection, const char* bus_name, const char* path, int n) {
      return tight_loop(n, connection, bus_name, path, kEchoInterface, "Echo", g_variant_new("(s)", payload.c_str()));
    };
    const int echoes = calls / 4;
    echo(guest, kPortalBusName, kPortalPath, 100);
    echo(host, kEchoBusName, "/", 100);
    auto mib_per_s = [&](const std::vector<double>& us) {
      // Both ways: the string goes out and comes back.
      return 2.0 * double(payload.size()) * double(us.size()) / (std::accumulate(us.begin(), us.end(), 0.0) / 1e6) /
             (1024.0 * 1024.0);
    };
    const double echo_through = mib_per_s(echo(guest, kPortalBusName, kPortalPath, echoes));
    const double echo_direct = mib_per_s(echo(host, kEchoBusName, "/", echoes));
    std::printf("\n2. Echo of 4 KiB strings, %d calls back to back (MiB/s, both ways)\n", echoes);
    std::printf("  %-30s %9.1f\n", "through sidebus (echo plugin)", echo_through);
    std::printf("  %-30s %9.1f\n", "host bus, a host service", echo_direct);
    std::printf("  ratio sidebus/host %.2f\n\n", echo_through / echo_direct);
  } catch (const std::exception& failure) {
    g_printerr("bench-calls: %s\n", failure.what());
    return 1;
  }
  return 0;
}
