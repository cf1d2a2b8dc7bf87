// SPDX-License-Identifier: LGPL-2.1-or-later
// control-socket.cpp — see control-socket.hpp. Each connection is a small
// state machine on the main loop: reading the request line, then writing
// the reply, then closed; a timeout bounds the whole of it.
#include "broker/control-socket.hpp"

#include <glib-unix.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <list>

#include "util/socket.hpp"
#include "util/unique-fd.hpp"

namespace sidebus {

namespace {

class ControlSocketImpl;

struct Client {
  ControlSocketImpl* owner = nullptr;
  UniqueFd fd;
  std::string in;
  std::string out;
  size_t written = 0;
  guint io_source = 0;
  guint timeout_source = 0;

  ~Client() {
    if (io_source != 0) g_source_remove(io_source);
    if (timeout_source != 0) g_source_remove(timeout_source);
  }
};

std::string reply_line(JsonNode* members, const GError* error) {
  g_autoptr(JsonBuilder) builder = json_builder_new();
  json_builder_begin_object(builder);
  json_builder_set_member_name(builder, "ok");
  json_builder_add_boolean_value(builder, error == nullptr);
  if (error != nullptr) {
    json_builder_set_member_name(builder, "error");
    json_builder_add_string_value(builder, error->message);
  } else if (members != nullptr && JSON_NODE_HOLDS_OBJECT(members)) {
    JsonObjectIter iter;
    const char* key;
    JsonNode* value;
    json_object_iter_init_ordered(&iter, json_node_get_object(members));
    while (json_object_iter_next_ordered(&iter, &key, &value)) {
      json_builder_set_member_name(builder, key);
      json_builder_add_value(builder, json_node_copy(value));
    }
  }
  json_builder_end_object(builder);
  g_autoptr(JsonNode) root = json_builder_get_root(builder);
  g_autofree char* text = json_to_string(root, FALSE);
  return std::string(text) + "\n";
}

class ControlSocketImpl : public ControlSocket {
 public:
  ControlSocketImpl(std::string path, Handler handler) : path_(std::move(path)), handler_(std::move(handler)) {}

  ~ControlSocketImpl() override {
    clients_.clear();
    if (source_ != 0) g_source_remove(source_);
    struct stat st;
    if (fd_ && stat(path_.c_str(), &st) == 0 && st.st_dev == dev_ && st.st_ino == ino_) unlink(path_.c_str());
  }

  bool bind_socket(GError** error) {
    struct sockaddr_un address = unix_address(path_);
    if (path_.size() >= sizeof address.sun_path) {
      g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                  "the control socket %s is longer than a unix socket path may be (%zu bytes); choose a shorter "
                  "--runtime-dir",
                  path_.c_str(), sizeof address.sun_path - 1);
      return false;
    }
    struct stat st;
    if (lstat(path_.c_str(), &st) == 0) {
      if (!S_ISSOCK(st.st_mode)) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_EXISTS,
                    "%s exists and is not a socket; remove it or choose another --runtime-dir", path_.c_str());
        return false;
      }
      UniqueFd probe(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
      if (probe && connect(probe.get(), reinterpret_cast<struct sockaddr*>(&address), sizeof address) == 0) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_ADDRESS_IN_USE,
                    "another sidebus-broker answers on %s: one broker per VM and runtime directory (stop it first, "
                    "or give this one another --runtime-dir)",
                    path_.c_str());
        return false;
      }
      unlink(path_.c_str());  // left by a broker that was killed
    }
    fd_.reset(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    mode_t old_umask = umask(0177);  // 0600 from the first moment on
    int bound = fd_ ? bind(fd_.get(), reinterpret_cast<struct sockaddr*>(&address), sizeof address) : -1;
    int saved = errno;
    umask(old_umask);
    if (bound != 0 || listen(fd_.get(), 8) != 0) {
      if (bound == 0) saved = errno;
      g_set_error(error, G_IO_ERROR, g_io_error_from_errno(saved), "cannot create the control socket %s: %s",
                  path_.c_str(), g_strerror(saved));
      fd_.reset();
      return false;
    }
    if (stat(path_.c_str(), &st) == 0) {
      dev_ = st.st_dev;
      ino_ = st.st_ino;
    }
    source_ = g_unix_fd_add(fd_.get(), G_IO_IN, on_incoming, this);
    return true;
  }

 private:
  static gboolean on_incoming(int fd, GIOCondition, gpointer data) {
    auto* self = static_cast<ControlSocketImpl*>(data);
    UniqueFd connection(accept4(fd, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
    if (!connection) return G_SOURCE_CONTINUE;  // EAGAIN, or the client went
    auto client = std::make_unique<Client>();
    client->owner = self;
    client->fd = std::move(connection);
    Client* raw = client.get();
    self->clients_.push_back(std::move(client));
    raw->timeout_source = g_timeout_add_seconds(kClientTimeoutSeconds, on_timeout, raw);

    struct ucred credentials = {};
    socklen_t length = sizeof credentials;
    if (getsockopt(raw->fd.get(), SOL_SOCKET, SO_PEERCRED, &credentials, &length) != 0 ||
        (credentials.uid != geteuid() && credentials.uid != 0)) {
      g_warning("control socket: refused a client of uid %u (only uid %u and root may ask)", credentials.uid,
                geteuid());
      g_autoptr(GError) refused = g_error_new(G_IO_ERROR, G_IO_ERROR_PERMISSION_DENIED, "not allowed for this uid");
      self->send(raw, reply_line(nullptr, refused));
      return G_SOURCE_CONTINUE;
    }
    if (self->clients_.size() > kMaxClients) {
      g_autoptr(GError) busy = g_error_new(G_IO_ERROR, G_IO_ERROR_BUSY,
                                           "busy: %u other control connections are open; try again", kMaxClients);
      self->send(raw, reply_line(nullptr, busy));
      return G_SOURCE_CONTINUE;
    }
    raw->io_source = g_unix_fd_add(raw->fd.get(), G_IO_IN, on_readable, raw);
    return G_SOURCE_CONTINUE;
  }

  static gboolean on_timeout(gpointer data) {
    auto* client = static_cast<Client*>(data);
    client->timeout_source = 0;
    g_debug("control socket: a client took longer than %u s; closing it", kClientTimeoutSeconds);
    client->owner->close(client);
    return G_SOURCE_REMOVE;
  }

  static gboolean on_readable(int fd, GIOCondition, gpointer data) {
    auto* client = static_cast<Client*>(data);
    char buffer[1024];
    ssize_t n = read(fd, buffer, sizeof buffer);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) return G_SOURCE_CONTINUE;
    if (n > 0) client->in.append(buffer, size_t(n));
    size_t newline = client->in.find('\n');
    bool ended = n <= 0;
    if (newline == std::string::npos && client->in.size() < kMaxRequestBytes && !ended) return G_SOURCE_CONTINUE;
    client->io_source = 0;
    ControlSocketImpl* self = client->owner;
    if (newline == std::string::npos && !ended) {
      g_autoptr(GError) error =
          g_error_new(G_IO_ERROR, G_IO_ERROR_MESSAGE_TOO_LARGE,
                      "request too long: at most %zu bytes, one JSON object on one line", kMaxRequestBytes);
      self->send(client, reply_line(nullptr, error));
    } else if (client->in.empty()) {
      self->close(client);  // connected and went away
    } else {
      self->send(client, self->answer(client->in.substr(0, newline)));
    }
    return G_SOURCE_REMOVE;
  }

  std::string answer(const std::string& line) {
    g_autoptr(GError) error = nullptr;
    g_autoptr(JsonParser) parser = json_parser_new();
    if (!json_parser_load_from_data(parser, line.data(), gssize(line.size()), &error))
      return reply_line(nullptr, error);
    JsonNode* root = json_parser_get_root(parser);
    JsonObject* request = root != nullptr && JSON_NODE_HOLDS_OBJECT(root) ? json_node_get_object(root) : nullptr;
    JsonNode* command = request != nullptr ? json_object_get_member(request, "command") : nullptr;
    if (command == nullptr || !JSON_NODE_HOLDS_VALUE(command) || json_node_get_value_type(command) != G_TYPE_STRING) {
      g_set_error(&error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                  "expected a JSON object with a string \"command\", e.g. {\"command\": \"status\"}");
      return reply_line(nullptr, error);
    }
    g_debug("control socket: %s", json_node_get_string(command));
    g_autoptr(JsonNode) members = handler_(request, &error);
    if (members == nullptr && error == nullptr)
      g_set_error(&error, G_IO_ERROR, G_IO_ERROR_FAILED, "the command gave no answer");
    return reply_line(members, error);
  }

  void send(Client* client, std::string reply) {
    client->out = std::move(reply);
    client->written = 0;
    if (!write_some(client)) return;
    client->io_source = g_unix_fd_add(client->fd.get(), G_IO_OUT, on_writable, client);
  }

  // False once the client is done with (all written, or gone): closed.
  bool write_some(Client* client) {
    while (client->written < client->out.size()) {
      ssize_t n = ::send(client->fd.get(), client->out.data() + client->written, client->out.size() - client->written,
                         MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n < 0 && (errno == EAGAIN || errno == EINTR)) return true;
      if (n <= 0) break;
      client->written += size_t(n);
    }
    close(client);
    return false;
  }

  static gboolean on_writable(int, GIOCondition, gpointer data) {
    auto* client = static_cast<Client*>(data);
    // Once all is written the client is freed, and this source with it.
    return client->owner->write_some(client) ? G_SOURCE_CONTINUE : G_SOURCE_REMOVE;
  }

  void close(Client* client) {
    for (auto it = clients_.begin(); it != clients_.end(); ++it)
      if (it->get() == client) {
        clients_.erase(it);  // its sources go with it
        return;
      }
  }

  std::string path_;
  Handler handler_;
  UniqueFd fd_;
  guint source_ = 0;
  dev_t dev_ = 0;
  ino_t ino_ = 0;
  std::list<std::unique_ptr<Client>> clients_;
};

}  // namespace

std::unique_ptr<ControlSocket> ControlSocket::start(const std::string& path, Handler handler, GError** error) {
  auto socket = std::make_unique<ControlSocketImpl>(path, std::move(handler));
  if (!socket->bind_socket(error)) return nullptr;
  return socket;
}

}  // namespace sidebus
