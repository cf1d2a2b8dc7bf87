// SPDX-License-Identifier: LGPL-2.1-or-later
// socket.hpp — small facts about sockets that several layers ask.
#pragma once

#include <sys/un.h>

#include <string>

namespace sidebus {

// Whether @fd is a socket of the AF_UNIX family (so it can carry SCM_RIGHTS).
bool is_unix_socket(int fd);
// Whether @fd is any socket (shutdown(2) works), not a pipe or a device.
bool is_socket(int fd);
// A sockaddr_un for @path; the caller has checked it fits sun_path.
struct sockaddr_un unix_address(const std::string& path);

}  // namespace sidebus
