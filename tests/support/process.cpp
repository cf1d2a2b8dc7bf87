// SPDX-License-Identifier: LGPL-2.1-or-later
// process.cpp — add_test, the environment, wait_until and ChildProcess
// (process.hpp): spawning into a process group with PR_SET_PDEATHSIG, and
// stopping the child and whatever is left of its group.
#include "support/process.hpp"

#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <exception>

#include "support/files.hpp"
#include "util/unique-fd.hpp"

namespace sidebus::test {
namespace {

// Prints @text as test messages, one per line (a TAP comment is one line).
void print_log(const std::string& title, const std::string& text) {
  constexpr size_t kMaxLines = 400;
  g_auto(GStrv) lines = g_strsplit(text.c_str(), "\n", -1);
  size_t count = g_strv_length(lines);
  size_t first = count > kMaxLines ? count - kMaxLines : 0;
  g_test_message("---- %s%s ----", title.c_str(), first > 0 ? " (last lines)" : "");
  for (size_t i = first; i < count; i++)
    if (lines[i][0] != '\0') g_test_message("%s", lines[i]);
}

struct ChildSetup {
  std::optional<Identity> identity;
  pid_t parent;
};

// Runs in the child between fork and exec: only async-signal-safe calls.
void setup_child(gpointer data) {
  const auto* setup = static_cast<const ChildSetup*>(data);
  setpgid(0, 0);
  if (setup->identity) {
    const Identity& who = *setup->identity;
    if (setgroups(0, nullptr) != 0 || setresgid(who.gid, who.gid, who.gid) != 0 ||
        setresuid(who.uid, who.uid, who.uid) != 0) {
      static const char message[] = "sidebus test support: cannot switch user\n";
      if (write(STDERR_FILENO, message, sizeof message - 1) < 0) _exit(127);
      _exit(127);
    }
  }
  // After the user switch, which clears it.
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (getppid() != setup->parent) _exit(127);
}

ExitStatus exit_status_from(int status) {
  ExitStatus result;
  if (WIFEXITED(status)) {
    result.exited = true;
    result.code = WEXITSTATUS(status);
  } else if (WIFSIGNALED(status)) {
    result.signal = WTERMSIG(status);
  }
  return result;
}

UniqueFd open_output(const std::string& path) {
  UniqueFd fd(open(path.empty() ? "/dev/null" : path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644));
  if (!fd) throw FixtureError("cannot open " + path + ": " + g_strerror(errno));
  return fd;
}

}  // namespace

// ---- Running tests ----------------------------------------------------------

void add_test(const char* path, std::function<void()> body) {
  g_test_add_data_func_full(
      path, new std::function<void()>(std::move(body)),
      [](gconstpointer data) {
        try {
          (*static_cast<const std::function<void()>*>(data))();
        } catch (const std::exception& error) {
          g_test_fail_printf("%s", error.what());
        }
      },
      [](gpointer data) { delete static_cast<std::function<void()>*>(data); });
}

bool test_failing() { return (g_test_initialized() && g_test_failed()) || std::uncaught_exceptions() > 0; }

std::string env_path(const char* name) {
  const char* value = g_getenv(name);
  if (!value || !*value) throw FixtureError(std::string("$") + name + " is not set: run the tests with `meson test`");
  return value;
}

std::string env_or(const char* name, const std::string& fallback) {
  const char* value = g_getenv(name);
  return value != nullptr ? value : fallback;
}

bool wait_until(const std::function<bool()>& predicate, Timeout timeout) {
  if (predicate()) return true;
  g_autoptr(GMainContext) context = g_main_context_ref_thread_default();
  // Wakes the loop so polled predicates are re-checked; gone even if the predicate throws.
  struct Tick {
    GSource* source = g_timeout_source_new(10);
    ~Tick() {
      g_source_destroy(source);
      g_source_unref(source);
    }
  } tick;
  g_source_set_callback(tick.source, [](gpointer) -> gboolean { return G_SOURCE_CONTINUE; }, nullptr, nullptr);
  g_source_attach(tick.source, context);
  const gint64 deadline = g_get_monotonic_time() + std::chrono::microseconds(timeout).count();
  bool done = false;
  while (!(done = predicate()) && g_get_monotonic_time() < deadline) g_main_context_iteration(context, TRUE);
  return done;
}

// ---- ChildProcess -----------------------------------------------------------

std::string ExitStatus::describe() const {
  if (exited) return "exited with code " + std::to_string(code);
  if (signal) return "killed by signal " + std::to_string(signal) + " (" + g_strsignal(signal) + ")";
  return "did not exit";
}

ChildProcess::ChildProcess(SpawnOptions options) : options_(std::move(options)) {
  // What our children leave behind is reparented to us and reaped here.
  static const bool subreaper [[maybe_unused]] = prctl(PR_SET_CHILD_SUBREAPER, 1) == 0;
  if (options_.name.empty()) {
    g_autofree char* base = g_path_get_basename(options_.argv.at(0).c_str());
    options_.name = base;
  }
  if (options_.stderr_path.empty()) options_.stderr_path = options_.stdout_path;

  g_auto(GStrv) envp = g_get_environ();
  for (const auto& [key, value] : options_.env) envp = g_environ_setenv(envp, key.c_str(), value.c_str(), TRUE);
  for (const std::string& key : options_.unset_env) envp = g_environ_unsetenv(envp, key.c_str());
  std::vector<char*> argv;
  for (std::string& arg : options_.argv) argv.push_back(arg.data());
  argv.push_back(nullptr);
  std::vector<int> source_fds, target_fds;
  for (const auto& [source, target] : options_.fds) {
    source_fds.push_back(source);
    target_fds.push_back(target);
  }

  UniqueFd stdout_fd = open_output(options_.stdout_path);
  UniqueFd separate_stderr_fd;
  if (options_.stderr_path != options_.stdout_path) separate_stderr_fd = open_output(options_.stderr_path);
  const int stderr_fd = separate_stderr_fd ? separate_stderr_fd.get() : stdout_fd.get();
  ChildSetup setup{options_.identity, getpid()};
  g_autoptr(GError) error = nullptr;
  gboolean spawned = g_spawn_async_with_pipes_and_fds(
      options_.cwd.empty() ? nullptr : options_.cwd.c_str(), argv.data(), envp,
      static_cast<GSpawnFlags>(G_SPAWN_DO_NOT_REAP_CHILD | G_SPAWN_SEARCH_PATH | G_SPAWN_STDIN_FROM_DEV_NULL),
      setup_child, &setup, -1, stdout_fd.get(), stderr_fd, source_fds.data(), target_fds.data(),
      source_fds.size(), &pid_, nullptr, nullptr, nullptr, &error);
  if (!spawned) throw FixtureError("cannot start " + options_.name + ": " + error->message);
  setpgid(pid_, pid_);  // also here, so a kill of the group cannot race the child's own setpgid
}

ChildProcess::~ChildProcess() {
  if (running()) stop(5s);
  stop_group();
  if (test_failing()) print_log(options_.name + " (" + options_.stdout_path + ")", log());
}

bool ChildProcess::running() {
  if (status_) return false;
  int status = 0;
  pid_t result = waitpid(pid_, &status, WNOHANG);
  if (result == pid_) {
    status_ = exit_status_from(status);
    return false;
  }
  return result == 0;
}

std::optional<ExitStatus> ChildProcess::wait_for_exit(Timeout timeout) {
  const gint64 deadline = g_get_monotonic_time() + std::chrono::microseconds(timeout).count();
  while (running()) {
    if (g_get_monotonic_time() >= deadline) return std::nullopt;
    g_usleep(5000);
  }
  return status_;
}

ExitStatus ChildProcess::stop(Timeout timeout) {
  if (!running()) return status_.value_or(ExitStatus{});
  kill(pid_, SIGTERM);
  if (auto status = wait_for_exit(timeout)) return *status;
  g_test_message("%s did not exit within %lld ms of SIGTERM; killing it", options_.name.c_str(),
                 static_cast<long long>(timeout.count()));
  kill(pid_, SIGKILL);
  return wait_for_exit(5s).value_or(ExitStatus{});
}

void ChildProcess::send_signal(int signo) {
  if (running()) kill(pid_, signo);
}

// Whatever is left in the process group once the leader is gone: SIGTERM,
// then SIGKILL; members reparented to us (we are a subreaper) are reaped.
void ChildProcess::stop_group() {
  if (pid_ <= 0) return;
  auto group_gone = [this](Timeout timeout) {
    const gint64 deadline = g_get_monotonic_time() + std::chrono::microseconds(timeout).count();
    for (;;) {
      while (waitpid(-pid_, nullptr, WNOHANG) > 0) {
      }
      if (kill(-pid_, 0) != 0) return true;
      if (g_get_monotonic_time() >= deadline) return false;
      g_usleep(5000);
    }
  };
  if (group_gone(0ms)) return;
  kill(-pid_, SIGTERM);
  if (group_gone(3s)) return;
  kill(-pid_, SIGKILL);
  if (!group_gone(3s)) g_test_message("processes of %s's group %d survived SIGKILL", options_.name.c_str(), pid_);
}

std::string ChildProcess::log() const {
  std::string text = read_file(options_.stdout_path).value_or("");
  if (options_.stderr_path != options_.stdout_path) text += read_file(options_.stderr_path).value_or("");
  return text;
}

}  // namespace sidebus::test
