// SPDX-License-Identifier: LGPL-2.1-or-later
// address.hpp — where a link goes: the --listen (broker) and --connect
// (agent) address grammar, and error messages that name an address.
#pragma once

#include <gio/gio.h>

#include <cstdint>
#include <string>
#include <string_view>

namespace sidebus {

// A parsed --listen or --connect address. Grammar (strict; no spaces):
//   unix:PATH[,nofds][,mode=OCTAL]   listen and connect; PATH may not contain ','
//                                    ,nofds: the socket is byte-only (hybrid vsock
//                                    PATH_PORT sockets, libkrun vsock mappings)
//                                    ,mode=0660: chmod the listening socket file
//                                    (default: the umask decides; listen only)
//   vsock:PORT                       listen on VMADDR_CID_ANY (byte-only)
//   vsock:CID:PORT                   connect (vsock:PORT means CID 2, the host)
//   fd:N[,nofds]                     listen: an inherited listening socket, or a
//                                    connected socket taken as one link
//   systemd[,nofds]                  listen: every LISTEN_FDS socket
//   virtio-serial:PATH               connect: a virtio-serial port (byte-only)
struct LinkAddress {
  enum class Kind { Unix, Vsock, Fd, Systemd, VirtioSerial };
  Kind kind = Kind::Unix;
  std::string path;    // Unix, VirtioSerial
  uint32_t cid = 2;    // Vsock (connect)
  uint32_t port = 0;   // Vsock
  int fd = -1;         // Fd
  bool nofds = false;  // marked byte-only by the user
  int mode = -1;       // Unix listen: chmod after bind, -1 = leave alone
};

bool parse_listen_address(const std::string& address, LinkAddress* out, GError** error);
bool parse_connect_address(const std::string& address, LinkAddress* out, GError** error);

// Decimal without sign or leading zeros, at most @max.
bool parse_decimal(std::string_view text, uint64_t max, uint64_t* out);

// "invalid link address “ADDR”: REASON" (G_IO_ERROR_INVALID_ARGUMENT); returns false.
bool invalid_address(GError** error, const std::string& address, const char* reason);
// "DOING “ADDR”: strerror(saved)HINT" with the G_IO_ERROR of @saved.
GError* address_errno_error(int saved, const char* doing, const std::string& address, const char* hint);

}  // namespace sidebus
