// SPDX-License-Identifier: LGPL-2.1-or-later
// outgoing-files.hpp — the guest's AddFiles fds, made into host files the
// host's FileTransfer can take.
//
// GTK 4 sends O_PATH fds of the files a user copied. What each one becomes
// depends on what it is, whatever the link did to it on the way:
//  - one of the VM's documents (the guest's fd of its document view on a
//    native link; the host file itself on a byte-only link of protocol 2,
//    which maps documents) → the host file behind the document, so a
//    writable transfer writes through to it. A writable transfer needs a
//    document the VM may write (the host portal's rule too);
//  - any other regular file (the guest's own file; on a byte-only link the
//    sealed memfd fd forwarding made of its content) → a host copy staged in
//    this VM's copy store (plugins/common/copy-store.hpp: size limits,
//    deleted with the transfer), when portals.clipboard.copy_outside_documents
//    allows it. A copy is a snapshot: what a host target writes to it stays
//    on the host;
//  - an O_PATH fd of a guest-local file on a native link: the broker would
//    read it with its own rights, so only a file its owner class lets the
//    broker read as the app would (owned by the broker's user, or readable
//    by everyone) is copied (docs/clipboard.md);
//  - folders outside the documents, pipes, sockets, devices: refused.
// prepare_outgoing() checks every fd before anything is copied.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "copy-store.hpp"
#include "guest-file.hpp"
#include "host-input.hpp"  // PreparedInput

namespace sidebus::clipboard {

struct OutgoingPolicy {
  bool writable = false;  // the transfer's
  bool copy_outside_documents = true;
};

// Checks @handles of @fd_list, all of them; a SIDEBUS_ERROR for the guest otherwise.
std::optional<std::vector<common::PreparedInput>> prepare_outgoing(SidebusContext* context, GUnixFDList* fd_list,
                                                                   const std::vector<gint32>& handles,
                                                                   const OutgoingPolicy& policy, GError** error);

// One file for the host's AddFiles.
struct OutgoingFile {
  common::Fd fd;                           // O_PATH, of the host file
  std::string shown;                       // the guest's name for it
  std::shared_ptr<common::HostCopy> copy;  // a staged copy: it lives as long as this does
};
using OutgoingDone = std::function<void(std::vector<OutgoingFile> files, GError* error)>;
// Copies what needs copying into @store (one at a time, in order) and opens
// every host file O_PATH. @done runs once on the main context (at once if
// nothing needs a copy), never after the store is gone.
void make_outgoing(const std::shared_ptr<common::CopyStore>& store, std::vector<common::PreparedInput> prepared,
                   OutgoingDone done);

}  // namespace sidebus::clipboard
