// SPDX-License-Identifier: LGPL-2.1-or-later
// host-input.hpp — guest fds a host portal reads, turned into host files.
//
// Print.Print (the document), Email.ComposeEmail (the attachments) and
// Wallpaper.SetWallpaperFile (the picture) take fds the host portal reads.
// Each fd is treated by what it is, so the same code serves every link:
//  - a file in the VM's documents (on an fd-passing link, the guest's fd of
//    its document view) → the host file behind it, opened for reading;
//  - any other regular file (the guest's own file, or the sealed memfd /
//    private file that fd forwarding makes of a file's content on a
//    byte-only link) → a host copy, if the portal's copy_outside_documents
//    allows it;
//  - a pipe or socket (the guest's own pipe, or a forwarded stream) → read
//    to its end into a host copy, bounded, under the same permission;
//  - anything else, or an O_PATH fd of a file that is not a document (it
//    would be read with the broker's rights, not the app's), is refused.
// prepare_host_inputs() checks every fd at once, so a bad call is refused
// before anything is copied; make_host_inputs() then makes the copies.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "copy-store.hpp"
#include "guest-file.hpp"

namespace sidebus::common {

struct HostInputPolicy {
  std::string portal;                  // names portals.<portal>.copy_outside_documents in refusals
  bool copy_outside_documents = false;
  const char* purpose = "used";        // "printed", "attached": "… cannot be <purpose> on the host"
};

// One guest fd, checked: a document's host file, or content to copy.
struct PreparedInput {
  std::string shown;                // the guest's name for it, for messages
  std::optional<HostFile> document;  // set for a document
  std::optional<GuestFd> content;    // set for anything to copy
};

// What the host portal gets for one guest fd.
struct HostInput {
  Fd fd;                           // open for reading
  std::string path;                // the host file (a document's, or the copy)
  std::string shown;               // the guest's name for it
  std::shared_ptr<HostCopy> copy;  // for a copy: it lives as long as this does
};

// A guest call held while the inputs it carries are copied: the invocation
// to answer, the guest's options and the host's, referenced for as long as
// it is held; @title, what the call titles the host dialog with (Print).
struct HeldCall {
  HeldCall(GDBusMethodInvocation* invocation, GVariant* options, GVariant* host_options, const char* title = "")
      : invocation(G_DBUS_METHOD_INVOCATION(g_object_ref(invocation))),
        options(g_variant_ref(options)),
        host_options(g_variant_ref(host_options)),
        title(title) {}
  ~HeldCall() {
    g_object_unref(invocation);
    g_variant_unref(options);
    g_variant_unref(host_options);
  }
  HeldCall(const HeldCall&) = delete;
  HeldCall& operator=(const HeldCall&) = delete;
  GDBusMethodInvocation* invocation;
  GVariant* options;
  GVariant* host_options;
  std::string title;
};

// Checks the fds @handles of @fd_list (every one, before anything happens).
// Errors are SIDEBUS_ERRORs for the guest: NOT_ALLOWED for what policy
// refuses (naming the configuration key), INVALID_ARGUMENT for a handle
// that names no fd.
std::optional<std::vector<PreparedInput>> prepare_host_inputs(SidebusContext* context, GUnixFDList* fd_list,
                                                              const std::vector<gint32>& handles,
                                                              const HostInputPolicy& policy, GError** error);

// Turns @inputs into host inputs, copying content into @store (which may be
// null when nothing needs a copy), in the order given. @done runs once, on
// the main context: with every input, or with the first error (copies made
// for the others are deleted). It does not run if the store goes first.
using HostInputsDone = std::function<void(std::vector<HostInput> inputs, GError* error)>;
void make_host_inputs(const std::shared_ptr<CopyStore>& store, std::vector<PreparedInput> inputs,
                      const CopyStore::CopyOptions& options, HostInputsDone done);

}  // namespace sidebus::common
