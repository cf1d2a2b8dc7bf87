// SPDX-License-Identifier: LGPL-2.1-or-later
// child-process.cpp — see child-process.hpp.
#include "util/child-process.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

namespace sidebus {

namespace {

constexpr gint64 kStopGraceUs = 3 * G_USEC_PER_SEC;
constexpr gint64 kPollIntervalUs = 10 * 1000;

void die_with_parent(gpointer) { prctl(PR_SET_PDEATHSIG, SIGTERM); }

}  // namespace

std::unique_ptr<ChildProcess> ChildProcess::spawn(const std::string& name, const Options& options, GError** error) {
  g_autoptr(GSubprocessLauncher) launcher = g_subprocess_launcher_new(G_SUBPROCESS_FLAGS_NONE);
  if (options.envp != nullptr) g_subprocess_launcher_set_environ(launcher, const_cast<char**>(options.envp));
  // Their stdout (xdg-document-portal prints some errors there) goes where
  // their logs go, not into ours (a TAP stream under test).
  int stdout_fd = fcntl(STDERR_FILENO, F_DUPFD_CLOEXEC, 3);
  if (stdout_fd >= 0) g_subprocess_launcher_take_stdout_fd(launcher, stdout_fd);
  for (const auto& [ours, theirs] : options.fds) {
    int copy = fcntl(ours, F_DUPFD_CLOEXEC, 3);
    if (copy < 0) {
      int saved_errno = errno;
      g_set_error(error, G_IO_ERROR, g_io_error_from_errno(saved_errno), "cannot start %s: dup: %s", name.c_str(),
                  g_strerror(saved_errno));
      return nullptr;
    }
    g_subprocess_launcher_take_fd(launcher, copy, theirs);
  }
  g_subprocess_launcher_set_child_setup(launcher, die_with_parent, nullptr, nullptr);
  std::vector<const char*> argv;
  for (const std::string& arg : options.argv) argv.push_back(arg.c_str());
  argv.push_back(nullptr);
  GSubprocess* process = g_subprocess_launcher_spawnv(launcher, argv.data(), error);
  if (process == nullptr) {
    g_prefix_error(error, "cannot start %s (%s): ", name.c_str(), argv[0]);
    return nullptr;
  }
  return std::unique_ptr<ChildProcess>(new ChildProcess(name, process));
}

ChildProcess::ChildProcess(std::string name, GSubprocess* process)
    : name_(std::move(name)),
      pid_(pid_t(g_ascii_strtoll(g_subprocess_get_identifier(process), nullptr, 10))),
      process_(process) {}

ChildProcess::~ChildProcess() {
  if (kill_timer_ != 0) g_source_remove(kill_timer_);
  stop();
}

bool ChildProcess::has_exited() const {
  siginfo_t info = {};
  if (waitid(P_PID, id_t(pid_), &info, WEXITED | WNOHANG | WNOWAIT) != 0) return errno == ECHILD;
  return info.si_pid == pid_;
}

bool ChildProcess::wait_exit(gint64 timeout_us) const {
  gint64 end = g_get_monotonic_time() + timeout_us;
  while (!has_exited()) {
    if (g_get_monotonic_time() >= end) return false;
    g_usleep(kPollIntervalUs);
  }
  g_subprocess_wait(process_.get(), nullptr, nullptr);  // immediate: collects the status
  return true;
}

std::string ChildProcess::exit_description() const {
  if (!has_exited()) return "is still running";
  g_subprocess_wait(process_.get(), nullptr, nullptr);
  if (g_subprocess_get_if_exited(process_.get()))
    return "exited with status " + std::to_string(g_subprocess_get_exit_status(process_.get()));
  int signal_number = g_subprocess_get_term_sig(process_.get());
  return "was killed by signal " + std::to_string(signal_number) + " (" + g_strsignal(signal_number) + ")";
}

int ChildProcess::exit_status() const {
  if (!has_exited()) return -1;
  g_subprocess_wait(process_.get(), nullptr, nullptr);
  return g_subprocess_get_if_exited(process_.get()) ? g_subprocess_get_exit_status(process_.get()) : -1;
}

void ChildProcess::watch(std::function<void()> on_exit) {
  unwatch();
  on_exit_ = std::move(on_exit);
  watch_cancellable_.reset(g_cancellable_new());
  g_subprocess_wait_async(process_.get(), watch_cancellable_.get(), on_wait_done, this);
}

void ChildProcess::unwatch() {
  if (watch_cancellable_) g_cancellable_cancel(watch_cancellable_.get());
  watch_cancellable_.reset();
  on_exit_ = nullptr;
}

void ChildProcess::stop() {
  unwatch();
  if (has_exited()) return;
  g_subprocess_send_signal(process_.get(), SIGTERM);
  if (wait_exit(kStopGraceUs)) return;
  g_warning("%s (pid %d) did not stop within %d s of SIGTERM; killing it", name_.c_str(), pid_,
            int(kStopGraceUs / G_USEC_PER_SEC));
  g_subprocess_force_exit(process_.get());
  if (!wait_exit(kStopGraceUs))
    g_warning("%s (pid %d) survived SIGKILL for %d s (stuck in the kernel, e.g. on a FUSE mount?)", name_.c_str(),
              pid_, int(kStopGraceUs / G_USEC_PER_SEC));
}

void ChildProcess::stop_async(std::function<void()> on_stopped) {
  // The watch completes on a later iteration even if the process has exited
  // already, and never after this object is gone (its wait is cancelled).
  watch([this, on_stopped = std::move(on_stopped)] {
    if (kill_timer_ != 0) g_source_remove(kill_timer_);
    kill_timer_ = 0;
    if (on_stopped) on_stopped();
  });
  if (has_exited() || kill_timer_ != 0) return;
  g_subprocess_send_signal(process_.get(), SIGTERM);
  kill_timer_ = g_timeout_add(guint(kStopGraceUs / 1000), [](gpointer data) -> gboolean {
    auto* self = static_cast<ChildProcess*>(data);
    self->kill_timer_ = 0;
    g_warning("%s (pid %d) did not stop within %d s of SIGTERM; killing it", self->name_.c_str(), self->pid_,
              int(kStopGraceUs / G_USEC_PER_SEC));
    g_subprocess_force_exit(self->process_.get());
    return G_SOURCE_REMOVE;
  }, this);
}

void ChildProcess::on_wait_done(GObject* source, GAsyncResult* result, gpointer user_data) {
  // Cancelled (unwatched or destroyed): user_data may be gone.
  if (!g_subprocess_wait_finish(G_SUBPROCESS(source), result, nullptr)) return;
  auto* child = static_cast<ChildProcess*>(user_data);
  auto on_exit = std::move(child->on_exit_);
  child->on_exit_ = nullptr;
  child->watch_cancellable_.reset();
  if (on_exit) on_exit();
}

}  // namespace sidebus
