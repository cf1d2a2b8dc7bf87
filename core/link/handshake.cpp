// SPDX-License-Identifier: LGPL-2.1-or-later
// handshake.cpp — the blocking line I/O both link ends use for the
// handshake and for SASL (the two ends of the exchange are
// handshake-broker.cpp and handshake-agent.cpp).
#include "link/handshake.hpp"

#include <gio/gio.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "util/socket.hpp"

namespace sidebus::handshake {

// ---- blocking I/O ----

namespace {

// Waits until fd is ready for `events` or the deadline passes.
bool wait_fd(int fd, short events, gint64 deadline, const char* what, GError** error) {
  while (true) {
    gint64 remaining = deadline - g_get_monotonic_time();
    if (remaining <= 0) {
      g_set_error(error, G_IO_ERROR, G_IO_ERROR_TIMED_OUT, "timed out waiting for %s", what);
      return false;
    }
    struct pollfd pfd = {fd, events, 0};
    int n = poll(&pfd, 1, static_cast<int>((remaining + 999) / 1000));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int saved = errno;
      g_set_error(error, G_IO_ERROR, g_io_error_from_errno(saved), "waiting for %s: %s", what, g_strerror(saved));
      return false;
    }
    if (n > 0 && (pfd.revents & POLLNVAL)) {
      g_set_error(error, G_IO_ERROR, G_IO_ERROR_CLOSED, "%s: file descriptor is not open", what);
      return false;
    }
    if (n > 0) return true;  // readable, writable, hung up or in error: the next call tells
  }
}

}  // namespace

bool read_byte(int fd, gint64 deadline, const char* what, char* out, GError** error) {
  while (true) {
    if (!wait_fd(fd, POLLIN, deadline, what, error)) return false;
    ssize_t n = read(fd, out, 1);
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (n < 0) {
      int saved = errno;
      g_set_error(error, G_IO_ERROR, g_io_error_from_errno(saved), "reading from %s: %s", what, g_strerror(saved));
      return false;
    }
    if (n == 0) {
      g_set_error(error, G_IO_ERROR, G_IO_ERROR_CONNECTION_CLOSED, "%s closed the connection", what);
      return false;
    }
    return true;
  }
}

bool read_line(int fd, std::string_view terminator, size_t max_length, gint64 deadline, const char* what,
               std::string* line, GError** error) {
  line->clear();
  while (true) {
    if (line->size() >= max_length) {
      g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA, "%s sent a line longer than %zu bytes", what, max_length);
      return false;
    }
    char c;
    if (!read_byte(fd, deadline, what, &c, error)) {
      if (!line->empty()) g_prefix_error(error, "in the middle of a line: ");
      return false;
    }
    line->push_back(c);
    if (line->size() >= terminator.size() &&
        std::string_view(*line).substr(line->size() - terminator.size()) == terminator)
      return true;
  }
}

bool write_all(int fd, std::string_view data, gint64 deadline, const char* what, GError** error) {
  bool socket = is_socket(fd);
  while (!data.empty()) {
    if (!wait_fd(fd, POLLOUT, deadline, what, error)) return false;
    ssize_t n =
        socket ? send(fd, data.data(), data.size(), MSG_NOSIGNAL | MSG_DONTWAIT) : write(fd, data.data(), data.size());
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (n < 0) {
      int saved = errno;
      g_set_error(error, G_IO_ERROR, g_io_error_from_errno(saved), "writing to %s: %s", what, g_strerror(saved));
      return false;
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

}  // namespace sidebus::handshake
