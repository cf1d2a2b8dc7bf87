// SPDX-License-Identifier: LGPL-2.1-or-later
// log-ring.cpp — see log-ring.hpp. One fixed buffer written round and
// round; `start_` is where the oldest byte is once it has wrapped.
#include "util/log-ring.hpp"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <ctime>
#include <mutex>
#include <vector>

namespace sidebus::log_ring {

namespace {

std::mutex mutex;
std::vector<char> ring;  // sized once by enable()
size_t end = 0;          // next byte written
bool wrapped = false;
std::atomic<bool> is_enabled{false};  // asked for every record: no lock
std::string fatal_path;               // set once, read by the signal handler

constexpr int kCrashSignals[] = {SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT};
struct sigaction previous[sizeof kCrashSignals / sizeof kCrashSignals[0]];

const char* level_name(GLogLevelFlags level) {
  if (level & G_LOG_LEVEL_ERROR) return "error";
  if (level & G_LOG_LEVEL_CRITICAL) return "critical";
  if (level & G_LOG_LEVEL_WARNING) return "warning";
  if (level & G_LOG_LEVEL_MESSAGE) return "message";
  if (level & G_LOG_LEVEL_INFO) return "info";
  return "debug";
}

void put(std::string_view bytes) {  // mutex held
  if (bytes.size() >= ring.size()) {
    bytes.remove_prefix(bytes.size() - ring.size());
    std::copy(bytes.begin(), bytes.end(), ring.begin());
    end = 0;
    wrapped = true;
    return;
  }
  size_t first = std::min(bytes.size(), ring.size() - end);
  std::copy(bytes.begin(), bytes.begin() + first, ring.begin() + end);
  std::copy(bytes.begin() + first, bytes.end(), ring.begin());
  if (end + bytes.size() >= ring.size()) wrapped = true;
  end = (end + bytes.size()) % ring.size();
}

// Both parts in order, oldest first; async-signal-safe.
void write_all(int fd, const char* data, size_t size) {
  while (size > 0) {
    ssize_t n = write(fd, data, size);
    if (n <= 0) return;
    data += n;
    size -= size_t(n);
  }
}

bool write_ring(const char* path, bool in_signal_handler) {
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return false;
  static const char kHeader[] = "# the last lines this process logged before it stopped (oldest first)\n";
  write_all(fd, kHeader, sizeof kHeader - 1);
  // The crashing thread may hold the mutex: the handler reads without it.
  std::unique_lock<std::mutex> lock(mutex, std::defer_lock);
  if (!in_signal_handler) lock.lock();
  if (wrapped) write_all(fd, ring.data() + end, ring.size() - end);
  write_all(fd, ring.data(), end);
  close(fd);
  return true;
}

void on_crash(int signo) {
  static volatile sig_atomic_t dumping = 0;
  if (!dumping) {
    dumping = 1;
    write_ring(fatal_path.c_str(), true);
  }
  for (size_t i = 0; i < sizeof kCrashSignals / sizeof kCrashSignals[0]; i++)
    if (kCrashSignals[i] == signo) sigaction(signo, &previous[i], nullptr);
  // Blocked until this handler returns; then the previous handler (or the
  // default action) has it. A fault re-executes the instruction anyway.
  raise(signo);
}

}  // namespace

void enable(size_t size) {
  std::lock_guard<std::mutex> lock(mutex);
  if (!ring.empty() || size == 0) return;
  ring.assign(size, '\0');
  is_enabled = true;
}

bool enabled() { return is_enabled; }

size_t capacity() {
  std::lock_guard<std::mutex> lock(mutex);
  return ring.size();
}

void append(GLogLevelFlags level, std::string_view line) {
  gint64 now = g_get_real_time();
  time_t seconds = time_t(now / G_USEC_PER_SEC);
  struct tm local;
  localtime_r(&seconds, &local);
  char stamp[64];
  size_t length = strftime(stamp, sizeof stamp, "%Y-%m-%d %H:%M:%S", &local);
  g_snprintf(stamp + length, sizeof stamp - length, ".%03d ", int(now % G_USEC_PER_SEC / 1000));
  std::lock_guard<std::mutex> lock(mutex);
  if (ring.empty()) return;
  put(stamp);
  put(level_name(level));
  put(": ");
  put(line);
  if (line.empty() || line.back() != '\n') put("\n");
}

std::string tail(size_t max_bytes) {
  std::lock_guard<std::mutex> lock(mutex);
  std::string all;
  if (wrapped) all.append(ring.data() + end, ring.size() - end);
  all.append(ring.data(), end);
  size_t from = 0;
  if (wrapped) from = all.find('\n') + 1;  // the oldest line is cut
  if (max_bytes != 0 && all.size() - from > max_bytes) {
    size_t start = all.size() - max_bytes;
    size_t line = all[start - 1] == '\n' ? start : all.find('\n', start);
    from = line == std::string::npos ? all.size() : (line == start ? start : line + 1);
  }
  if (from >= all.size()) return {};
  return all.substr(from);
}

void dump_on_crash(const std::string& path) {
  if (!fatal_path.empty()) return;
  fatal_path = path;
  struct sigaction action = {};
  action.sa_handler = on_crash;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_ONSTACK;
  for (size_t i = 0; i < sizeof kCrashSignals / sizeof kCrashSignals[0]; i++)
    sigaction(kCrashSignals[i], &action, &previous[i]);
}

bool dump_now() { return !fatal_path.empty() && write_ring(fatal_path.c_str(), false); }

const std::string& dump_path() { return fatal_path; }

}  // namespace sidebus::log_ring
