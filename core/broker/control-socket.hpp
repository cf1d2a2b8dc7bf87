// SPDX-License-Identifier: LGPL-2.1-or-later
// control-socket.hpp — the broker's control socket, <runtime-dir>/control.sock:
// where `sidebusctl` asks a running broker for its status, its recent log
// and a configuration reload.
//
// Protocol (docs/operations.md): the client connects, sends one JSON object
// on one line ({"command": "status"}, at most kMaxRequestBytes including the
// newline) and reads one JSON object on one line: {"ok": true, …} or
// {"ok": false, "error": "…"}; then the broker closes the connection.
//
// Access: the socket is mode 0600 in the 0700 runtime directory, and a
// client whose uid (SO_PEERCRED) is neither the broker's nor root is turned
// away. The guest never reaches it: only the document view is shared.
//
// Bounded and never blocking: non-blocking sockets on the main loop, at
// most kMaxClients at once (more are answered "busy" and closed), and each
// connection is closed kClientTimeoutSeconds after it arrived, whatever it
// did (a client that does not send, or does not read its reply).
#pragma once

#include <json-glib/json-glib.h>

#include <functional>
#include <memory>
#include <string>

namespace sidebus {

class ControlSocket {
 public:
  static constexpr size_t kMaxRequestBytes = 4096;
  static constexpr unsigned kMaxClients = 4;
  static constexpr unsigned kClientTimeoutSeconds = 10;

  // @request: the client's object, with a string "command". Returns the
  // members of the reply object (a JSON object node, taken over; "ok" is
  // added) or nullptr with @error set (its message becomes "error").
  using Handler = std::function<JsonNode*(JsonObject* request, GError** error)>;

  // Binds @path (a stale socket left by a killed broker is replaced; one a
  // broker still answers on is an error naming it).
  static std::unique_ptr<ControlSocket> start(const std::string& path, Handler handler, GError** error);
  virtual ~ControlSocket() = default;  // closes every connection and removes the socket file
};

}  // namespace sidebus
