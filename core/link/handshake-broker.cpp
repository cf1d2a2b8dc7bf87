// SPDX-License-Identifier: LGPL-2.1-or-later
// handshake-broker.cpp — the broker's end of the link handshake.
#include "link/handshake.hpp"

#include <gio/gio.h>
#include <sys/socket.h>
#include <unistd.h>

#include "util/socket.hpp"

namespace sidebus::handshake {

bool broker_begin(int fd, bool transport_carries_fds, const BrokerOffer& offer, gint64 deadline, const char* what,
                  Hello* hello, Terms* terms, GError** error) {
  std::string line;
  if (!read_line(fd, "\n", kMaxLineLength, deadline, what, &line, error)) return false;
  GError* parse_error = nullptr;
  if (!parse_hello(line, hello, &parse_error)) {
    broker_refuse(fd, g_error_matches(parse_error, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED)
                          ? std::string(kUnsupportedVersionReason) + ", this broker speaks 1 and 2"
                          : "malformed handshake");
    g_propagate_error(error, parse_error);
    return false;
  }
  Terms agreed;
  agreed.version = hello->version;
  agreed.native_fds = hello->fds && transport_carries_fds;
  Reply reply;
  reply.ok = true;
  reply.version = agreed.version;
  reply.fds = agreed.native_fds;
  if (agreed.version >= 2) {
    agreed.framed = !agreed.native_fds && offer.forward_fds;
    std::string encoded = encode_documents_path(offer.documents_path);
    agreed.documents_path = encoded.empty() || encoded == "-" ? std::string() : offer.documents_path;
    reply.framed = agreed.framed;
    reply.documents_path = agreed.documents_path;
  }
  *terms = agreed;
  return write_all(fd, format_reply(reply), deadline, what, error);
}

bool broker_finish(int fd, gint64 deadline, const char* what, Terms* terms, GError** error) {
  std::string line;
  Ready ready;
  if (!read_line(fd, "\n", kMaxLineLength, deadline, what, &line, error) || !parse_ready(line, &ready, error))
    return false;
  if (ready.fds && !terms->native_fds && !terms->framed) {
    g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA,
                "%s announced fd passing in READY although the link carries none", what);
    return false;
  }
  terms->fds = ready.fds;
  return true;
}

void broker_refuse(int fd, std::string_view reason) {
  std::string line = format_reply(Reply{false, false, std::string(reason)});
  // Best effort: a full socket buffer just loses the courtesy message.
  if (is_socket(fd))
    (void)!send(fd, line.data(), line.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
  else
    (void)!write(fd, line.data(), line.size());
}

}  // namespace sidebus::handshake
