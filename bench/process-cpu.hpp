// SPDX-License-Identifier: LGPL-2.1-or-later
// process-cpu.hpp — CPU time of every process a benchmark started (its
// descendants), so a figure can say what one call cost all of them: the
// buses, the portals, the broker and its helpers. Times are the kernel's
// per-thread run time (/proc/PID/task/TID/schedstat, nanoseconds), summed
// over each process's threads.
#pragma once

#include <sys/types.h>

#include <map>
#include <string>

namespace sidebus::bench {

// Every live descendant of this process: pid → (label, CPU nanoseconds).
// The label names the program and, where several run, which one it is:
// "dbus-daemon (host bus)", "xdg-document-portal (broker's)", …
struct CpuSnapshot {
  struct Process {
    std::string label;
    unsigned long long ns = 0;  // summed over its live threads
    std::map<pid_t, unsigned long long> thread_ns;
  };
  std::map<pid_t, Process> processes;
};
CpuSnapshot take_cpu_snapshot();

// CPU milliseconds spent between @before and @after, per label (processes
// started in between count from zero; those gone by @after are lost, and so
// is what a thread that exited in between ran since @before: a process
// whose worker threads come and go never counts negative time).
std::map<std::string, double> cpu_ms_between(const CpuSnapshot& before, const CpuSnapshot& after);

// The program @pid runs, by its full name ("xdg-document-portal", not the
// kernel's 15-character "xdg-document-po").
std::string program_name(pid_t pid);

// Waits (iterating the thread-default main context) until the descendants
// together use less than 1 % of a CPU over 100 ms, at most @max_ms: work an
// earlier figure left behind (a database written out) stays out of the next.
void wait_for_quiet_cpu(int max_ms = 3000);

}  // namespace sidebus::bench
