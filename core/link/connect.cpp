// SPDX-License-Identifier: LGPL-2.1-or-later
// connect.cpp — the agent's side of a transport: connect_link().
#include "link/connect.hpp"

#include <fcntl.h>
#include <linux/vm_sockets.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "link/address.hpp"
#include "util/socket.hpp"

namespace sidebus {

UniqueFd connect_link(const std::string& address, bool* carries_fds, GError** error) {
  LinkAddress parsed;
  if (!parse_connect_address(address, &parsed, error)) return {};
  *carries_fds = false;
  switch (parsed.kind) {
    case LinkAddress::Kind::Unix: {
      UniqueFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
      struct sockaddr_un sun = unix_address(parsed.path);
      if (!fd || connect(fd.get(), reinterpret_cast<struct sockaddr*>(&sun), sizeof sun) != 0) {
        g_propagate_error(error, address_errno_error(errno, "cannot connect to the broker at", address,
                                             "; is sidebus-broker listening there?"));
        return {};
      }
      *carries_fds = !parsed.nofds;
      return fd;
    }
    case LinkAddress::Kind::Vsock: {
      UniqueFd fd(socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0));
      struct sockaddr_vm svm = {};
      svm.svm_family = AF_VSOCK;
      svm.svm_cid = parsed.cid;
      svm.svm_port = parsed.port;
      if (!fd || connect(fd.get(), reinterpret_cast<struct sockaddr*>(&svm), sizeof svm) != 0) {
        g_propagate_error(error, address_errno_error(errno, "cannot connect to the broker at", address,
                                             "; does the VM have a vsock device, and is sidebus-broker listening on "
                                             "that port on the host?"));
        return {};
      }
      return fd;
    }
    case LinkAddress::Kind::VirtioSerial: {
      UniqueFd fd(open(parsed.path.c_str(), O_RDWR | O_CLOEXEC | O_NOCTTY));
      if (!fd) {
        g_propagate_error(error, address_errno_error(errno, "cannot open the link", address,
                                             "; does the VM have a virtserialport with that name?"));
        return {};
      }
      return fd;
    }
    case LinkAddress::Kind::Fd:
    case LinkAddress::Kind::Systemd:
      break;
  }
  invalid_address(error, address, "not a connect address");
  return {};
}

}  // namespace sidebus
