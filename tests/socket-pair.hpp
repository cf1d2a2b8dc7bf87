// SPDX-License-Identifier: LGPL-2.1-or-later
// socket-pair.hpp — what the link tests (test-sasl, test-relay) share: a
// socket pair, and raw SCM_RIGHTS helpers that drive a socket byte by byte,
// under GDBus's level, to check that fds stay with the bytes of their own
// message.
#pragma once

#include <glib.h>
#include <poll.h>
#include <sys/socket.h>

#include <unistd.h>

#include <cstring>
#include <string>
#include <vector>


namespace sidebus::test {

struct Pair {
  int fds[2];
  Pair() { g_assert_cmpint(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), ==, 0); }
  ~Pair() {
    for (int fd : fds)
      if (fd >= 0) close(fd);
  }
};

// Sends `byte` with `fd` attached.
inline void send_with_fd(int socket, char byte, int fd) {
  struct iovec iov = {&byte, 1};
  union {
    char buffer[CMSG_SPACE(sizeof(int))];
    struct cmsghdr align;
  } control = {};
  struct msghdr message = {};
  message.msg_iov = &iov;
  message.msg_iovlen = 1;
  message.msg_control = control.buffer;
  message.msg_controllen = sizeof control.buffer;
  struct cmsghdr* cmsg = CMSG_FIRSTHDR(&message);
  cmsg->cmsg_level = SOL_SOCKET;
  cmsg->cmsg_type = SCM_RIGHTS;
  cmsg->cmsg_len = CMSG_LEN(sizeof(int));
  memcpy(CMSG_DATA(cmsg), &fd, sizeof(int));
  g_assert_cmpint(sendmsg(socket, &message, 0), ==, 1);
}

// Receives exactly `length` bytes (fails after 5 s of silence or on EOF) and
// returns the fds that came with them; the bytes go to `data` if given.
inline std::vector<int> receive_with_fds(int socket, size_t length, std::string* data = nullptr) {
  std::string scratch;
  if (data == nullptr) data = &scratch;
  std::vector<int> fds;
  data->assign(length, '\0');
  size_t have = 0;
  while (have < length) {
    struct iovec iov = {data->data() + have, length - have};
    union {
      char buffer[CMSG_SPACE(sizeof(int) * 4)];
      struct cmsghdr align;
    } control = {};
    struct msghdr message = {};
    message.msg_iov = &iov;
    message.msg_iovlen = 1;
    message.msg_control = control.buffer;
    message.msg_controllen = sizeof control.buffer;
    struct pollfd pfd = {socket, POLLIN, 0};
    g_assert_cmpint(poll(&pfd, 1, 5000), ==, 1);
    ssize_t n = recvmsg(socket, &message, MSG_CMSG_CLOEXEC);
    g_assert_cmpint(n, >, 0);
    have += static_cast<size_t>(n);
    for (struct cmsghdr* cmsg = CMSG_FIRSTHDR(&message); cmsg; cmsg = CMSG_NXTHDR(&message, cmsg)) {
      g_assert_cmpint(cmsg->cmsg_type, ==, SCM_RIGHTS);
      size_t count = (cmsg->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (size_t i = 0; i < count; i++) {
        int fd = -1;
        memcpy(&fd, CMSG_DATA(cmsg) + i * sizeof(int), sizeof(int));
        fds.push_back(fd);
      }
    }
  }
  return fds;
}

}  // namespace sidebus::test
