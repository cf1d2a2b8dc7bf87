// SPDX-License-Identifier: LGPL-2.1-or-later
// listener.cpp — the broker's Listener: where guest links arrive (unix, vsock,
// inherited fds, systemd socket activation); see listener.hpp.
//
// Unix socket permissions: the listening socket keeps the mode the umask gives
// it (the runtime directory and the socket mode are the access control; VMMs
// such as libkrun or crosvm normally run as the broker's user). When a guest
// end runs as another uid on the same host (tests of uid independence, a VMM
// under its own user), say so explicitly with "unix:PATH,mode=0666" (or 0660
// plus a shared group) rather than having the broker open sockets to everyone.
#include "link/listener.hpp"

#include <fcntl.h>
#include <glib-unix.h>
#include <linux/vm_sockets.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "link/address.hpp"
#include "util/socket.hpp"

namespace sidebus {

namespace {

// ---- the listener ----

class ListenerImpl : public Listener {
 public:
  struct Socket {
    ListenerImpl* owner = nullptr;
    UniqueFd fd;
    bool carries_fds = false;
    std::string transport;
    bool is_vsock = false;
    guint source = 0;         // g_unix_fd_add watch, or the pause timeout
    std::string unlink_path;  // unix socket file we created
    dev_t dev = 0;
    ino_t ino = 0;
  };
  struct PendingLink {  // fd:N that already is a connection
    ListenerImpl* owner = nullptr;
    UniqueFd fd;
    bool carries_fds = false;
    std::string transport;
    guint source = 0;
  };

  ListenerImpl(AcceptFunc on_accept, bool paused) : on_accept_(std::move(on_accept)), accepting_(!paused) {}

  void start_accepting() override {
    if (accepting_) return;
    accepting_ = true;
    for (auto& socket : sockets_) socket->source = g_unix_fd_add(socket->fd.get(), G_IO_IN, on_ready, socket.get());
    for (auto& pending : pending_) schedule(pending.get());
  }

  ~ListenerImpl() override {
    for (auto& socket : sockets_) {
      if (socket->source) g_source_remove(socket->source);
      struct stat st;
      if (!socket->unlink_path.empty() && stat(socket->unlink_path.c_str(), &st) == 0 && st.st_dev == socket->dev &&
          st.st_ino == socket->ino)
        unlink(socket->unlink_path.c_str());
    }
    for (auto& pending : pending_)
      if (pending->source) g_source_remove(pending->source);
  }

  bool add(const std::string& address, GError** error) {
    LinkAddress parsed;
    if (!parse_listen_address(address, &parsed, error)) return false;
    switch (parsed.kind) {
      case LinkAddress::Kind::Unix:
        return add_unix(address, parsed, error);
      case LinkAddress::Kind::Vsock:
        return add_vsock(address, parsed, error);
      case LinkAddress::Kind::Fd:
        return add_fd(parsed.fd, !parsed.nofds, address, "fd:" + std::to_string(parsed.fd), error);
      case LinkAddress::Kind::Systemd:
        return add_systemd(address, !parsed.nofds, error);
      case LinkAddress::Kind::VirtioSerial:
        break;
    }
    return invalid_address(error, address, "not a listen address");
  }

 private:
  bool add_unix(const std::string& address, const LinkAddress& parsed, GError** error) {
    const std::string& path = parsed.path;
    struct sockaddr_un sun = unix_address(path);
    struct stat st;
    if (lstat(path.c_str(), &st) == 0) {
      if (!S_ISSOCK(st.st_mode)) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_EXISTS,
                    "cannot listen on “%s”: the path exists and is not a socket; remove it or choose another path",
                    address.c_str());
        return false;
      }
      // A socket someone still answers on is not stale.
      UniqueFd probe(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
      if (probe && connect(probe.get(), reinterpret_cast<struct sockaddr*>(&sun), sizeof sun) == 0) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_ADDRESS_IN_USE,
                    "cannot listen on “%s”: another process is listening there (a second sidebus-broker for this "
                    "VM?)",
                    address.c_str());
        return false;
      }
      unlink(path.c_str());
    }
    UniqueFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (!fd || bind(fd.get(), reinterpret_cast<struct sockaddr*>(&sun), sizeof sun) != 0) {
      g_propagate_error(
          error, address_errno_error(errno, "cannot listen on", address, "; check that the directory exists and is writable"));
      return false;
    }
    auto socket = std::make_unique<Socket>();
    socket->unlink_path = path;
    if (stat(path.c_str(), &st) == 0) {
      socket->dev = st.st_dev;
      socket->ino = st.st_ino;
    }
    if ((parsed.mode >= 0 && chmod(path.c_str(), static_cast<mode_t>(parsed.mode)) != 0) || listen(fd.get(), 16) != 0) {
      g_propagate_error(error, address_errno_error(errno, "cannot listen on", address, ""));
      unlink(path.c_str());
      return false;
    }
    socket->fd = std::move(fd);
    socket->carries_fds = !parsed.nofds;
    socket->transport = "unix:" + path;
    watch(std::move(socket));
    return true;
  }

  bool add_vsock(const std::string& address, const LinkAddress& parsed, GError** error) {
    UniqueFd fd(socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (!fd) {
      g_propagate_error(error, address_errno_error(errno, "cannot listen on", address,
                                           " (is the vhost_vsock module loaded? modprobe vhost_vsock)"));
      return false;
    }
    struct sockaddr_vm svm = {};
    svm.svm_family = AF_VSOCK;
    svm.svm_cid = VMADDR_CID_ANY;
    svm.svm_port = parsed.port;
    if (bind(fd.get(), reinterpret_cast<struct sockaddr*>(&svm), sizeof svm) != 0 || listen(fd.get(), 16) != 0) {
      g_propagate_error(
          error, address_errno_error(errno, "cannot listen on", address, " (is another process using this vsock port?)"));
      return false;
    }
    auto socket = std::make_unique<Socket>();
    socket->fd = std::move(fd);
    socket->transport = "vsock:" + std::to_string(parsed.port);
    socket->is_vsock = true;
    watch(std::move(socket));
    return true;
  }

  // Takes ownership of an inherited socket: listening → watch it; connected →
  // one link, handed over from an idle callback (after create() returned).
  bool add_fd(int raw_fd, bool carries_fds, const std::string& address, std::string transport, GError** error) {
    struct stat st;
    if (fcntl(raw_fd, F_GETFD) < 0 || fstat(raw_fd, &st) != 0) {
      g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                  "cannot listen on “%s”: fd %d is not open (did the parent process pass it?)", address.c_str(),
                  raw_fd);
      return false;
    }
    if (!S_ISSOCK(st.st_mode)) {
      g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT, "cannot listen on “%s”: fd %d is not a socket",
                  address.c_str(), raw_fd);
      return false;
    }
    UniqueFd fd(raw_fd);
    fcntl(raw_fd, F_SETFD, FD_CLOEXEC);
    carries_fds = carries_fds && is_unix_socket(raw_fd);
    int accepting = 0;
    socklen_t length = sizeof accepting;
    if (getsockopt(raw_fd, SOL_SOCKET, SO_ACCEPTCONN, &accepting, &length) != 0) accepting = 0;
    if (!accepting) {
      auto pending = std::make_unique<PendingLink>();
      pending->owner = this;
      pending->fd = std::move(fd);
      pending->carries_fds = carries_fds;
      pending->transport = std::move(transport);
      if (accepting_) schedule(pending.get());
      pending_.push_back(std::move(pending));
      return true;
    }
    fcntl(raw_fd, F_SETFL, fcntl(raw_fd, F_GETFL) | O_NONBLOCK);
    auto socket = std::make_unique<Socket>();
    socket->fd = std::move(fd);
    socket->carries_fds = carries_fds;
    socket->transport = std::move(transport);
    struct sockaddr_storage sa = {};
    socklen_t sa_length = sizeof sa;
    socket->is_vsock =
        getsockname(raw_fd, reinterpret_cast<struct sockaddr*>(&sa), &sa_length) == 0 && sa.ss_family == AF_VSOCK;
    watch(std::move(socket));
    return true;
  }

  // The sd_listen_fds() protocol: LISTEN_PID must be us, fds start at 3.
  bool add_systemd(const std::string& address, bool carries_fds, GError** error) {
    const char* pid = g_getenv("LISTEN_PID");
    const char* count = g_getenv("LISTEN_FDS");
    uint64_t listen_pid = 0, listen_fds = 0;
    if (!pid || !count || !parse_decimal(pid, INT32_MAX, &listen_pid) || !parse_decimal(count, 4096, &listen_fds) ||
        listen_pid != static_cast<uint64_t>(getpid()) || listen_fds == 0) {
      g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                  "cannot listen on “%s”: no sockets passed by systemd (LISTEN_PID/LISTEN_FDS unset or not for this "
                  "process); start sidebus-broker from a socket unit or use another --listen address",
                  address.c_str());
      return false;
    }
    g_unsetenv("LISTEN_PID");
    g_unsetenv("LISTEN_FDS");
    g_unsetenv("LISTEN_FDNAMES");
    for (int fd = 3; fd < 3 + static_cast<int>(listen_fds); fd++)
      if (!add_fd(fd, carries_fds, address, "systemd:fd" + std::to_string(fd), error)) return false;
    return true;
  }

  void watch(std::unique_ptr<Socket> socket) {
    socket->owner = this;
    if (accepting_) socket->source = g_unix_fd_add(socket->fd.get(), G_IO_IN, on_ready, socket.get());
    sockets_.push_back(std::move(socket));
  }

  // A connected fd:N is handed over from an idle callback (never inside
  // create() or start_accepting()).
  void schedule(PendingLink* pending) {
    pending->source = g_idle_add(
        [](gpointer data) -> gboolean {
          auto* pending = static_cast<PendingLink*>(data);
          pending->source = 0;
          pending->owner->on_accept_(std::move(pending->fd), pending->carries_fds, pending->transport);
          return G_SOURCE_REMOVE;
        },
        pending);
  }

  static gboolean on_ready(int fd, GIOCondition, gpointer data) {
    auto* socket = static_cast<Socket*>(data);
    struct sockaddr_storage peer = {};
    socklen_t length = sizeof peer;
    int link = accept4(fd, reinterpret_cast<struct sockaddr*>(&peer), &length, SOCK_CLOEXEC);
    if (link < 0) {
      int saved = errno;
      if (saved == EAGAIN || saved == EINTR || saved == ECONNABORTED) return G_SOURCE_CONTINUE;
      // Out of fds or memory: pause for a second instead of spinning.
      g_warning("accepting a link on %s failed: %s; pausing for a second", socket->transport.c_str(),
                g_strerror(saved));
      socket->source = g_timeout_add_seconds(
          1,
          [](gpointer data) -> gboolean {
            auto* socket = static_cast<Socket*>(data);
            socket->source = g_unix_fd_add(socket->fd.get(), G_IO_IN, on_ready, socket);
            return G_SOURCE_REMOVE;
          },
          socket);
      return G_SOURCE_REMOVE;
    }
    std::string transport = socket->transport;
    if (socket->is_vsock && peer.ss_family == AF_VSOCK)
      transport += " from cid " + std::to_string(reinterpret_cast<struct sockaddr_vm*>(&peer)->svm_cid);
    socket->owner->on_accept_(UniqueFd(link), socket->carries_fds, transport);
    return G_SOURCE_CONTINUE;
  }

  AcceptFunc on_accept_;
  bool accepting_;
  std::vector<std::unique_ptr<Socket>> sockets_;
  std::vector<std::unique_ptr<PendingLink>> pending_;
};

}  // namespace

std::unique_ptr<Listener> Listener::create(const std::vector<std::string>& addresses, AcceptFunc on_accept,
                                           GError** error, bool paused) {
  if (addresses.empty()) {
    g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                "no link address to listen on: pass --listen unix:PATH, vsock:PORT, fd:N or systemd");
    return nullptr;
  }
  auto listener = std::make_unique<ListenerImpl>(std::move(on_accept), paused);
  for (const auto& address : addresses)
    if (!listener->add(address, error)) return nullptr;
  return listener;
}

}  // namespace sidebus
