// SPDX-License-Identifier: LGPL-2.1-or-later
// guest-file.cpp — guest fds and documents turned into host files, and the
// copy store for files that are not documents (see guest-file.hpp).
//
// What reaches the guest in errors names only guest-side paths: the host's
// directory layout is none of the VM's business, so host paths only appear
// in the broker's debug log.
#include "guest-file.hpp"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <gio/gunixfdlist.h>
#include <unistd.h>

#include <cstring>

#include "uri-policy.hpp"

namespace sidebus::openuri {
namespace {

constexpr int kMaxRemoveDepth = 16;
constexpr gsize kCopyBufferSize = 64 * 1024;

const char* describe_file_type(mode_t mode) {
  switch (mode & S_IFMT) {
    case S_IFIFO:
      return "pipe";
    case S_IFSOCK:
      return "socket";
    case S_IFCHR:
      return "character device";
    case S_IFBLK:
      return "block device";
    case S_IFLNK:
      return "symbolic link";
    case S_IFDIR:
      return "directory";
    case S_IFREG:
      return "regular file";
    default:
      return "special file";
  }
}

// The path the kernel reports for @fd, "" if none (pipes, sockets) or unreadable.
std::string fd_path(int fd) {
  g_autofree char* proc_path = g_strdup_printf("/proc/self/fd/%d", fd);
  g_autofree char* target = g_file_read_link(proc_path, nullptr);
  if (target == nullptr || target[0] != '/') return {};
  return target;
}

// Deletes @name in @dir_fd and everything under it, never following symlinks.
void remove_tree_at(int dir_fd, const char* name, int depth) {
  if (unlinkat(dir_fd, name, 0) == 0) return;
  if (errno != EISDIR && errno != EPERM) return;  // Linux says EISDIR for a directory; POSIX allows EPERM
  if (depth > kMaxRemoveDepth) {
    g_warning("not removing %s: nested too deep", name);
    return;
  }
  int fd = openat(dir_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return;
  DIR* dir = fdopendir(fd);
  if (dir == nullptr) {
    close(fd);
    return;
  }
  while (struct dirent* entry = readdir(dir)) {
    if (strcmp(entry->d_name, ".") == 0 || strcmp(entry->d_name, "..") == 0) continue;
    remove_tree_at(dirfd(dir), entry->d_name, depth + 1);
  }
  closedir(dir);
  if (unlinkat(dir_fd, name, AT_REMOVEDIR) != 0) g_warning("cannot remove %s: %s", name, g_strerror(errno));
}

void remove_tree(const std::string& path) {
  g_autofree char* parent = g_path_get_dirname(path.c_str());
  g_autofree char* name = g_path_get_basename(path.c_str());
  int parent_fd = open(parent, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (parent_fd < 0) return;
  remove_tree_at(parent_fd, name, 0);
  close(parent_fd);
}

// A name for the copy: the guest file's own, so the host application shows
// it and guesses its type from it.
std::string copy_name(const std::string& guest_path, const struct stat& st) {
  g_autofree char* base = guest_path.empty() ? nullptr : g_path_get_basename(guest_path.c_str());
  std::string name = base != nullptr ? base : "";
  const std::string deleted = " (deleted)";
  if (st.st_nlink == 0 && name.size() > deleted.size() &&
      name.compare(name.size() - deleted.size(), deleted.size(), deleted) == 0)
    name.resize(name.size() - deleted.size());
  if (name.empty() || name == "." || name == ".." || name == "/" || name.find('/') != std::string::npos) name = "file";
  return name;
}

std::string safe_vm_name(const std::string& vm_name) {
  std::string safe;
  for (char c : vm_name.substr(0, 64)) safe += g_ascii_isalnum(c) || c == '-' || c == '_' || c == '.' ? c : '_';
  return safe.empty() ? "vm" : safe;
}

}  // namespace

void Fd::reset(int fd) {
  if (fd_ >= 0) close(fd_);
  fd_ = fd;
}

bool GuestFd::is_opath() const { return (flags & O_PATH) == O_PATH; }

bool GuestFd::is_writable() const {
  if (is_opath()) {
    g_autofree char* proc_path = g_strdup_printf("/proc/self/fd/%d", fd.get());
    return access(proc_path, W_OK) == 0;
  }
  return (flags & O_ACCMODE) == O_RDWR;
}

std::optional<HostFile> open_document(SidebusContext* context, const std::string& guest_path, GError** error) {
  g_autofree char* host_path = sidebus_context_guest_path_to_host_path(context, guest_path.c_str(), error);
  if (host_path == nullptr) return std::nullopt;
  // O_NONBLOCK: never hang on a FIFO that took a document's place; the host
  // portal only looks at the fd (fstat, /proc/self/fd), it does not read it.
  Fd fd(open(host_path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK));
  if (!fd) {
    int saved_errno = errno;
    sidebus_context_log(context, G_LOG_LEVEL_DEBUG, "cannot open %s for %s: %s", host_path, guest_path.c_str(),
                        g_strerror(saved_errno));
    g_set_error(error, SIDEBUS_ERROR, saved_errno == ENOENT ? SIDEBUS_ERROR_NOT_FOUND : SIDEBUS_ERROR_FAILED,
                "the host file of “%s” cannot be opened: %s", quote_for_message(guest_path.c_str()).c_str(),
                g_strerror(saved_errno));
    return std::nullopt;
  }
  struct stat st;
  if (fstat(fd.get(), &st) != 0 || (!S_ISREG(st.st_mode) && !S_ISDIR(st.st_mode))) {
    g_set_error(error, SIDEBUS_ERROR, SIDEBUS_ERROR_NOT_ALLOWED,
                "the host file of “%s” is not a regular file or a folder",
                quote_for_message(guest_path.c_str()).c_str());
    return std::nullopt;
  }
  return HostFile{std::move(fd), host_path, S_ISDIR(st.st_mode)};
}

std::optional<GuestFd> take_guest_fd(GUnixFDList* fd_list, gint32 handle, GError** error) {
  gint n_fds = fd_list != nullptr ? g_unix_fd_list_get_length(fd_list) : 0;
  if (handle < 0 || handle >= n_fds) {
    g_set_error(error, SIDEBUS_ERROR, SIDEBUS_ERROR_INVALID_ARGUMENT,
                "the fd argument (handle %d) names none of the %d file descriptors sent with the call", handle, n_fds);
    return std::nullopt;
  }
  GuestFd guest;
  guest.fd = Fd(g_unix_fd_list_get(fd_list, handle, error));
  if (!guest.fd) return std::nullopt;
  guest.flags = fcntl(guest.fd.get(), F_GETFL);
  if (guest.flags == -1 || fstat(guest.fd.get(), &guest.st) != 0) {
    g_set_error(error, SIDEBUS_ERROR, SIDEBUS_ERROR_INVALID_ARGUMENT, "the file descriptor cannot be inspected: %s",
                g_strerror(errno));
    return std::nullopt;
  }
  if (!S_ISREG(guest.st.st_mode) && !S_ISDIR(guest.st.st_mode)) {
    g_set_error(error, SIDEBUS_ERROR, SIDEBUS_ERROR_NOT_ALLOWED,
                "the file descriptor is a %s; only regular files and folders can be opened",
                describe_file_type(guest.st.st_mode));
    return std::nullopt;
  }
  guest.path = fd_path(guest.fd.get());
  return guest;
}

// ---- CopyStore -------------------------------------------------------------

struct CopyStore::Job {
  CopyStore* store = nullptr;  // only touched when not cancelled
  Fd source;
  Fd target;
  std::string target_path;
  goffset reserved = 0;  // the source's size when the copy started, counted against the total already
  goffset copied = 0;
  Done done;
};

CopyStore::CopyStore(std::string vm_name, Limits limits)
    : vm_name_(std::move(vm_name)), limits_(limits), cancellable_(g_cancellable_new()) {}

CopyStore::~CopyStore() {
  g_cancellable_cancel(cancellable_);
  g_object_unref(cancellable_);
  if (!dir_.empty()) remove_tree(dir_);
}

bool CopyStore::ensure_dir(GError** error) {
  if (!dir_.empty()) return true;
  g_autofree char* name = g_strdup_printf("sidebus-openuri-%s-XXXXXX", safe_vm_name(vm_name_).c_str());
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
  for (;;) {
    if (g_cancellable_is_cancelled(cancellable)) {
      g_task_return_new_error(task, G_IO_ERROR, G_IO_ERROR_CANCELLED, "cancelled");
      return;
    }
    // pread: the guest's file offset is its own business; copy from the start.
    ssize_t n = pread(job->source.get(), buffer.data(), buffer.size(), job->copied);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      g_task_return_new_error(task, SIDEBUS_ERROR, SIDEBUS_ERROR_FAILED, "reading the guest's file failed: %s",
                              g_strerror(errno));
      return;
    }
    if (n == 0) break;
    if (job->copied + n > job->reserved) {
      // What was reserved is what is copied: a file that grows while it is
      // copied could otherwise take more than the limits allow.
      g_task_return_new_error(task, SIDEBUS_ERROR, SIDEBUS_ERROR_FAILED,
                              "the file grew while it was copied (from %" G_GOFFSET_FORMAT " bytes); try again",
                              job->reserved);
      return;
    }
    for (ssize_t written = 0; written < n;) {
      ssize_t w = write(job->target.get(), buffer.data() + written, size_t(n - written));
      if (w < 0 && errno == EINTR) continue;
      if (w < 0) {
        g_task_return_new_error(task, SIDEBUS_ERROR, SIDEBUS_ERROR_FAILED, "writing the host copy failed: %s",
                                g_strerror(errno));
        return;
      }
      written += w;
    }
    job->copied += n;
  }
  job->target.reset();
  g_task_return_boolean(task, TRUE);
}

void CopyStore::copy(GuestFd source, Done done) {
  g_autoptr(GError) error = nullptr;
  if (source.st.st_size > limits_.max_file) {
    g_set_error(&error, SIDEBUS_ERROR, SIDEBUS_ERROR_LIMITS_EXCEEDED,
                "the file is larger than %" G_GOFFSET_FORMAT " bytes, the most copied to the host "
                "(portals.openuri.max_copy_size)",
                limits_.max_file);
  } else if (reserved_total_ + source.st.st_size > limits_.max_total) {
    g_set_error(&error, SIDEBUS_ERROR, SIDEBUS_ERROR_LIMITS_EXCEEDED,
                "this VM's copies on the host already take %" G_GOFFSET_FORMAT " bytes (at most %" G_GOFFSET_FORMAT
                " until it reconnects, portals.openuri.max_copied_total)",
                reserved_total_, limits_.max_total);
  }
  if (error != nullptr || !ensure_dir(&error)) {
    done(std::nullopt, error);
    return;
  }

  auto job = std::make_unique<Job>();
  job->store = this;
  job->done = std::move(done);
  // Reserved before the copy starts, so copies in flight at once can never
  // take more than max_total between them.
  job->reserved = source.st.st_size;
  std::string name = copy_name(source.path, source.st);
  job->source = std::move(source.fd);
  g_autofree char* number = g_strdup_printf("%" G_GUINT64_FORMAT, next_++);
  g_autofree char* copy_dir = g_build_filename(dir_.c_str(), number, nullptr);
  g_autofree char* target_path = g_build_filename(copy_dir, name.c_str(), nullptr);
  // The name is created here, in the main thread, so that the destructor's
  // removal never races a thread creating files.
  if (mkdir(copy_dir, 0700) != 0 ||
      !(job->target = Fd(open(target_path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600)))) {
    g_set_error(&error, SIDEBUS_ERROR, SIDEBUS_ERROR_FAILED, "cannot create the copy on the host: %s",
                g_strerror(errno));
    remove_tree(copy_dir);
    job->done(std::nullopt, error);
    return;
  }
  job->target_path = target_path;
  reserved_total_ += job->reserved;

  g_autoptr(GTask) task = g_task_new(nullptr, cancellable_, on_copied, nullptr);
  g_task_set_task_data(task, job.release(), [](gpointer data) { delete static_cast<Job*>(data); });
  g_task_run_in_thread(task, copy_in_thread);
}

void CopyStore::on_copied(GObject*, GAsyncResult* result, gpointer) {
  GTask* task = G_TASK(result);
  auto* job = static_cast<Job*>(g_task_get_task_data(task));
  if (g_cancellable_is_cancelled(g_task_get_cancellable(task))) return;  // the store is gone, and its files
  g_autoptr(GError) error = nullptr;
  if (!g_task_propagate_boolean(task, &error)) {
    job->store->reserved_total_ -= job->reserved;
    job->store->remove(job->target_path);
    job->done(std::nullopt, error);
    return;
  }
  job->store->reserved_total_ -= job->reserved - job->copied;  // a file may shrink while it is copied
  job->done(job->target_path, nullptr);
}

void CopyStore::remove(const std::string& host_path) {
  if (dir_.empty() || !path_is_inside(host_path, dir_)) return;
  // <dir>/<n>/<name>: remove <dir>/<n>, with whatever the host application left there.
  std::string relative = host_path.substr(dir_.size() + 1);
  std::string number = relative.substr(0, relative.find('/'));
  remove_tree(dir_ + "/" + number);
}

}  // namespace sidebus::openuri
