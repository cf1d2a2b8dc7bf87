// SPDX-License-Identifier: LGPL-2.1-or-later
// virtiofsd.hpp — --virtiofsd PATH: the broker serves the VM's document view
// (<runtime-dir>/doc/by-app/<app id>) over vhost-user-fs itself, so a VMM only
// points its vhost-user-fs device at <runtime-dir>/virtiofsd.sock. virtiofsd
// serves one VMM connection and exits when it goes, so it is started again
// (with backoff) for the next one: a restarted VM finds the socket waiting.
// The document portal's FUSE mount has no allow_other, so virtiofsd must run
// as the broker's uid — which it does, as the broker's child.
#pragma once

#include <gio/gio.h>

#include <memory>
#include <string>

namespace sidebus {

class DocumentShare {
 public:
  // program: the virtiofsd binary: QEMU's C one (/usr/lib/qemu/virtiofsd,
  // "-o source=") or else the standalone Rust one ("--shared-dir"). Returns
  // once the socket exists (bounded).
  static std::unique_ptr<DocumentShare> start(const std::string& program, const std::string& shared_dir,
                                              const std::string& socket_path, GError** error);
  virtual ~DocumentShare() = default;  // stops virtiofsd, removes the socket
};

}  // namespace sidebus
