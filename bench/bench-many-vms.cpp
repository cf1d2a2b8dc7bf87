// SPDX-License-Identifier: LGPL-2.1-or-later
// bench-many-vms.cpp — N VMs on one host: one host session (bus,
// xdg-desktop-portal, test backend), and per VM a guest bus, a broker (with
// its private bus, permission store and document portal) and an agent, as a
// host running N VMs would have them. For N = 1, 10, 50 and 200 (--vms):
//   - bring-up: every broker spawned at once, until every guest bus has
//     org.freedesktop.portal.Desktop (agents started as their broker listens);
//   - memory per VM: RSS and PSS (/proc/PID/smaps_rollup) of each host-side
//     process of one VM, averaged over the VMs, and the agent (guest side);
//   - OpenFile with every guest calling at once (one fresh file chosen each
//     time, exported into each VM's own store): latency median, p95, max;
//   - CPU per call: every process's CPU over those calls, divided by them.
// Usage: bench-many-vms [--vms 1,10,50,200] [--calls-per-vm N]
#include <gio/gio.h>
#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <map>
#include <memory>
#include <numeric>
#include <sstream>
#include <string>
#include <vector>

#include "bench-env.h"
#include "process-cpu.hpp"
#include "support/agent.hpp"
#include "support/broker.hpp"
#include "support/guest-bus.hpp"
#include "support/host-portal.hpp"

using namespace sidebus::test;
using Clock = std::chrono::steady_clock;

namespace {

double ms_since(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

// Rss and Pss of @pid in KiB (smaps_rollup), zeros if gone.
std::pair<long, long> rss_pss_kib(pid_t pid) {
  std::ifstream rollup("/proc/" + std::to_string(pid) + "/smaps_rollup");
  std::string key;
  long value = 0, rss = 0, pss = 0;
  std::string line;
  while (std::getline(rollup, line)) {
    std::istringstream fields(line);
    fields >> key >> value;
    if (key == "Rss:") rss = value;
    if (key == "Pss:") pss = value;
  }
  return {rss, pss};
}

std::vector<pid_t> children_of(pid_t pid) {
  std::ifstream list("/proc/" + std::to_string(pid) + "/task/" + std::to_string(pid) + "/children");
  std::vector<pid_t> children;
  pid_t child;
  while (list >> child) children.push_back(child);
  return children;
}


struct Vm {
  std::unique_ptr<GuestBus> guest;
  std::unique_ptr<Broker> broker;
  std::unique_ptr<Agent> agent;
};

// One OpenFile made asynchronously: started now, done at its Response.
struct PendingOpen {
  std::unique_ptr<PortalRequest> request;
  Clock::time_point start;
};

void choose_one_file(HostPortal& host, const std::string& path) {
  g_autofree char* uri = g_filename_to_uri(path.c_str(), nullptr, nullptr);
  host.set_reply("OpenFile", kResponseSuccess,
                 g_variant_new_parsed("{'uris': <[%s]>}", uri));
}

void run(int vms, int calls_per_vm, TempDir& files, int& serial) {
  HostPortal host;
  std::vector<Vm> machines(static_cast<size_t>(vms));
  for (Vm& vm : machines) vm.guest = std::make_unique<GuestBus>();

  // Bring-up: all brokers at once; each agent as soon as its broker listens.
  const auto start = Clock::now();
  for (size_t i = 0; i < machines.size(); i++) {
    BrokerOptions options;
    options.host_bus_address = host.bus_address();
    options.vm_name = "vm" + std::to_string(i);
    options.config = {{"50-portals.json", R"({"portals":{"filechooser":{"enabled":true},"openuri":{"enabled":true}}})"}};
    options.verbose = false;
    options.wait_for_listen = false;
    machines[i].broker = std::make_unique<Broker>(options);
  }
  for (Vm& vm : machines) {
    const std::string socket = vm.broker->dir() / "link.sock";
    if (!wait_until([&] { return g_file_test(socket.c_str(), G_FILE_TEST_EXISTS) || !vm.broker->process().running(); },
                    120s) ||
        !vm.broker->process().running())
      throw FixtureError("a broker did not come up:\n" + vm.broker->process().log());
    vm.agent = std::make_unique<Agent>(AgentOptions{vm.broker->link_address(), vm.guest->address()});
  }
  for (Vm& vm : machines)
    if (!wait_until([&] { return name_has_owner(vm.guest->connection(), kPortalBusName); }, 120s))
      throw FixtureError("a guest never saw the portal:\n" + vm.broker->process().log());
  const double bring_up_ms = ms_since(start);

  // Memory, per process of each VM, averaged.
  std::map<std::string, std::pair<double, double>> memory;  // label → (RSS, PSS) KiB summed
  for (Vm& vm : machines) {
    pid_t broker = vm.broker->process().pid();
    auto add = [&](const std::string& label, pid_t pid) {
      auto [rss, pss] = rss_pss_kib(pid);
      memory[label].first += double(rss);
      memory[label].second += double(pss);
    };
    add("sidebus-broker", broker);
    for (pid_t child : children_of(broker)) add(sidebus::bench::program_name(child), child);
    add("sidebus-agent (guest side)", vm.agent->process().pid());
  }

  // OpenFile, every guest at once, @calls_per_vm rounds.
  std::vector<double> latencies;
  sidebus::bench::wait_for_quiet_cpu(5000);
  auto before = sidebus::bench::take_cpu_snapshot();
  for (int round = 0; round < calls_per_vm; round++) {
    choose_one_file(host, files.write_file("f" + std::to_string(serial++) + ".txt", "benchmark file\n"));
    std::vector<PendingOpen> pending;
    for (Vm& vm : machines) {
      const std::string token = unique_token();
      PendingOpen open;
      open.start = Clock::now();
      open.request = std::make_unique<PortalRequest>(
          vm.guest->connection(), kPortalBusName, "org.freedesktop.portal.FileChooser", "OpenFile",
          g_variant_new_parsed("('', 'bench', {'handle_token': <%s>})", token.c_str()));
      pending.push_back(std::move(open));
    }
    // Each Response is timed when it arrives: iterate until all are in.
    std::vector<bool> done(pending.size());
    size_t left = pending.size();
    wait_until(
        [&] {
          for (size_t i = 0; i < pending.size(); i++)
            if (!done[i] && pending[i].request->wait_for_response(0s)) {
              done[i] = true;
              left--;
              latencies.push_back(ms_since(pending[i].start));
            }
          return left == 0;
        },
        300s);
    for (const PendingOpen& open : pending)
      if (open.request->responded() && open.request->response() != 0)
        throw FixtureError("an OpenFile was answered " + std::to_string(open.request->response()));
    if (left > 0) throw FixtureError(std::to_string(left) + " OpenFile calls got no Response");
  }
  sidebus::bench::wait_for_quiet_cpu(10000);
  auto after = sidebus::bench::take_cpu_snapshot();
  double cpu_total = 0;
  for (const auto& [label, ms] : sidebus::bench::cpu_ms_between(before, after)) cpu_total += ms;

  std::sort(latencies.begin(), latencies.end());
  const double calls = double(latencies.size());
  std::printf("\n%d VM%s: bring-up %.0f ms (%.1f ms per VM)\n", vms, vms == 1 ? "" : "s", bring_up_ms,
              bring_up_ms / vms);
  std::printf("  memory per VM                        RSS KiB   PSS KiB\n");
  double host_rss = 0, host_pss = 0;
  for (const auto& [label, kib] : memory) {
    std::printf("    %-32s %9.0f %9.0f\n", label.c_str(), kib.first / vms, kib.second / vms);
    if (label.find("guest side") == std::string::npos) host_rss += kib.first / vms, host_pss += kib.second / vms;
  }
  std::printf("    %-32s %9.0f %9.0f\n", "host side, all of one VM's", host_rss, host_pss);
  std::printf("  OpenFile, all %d guests at once, %d rounds: median %.1f ms, p95 %.1f ms, max %.1f ms\n", vms,
              calls_per_vm, latencies[latencies.size() / 2],
              latencies[std::min(latencies.size() - 1, latencies.size() * 95 / 100)], latencies.back());
  std::printf("  CPU per OpenFile, all processes: %.2f ms\n", cpu_total / calls);
}

}  // namespace

int main(int argc, char** argv) {
  g_autofree char* vms_list = g_strdup("1,10,50,200");
  int calls_per_vm = 5;
  const GOptionEntry entries[] = {
      {"vms", 0, 0, G_OPTION_ARG_STRING, &vms_list, "VM counts, comma-separated (1,10,50,200)", "LIST"},
      {"calls-per-vm", 0, 0, G_OPTION_ARG_INT, &calls_per_vm, "Rounds of simultaneous OpenFile calls (5)", "N"},
      {},
  };
  g_autoptr(GOptionContext) context = g_option_context_new("- many VMs' brokers on one host");
  g_option_context_add_main_entries(context, entries, nullptr);
  g_autoptr(GError) error = nullptr;
  if (!g_option_context_parse(context, &argc, &argv, &error) || calls_per_vm < 1) {
    g_printerr("bench-many-vms: %s\n", error ? error->message : "--calls-per-vm must be ≥ 1");
    return 2;
  }
  bench_env_defaults();
  try {
    TempDir files("sidebus-bench-files");
    int serial = 0;
    g_auto(GStrv) counts = g_strsplit(vms_list, ",", -1);
    for (char** count = counts; *count != nullptr; count++) {
      const int vms = std::atoi(*count);
      if (vms < 1) throw FixtureError(std::string("--vms: '") + *count + "' is not a VM count");
      run(vms, calls_per_vm, files, serial);
    }
    std::printf("\n");
  } catch (const std::exception& failure) {
    g_printerr("bench-many-vms: %s\n", failure.what());
    return 1;
  }
  return 0;
}
