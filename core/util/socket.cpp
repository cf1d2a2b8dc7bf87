// SPDX-License-Identifier: LGPL-2.1-or-later
// socket.cpp — see socket.hpp.
#include "util/socket.hpp"

#include <sys/socket.h>
#include <sys/stat.h>

#include <cstring>

namespace sidebus {

bool is_unix_socket(int fd) {
  struct sockaddr_storage address = {};
  socklen_t length = sizeof address;
  return getsockname(fd, reinterpret_cast<struct sockaddr*>(&address), &length) == 0 && address.ss_family == AF_UNIX;
}

bool is_socket(int fd) {
  struct stat st;
  return fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode);
}

struct sockaddr_un unix_address(const std::string& path) {
  struct sockaddr_un address = {};
  address.sun_family = AF_UNIX;
  memcpy(address.sun_path, path.c_str(), std::min(path.size(), sizeof address.sun_path - 1));
  return address;
}

}  // namespace sidebus
