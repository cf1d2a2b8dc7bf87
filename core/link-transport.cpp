// link-transport.cpp — where guest links come from: parsing --listen and
// --connect addresses, the broker's Listener (unix, vsock, inherited fds,
// systemd socket activation) and the agent's connect_link().
//
// Unix socket permissions: the listening socket keeps the mode the umask gives
// it (the runtime directory and the socket mode are the access control; VMMs
// such as libkrun or crosvm normally run as the broker's user). When a guest
// end runs as another uid on the same host (tests of uid independence, a VMM
// under its own user), say so explicitly with "unix:PATH,mode=0666" (or 0660
// plus a shared group) rather than having the broker open sockets to everyone.
#include <fcntl.h>
#include <gio/gio.h>
#include <glib-unix.h>
#include <linux/vm_sockets.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "link.hpp"

namespace sidebus {

namespace {

// ---- address parsing ----

bool parse_decimal(std::string_view text, uint64_t max, uint64_t* out) {
  if (text.empty() || text.size() > 10 || (text.size() > 1 && text[0] == '0')) return false;
  uint64_t value = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return false;
    value = value * 10 + static_cast<uint64_t>(c - '0');
  }
  if (value > max) return false;
  *out = value;
  return true;
}

bool invalid(GError** error, const std::string& address, const char* reason) {
  g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT, "invalid link address “%s”: %s", address.c_str(), reason);
  return false;
}

bool parse_address(const std::string& address, bool listen, LinkAddress* out, GError** error) {
  const char* usage = listen ? "use unix:PATH[,nofds][,mode=0660], vsock:PORT, fd:N[,nofds] or systemd[,nofds]"
                             : "use unix:PATH[,nofds], vsock:[CID:]PORT or virtio-serial:/dev/virtio-ports/NAME";
  std::string_view text = address;
  size_t comma = text.find(',');
  std::string_view main = text.substr(0, comma);
  LinkAddress result;
  uint64_t number = 0;

  if (main.substr(0, 5) == "unix:") {
    result.kind = LinkAddress::Kind::Unix;
    result.path = std::string(main.substr(5));
    if (result.path.empty()) return invalid(error, address, "empty socket path");
    if (result.path.size() >= sizeof(sockaddr_un::sun_path))
      return invalid(error, address, "socket path too long for a unix socket (107 bytes at most): use a shorter path");
    if (result.path.find('\0') != std::string::npos) return invalid(error, address, "NUL byte in the path");
  } else if (main.substr(0, 6) == "vsock:") {
    result.kind = LinkAddress::Kind::Vsock;
    std::string_view rest = main.substr(6);
    size_t colon = rest.find(':');
    if (colon != std::string_view::npos) {
      if (listen)
        return invalid(error, address, "a listening vsock takes only a port (it listens on every CID): use vsock:PORT");
      if (!parse_decimal(rest.substr(0, colon), UINT32_MAX - 1, &number))
        return invalid(error, address, "the CID is not a decimal number below 4294967295");
      result.cid = static_cast<uint32_t>(number);
      rest = rest.substr(colon + 1);
    }
    if (!parse_decimal(rest, UINT32_MAX - 1, &number))
      return invalid(error, address, "the port is not a decimal number below 4294967295");
    result.port = static_cast<uint32_t>(number);
  } else if (main.substr(0, 3) == "fd:" && listen) {
    result.kind = LinkAddress::Kind::Fd;
    if (!parse_decimal(main.substr(3), INT32_MAX, &number))
      return invalid(error, address, "the fd is not a decimal number");
    result.fd = static_cast<int>(number);
  } else if (main == "systemd" && listen) {
    result.kind = LinkAddress::Kind::Systemd;
  } else if (main.substr(0, 14) == "virtio-serial:" && !listen) {
    result.kind = LinkAddress::Kind::VirtioSerial;
    result.path = std::string(main.substr(14));
    if (result.path.empty()) return invalid(error, address, "empty device path");
  } else {
    g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT, "unknown link address “%s”: %s", address.c_str(),
                usage);
    return false;
  }

  // Options after the first comma (so paths cannot contain commas).
  bool seen_nofds = false, seen_mode = false;
  while (comma != std::string_view::npos) {
    size_t next = text.find(',', comma + 1);
    std::string_view option = text.substr(comma + 1, next == std::string_view::npos ? next : next - comma - 1);
    comma = next;
    bool fd_capable = result.kind == LinkAddress::Kind::Unix || result.kind == LinkAddress::Kind::Fd ||
                      result.kind == LinkAddress::Kind::Systemd;
    if (option == "nofds" && fd_capable) {
      if (seen_nofds) return invalid(error, address, "nofds given twice");
      seen_nofds = true;
      result.nofds = true;
    } else if (option.substr(0, 5) == "mode=" && listen && result.kind == LinkAddress::Kind::Unix) {
      if (seen_mode) return invalid(error, address, "mode given twice");
      seen_mode = true;
      std::string_view digits = option.substr(5);
      if (digits.empty() || digits.size() > 4 || digits.find_first_not_of("01234567") != std::string_view::npos)
        return invalid(error, address, "mode must be octal, e.g. mode=0660");
      result.mode = static_cast<int>(std::stoi(std::string(digits), nullptr, 8));
      if (result.mode > 0777) return invalid(error, address, "mode must be at most 0777");
    } else {
      g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                  "invalid link address “%s”: unknown or misplaced option “%.*s” (paths cannot contain ','); %s",
                  address.c_str(), static_cast<int>(option.size()), option.data(), usage);
      return false;
    }
  }
  *out = std::move(result);
  return true;
}

// "cannot listen on “unix:/x”: Permission denied; <hint>"
GError* errno_error(int saved, const char* doing, const std::string& address, const char* hint) {
  return g_error_new(G_IO_ERROR, g_io_error_from_errno(saved), "%s “%s”: %s%s", doing, address.c_str(),
                     g_strerror(saved), hint);
}

struct sockaddr_un unix_address(const std::string& path) {
  struct sockaddr_un address = {};
  address.sun_family = AF_UNIX;
  memcpy(address.sun_path, path.c_str(), path.size());  // length checked by the parser
  return address;
}

bool is_unix_socket(int fd) {
  struct sockaddr_storage address = {};
  socklen_t length = sizeof address;
  return getsockname(fd, reinterpret_cast<struct sockaddr*>(&address), &length) == 0 && address.ss_family == AF_UNIX;
}

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

  explicit ListenerImpl(AcceptFunc on_accept) : on_accept_(std::move(on_accept)) {}

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
    return invalid(error, address, "not a listen address");
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
          error, errno_error(errno, "cannot listen on", address, "; check that the directory exists and is writable"));
      return false;
    }
    auto socket = std::make_unique<Socket>();
    socket->unlink_path = path;
    if (stat(path.c_str(), &st) == 0) {
      socket->dev = st.st_dev;
      socket->ino = st.st_ino;
    }
    if ((parsed.mode >= 0 && chmod(path.c_str(), static_cast<mode_t>(parsed.mode)) != 0) || listen(fd.get(), 16) != 0) {
      g_propagate_error(error, errno_error(errno, "cannot listen on", address, ""));
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
      g_propagate_error(error, errno_error(errno, "cannot listen on", address,
                                           " (is the vhost_vsock module loaded? modprobe vhost_vsock)"));
      return false;
    }
    struct sockaddr_vm svm = {};
    svm.svm_family = AF_VSOCK;
    svm.svm_cid = VMADDR_CID_ANY;
    svm.svm_port = parsed.port;
    if (bind(fd.get(), reinterpret_cast<struct sockaddr*>(&svm), sizeof svm) != 0 || listen(fd.get(), 16) != 0) {
      g_propagate_error(
          error, errno_error(errno, "cannot listen on", address, " (is another process using this vsock port?)"));
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
      pending->source = g_idle_add(
          [](gpointer data) -> gboolean {
            auto* pending = static_cast<PendingLink*>(data);
            pending->source = 0;
            pending->owner->on_accept_(std::move(pending->fd), pending->carries_fds, pending->transport);
            return G_SOURCE_REMOVE;
          },
          pending.get());
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
    socket->source = g_unix_fd_add(socket->fd.get(), G_IO_IN, on_ready, socket.get());
    sockets_.push_back(std::move(socket));
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
  std::vector<std::unique_ptr<Socket>> sockets_;
  std::vector<std::unique_ptr<PendingLink>> pending_;
};

}  // namespace

bool parse_listen_address(const std::string& address, LinkAddress* out, GError** error) {
  return parse_address(address, true, out, error);
}

bool parse_connect_address(const std::string& address, LinkAddress* out, GError** error) {
  return parse_address(address, false, out, error);
}

std::unique_ptr<Listener> Listener::create(const std::vector<std::string>& addresses, AcceptFunc on_accept,
                                           GError** error) {
  if (addresses.empty()) {
    g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                "no link address to listen on: pass --listen unix:PATH, vsock:PORT, fd:N or systemd");
    return nullptr;
  }
  auto listener = std::make_unique<ListenerImpl>(std::move(on_accept));
  for (const auto& address : addresses)
    if (!listener->add(address, error)) return nullptr;
  return listener;
}

UniqueFd connect_link(const std::string& address, bool* carries_fds, GError** error) {
  LinkAddress parsed;
  if (!parse_connect_address(address, &parsed, error)) return {};
  *carries_fds = false;
  switch (parsed.kind) {
    case LinkAddress::Kind::Unix: {
      UniqueFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
      struct sockaddr_un sun = unix_address(parsed.path);
      if (!fd || connect(fd.get(), reinterpret_cast<struct sockaddr*>(&sun), sizeof sun) != 0) {
        g_propagate_error(error, errno_error(errno, "cannot connect to the broker at", address,
                                             "; is sidebus-broker listening there?"));
        return {};
      }
      *carries_fds = !parsed.nofds;
      return fd;
    }
    case LinkAddress::Kind::Vsock: {
      UniqueFd fd(socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0));
      struct sockaddr_vm svm = {};
      svm.svm_family = AF_VSOCK;
      svm.svm_cid = parsed.cid;
      svm.svm_port = parsed.port;
      if (!fd || connect(fd.get(), reinterpret_cast<struct sockaddr*>(&svm), sizeof svm) != 0) {
        g_propagate_error(error, errno_error(errno, "cannot connect to the broker at", address,
                                             "; does the VM have a vsock device, and is sidebus-broker listening on "
                                             "that port on the host?"));
        return {};
      }
      return fd;
    }
    case LinkAddress::Kind::VirtioSerial: {
      UniqueFd fd(open(parsed.path.c_str(), O_RDWR | O_CLOEXEC | O_NOCTTY));
      if (!fd) {
        g_propagate_error(error, errno_error(errno, "cannot open the link", address,
                                             "; does the VM have a virtserialport with that name?"));
        return {};
      }
      return fd;
    }
    case LinkAddress::Kind::Fd:
    case LinkAddress::Kind::Systemd:
      break;
  }
  invalid(error, address, "not a connect address");
  return {};
}

}  // namespace sidebus
