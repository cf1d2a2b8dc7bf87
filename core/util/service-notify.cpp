// SPDX-License-Identifier: LGPL-2.1-or-later
// service-notify.cpp — see service-notify.hpp. The address rules follow
// sd_notify(3): '/' starts a path, '@' an abstract name (the '@' stands for
// the leading NUL, and the address length counts exactly the name).
#include "util/service-notify.hpp"

#include <glib.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <cerrno>
#include <cstring>

#include "util/unique-fd.hpp"

namespace sidebus::service_notify {

namespace {

struct Target {
  struct sockaddr_un address = {};
  socklen_t length = 0;
};

Target target;
bool warned = false;

std::string one_line(std::string text) {
  for (char& c : text)
    if (c == '\n' || c == '\r') c = ' ';
  return text;
}

}  // namespace

void take_from_environment() {
  const char* value = g_getenv("NOTIFY_SOCKET");
  if (value == nullptr) return;
  std::string socket = value;
  g_unsetenv("NOTIFY_SOCKET");
  target = {};
  target.address.sun_family = AF_UNIX;
  if ((socket[0] != '/' && socket[0] != '@') || socket.size() < 2 || socket.size() > sizeof target.address.sun_path) {
    g_warning(
        "NOTIFY_SOCKET=%s: not a unix socket path or @abstract name; systemd will not hear that the broker is "
        "ready",
        socket.c_str());
    return;
  }
  memcpy(target.address.sun_path, socket.data(), socket.size());
  if (socket[0] == '@') target.address.sun_path[0] = '\0';
  // A path's length includes its NUL (sun_path is zeroed); an abstract
  // name's is exactly its bytes.
  target.length = socklen_t(offsetof(struct sockaddr_un, sun_path) + socket.size() + (socket[0] == '/' ? 1 : 0));
}

bool enabled() { return target.length != 0; }

bool send(const std::string& state) {
  if (!enabled()) return false;
  UniqueFd fd(socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (fd && sendto(fd.get(), state.data(), state.size(), MSG_NOSIGNAL | MSG_DONTWAIT,
                   reinterpret_cast<const struct sockaddr*>(&target.address), target.length) >= 0)
    return true;
  int saved = errno;
  if (!warned) g_warning("cannot notify the service manager (NOTIFY_SOCKET): %s", g_strerror(saved));
  warned = true;
  return false;
}

void ready(const std::string& status_line) { send("READY=1\nSTATUS=" + one_line(status_line)); }

void status(const std::string& status_line) { send("STATUS=" + one_line(status_line)); }

void reloading() {
  g_autofree char* state = g_strdup_printf(
      "RELOADING=1\nMONOTONIC_USEC=%" G_GINT64_FORMAT "\nSTATUS=reloading the configuration", g_get_monotonic_time());
  send(state);
}

void stopping() { send("STOPPING=1\nSTATUS=stopping"); }

}  // namespace sidebus::service_notify
