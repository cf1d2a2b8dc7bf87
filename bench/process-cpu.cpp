// SPDX-License-Identifier: LGPL-2.1-or-later
#include "process-cpu.hpp"

#include <dirent.h>
#include <glib.h>
#include <unistd.h>

#include <fstream>
#include <sstream>
#include <vector>

namespace sidebus::bench {
namespace {

std::string read_all(const std::string& path) {
  std::ifstream file(path);
  std::stringstream contents;
  contents << file.rdbuf();
  return contents.str();
}

std::vector<pid_t> numeric_entries(const std::string& dir) {
  std::vector<pid_t> ids;
  DIR* listing = opendir(dir.c_str());
  if (listing == nullptr) return ids;
  while (dirent* entry = readdir(listing)) {
    char* end = nullptr;
    long id = std::strtol(entry->d_name, &end, 10);
    if (end != entry->d_name && *end == '\0') ids.push_back(pid_t(id));
  }
  closedir(listing);
  return ids;
}

// The parent pid from /proc/PID/stat (after the parenthesised comm).
pid_t parent_of(pid_t pid) {
  const std::string stat = read_all("/proc/" + std::to_string(pid) + "/stat");
  const size_t close = stat.rfind(')');
  if (close == std::string::npos) return 0;
  std::istringstream rest(stat.substr(close + 2));
  char state;
  pid_t parent = 0;
  rest >> state >> parent;
  return parent;
}

}  // namespace

std::string program_name(pid_t pid) {
  std::string comm = read_all("/proc/" + std::to_string(pid) + "/comm");
  if (!comm.empty() && comm.back() == '\n') comm.pop_back();
  // comm is cut at 15 characters: the full names read better.
  static const std::pair<const char*, const char*> kFullNames[] = {
      {"xdg-document-po", "xdg-document-portal"},  {"xdg-permission-", "xdg-permission-store"},
      {"xdg-desktop-por", "xdg-desktop-portal"},   {"sidebus-test-ba", "sidebus-test-backend"},
  };
  for (const auto& [cut, full] : kFullNames)
    if (comm == cut) return full;
  return comm;
}

namespace {

std::map<pid_t, unsigned long long> thread_ns_of(pid_t pid) {
  std::map<pid_t, unsigned long long> threads;
  const std::string tasks = "/proc/" + std::to_string(pid) + "/task";
  for (pid_t tid : numeric_entries(tasks)) {
    std::istringstream schedstat(read_all(tasks + "/" + std::to_string(tid) + "/schedstat"));
    unsigned long long ns = 0;
    schedstat >> ns;
    threads[tid] = ns;
  }
  return threads;
}

}  // namespace

CpuSnapshot take_cpu_snapshot() {
  std::map<pid_t, pid_t> parents;
  for (pid_t pid : numeric_entries("/proc")) parents[pid] = parent_of(pid);
  const pid_t self = getpid();
  CpuSnapshot snapshot;
  for (const auto& [pid, parent] : parents) {
    // Walk up: a descendant of ours? Noting the broker on the way, whose
    // helpers are told apart from the host's.
    bool ours = false, under_broker = false;
    for (pid_t up = parent; up > 1; up = parents.count(up) ? parents[up] : 0) {
      if (up == self) {
        ours = true;
        break;
      }
      if (program_name(up) == "sidebus-broker") under_broker = true;
    }
    if (!ours) continue;
    std::string label = program_name(pid);
    if (under_broker) {
      label += " (broker's)";
    } else if (label == "dbus-daemon") {
      const std::string cmdline = read_all("/proc/" + std::to_string(pid) + "/cmdline");
      label += cmdline.find("-host-") != std::string::npos    ? " (host bus)"
               : cmdline.find("-guest-") != std::string::npos ? " (guest bus)"
                                                              : "";
    }
    CpuSnapshot::Process& entry = snapshot.processes[pid];
    entry.label = label;
    entry.thread_ns = thread_ns_of(pid);
    for (const auto& [tid, ns] : entry.thread_ns) entry.ns += ns;
  }
  return snapshot;
}

std::map<std::string, double> cpu_ms_between(const CpuSnapshot& before, const CpuSnapshot& after) {
  std::map<std::string, double> ms;
  for (const auto& [pid, process] : after.processes) {
    auto earlier = before.processes.find(pid);
    double ns = 0;
    for (const auto& [tid, now] : process.thread_ns) {
      unsigned long long start = 0;
      if (earlier != before.processes.end()) {
        auto thread = earlier->second.thread_ns.find(tid);
        if (thread != earlier->second.thread_ns.end()) start = thread->second;
      }
      if (now > start) ns += double(now - start);
    }
    ms[process.label] += ns / 1e6;
  }
  return ms;
}

void wait_for_quiet_cpu(int max_ms) {
  const gint64 deadline = g_get_monotonic_time() + gint64(max_ms) * 1000;
  CpuSnapshot before = take_cpu_snapshot();
  while (g_get_monotonic_time() < deadline) {
    const gint64 until = g_get_monotonic_time() + 100 * 1000;
    while (g_get_monotonic_time() < until) g_main_context_iteration(nullptr, FALSE), g_usleep(5000);
    CpuSnapshot after = take_cpu_snapshot();
    double total = 0;
    for (const auto& [label, ms] : cpu_ms_between(before, after)) total += ms;
    if (total < 1.0) return;
    before = std::move(after);
  }
}

}  // namespace sidebus::bench
