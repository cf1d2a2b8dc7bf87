// SPDX-License-Identifier: LGPL-2.1-or-later
// sasl.cpp — D-Bus SASL EXTERNAL, server half (for the broker's own GDBus
// client on a local socketpair) and client half (for the agent toward the
// guest bus). The protocol is the D-Bus specification's "Authentication
// Protocol": a NUL byte (optionally with SCM_CREDENTIALS), then CRLF lines.
#include "link/sasl.hpp"

#include <gio/gio.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string_view>

#include "link/handshake.hpp"

namespace sidebus::sasl {

namespace {

bool is_hex(std::string_view text) {
  if (text.size() % 2 != 0) return false;
  for (char c : text)
    if (!g_ascii_isxdigit(c)) return false;
  return true;
}

bool is_printable(std::string_view text) {
  for (char c : text)
    if (c < 0x20 || c > 0x7e) return false;
  return true;
}

std::string hex_encode(std::string_view text) {
  static const char digits[] = "0123456789abcdef";
  std::string out;
  for (unsigned char c : text) {
    out += digits[c >> 4];
    out += digits[c & 0xf];
  }
  return out;
}

// Reads one CRLF line (without the CRLF) and accounts for it in *total.
bool read_command(int fd, gint64 deadline, const char* what, size_t* total, std::string* line, GError** error) {
  if (!handshake::read_line(fd, "\r\n", kMaxLineLength, deadline, what, line, error)) return false;
  *total += line->size();
  if (*total > kMaxAuthBytes) {
    g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA, "%s sent more than %zu bytes of authentication", what,
                kMaxAuthBytes);
    return false;
  }
  line->resize(line->size() - 2);
  if (!is_printable(*line)) {
    g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA, "%s sent a non-printable authentication line", what);
    return false;
  }
  return true;
}

bool send_line(int fd, std::string_view line, gint64 deadline, const char* what, GError** error) {
  return handshake::write_all(fd, std::string(line) + "\r\n", deadline, what, error);
}

// The client's first byte: NUL, with our credentials attached on unix sockets
// (like g_unix_connection_send_credentials; Linux servers use SO_PEERCRED
// anyway). Falls back to a bare NUL when the socket refuses the cmsg.
bool send_credentials_byte(int fd, gint64 deadline, const char* what, GError** error) {
  struct sockaddr_storage address = {};
  socklen_t length = sizeof address;
  if (getsockname(fd, reinterpret_cast<struct sockaddr*>(&address), &length) == 0 && address.ss_family == AF_UNIX) {
    char byte = '\0';
    struct iovec iov = {&byte, 1};
    union {
      char buffer[CMSG_SPACE(sizeof(struct ucred))];
      struct cmsghdr align;
    } control = {};
    struct msghdr message = {};
    message.msg_iov = &iov;
    message.msg_iovlen = 1;
    message.msg_control = control.buffer;
    message.msg_controllen = sizeof control.buffer;
    struct cmsghdr* cmsg = CMSG_FIRSTHDR(&message);
    cmsg->cmsg_level = SOL_SOCKET;
    cmsg->cmsg_type = SCM_CREDENTIALS;
    cmsg->cmsg_len = CMSG_LEN(sizeof(struct ucred));
    struct ucred credentials = {getpid(), getuid(), getgid()};
    memcpy(CMSG_DATA(cmsg), &credentials, sizeof credentials);
    ssize_t n;
    do n = sendmsg(fd, &message, MSG_NOSIGNAL);
    while (n < 0 && errno == EINTR);
    if (n == 1) return true;
    // EAGAIN on a nonblocking socket or a refused cmsg: plain byte below.
  }
  return handshake::write_all(fd, std::string_view("\0", 1), deadline, what, error);
}

}  // namespace

bool run_server(int fd, bool allow_fds, gint64 deadline, bool* fds_agreed, GError** error) {
  const char* what = "the local D-Bus client";
  char first = 1;
  if (!handshake::read_byte(fd, deadline, what, &first, error)) return false;
  if (first != '\0') {
    g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA, "%s did not start with the NUL credentials byte", what);
    return false;
  }
  g_autofree char* guid = g_dbus_generate_guid();
  std::string ok = std::string("OK ") + guid;
  enum class State { WaitingForAuth, WaitingForData, WaitingForBegin } state = State::WaitingForAuth;
  bool fds = false;
  size_t total = 0;
  std::string line;
  for (int commands = 0;; commands++) {
    if (commands >= kMaxCommands) {
      g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA, "%s sent more than %d authentication commands", what,
                  kMaxCommands);
      return false;
    }
    if (!read_command(fd, deadline, what, &total, &line, error)) return false;
    std::string_view command = line;
    std::string reply;
    if (command == "BEGIN") {
      if (state == State::WaitingForBegin) break;
      g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA, "%s sent BEGIN before authenticating", what);
      return false;
    } else if (command == "CANCEL" || command == "ERROR" || command.substr(0, 6) == "ERROR ") {
      state = State::WaitingForAuth;
      fds = false;
      reply = "REJECTED EXTERNAL";
    } else if (state == State::WaitingForAuth && command == "AUTH EXTERNAL") {
      state = State::WaitingForData;
      reply = "DATA";
    } else if (state == State::WaitingForAuth && command.substr(0, 14) == "AUTH EXTERNAL ") {
      if (is_hex(command.substr(14))) {
        state = State::WaitingForBegin;
        reply = ok;
      } else {
        reply = "REJECTED EXTERNAL";
      }
    } else if (state == State::WaitingForAuth && (command == "AUTH" || command.substr(0, 5) == "AUTH ")) {
      reply = "REJECTED EXTERNAL";  // "AUTH" asks for the list; other mechanisms are not offered
    } else if (state == State::WaitingForData && (command == "DATA" || command.substr(0, 5) == "DATA ")) {
      bool valid = command == "DATA" || is_hex(command.substr(5));
      state = valid ? State::WaitingForBegin : State::WaitingForAuth;
      reply = valid ? ok : "REJECTED EXTERNAL";
    } else if (state == State::WaitingForBegin && command == "NEGOTIATE_UNIX_FD") {
      fds = allow_fds;
      reply = allow_fds ? "AGREE_UNIX_FD" : "ERROR this link cannot carry file descriptors";
    } else {
      reply = "ERROR unexpected command";
    }
    if (!send_line(fd, reply, deadline, what, error)) return false;
  }
  *fds_agreed = fds;
  return true;
}

bool run_client(int fd, uint32_t uid, bool want_fds, gint64 deadline, const char* what, bool* fds_agreed,
                std::string* guid, GError** error) {
  if (!send_credentials_byte(fd, deadline, what, error)) return false;
  std::string auth = "AUTH EXTERNAL " + hex_encode(std::to_string(uid));
  if (!send_line(fd, auth, deadline, what, error)) return false;
  size_t total = 0;
  std::string line;
  if (!read_command(fd, deadline, what, &total, &line, error)) return false;
  if (line.substr(0, 9) == "REJECTED " || line == "REJECTED") {
    g_set_error(error, G_IO_ERROR, G_IO_ERROR_PERMISSION_DENIED,
                "%s rejected EXTERNAL authentication as uid %u (it offers: %s); is it a unix socket this user may "
                "connect to?",
                what, uid, line.size() > 9 ? line.c_str() + 9 : "nothing");
    return false;
  }
  if (line.substr(0, 3) != "OK " || !g_dbus_is_guid(line.c_str() + 3)) {
    g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA, "%s answered AUTH EXTERNAL with “%.80s”", what,
                line.c_str());
    return false;
  }
  if (guid) *guid = line.substr(3);
  bool fds = false;
  if (want_fds) {
    if (!send_line(fd, "NEGOTIATE_UNIX_FD", deadline, what, error)) return false;
    if (!read_command(fd, deadline, what, &total, &line, error)) return false;
    if (line == "AGREE_UNIX_FD") {
      fds = true;
    } else if (line != "ERROR" && line.substr(0, 6) != "ERROR ") {
      g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA, "%s answered NEGOTIATE_UNIX_FD with “%.80s”", what,
                  line.c_str());
      return false;
    }
  }
  if (!send_line(fd, "BEGIN", deadline, what, error)) return false;
  *fds_agreed = fds;
  return true;
}

}  // namespace sidebus::sasl
