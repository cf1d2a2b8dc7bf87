// copy-store.cpp — the copies of guest content (see copy-store.hpp).
//
// Threading: everything of CopyStore and HostCopy lives on the main context.
// A worker thread sees only its Job's two fds and numbers; the Job's copy
// (HostCopy) and callback are touched again only in on_copied, on the main
// context, and only while the store lives.
#include "copy-store.hpp"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <vector>

#include "uri-policy.hpp"

namespace sidebus::common {
namespace {

constexpr gsize kCopyBufferSize = 64 * 1024;

// The guest's name made safe to put anywhere a host program may put a path:
// letters and digits (any script), ".", "_", "-" and "+"; anything else,
// such as "&", "?", "%", quotes or spaces, becomes "_". Host programs build
// URIs and command lines from paths (a mail composer's mailto: URI with
// "attachment=<path>", unescaped), and the VM chose this name.
std::string safe_file_name(const std::string& name) {
  std::string safe;
  for (const char* p = name.c_str(); *p != '\0'; p = g_utf8_next_char(p)) {
    gunichar c = g_utf8_get_char(p);
    if (g_unichar_isalnum(c) || c == '.' || c == '_' || c == '-' || c == '+')
      safe.append(p, g_utf8_next_char(p) - p);
    else
      safe += '_';
  }
  return safe;
}

// A name for the copy: the guest file's own, so the host application shows
// it and guesses its type from it, made safe (safe_file_name).
std::string copy_name(const std::string& guest_path, const struct stat& st, const std::string& fallback) {
  g_autofree char* base = guest_path.empty() ? nullptr : g_path_get_basename(guest_path.c_str());
  std::string name = base != nullptr ? base : "";
  const std::string deleted = " (deleted)";
  if (st.st_nlink == 0 && name.size() > deleted.size() &&
      name.compare(name.size() - deleted.size(), deleted.size(), deleted) == 0)
    name.resize(name.size() - deleted.size());
  // A memfd (a byte-only link's forwarded file content) is "/memfd:<name>".
  if (g_str_has_prefix(name.c_str(), "memfd:")) name = name.substr(strlen("memfd:"));
  if (!g_utf8_validate(name.c_str(), -1, nullptr)) name.clear();
  if (name.size() > 200) name.clear();  // NAME_MAX is 255 bytes
  name = safe_file_name(name);
  if (name.empty() || name[0] == '.') name = fallback.empty() ? "file" : fallback;
  return name;
}

bool is_plain_name(const std::string& name) {
  return !name.empty() && name != "." && name != ".." && name.find('/') == std::string::npos;
}

bool make_dirs(const std::string& path) { return g_mkdir_with_parents(path.c_str(), 0700) == 0; }

}  // namespace

struct CopyStore::Job {
  std::weak_ptr<CopyStore> store;
  GCancellable* cancellable = g_cancellable_new();
  Fd source;
  Fd target;
  bool stream = false;
  guint idle_timeout_ms = 0;
  goffset limit = 0;   // what was reserved: the file's size, or a stream's max_file
  bool limit_is_size = false;  // a regular file: more is "it grew"
  goffset copied = 0;
  std::shared_ptr<HostCopy> copy;  // main context only
  Done done;                       // main context only
  ~Job() { g_object_unref(cancellable); }
};

std::shared_ptr<CopyStore> CopyStore::create(Options options) {
  return std::shared_ptr<CopyStore>(new CopyStore(std::move(options)));
}

CopyStore::CopyStore(Options options) : options_(std::move(options)) {}

CopyStore::~CopyStore() {
  for (Job* job : in_flight_) g_cancellable_cancel(job->cancellable);
  if (options_.root.empty() && !dir_.empty()) remove_tree(dir_);
}

bool CopyStore::ensure_dir(GError** error) {
  if (!dir_.empty()) return true;
  if (!options_.root.empty()) {
    if (!make_dirs(options_.root)) {
      g_set_error(error, SIDEBUS_ERROR, SIDEBUS_ERROR_FAILED, "cannot create the host directory for copies: %s",
                  g_strerror(errno));
      return false;
    }
    dir_ = options_.root;
    return true;
  }
  g_autofree char* name = g_strdup_printf("sidebus-%s-%s-XXXXXX", options_.portal.c_str(),
                                          safe_vm_name(options_.vm_name).c_str());
  g_autofree char* path = g_build_filename(g_get_user_runtime_dir(), name, nullptr);
  if (g_mkdtemp_full(path, 0700) == nullptr) {
    g_set_error(error, SIDEBUS_ERROR, SIDEBUS_ERROR_FAILED, "cannot create a directory for copies on the host: %s",
                g_strerror(errno));
    return false;
  }
  dir_ = path;
  return true;
}

void CopyStore::copy_in_thread(GTask* task, gpointer, gpointer task_data, GCancellable* cancellable) {
  auto* job = static_cast<Job*>(task_data);
  std::vector<char> buffer(kCopyBufferSize);
  GPollFD cancel_fd = {};
  bool can_cancel_poll = job->stream && g_cancellable_make_pollfd(cancellable, &cancel_fd);
  GError* error = nullptr;
  while (error == nullptr) {
    if (g_cancellable_set_error_if_cancelled(cancellable, &error)) break;
    ssize_t n;
    if (job->stream) {
      // A pipe or socket: wait for data (or its end) no longer than the idle
      // timeout, and wake up when the store goes.
      struct pollfd fds[2] = {{job->source.get(), POLLIN, 0}, {can_cancel_poll ? cancel_fd.fd : -1, POLLIN, 0}};
      int ready = poll(fds, 2, int(job->idle_timeout_ms));
      if (ready < 0 && errno == EINTR) continue;
      if (ready < 0) {
        g_set_error(&error, SIDEBUS_ERROR, SIDEBUS_ERROR_FAILED, "waiting for the guest's data failed: %s",
                    g_strerror(errno));
        break;
      }
      if (ready == 0) {
        g_set_error(&error, SIDEBUS_ERROR, SIDEBUS_ERROR_FAILED, "the guest sent nothing for %u seconds; given up",
                    job->idle_timeout_ms / 1000);
        break;
      }
      if (fds[1].revents != 0) continue;  // cancelled: checked at the top
      n = read(job->source.get(), buffer.data(), buffer.size());
    } else {
      // pread: the guest's file offset is its own business; copy from the start.
      n = pread(job->source.get(), buffer.data(), buffer.size(), job->copied);
    }
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (n < 0) {
      g_set_error(&error, SIDEBUS_ERROR, SIDEBUS_ERROR_FAILED, "reading the guest's file failed: %s",
                  g_strerror(errno));
      break;
    }
    if (n == 0) break;
    if (job->copied + n > job->limit) {
      // What was reserved is what is copied: a file that grows while it is
      // copied, or a stream that does not end, could otherwise take more
      // than the limits allow.
      if (job->limit_is_size)
        g_set_error(&error, SIDEBUS_ERROR, SIDEBUS_ERROR_FAILED,
                    "the file grew while it was copied (from %" G_GOFFSET_FORMAT " bytes); try again", job->limit);
      else
        g_set_error(&error, SIDEBUS_ERROR, SIDEBUS_ERROR_LIMITS_EXCEEDED,
                    "the guest sent more than %" G_GOFFSET_FORMAT " bytes, the most this copy may take",
                    job->limit);
      break;
    }
    for (ssize_t written = 0; written < n && error == nullptr;) {
      ssize_t w = write(job->target.get(), buffer.data() + written, size_t(n - written));
      if (w < 0 && errno == EINTR) continue;
      if (w < 0)
        g_set_error(&error, SIDEBUS_ERROR, SIDEBUS_ERROR_FAILED, "writing the host copy failed: %s",
                    g_strerror(errno));
      else
        written += w;
    }
    if (error == nullptr) job->copied += n;
  }
  if (can_cancel_poll) g_cancellable_release_fd(cancellable);
  if (error == nullptr && fsync(job->target.get()) != 0 && errno != EINVAL && errno != EROFS)
    g_set_error(&error, SIDEBUS_ERROR, SIDEBUS_ERROR_FAILED, "writing the host copy failed: %s", g_strerror(errno));
  job->target.reset();
  job->source.reset();
  if (error != nullptr)
    g_task_return_error(task, error);
  else
    g_task_return_boolean(task, TRUE);
}

void CopyStore::copy(GuestFd source, const CopyOptions& options, Done done) {
  const Limits& limits = options_.limits;
  const char* portal = options_.portal.c_str();
  g_autoptr(GError) error = nullptr;
  bool stream = source.is_stream();
  goffset remaining = limits.max_total - used_;
  // A stream's size is known at its end: it may take up to max_file, or what
  // is left of max_total.
  goffset reserve = stream ? MIN(limits.max_file, remaining) : source.st.st_size;
  if (!S_ISREG(source.st.st_mode) && !stream) {
    g_set_error(&error, SIDEBUS_ERROR, SIDEBUS_ERROR_NOT_ALLOWED, "only files, pipes and sockets can be copied");
  } else if (in_flight_.size() >= limits.max_in_flight) {
    g_set_error(&error, SIDEBUS_ERROR, SIDEBUS_ERROR_LIMITS_EXCEEDED,
                "this VM already has %u copies to the host in flight; wait for them", limits.max_in_flight);
  } else if (!stream && source.st.st_size > limits.max_file) {
    g_set_error(&error, SIDEBUS_ERROR, SIDEBUS_ERROR_LIMITS_EXCEEDED,
                "the file is larger than %" G_GOFFSET_FORMAT " bytes, the most copied to the host "
                "(portals.%s.max_copy_size)",
                limits.max_file, portal);
  } else if (reserve > remaining || (stream && remaining <= 0)) {
    g_set_error(&error, SIDEBUS_ERROR, SIDEBUS_ERROR_LIMITS_EXCEEDED,
                "this VM's copies on the host already take %" G_GOFFSET_FORMAT " bytes (at most %" G_GOFFSET_FORMAT
                " at once, portals.%s.max_copied_total)",
                used_, limits.max_total, portal);
  }
  if (error != nullptr || !ensure_dir(&error)) {
    done(nullptr, error);
    return;
  }

  std::string name = copy_name(source.path, source.st, options.fallback_name);
  std::string dir_name = options.dir_name;
  if (!is_plain_name(dir_name)) {
    g_autofree char* number = g_strdup_printf("%" G_GUINT64_FORMAT, next_++);
    dir_name = number;
  }
  g_autofree char* copy_dir = g_build_filename(dir_.c_str(), dir_name.c_str(), nullptr);
  g_autofree char* target_path = g_build_filename(copy_dir, name.c_str(), nullptr);
  auto job = std::make_unique<Job>();
  job->store = weak_from_this();
  job->stream = stream;
  job->idle_timeout_ms = limits.stream_idle_timeout_ms;
  job->limit = reserve;
  job->limit_is_size = !stream;
  job->done = std::move(done);
  // The name is created here, in the main thread, so that removing the
  // store never races a thread creating files.
  if (mkdir(copy_dir, 0700) != 0 ||
      !(job->target = Fd(open(target_path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600)))) {
    int saved_errno = errno;
    if (saved_errno != EEXIST) remove_tree(copy_dir);
    g_set_error(&error, SIDEBUS_ERROR, SIDEBUS_ERROR_FAILED, "cannot create the copy on the host: %s",
                g_strerror(saved_errno));
    job->done(nullptr, error);
    return;
  }
  // Reserved before the copy starts, so copies in flight at once can never
  // take more than max_total between them; the HostCopy gives it back.
  used_ += reserve;
  job->copy = std::shared_ptr<HostCopy>(new HostCopy(weak_from_this(), copy_dir, target_path, reserve));
  job->source = std::move(source.fd);

  Job* raw = job.get();
  in_flight_.insert(raw);
  g_autoptr(GTask) task = g_task_new(nullptr, raw->cancellable, on_copied, nullptr);
  g_task_set_task_data(task, job.release(), [](gpointer data) { delete static_cast<Job*>(data); });
  g_task_run_in_thread(task, copy_in_thread);
}

void CopyStore::on_copied(GObject*, GAsyncResult* result, gpointer) {
  GTask* task = G_TASK(result);
  auto* job = static_cast<Job*>(g_task_get_task_data(task));
  // Both leave the job here, on the main context: the copy is deleted here
  // unless handed on, and what the callback holds is released here too.
  std::shared_ptr<HostCopy> copy = std::move(job->copy);
  Done done = std::move(job->done);
  std::shared_ptr<CopyStore> store = job->store.lock();
  if (store == nullptr) return;  // the store is gone, and with it whoever waited
  store->in_flight_.erase(job);
  g_autoptr(GError) error = nullptr;
  if (!g_task_propagate_boolean(task, &error)) {
    copy.reset();
    done(nullptr, error);
    return;
  }
  // A file may shrink while it is copied, a stream ends below its reservation.
  store->used_ -= copy->charged_ - job->copied;
  copy->charged_ = job->copied;
  copy->size_ = job->copied;
  done(std::move(copy), nullptr);
}

// ---- HostCopy ----------------------------------------------------------------

HostCopy::~HostCopy() {
  if (auto store = store_.lock()) store->release(charged_);
  if (!kept_) remove_tree(dir_);
}

void HostCopy::unlink() {
  if (!kept_) remove_tree(dir_);
}

Fd HostCopy::open(GError** error) const {
  Fd fd(::open(path_.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NOFOLLOW));
  if (!fd)
    g_set_error(error, SIDEBUS_ERROR, SIDEBUS_ERROR_FAILED, "cannot open the host copy: %s", g_strerror(errno));
  return fd;
}

}  // namespace sidebus::common
