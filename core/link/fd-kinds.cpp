// SPDX-License-Identifier: LGPL-2.1-or-later
// fd-kinds.cpp — see fd-kinds.hpp.
//
// Why pipes are reopened: an fd received with SCM_RIGHTS shares its open
// file description with the application that sent it, flags included, so
// setting O_NONBLOCK on it would change the application's own fd.
// open("/proc/self/fd/N") of a pipe opens the pipe afresh: a description of
// our own, non-blocking, for the same pipe.
#include "link/fd-kinds.hpp"

#include <fcntl.h>
#include <glib.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstring>

namespace sidebus {

namespace {

constexpr int kPipeSize = 1024 * 1024;  // what an unprivileged process may ask for (fs.pipe-max-size)

std::string proc_path(int fd) { return "/proc/self/fd/" + std::to_string(fd); }

std::string link_target(int fd) {
  char buffer[PATH_MAX + 1];
  ssize_t n = readlink(proc_path(fd).c_str(), buffer, PATH_MAX);
  if (n <= 0) return {};
  return std::string(buffer, size_t(n));
}

// @path relative to @base when it lies strictly inside it, else nullopt.
std::optional<std::string> inside(const std::string& path, std::string base) {
  while (base.size() > 1 && base.back() == '/') base.pop_back();
  if (base.empty() || base == "/") return std::nullopt;
  if (path.size() <= base.size() + 1 || path.compare(0, base.size(), base) != 0 || path[base.size()] != '/')
    return std::nullopt;
  return path.substr(base.size() + 1);
}

// The name to give a copy of the file at @path: its own, as the kernel shows
// it ("/a/b.txt", "/a/b.txt (deleted)", "/memfd:b.txt (deleted)").
std::string content_name(const std::string& path) {
  std::string name = path.substr(path.rfind('/') == std::string::npos ? 0 : path.rfind('/') + 1);
  const std::string deleted = " (deleted)";
  if (name.size() > deleted.size() && name.compare(name.size() - deleted.size(), deleted.size(), deleted) == 0)
    name.resize(name.size() - deleted.size());
  if (path.rfind("/memfd:", 0) == 0) name = name.substr(strlen("memfd:"));
  if (name.size() > wire::kMaxFileNameLength || !wire::is_valid_file_name(name) ||
      !g_utf8_validate(name.data(), gssize(name.size()), nullptr))
    return "";
  return name;
}

ClassifiedFd refused(std::string why) {
  ClassifiedFd result;
  result.why = std::move(why);
  return result;
}

}  // namespace

std::string describe_fd(int fd, const struct stat& st) {
  switch (st.st_mode & S_IFMT) {
    case S_IFREG:
      return "a regular file";
    case S_IFDIR:
      return "a directory";
    case S_IFIFO:
      return "a pipe";
    case S_IFSOCK:
      return "a socket";
    case S_IFCHR:
      return "a character device";
    case S_IFBLK:
      return "a block device";
    case S_IFLNK:
      return "a symbolic link";
  }
  // anon_inode:[eventfd], anon_inode:[timerfd], anon_inode:[pidfd], …
  std::string target = link_target(fd);
  if (target.rfind("anon_inode:", 0) == 0) {
    std::string what = target.substr(strlen("anon_inode:"));
    if (what.size() > 2 && what.front() == '[' && what.back() == ']') what = what.substr(1, what.size() - 2);
    bool valid = !what.empty() && what.size() < 32;
    for (char c : what) valid = valid && (g_ascii_isalnum(c) || c == '_' || c == '-' || c == ' ');
    if (valid) return (what[0] == 'e' || what[0] == 'i' ? "an " : "a ") + what;
  }
  return "a special file";
}

ClassifiedFd classify_fd(UniqueFd fd, const std::string& documents_path) {
  struct stat st;
  int flags = fcntl(fd.get(), F_GETFL);
  if (flags < 0 || fstat(fd.get(), &st) != 0) return refused("a file descriptor that cannot be inspected");
  const bool opath = (flags & O_PATH) == O_PATH;
  const int mode = flags & O_ACCMODE;

  if (S_ISREG(st.st_mode) || S_ISDIR(st.st_mode)) {
    std::string path = link_target(fd.get());
    std::optional<std::string> relative;
    if (!documents_path.empty() && !path.empty() && path[0] == '/') {
      relative = inside(path, documents_path);
      if (!relative) {
        // A documents path that is a symlink shows up resolved.
        if (char* real = realpath(documents_path.c_str(), nullptr)) {
          relative = inside(path, real);
          free(real);
        }
      }
    }
    if (relative) {
      size_t slash = relative->find('/');
      wire::DocumentRecord document;
      document.access = opath                ? wire::FdAccess::Path
                        : mode == O_RDWR     ? wire::FdAccess::ReadWrite
                        : mode == O_WRONLY   ? wire::FdAccess::WriteOnly
                                             : wire::FdAccess::ReadOnly;
      document.doc_id = relative->substr(0, slash);
      document.path = slash == std::string::npos ? "" : relative->substr(slash + 1);
      if (!wire::is_valid_document_id(document.doc_id) || !wire::is_valid_document_path(document.path))
        return refused(std::string(S_ISDIR(st.st_mode) ? "a directory" : "a file") +
                       " in the documents directory that is not inside a document");
      ClassifiedFd result;
      result.kind = ClassifiedFd::Kind::Document;
      result.record = std::move(document);
      return result;
    }
    if (S_ISDIR(st.st_mode)) return refused("a directory outside the VM's documents");
    ClassifiedFd result;
    result.kind = ClassifiedFd::Kind::Content;
    if (opath || mode == O_WRONLY) {
      // Read with this process's own rights.
      result.local = UniqueFd(open(proc_path(fd.get()).c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK));
      if (!result.local) return refused(std::string("a file this end cannot read (") + g_strerror(errno) + ")");
    } else {
      result.local = std::move(fd);
    }
    result.size = uint64_t(st.st_size);
    result.record = wire::ContentRecord{0, result.size, content_name(path)};
    return result;
  }

  if (S_ISFIFO(st.st_mode)) {
    if (opath) return refused("an O_PATH pipe");
    if (mode == O_RDWR) return refused("a pipe opened for reading and writing");
    ClassifiedFd result;
    result.kind = ClassifiedFd::Kind::Pipe;
    bool reads = mode == O_RDONLY;
    result.record = wire::StreamRecord{0, wire::StreamObject::Pipe, reads ? wire::kToReceiver : wire::kToAnnouncer};
    result.local = UniqueFd(open(proc_path(fd.get()).c_str(), (reads ? O_RDONLY : O_WRONLY) | O_NONBLOCK | O_CLOEXEC));
    if (!result.local) {
      if (!reads && errno == ENXIO) {
        result.writer_gone = true;  // no reader left: what comes is dropped
      } else {
        return refused(std::string("a pipe this end cannot open (") + g_strerror(errno) + ")");
      }
    } else {
      (void)fcntl(result.local.get(), F_SETPIPE_SZ, kPipeSize);
    }
    return result;
  }

  if (S_ISSOCK(st.st_mode)) {
    int type = 0, listening = 0;
    socklen_t length = sizeof type;
    if (getsockopt(fd.get(), SOL_SOCKET, SO_TYPE, &type, &length) != 0) return refused("a socket that cannot be inspected");
    if (type != SOCK_STREAM) return refused(type == SOCK_DGRAM ? "a datagram socket" : "a socket that is not a stream");
    length = sizeof listening;
    if (getsockopt(fd.get(), SOL_SOCKET, SO_ACCEPTCONN, &listening, &length) == 0 && listening)
      return refused("a listening socket");
    ClassifiedFd result;
    result.kind = ClassifiedFd::Kind::Socket;
    result.record = wire::StreamRecord{0, wire::StreamObject::Socket, wire::kToReceiver | wire::kToAnnouncer};
    result.local = std::move(fd);
    return result;
  }

  return refused(describe_fd(fd.get(), st));
}

bool make_stream_ends(const wire::StreamRecord& record, UniqueFd* app, UniqueFd* ours) {
  int pair[2];
  if (record.object == wire::StreamObject::Socket) {
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0) return false;
    *app = UniqueFd(pair[0]);
    *ours = UniqueFd(pair[1]);
  } else {
    if (pipe2(pair, O_CLOEXEC) != 0) return false;
    (void)fcntl(pair[0], F_SETPIPE_SZ, kPipeSize);
    // kToReceiver: the announcer's app writes, ours is the write end of this pipe.
    bool app_reads = record.directions == wire::kToReceiver;
    *app = UniqueFd(app_reads ? pair[0] : pair[1]);
    *ours = UniqueFd(app_reads ? pair[1] : pair[0]);
  }
  if (fcntl(ours->get(), F_SETFL, fcntl(ours->get(), F_GETFL) | O_NONBLOCK) != 0) return false;
  return true;
}

UniqueFd make_content_file(const std::string& name) {
  return UniqueFd(memfd_create(name.empty() ? "sidebus-copy" : name.c_str(), MFD_CLOEXEC | MFD_ALLOW_SEALING));
}

UniqueFd seal_content_file(UniqueFd memfd) {
  if (fcntl(memfd.get(), F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL) != 0) return {};
  return UniqueFd(open(proc_path(memfd.get()).c_str(), O_RDONLY | O_CLOEXEC));
}

}  // namespace sidebus
