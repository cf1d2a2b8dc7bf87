// guest-file.cpp — guest fds inspected and documents turned into host files
// (see guest-file.hpp).
//
// What reaches the guest in errors names only guest-side paths: the host's
// directory layout is none of the VM's business, so host paths only appear
// in the broker's debug log.
#include "guest-file.hpp"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <gio/gunixfdlist.h>
#include <stdlib.h>
#include <unistd.h>

#include <cstring>

#include "uri-policy.hpp"

namespace sidebus::common {
namespace {

constexpr int kMaxRemoveDepth = 16;

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

// "regular files and folders can be opened", for the refusal of other kinds.
std::string describe_kinds(unsigned kinds) {
  if (kinds == (kRegularFiles | kDirectories)) return "regular files and folders can be opened";
  if (kinds == kRegularFiles) return "regular files can be used";
  if (kinds == (kRegularFiles | kStreams)) return "regular files, pipes and sockets can be read";
  std::string what;
  if (kinds & kRegularFiles) what += "regular files";
  if (kinds & kDirectories) what += std::string(what.empty() ? "" : ", ") + "folders";
  if (kinds & kStreams) what += std::string(what.empty() ? "" : ", ") + "pipes, sockets";
  return (what.empty() ? std::string("no file descriptors") : what) + " can be used";
}

bool is_accepted(mode_t mode, unsigned kinds) {
  if (S_ISREG(mode)) return kinds & kRegularFiles;
  if (S_ISDIR(mode)) return kinds & kDirectories;
  if (S_ISFIFO(mode) || S_ISSOCK(mode)) return kinds & kStreams;
  return false;
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

std::string GuestFd::shown() const {
  if (!path.empty()) return quote_for_message(path.c_str());
  if (is_stream()) return std::string("(a ") + describe_file_type(st.st_mode) + ")";
  return "(a file without a path)";
}

std::optional<HostFile> open_document(SidebusContext* context, const std::string& guest_path, GError** error) {
  g_autofree char* host_path = sidebus_context_guest_path_to_host_path(context, guest_path.c_str(), error);
  if (host_path == nullptr) return std::nullopt;
  // O_NONBLOCK: never hang on a FIFO that took a document's place; the host
  // portal only looks at the fd (fstat, /proc/self/fd), its backend reads it.
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
  // Readers of the host file (a print backend, a mail composer) expect a
  // blocking fd.
  int flags = fcntl(fd.get(), F_GETFL);
  if (flags != -1) fcntl(fd.get(), F_SETFL, flags & ~O_NONBLOCK);
  return HostFile{std::move(fd), host_path, S_ISDIR(st.st_mode)};
}

std::optional<std::string> document_path_for(SidebusContext* context, const std::string& fd_path) {
  const char* documents = sidebus_context_get_guest_documents_path(context);
  if (*documents == '\0' || fd_path.empty()) return std::nullopt;
  if (path_is_inside(fd_path, documents)) return fd_path;
  char* resolved = realpath(documents, nullptr);
  if (resolved == nullptr) return std::nullopt;  // not on this machine: a VM's own path
  std::string real = resolved;
  free(resolved);
  if (real == documents || !path_is_inside(fd_path, real)) return std::nullopt;
  std::string base = documents;
  while (base.size() > 1 && base.back() == '/') base.pop_back();
  return base + fd_path.substr(real.size());
}

std::optional<GuestFd> take_guest_fd(GUnixFDList* fd_list, gint32 handle, unsigned kinds, GError** error) {
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
  if (!is_accepted(guest.st.st_mode, kinds)) {
    g_set_error(error, SIDEBUS_ERROR, SIDEBUS_ERROR_NOT_ALLOWED, "the file descriptor is a %s; only %s",
                describe_file_type(guest.st.st_mode), describe_kinds(kinds).c_str());
    return std::nullopt;
  }
  guest.path = fd_path(guest.fd.get());
  return guest;
}

void remove_tree(const std::string& path) {
  g_autofree char* parent = g_path_get_dirname(path.c_str());
  g_autofree char* name = g_path_get_basename(path.c_str());
  int parent_fd = open(parent, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (parent_fd < 0) return;
  remove_tree_at(parent_fd, name, 0);
  close(parent_fd);
}

std::string safe_vm_name(const std::string& vm_name) {
  std::string safe;
  for (char c : vm_name.substr(0, 64)) safe += g_ascii_isalnum(c) || c == '-' || c == '_' || c == '.' ? c : '_';
  if (safe == "." || safe == "..") safe = "vm";
  return safe.empty() ? "vm" : safe;
}

}  // namespace sidebus::common
