// SPDX-License-Identifier: LGPL-2.1-or-later
// bench-filechooser.cpp — what a FileChooser call costs a VM's app, against
// the two ways a host app makes the same call, all in one run.
//
// One topology (tests/support's Topology: host bus, xdg-desktop-portal 1.16,
// the test backend answering at once, the broker with the filechooser plugin,
// a guest bus and the agent) plus, on the host bus, xdg-document-portal
// (D-Bus activated) and three callers:
//   - "sidebus": an app in the VM (the guest bus → agent → broker → host
//     portal; every chosen file exported through the broker's private
//     document portal);
//   - "flatpak": a Flatpak app (flatpak-app.cpp: its own mount namespace with
//     /.flatpak-info) — the real peer: the host portal exports every chosen
//     file through the host's document portal, the same job sidebus does;
//   - "host": an unsandboxed host app (no export at all), the floor.
// Calls of the three are interleaved so that all see the same machine.
//
// Figures:
//  1. OpenFile with nothing chosen (the call path alone).
//  2. OpenFile with 1, 10 and 100 fresh files, and the same file again.
//  3. CPU per OpenFile (1 fresh file) of every process, per caller.
//  4. The export's cost as the document store grows: 10 fresh files with no
//     documents exported yet, and again once --documents (4000) are.
// The goals of issue 13 are printed next to the ratios. Speed is measured
// here, never asserted by a test. Usage:
//   bench-filechooser [--rounds N] [--repeats N] [--cpu-calls N] [--documents N]
#include <glib.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <numeric>
#include <string>
#include <vector>

#include "bench-env.h"
#include "flatpak-peer.hpp"
#include "process-cpu.hpp"
#include "sidebus-config.h"
#include "support/topology.hpp"

using namespace sidebus::test;
using sidebus::bench::FlatpakPeer;

namespace {

constexpr char kFileChooser[] = "org.freedesktop.portal.FileChooser";
constexpr char kFlatpakAppId[] = "dev.sidebus.bench.FlatpakApp";

using Clock = std::chrono::steady_clock;

struct Stats {
  double mean = 0, median = 0, p95 = 0;
};

Stats stats_of(std::vector<double> samples) {
  std::sort(samples.begin(), samples.end());
  return {std::accumulate(samples.begin(), samples.end(), 0.0) / double(samples.size()), samples[samples.size() / 2],
          samples[std::min(samples.size() - 1, samples.size() * 95 / 100)]};
}

double median(std::vector<double> samples) { return stats_of(std::move(samples)).median; }

struct Answer {
  double ms = 0;
  size_t uris = 0;
};

// One OpenFile on @connection, call to Response.
Answer open_file(GDBusConnection* connection) {
  const std::string token = unique_token();
  const auto start = Clock::now();
  PortalRequest request(connection, kPortalBusName, kFileChooser, "OpenFile",
                        g_variant_new_parsed("('', 'bench', {'multiple': <true>, 'handle_token': <%s>})",
                                             token.c_str()));
  if (request.error() != nullptr) throw FixtureError(std::string("OpenFile failed: ") + request.error()->message);
  if (!request.wait_for_response(120s)) throw FixtureError("no Response to OpenFile");
  Answer answer{std::chrono::duration<double, std::milli>(Clock::now() - start).count(), 0};
  if (request.response() != 0) throw FixtureError("OpenFile answered " + std::to_string(request.response()));
  g_autofree const char** uris = nullptr;
  if (g_variant_lookup(request.results(), "uris", "^a&s", &uris)) answer.uris = g_strv_length((char**)uris);
  return answer;
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
        id(g_dbus_connection_signal_subscribe(
            c, kPortalBusName, "org.freedesktop.portal.Request", "Response", nullptr, nullptr,
            G_DBUS_SIGNAL_FLAGS_NONE,
            [](GDBusConnection*, const char*, const char*, const char*, const char*, GVariant*, gpointer) {},
            nullptr, nullptr)) {}
  ~KeepMatchRule() { g_dbus_connection_signal_unsubscribe(connection, id); }
};

// A caller: a name and how it makes one OpenFile.
struct Caller {
  const char* name;
  std::function<Answer()> open;
};

const char* verdict(double ratio, double goal) { return ratio <= goal ? "met" : "MISSED"; }

}  // namespace

int main(int argc, char** argv) {
  int rounds = 200, repeats = 5, cpu_calls = 30, documents = 4000;
  const GOptionEntry entries[] = {
      {"rounds", 'n', 0, G_OPTION_ARG_INT, &rounds, "OpenFile calls with nothing chosen, per caller (200)", "N"},
      {"repeats", 0, 0, G_OPTION_ARG_INT, &repeats, "OpenFile calls per file count, per caller (5)", "N"},
      {"cpu-calls", 0, 0, G_OPTION_ARG_INT, &cpu_calls, "OpenFile calls the CPU figure averages over (30)", "N"},
      {"documents", 0, 0, G_OPTION_ARG_INT, &documents, "Documents exported before the last figure (4000)", "N"},
      {},
  };
  g_autoptr(GOptionContext) context = g_option_context_new("- FileChooser through sidebus vs. a Flatpak and a host app");
  g_option_context_add_main_entries(context, entries, nullptr);
  g_autoptr(GError) error = nullptr;
  if (!g_option_context_parse(context, &argc, &argv, &error) || rounds < 1 || repeats < 1 || cpu_calls < 1 ||
      documents < 0) {
    g_printerr("bench-filechooser: %s\n", error ? error->message : "counts must be ≥ 1");
    return 2;
  }

  bench_env_defaults();
  try {
    Topology topology(TopologyOptions{
        // The host's own document portal, for the Flatpak app's exports.
        .host = {.files = {{"services/org.freedesktop.portal.Documents.service",
                            "[D-BUS Service]\nName=org.freedesktop.portal.Documents\nExec=" XDG_DOCUMENT_PORTAL "\n"}}},
        .broker = {.config = {{"50-filechooser.json", R"({"portals": {"filechooser": {"enabled": true}}})"}},
                   .verbose = false},
    });
    GDBusConnection* guest = topology.guest().connection();
    GDBusConnection* host = topology.host().connection();
    KeepMatchRule guest_rule(guest), host_rule(host);
    FlatpakPeer flatpak(topology.host().bus_address(), kFlatpakAppId);
    const std::vector<Caller> callers = {
        {"sidebus", [&] { return open_file(guest); }},
        {"flatpak", [&] {
           FlatpakPeer::OpenFileResult result = flatpak.open_file();
           return Answer{result.ms, result.uris};
         }},
        {"host", [&] { return open_file(host); }},
    };

    TempDir files("sidebus-bench-files");
    int serial = 0;
    std::vector<size_t> exported(callers.size());  // fresh files each caller was given
    auto fresh_files = [&](size_t n) {
      std::vector<std::string> paths;
      for (size_t i = 0; i < n; i++)
        paths.push_back(files.write_file("f" + std::to_string(serial++) + ".txt", "benchmark file\n"));
      return paths;
    };
    // Each caller chooses @n fresh files, @times times, in turn; medians in ms.
    auto fresh_medians = [&](size_t n, int times, const std::vector<const Caller*>& who) {
      std::vector<std::vector<double>> samples(who.size());
      for (int round = 0; round < times; round++)
        for (size_t i = 0; i < who.size(); i++) {
          choose(topology.host(), fresh_files(n));
          Answer answer = who[i]->open();
          if (answer.uris != n)
            throw FixtureError(std::string(who[i]->name) + ": expected " + std::to_string(n) + " URIs, got " +
                               std::to_string(answer.uris));
          samples[i].push_back(answer.ms);
          exported[size_t(who[i] - callers.data())] += n;
        }
      std::vector<double> medians;
      for (auto& s : samples) medians.push_back(median(s));
      return medians;
    };
    const std::vector<const Caller*> exporters = {&callers[0], &callers[1]};

    // Warm up every path (and start the host's document portal).
    for (const Caller& caller : callers) {
      choose(topology.host(), fresh_files(1));
      caller.open();
    }

    // 4a. The store's growth, first half: before anything else is exported.
    const std::vector<double> at_start = fresh_medians(10, repeats, exporters);

    // 1. Nothing chosen.
    choose(topology.host(), {});
    std::vector<std::vector<double>> empty(callers.size());
    for (int round = 0; round < rounds; round++)
      for (size_t i = 0; i < callers.size(); i++) empty[i].push_back(callers[i].open().ms);
    std::printf("\n1. FileChooser.OpenFile, nothing chosen (%d calls each, interleaved)\n", rounds);
    std::printf("  %-10s %9s %9s %9s\n", "caller", "mean ms", "median ms", "p95 ms");
    std::vector<Stats> empty_stats;
    for (size_t i = 0; i < callers.size(); i++) {
      empty_stats.push_back(stats_of(empty[i]));
      std::printf("  %-10s %9.3f %9.3f %9.3f\n", callers[i].name, empty_stats[i].mean, empty_stats[i].median,
                  empty_stats[i].p95);
    }
    std::printf("  median ratio sidebus/flatpak %.2f, sidebus/host %.2f\n", empty_stats[0].median / empty_stats[1].median,
                empty_stats[0].median / empty_stats[2].median);

    // 2. Fresh files, and the same file again.
    std::printf("\n2. OpenFile answered with N chosen files (median of %d, ms)\n", repeats);
    std::printf("  %-14s %10s %10s %10s %14s %14s %s\n", "files", "sidebus", "flatpak", "host", "sidebus/flatpak",
                "sidebus/host", "goal");
    std::vector<const Caller*> all = {&callers[0], &callers[1], &callers[2]};
    for (size_t n : {size_t(1), size_t(10), size_t(100)}) {
      std::vector<double> m = fresh_medians(n, repeats, all);
      const double ratio = m[0] / m[1];
      std::string goal = n == 1 ? std::string("≤ 1.3 ") + verdict(ratio, 1.3)
                         : n == 100 ? std::string("≤ 1.0 ") + verdict(ratio, 1.0)
                                    : "";
      std::printf("  %-14s %10.3f %10.3f %10.3f %14.2f %14.2f %s\n", (std::to_string(n) + " fresh").c_str(), m[0],
                  m[1], m[2], ratio, m[0] / m[2], goal.c_str());
    }
    {
      const std::vector<std::string> same = fresh_files(1);
      choose(topology.host(), same);
      std::vector<std::vector<double>> again(callers.size());
      for (int round = 0; round < repeats + 1; round++)
        for (size_t i = 0; i < callers.size(); i++) {
          double ms = callers[i].open().ms;
          if (round > 0) again[i].push_back(ms);  // the first call exports it
        }
      std::printf("  %-14s %10.3f %10.3f %10.3f %14.2f %14.2f\n", "1, again", median(again[0]), median(again[1]),
                  median(again[2]), median(again[0]) / median(again[1]), median(again[0]) / median(again[2]));
    }

    // 3. CPU per call, every process, one caller at a time.
    std::printf("\n3. CPU per OpenFile with 1 fresh file (%d calls per caller; ms of CPU per call)\n", cpu_calls);
    std::vector<std::map<std::string, double>> cpu(callers.size());
    std::vector<double> totals(callers.size());
    for (size_t i = 0; i < callers.size(); i++) {
      // Files made first: writing them is the benchmark's work, not the caller's.
      std::vector<std::vector<std::string>> batches;
      for (int call = 0; call < cpu_calls; call++) batches.push_back(fresh_files(1));
      sidebus::bench::wait_for_quiet_cpu();
      auto before = sidebus::bench::take_cpu_snapshot();
      for (const auto& batch : batches) {
        choose(topology.host(), batch);
        callers[i].open();
      }
      sidebus::bench::wait_for_quiet_cpu();  // what the calls left to do counts too
      auto after = sidebus::bench::take_cpu_snapshot();
      for (auto& [label, ms] : sidebus::bench::cpu_ms_between(before, after)) {
        if (label == "flatpak-app") continue;  // the caller itself, as this program is for the others
        cpu[i][label] = ms / cpu_calls;
        totals[i] += ms / cpu_calls;
      }
    }
    std::map<std::string, bool> labels;
    for (const auto& per_caller : cpu)
      for (const auto& [label, ms] : per_caller) labels[label] = true;
    std::printf("  %-36s %9s %9s %9s\n", "process", "sidebus", "flatpak", "host");
    for (const auto& [label, unused] : labels) {
      std::printf("  %-36s", label.c_str());
      for (const auto& per_caller : cpu) {
        auto found = per_caller.find(label);
        std::printf(" %9.3f", found != per_caller.end() ? found->second : 0.0);
      }
      std::printf("\n");
    }
    std::printf("  %-36s %9.3f %9.3f %9.3f\n", "all processes", totals[0], totals[1], totals[2]);
    std::printf("  ratio sidebus/flatpak %.2f (goal ≤ 1.5 %s), sidebus/host %.2f\n", totals[0] / totals[1],
                verdict(totals[0] / totals[1], 1.5), totals[0] / totals[2]);
    std::printf("  (the test backend's cost is the same for every caller: it is the host's dialog)\n");

    // 4b. The store's growth, second half: fill both stores, then measure again.
    if (documents > 0) {
      for (int left = documents - int(exported[0]); left > 0; left -= 1000) {
        const size_t n = size_t(std::min(left, 1000));
        fresh_medians(n, 1, exporters);
      }
      const std::vector<double> grown = fresh_medians(10, repeats, exporters);
      std::printf("\n4. OpenFile with 10 fresh files as the document store grows (median of %d, ms)\n", repeats);
      std::printf("  %-26s %10s %10s\n", "documents in the store", "sidebus", "flatpak");
      std::printf("  %-26s %10.3f %10.3f\n", "none", at_start[0], at_start[1]);
      std::printf("  %-26s %10.3f %10.3f\n", std::to_string(exported[0]).c_str(), grown[0], grown[1]);
      std::printf("  growth: sidebus %.2f (goal ≤ 1.2 %s), flatpak %.2f\n", grown[0] / at_start[0],
                  verdict(grown[0] / at_start[0], 1.2), grown[1] / at_start[1]);
    }
    std::printf("\n");
  } catch (const std::exception& failure) {
    g_printerr("bench-filechooser: %s\n", failure.what());
    return 1;
  }
  return 0;
}
