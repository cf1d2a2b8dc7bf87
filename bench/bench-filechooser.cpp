// SPDX-License-Identifier: LGPL-2.1-or-later
// bench-filechooser.cpp — what the VM boundary costs a FileChooser call.
//
// One run, one topology (tests/support's Topology: host bus, xdg-desktop-portal, the test
// backend answering at once, the broker with the filechooser plugin, a guest
// bus and the agent), two measurements:
//
//  1. OpenFile round trips — call, handle, Response — made in the guest
//     (guest bus → agent → broker → host portal → backend and back) and the
//     same call made directly on the host bus, interleaved so that both see
//     the same machine; the ratio is the price of sidebus.
//  2. One response carrying 1, 10 and 1000 chosen files: each file is
//     exported through the private document portal before the guest gets
//     its answer. Fresh files each time (a file exported before reuses its
//     document, which is cheaper and not what a user picking new files gets).
//
// Speed is measured here and never asserted by a test. Usage:
//   bench-filechooser [--rounds N] [--export-repeats N]   (default run: under a minute)
// (`meson compile -C build run-bench-filechooser`, or by hand after a build).
#include <glib.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <numeric>
#include <string>
#include <vector>

#include "bench-env.h"
#include "support/topology.hpp"

using namespace sidebus::test;

namespace {

constexpr char kFileChooser[] = "org.freedesktop.portal.FileChooser";

using Clock = std::chrono::steady_clock;

struct Stats {
  double mean_ms = 0, median_ms = 0, p95_ms = 0, min_ms = 0;
};

Stats stats_of(std::vector<double> samples_ms) {
  std::sort(samples_ms.begin(), samples_ms.end());
  Stats stats;
  stats.mean_ms = std::accumulate(samples_ms.begin(), samples_ms.end(), 0.0) / double(samples_ms.size());
  stats.median_ms = samples_ms[samples_ms.size() / 2];
  stats.p95_ms = samples_ms[std::min(samples_ms.size() - 1, samples_ms.size() * 95 / 100)];
  stats.min_ms = samples_ms.front();
  return stats;
}

// One OpenFile, call to Response; milliseconds. @uris: how many the Response carries.
double open_file_round_trip(GDBusConnection* connection, size_t* uris = nullptr) {
  g_autoptr(GVariant) options = g_variant_ref_sink(g_variant_new_parsed("@a{sv} {}"));
  const auto start = Clock::now();
  PortalRequest request(connection, kPortalBusName, kFileChooser, "OpenFile",
                        g_variant_new("(ss@a{sv})", "", "bench", options));
  if (request.error() != nullptr) throw FixtureError(std::string("OpenFile failed: ") + request.error()->message);
  if (!request.wait_for_response(60s)) throw FixtureError("no Response to OpenFile");
  const double elapsed = std::chrono::duration<double, std::milli>(Clock::now() - start).count();
  if (request.response() != 0) throw FixtureError("OpenFile answered " + std::to_string(request.response()));
  if (uris != nullptr) {
    g_autofree const char** list = nullptr;
    *uris = g_variant_lookup(request.results(), "uris", "^a&s", &list) ? g_strv_length((char**)list) : 0;
  }
  return elapsed;
}

// The backend answers OpenFile at once with @paths chosen.
void choose(HostPortal& host, const std::vector<std::string>& paths) {
  g_auto(GVariantBuilder) uris = G_VARIANT_BUILDER_INIT(G_VARIANT_TYPE_STRING_ARRAY);
  for (const std::string& path : paths) {
    g_autofree char* uri = g_filename_to_uri(path.c_str(), nullptr, nullptr);
    g_variant_builder_add(&uris, "s", uri);
  }
  g_auto(GVariantBuilder) results = G_VARIANT_BUILDER_INIT(G_VARIANT_TYPE_VARDICT);
  g_variant_builder_add(&results, "{sv}", "uris", g_variant_builder_end(&uris));
  host.set_reply("OpenFile", kResponseSuccess, g_variant_builder_end(&results));
}

// Keeps the Response match rule installed for the whole run, so every
// PortalRequest reuses it instead of adding and removing it on the bus.
struct KeepMatchRule {
  GDBusConnection* connection;
  guint id;
  explicit KeepMatchRule(GDBusConnection* c)
      : connection(c),
        id(g_dbus_connection_signal_subscribe(c, kPortalBusName, "org.freedesktop.portal.Request", "Response",
                                              nullptr, nullptr, G_DBUS_SIGNAL_FLAGS_NONE,
                                              [](GDBusConnection*, const char*, const char*, const char*, const char*,
                                                 GVariant*, gpointer) {},
                                              nullptr, nullptr)) {}
  ~KeepMatchRule() { g_dbus_connection_signal_unsubscribe(connection, id); }
};

void print_row(const char* name, const Stats& s) {
  std::printf("  %-28s %9.3f %9.3f %9.3f %9.3f\n", name, s.mean_ms, s.median_ms, s.p95_ms, s.min_ms);
}

}  // namespace

int main(int argc, char** argv) {
  int rounds = 300;
  int export_repeats = 5;
  const GOptionEntry entries[] = {
      {"rounds", 'n', 0, G_OPTION_ARG_INT, &rounds, "OpenFile round trips per path (default 300)", "N"},
      {"export-repeats", 0, 0, G_OPTION_ARG_INT, &export_repeats, "Responses with 1 and with 10 files (default 5; 1000 files: once)", "N"},
      {},
  };
  g_autoptr(GOptionContext) context = g_option_context_new("- FileChooser through sidebus vs. on the host");
  g_option_context_add_main_entries(context, entries, nullptr);
  g_autoptr(GError) error = nullptr;
  if (!g_option_context_parse(context, &argc, &argv, &error) || rounds < 1 || export_repeats < 1) {
    g_printerr("bench-filechooser: %s\n", error ? error->message : "--rounds and --export-repeats must be ≥ 1");
    return 2;
  }

  bench_env_defaults();
  try {
    Topology topology(TopologyOptions{
        .broker = {.config = {{"50-filechooser.json", R"({"portals": {"filechooser": {"enabled": true}}})"}},
                   .verbose = false},
    });
    GDBusConnection* guest = topology.guest().connection();
    GDBusConnection* host = topology.host().connection();
    KeepMatchRule guest_rule(guest), host_rule(host);

    // 1. Round trips, the backend answering at once with nothing chosen.
    choose(topology.host(), {});
    for (int i = 0; i < 20; i++) {  // warm up both paths
      open_file_round_trip(guest);
      open_file_round_trip(host);
    }
    std::vector<double> through_sidebus, direct;
    for (int i = 0; i < rounds; i++) {
      through_sidebus.push_back(open_file_round_trip(guest));
      direct.push_back(open_file_round_trip(host));
    }
    const Stats vm = stats_of(through_sidebus), local = stats_of(direct);
    std::printf("\nFileChooser.OpenFile round trip (call → Response), %d calls each, interleaved\n", rounds);
    std::printf("  %-28s %9s %9s %9s %9s\n", "", "mean ms", "median ms", "p95 ms", "min ms");
    print_row("guest, through sidebus", vm);
    print_row("host bus, direct", local);
    std::printf("  ratio sidebus / direct:      mean %.2fx, median %.2fx\n", vm.mean_ms / local.mean_ms,
                vm.median_ms / local.median_ms);

    // 2. Exports: one Response carrying N fresh files.
    TempDir files("sidebus-bench-files");
    int serial = 0;
    auto fresh_files = [&](size_t n) {
      std::vector<std::string> paths;
      for (size_t i = 0; i < n; i++)
        paths.push_back(files.write_file("f" + std::to_string(serial++) + ".txt", "benchmark file\n"));
      return paths;
    };
    std::printf("\nOne OpenFile Response carrying N chosen files (fresh files every time)\n");
    std::printf("  %6s %9s %14s %14s %16s %13s\n", "files", "responses", "sidebus ms", "direct ms", "export cost ms",
                "per file ms");
    for (size_t n : {size_t(1), size_t(10), size_t(1000)}) {
      // 1000 files take seconds: once is enough to see the cost.
      const int repeats = n >= 1000 ? 1 : export_repeats;
      std::vector<double> guest_ms, host_ms;
      for (int repeat = 0; repeat < repeats; repeat++) {
        choose(topology.host(), fresh_files(n));
        size_t received = 0;
        guest_ms.push_back(open_file_round_trip(guest, &received));
        if (received != n) throw FixtureError("expected " + std::to_string(n) + " URIs, got " + std::to_string(received));
        host_ms.push_back(open_file_round_trip(host));
      }
      const Stats g = stats_of(guest_ms), h = stats_of(host_ms);
      // What exporting adds: the sidebus round trip minus an empty one.
      const double export_ms = g.median_ms - vm.median_ms;
      std::printf("  %6zu %9d %14.3f %14.3f %16.3f %13.3f\n", n, repeats, g.median_ms, h.median_ms, export_ms,
                  export_ms / double(n));
    }
    std::printf("  (medians; export cost = sidebus round trip − empty sidebus round trip)\n\n");
  } catch (const std::exception& failure) {
    g_printerr("bench-filechooser: %s\n", failure.what());
    return 1;
  }
  return 0;
}
