// bench-broker.cpp — what one VM's broker costs to start and to keep.
//
// Start-up: from spawning sidebus-broker (FileChooser and OpenURI enabled)
// until org.freedesktop.portal.Desktop is owned on the guest bus through the
// agent — the private bus, the permission store, the document portal's FUSE
// mount, the link handshake and the plugins included. Baseline, measured in
// the same run: the host's own xdg-desktop-portal from spawn until it owns
// the same name on the host bus (HostPortal, with its bus and backend).
// Memory: VmRSS of the broker, of its private helpers, and of the host
// xdg-desktop-portal as baseline.
//
// Usage: bench-broker [--rounds N] with the test environment (SIDEBUS_*), as
// `meson compile -C build run-bench-broker` provides.
#include <glib.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "bench-env.h"
#include "support/topology.hpp"

using namespace sidebus::test;
using Clock = std::chrono::steady_clock;

namespace {

double ms_since(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  return values[values.size() / 2];
}

// VmRSS of @pid in KiB, 0 if gone.
long rss_kib(pid_t pid) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(status, line))
    if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
  return 0;
}

// Children of @pid (the broker's private bus and helpers).
std::vector<pid_t> children_of(pid_t pid) {
  std::vector<pid_t> children;
  std::ifstream list("/proc/" + std::to_string(pid) + "/task/" + std::to_string(pid) + "/children");
  pid_t child;
  while (list >> child) children.push_back(child);
  return children;
}

}  // namespace

int main(int argc, char** argv) {
  int rounds = 10;
  GOptionEntry entries[] = {{"rounds", 0, 0, G_OPTION_ARG_INT, &rounds, "Start-ups to measure", "N"}, {}};
  g_autoptr(GOptionContext) context = g_option_context_new("- broker start-up time and memory");
  g_option_context_add_main_entries(context, entries, nullptr);
  if (!g_option_context_parse(context, &argc, &argv, nullptr) || rounds < 1) return 2;

  bench_env_defaults();
  try {
    std::vector<double> baseline_ms, broker_ms;
    long broker_rss = 0, helpers_rss = 0, portal_rss = 0;
    for (int round = 0; round < rounds; round++) {
      auto host_start = Clock::now();
      HostPortal host;
      baseline_ms.push_back(ms_since(host_start));

      GuestBus guest;
      BrokerOptions options;
      options.host_bus_address = host.bus_address();
      options.verbose = false;
      options.config = {{"50-portals.json", R"({"portals":{"filechooser":{"enabled":true},"openuri":{"enabled":true}}})"}};
      auto broker_start = Clock::now();
      Broker broker(options);
      Agent agent({broker.link_address(), guest.address()});
      GDBusConnection* bus = guest.connection();
      bool owned = wait_until([&] { return name_has_owner(bus, kPortalBusName); }, 30s);
      if (!owned) throw FixtureError("the portal name never appeared on the guest bus:\n" + broker.process().log());
      broker_ms.push_back(ms_since(broker_start));
      if (round == rounds - 1) {
        broker_rss = rss_kib(broker.process().pid());
        for (pid_t child : children_of(broker.process().pid())) helpers_rss += rss_kib(child);
        portal_rss = rss_kib(host.portal().pid());
      }
    }
    double baseline = median(baseline_ms), sidebus = median(broker_ms);
    std::printf("start-up (median of %d)                                   ms    ratio\n", rounds);
    std::printf("  baseline: host xdg-desktop-portal until its name is owned %7.1f  1.00\n", baseline);
    std::printf("  sidebus-broker until the guest name is owned via agent    %7.1f  %.2f\n", sidebus,
                sidebus / baseline);
    std::printf("memory (VmRSS after start-up)                               KiB    ratio\n");
    std::printf("  baseline: host xdg-desktop-portal                        %7ld  1.00\n", portal_rss);
    std::printf("  sidebus-broker                                           %7ld  %.2f\n", broker_rss,
                double(broker_rss) / double(portal_rss));
    std::printf("  its private dbus-daemon + permission store + doc portal  %7ld  %.2f\n", helpers_rss,
                double(helpers_rss) / double(portal_rss));
    return 0;
  } catch (const std::exception& error) {
    std::fprintf(stderr, "bench-broker: %s\n", error.what());
    return 1;
  }
}
