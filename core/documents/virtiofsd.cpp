// SPDX-License-Identifier: LGPL-2.1-or-later
// virtiofsd.cpp — see virtiofsd.hpp.
#include "documents/virtiofsd.hpp"

#include <glib/gstdio.h>
#include <sys/stat.h>

#include <vector>

#include "util/child-process.hpp"

namespace sidebus {

namespace {

constexpr guint kMaxRestartDelayMs = 5000;

class DocumentShareImpl : public DocumentShare {
 public:
  DocumentShareImpl(std::string program, std::string shared_dir, std::string socket_path)
      : program_(std::move(program)), shared_dir_(std::move(shared_dir)), socket_path_(std::move(socket_path)) {}

  ~DocumentShareImpl() override {
    if (restart_source_ != 0) g_source_remove(restart_source_);
    process_.reset();
    g_unlink(socket_path_.c_str());
  }

  bool spawn(GError** error) {
    g_unlink(socket_path_.c_str());
    // QEMU 7.2's C virtiofsd takes -o options; the standalone Rust one long
    // options. Only the C one documents "-o source=".
    std::vector<std::string> args = {program_, "--socket-path=" + socket_path_};
    if (is_qemu_virtiofsd())
      args.insert(args.end(), {"-o", "source=" + shared_dir_, "-o", "cache=none", "-o", "sandbox=chroot"});
    else
      args.insert(args.end(), {"--shared-dir=" + shared_dir_, "--cache=never", "--sandbox=chroot"});
    process_ = ChildProcess::spawn("virtiofsd", {.argv = args}, error);
    if (!process_) {
      g_prefix_error(error, "--virtiofsd: ");
      return false;
    }
    process_->watch([this] { on_exit(); });
    g_debug("virtiofsd pid %d serves %s at %s", process_->pid(), shared_dir_.c_str(), socket_path_.c_str());
    return true;
  }

  bool wait_for_socket(GError** error) {
    gint64 deadline = g_get_monotonic_time() + 10 * G_USEC_PER_SEC;
    while (g_get_monotonic_time() < deadline) {
      GStatBuf info;
      if (g_stat(socket_path_.c_str(), &info) == 0 && S_ISSOCK(info.st_mode)) return true;
      if (process_->has_exited()) break;
      g_main_context_iteration(nullptr, FALSE);
      g_usleep(10 * 1000);
    }
    g_set_error(error, G_IO_ERROR, G_IO_ERROR_FAILED,
                "--virtiofsd %s did not open %s within 10 s; run it by hand with the same options to see why",
                program_.c_str(), socket_path_.c_str());
    return false;
  }

 private:
  bool is_qemu_virtiofsd() const { return g_str_has_prefix(program_.c_str(), "/usr/lib/qemu/"); }

  void on_exit() {
    // Normal: the VMM disconnected. Serve the next one, backing off if it
    // keeps failing straight away.
    gint64 now = g_get_monotonic_time();
    restart_delay_ms_ =
        (now - started_at_ < G_USEC_PER_SEC) ? std::min<guint>(restart_delay_ms_ * 2 + 100, kMaxRestartDelayMs) : 0;
    g_message("virtiofsd %s; serving the documents again in %u ms",
              process_->exit_status() == 0 ? "exited (VMM disconnected)" : process_->exit_description().c_str(),
              restart_delay_ms_);
    restart_source_ = g_timeout_add(restart_delay_ms_, [](gpointer data) -> gboolean {
      auto* self = static_cast<DocumentShareImpl*>(data);
      self->restart_source_ = 0;
      self->started_at_ = g_get_monotonic_time();
      g_autoptr(GError) error = nullptr;
      if (!self->spawn(&error)) g_warning("%s", error->message);
      return G_SOURCE_REMOVE;
    }, this);
  }

  std::string program_;
  std::string shared_dir_;
  std::string socket_path_;
  std::unique_ptr<ChildProcess> process_;
  guint restart_source_ = 0;
  guint restart_delay_ms_ = 0;
  gint64 started_at_ = g_get_monotonic_time();
};

}  // namespace

std::unique_ptr<DocumentShare> DocumentShare::start(const std::string& program, const std::string& shared_dir,
                                                    const std::string& socket_path, GError** error) {
  auto share = std::make_unique<DocumentShareImpl>(program, shared_dir, socket_path);
  if (!share->spawn(error) || !share->wait_for_socket(error)) return nullptr;
  return share;
}

}  // namespace sidebus
