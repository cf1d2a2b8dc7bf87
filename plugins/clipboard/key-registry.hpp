// SPDX-License-Identifier: LGPL-2.1-or-later
// key-registry.hpp — which VM started a transfer key, for every broker of
// this host user to see.
//
// A guest's key is the host's key (so a host app can paste what a VM
// copied), and the host's FileTransfer gives the files of any key to any
// unsandboxed caller — every broker is one. So a broker alone cannot tell
// that a key it is asked for came from another VM. Each broker therefore
// leaves a marker <dir>/<key> holding its VM's name while a transfer it
// started lives, and refuses RetrieveFiles of a key another VM marked: a
// key of one VM is unusable from another (host apps are not affected).
// The directory is portals.clipboard.key_registry, by default
// $XDG_RUNTIME_DIR/sidebus-filetransfer-keys (0700): shared by the brokers
// of one user. A marker a crashed broker left names a key the host portal
// forgot with its owner's connection, so it refuses nothing real.
#pragma once

#include <optional>
#include <string>

namespace sidebus::clipboard {

// Host keys are decimal numbers; anything of [A-Za-z0-9_-], 1–64 bytes, is
// accepted (and is a safe file name).
bool is_valid_key(const char* key);

class KeyRegistry {
 public:
  KeyRegistry(std::string dir, std::string vm_name);
  // Marks @key as this VM's; false (logged) if the directory cannot be written.
  bool claim(const std::string& key);
  void release(const std::string& key);
  // The VM that marked @key, when it is another VM; nullopt otherwise.
  std::optional<std::string> other_owner(const std::string& key) const;
  const std::string& dir() const { return dir_; }

 private:
  std::string dir_;
  std::string vm_name_;
};

}  // namespace sidebus::clipboard
