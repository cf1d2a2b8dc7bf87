// SPDX-License-Identifier: LGPL-2.1-or-later
// handshake-agent.cpp — the agent's end of the link handshake.
#include "link/handshake.hpp"

#include <gio/gio.h>
#include <sys/socket.h>
#include <unistd.h>

#include "util/socket.hpp"

namespace sidebus::handshake {

bool agent_begin(int fd, bool transport_carries_fds, uint32_t uid, const char* agent_version, uint32_t version,
                 gint64 deadline, const char* what, Terms* terms, GError** error) {
  Hello hello{version, transport_carries_fds, uid, agent_version};
  if (!write_all(fd, format_hello(hello), deadline, what, error)) return false;
  std::string line;
  Reply reply;
  if (!read_line(fd, "\n", kMaxLineLength, deadline, what, &line, error) || !parse_reply(line, &reply, error))
    return false;
  if (!reply.ok) {
    bool older = g_str_has_prefix(reply.reason.c_str(), kUnsupportedVersionReason);
    g_set_error(error, G_IO_ERROR, older ? G_IO_ERROR_NOT_SUPPORTED : G_IO_ERROR_CONNECTION_REFUSED,
                "%s refused the link: %s", what, reply.reason.c_str());
    return false;
  }
  if (reply.version > version) {
    g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA,
                "%s answered in link protocol %u to an agent that offered %u", what, reply.version, version);
    return false;
  }
  if (reply.fds && !transport_carries_fds) {
    g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA,
                "%s agreed to fd passing although this transport cannot carry fds", what);
    return false;
  }
  Terms agreed;
  agreed.version = reply.version;
  agreed.native_fds = reply.fds;
  agreed.framed = reply.framed;
  agreed.documents_path = reply.documents_path;
  *terms = agreed;
  return true;
}

bool agent_finish(int fd, bool fds, gint64 deadline, const char* what, GError** error) {
  return write_all(fd, format_ready(Ready{fds}), deadline, what, error);
}

}  // namespace sidebus::handshake
