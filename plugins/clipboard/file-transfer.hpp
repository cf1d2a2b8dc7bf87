// SPDX-License-Identifier: LGPL-2.1-or-later
// file-transfer.hpp — org.freedesktop.portal.FileTransfer for the guest:
// files copied and pasted, dragged and dropped, between the VM and the host
// (docs/clipboard.md).
#pragma once

#include <sidebus-plugin.h>

#include <memory>
#include <string>

#include "copy-store.hpp"

namespace sidebus::clipboard {

// portals.clipboard, checked against kConfigKeys when the broker started.
struct Settings {
  gint64 max_transfers = 16;  // per VM, at once
  gint64 max_files = 4096;    // per transfer, and per RetrieveFiles answer
  bool copy_outside_documents = true;
  guint keep_staged_for = 300;  // seconds a retrieved transfer's copies stay
  std::string key_registry;     // "": $XDG_RUNTIME_DIR/sidebus-filetransfer-keys
  common::CopyStore::Limits staging{.max_file = 256 * 1024 * 1024, .max_total = 1024 * 1024 * 1024};

  static Settings from_config(JsonObject* config);
};
extern const SidebusConfigKey kConfigKeys[];
extern const gsize kNumConfigKeys;

class FileTransferPortal {
 public:
  static std::unique_ptr<FileTransferPortal> start(SidebusContext* context, GError** error);
  ~FileTransferPortal();
  FileTransferPortal(const FileTransferPortal&) = delete;
  FileTransferPortal& operator=(const FileTransferPortal&) = delete;

  struct Impl;

 private:
  explicit FileTransferPortal(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace sidebus::clipboard
