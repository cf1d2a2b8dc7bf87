// SPDX-License-Identifier: LGPL-2.1-or-later
// bench-broker.cpp — what one VM's broker costs to start and to keep.
//
// Start-up: from spawning sidebus-broker (FileChooser and OpenURI enabled)
// until org.freedesktop.portal.Desktop is owned on the guest bus through the
// agent — the private bus, the permission store, the document portal's FUSE
// mount, the link handshake and the plugins included. The agent waits as a
// guest's does: it is started as soon as the broker's link socket exists
// (the broker binds it first), and its connection waits in the backlog
// until the broker accepts — not once a test fixture has seen the broker
// ready, which would add the fixture's polling and the agent's own start. Baseline, measured in
// the same run: the host's own xdg-desktop-portal from spawn until it owns
// the same name on the host bus (HostPortal, with its bus and backend).
// Memory: VmRSS of the broker, of its private helpers, and of the host
// xdg-desktop-portal as baseline; then a broker with every plugin enabled,
// idle with its guest link up (the goal of issue 13: at most 6 MiB), and
// what its RSS is made of (/proc/PID/smaps: anonymous and file-backed, the
// largest mappings).
//
// Usage: bench-broker [--rounds N] with the test environment (SIDEBUS_*), as
// `meson compile -C build run-bench-broker` provides.
#include <glib.h>

#include <sys/stat.h>

#include <algorithm>
#include <cstring>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iterator>
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

// A numeric field of /proc/PID/status ("Threads:"), 0 if absent.
long status_field(pid_t pid, const std::string& field) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(status, line))
    if (line.rfind(field, 0) == 0) return std::stol(line.substr(field.size()));
  return 0;
}

// Pss of @pid in KiB (smaps_rollup), 0 if gone.
long pss_kib(pid_t pid) {
  std::ifstream rollup("/proc/" + std::to_string(pid) + "/smaps_rollup");
  std::string line;
  while (std::getline(rollup, line))
    if (line.rfind("Pss:", 0) == 0) return std::stol(line.substr(4));
  return 0;
}

// Every portal plugin this build has.
const char* const kAllPlugins[] = {"filechooser",    "openuri",       "settings", "notification", "inhibit",
                                   "networkmonitor", "proxyresolver", "print",    "email",        "wallpaper",
                                   "screenshot",     "screencast",    "camera"};

struct Mapping {
  std::string name;
  long rss_kib = 0;
  long anonymous_kib = 0;
};

// /proc/PID/smaps summed per mapped file (anonymous mappings as "[anon]",
// heap and stacks by their names), largest first.
std::vector<Mapping> rss_by_mapping(pid_t pid) {
  std::ifstream smaps("/proc/" + std::to_string(pid) + "/smaps");
  std::vector<Mapping> mappings;
  std::string line, current;
  auto find = [&](const std::string& name) -> Mapping& {
    for (Mapping& m : mappings)
      if (m.name == name) return m;
    mappings.push_back({name});
    return mappings.back();
  };
  while (std::getline(smaps, line)) {
    if (!line.empty() && std::isxdigit(static_cast<unsigned char>(line[0])) && line.find('-') < 17) {
      // "addr-addr perms offset dev inode   [path]"
      size_t fields = 0, at = 0;
      while (fields < 5 && at != std::string::npos) {
        at = line.find_first_not_of(' ', line.find(' ', at));
        fields++;
      }
      current = at == std::string::npos ? "[anon]" : line.substr(at);
      size_t slash = current.rfind('/');
      if (slash != std::string::npos) current = current.substr(slash + 1);
      continue;
    }
    if (line.rfind("Rss:", 0) == 0) find(current).rss_kib += std::stol(line.substr(4));
    if (line.rfind("Anonymous:", 0) == 0) find(current).anonymous_kib += std::stol(line.substr(10));
  }
  std::sort(mappings.begin(), mappings.end(), [](const Mapping& a, const Mapping& b) { return a.rss_kib > b.rss_kib; });
  return mappings;
}

// A broker with every plugin, its link up, then idle for a second.
void measure_all_plugins(HostPortal& host) {
  std::string portals;
  for (const char* name : kAllPlugins)
    portals += std::string(portals.empty() ? "" : ",") + "\"" + name + "\":{\"enabled\":true}";
  GuestBus guest;
  BrokerOptions options;
  options.host_bus_address = host.bus_address();
  options.verbose = false;
  options.config = {{"50-portals.json", "{\"portals\":{" + portals + "}}"}};
  Broker broker(options);
  Agent agent({broker.link_address(), guest.address()});
  if (!wait_until([&] { return name_has_owner(guest.connection(), kPortalBusName); }, 30s))
    throw FixtureError("the portal name never appeared on the guest bus:\n" + broker.process().log());
  wait_until([] { return false; }, 3s);  // idle (the broker trims its heap after 2 s)
  const pid_t pid = broker.process().pid();
  std::vector<Mapping> mappings = rss_by_mapping(pid);
  long total = 0, anonymous = 0;
  for (const Mapping& m : mappings) {
    total += m.rss_kib;
    anonymous += m.anonymous_kib;
  }
  std::printf("broker with all %zu plugins, idle (goal: at most 6144 KiB)   KiB\n", std::size(kAllPlugins));
  std::printf("  VmRSS                                                    %7ld\n", rss_kib(pid));
  std::printf("  of it anonymous (heap, stacks, relocated data)           %7ld\n", anonymous);
  std::printf("  of it file-backed (code, read-only data)                 %7ld\n", total - anonymous);
  std::printf("  PSS (shared pages divided among their processes)         %7ld\n", pss_kib(pid));
  std::printf("  threads                                                  %7ld\n", status_field(pid, "Threads:"));
  std::printf("  largest:\n");
  for (size_t i = 0; i < mappings.size() && i < 16; i++)
    std::printf("    %-52s %7ld  (anonymous %ld)\n", mappings[i].name.c_str(), mappings[i].rss_kib,
                mappings[i].anonymous_kib);
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
      options.wait_for_listen = false;
      auto broker_start = Clock::now();
      Broker broker(options);
      const std::string socket = broker.link_address().substr(std::strlen("unix:"));
      struct stat info;
      while (stat(socket.c_str(), &info) != 0 && ms_since(broker_start) < 10000) g_usleep(200);
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
    HostPortal host;
    measure_all_plugins(host);
    return 0;
  } catch (const std::exception& error) {
    std::fprintf(stderr, "bench-broker: %s\n", error.what());
    return 1;
  }
}
