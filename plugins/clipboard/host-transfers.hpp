// SPDX-License-Identifier: LGPL-2.1-or-later
// host-transfers.hpp — the host's FileTransfer, as the broker calls it.
//
// The host's xdg-document-portal serves org.freedesktop.portal.FileTransfer
// at org.freedesktop.portal.Documents /org/freedesktop/portal/documents on
// the host bus. The broker is an ordinary unsandboxed client there: a
// transfer it starts is owned by the broker's host connection, and
// RetrieveFiles answers it with plain host paths (the host portal exports
// nothing for unsandboxed callers). Every call is asynchronous and bounded
// by kCallTimeoutMs, so a stuck host portal costs the guest an error, never
// the broker's main loop. Answers never come after the object is gone.
#pragma once

#include <gio/gio.h>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "guest-file.hpp"

namespace sidebus::clipboard {

inline constexpr char kDocumentsBusName[] = "org.freedesktop.portal.Documents";
inline constexpr char kDocumentsPath[] = "/org/freedesktop/portal/documents";
inline constexpr char kFileTransferInterface[] = "org.freedesktop.portal.FileTransfer";
// What one AddFiles may carry: session buses refuse more fds in one message.
inline constexpr size_t kFdsPerCall = 16;
inline constexpr int kCallTimeoutMs = 30000;

class HostTransfers {
 public:
  // @error is a SIDEBUS_ERROR (or G_DBUS_ERROR for LimitsExceeded) meant for
  // the guest: it never names a host path.
  using KeyDone = std::function<void(const std::string& key, GError* error)>;
  using Done = std::function<void(GError* error)>;
  using FilesDone = std::function<void(std::vector<std::string> host_paths, GError* error)>;
  using Closed = std::function<void(const std::string& key)>;

  // @on_closed: the host's TransferClosed for a transfer of ours.
  HostTransfers(GDBusConnection* host, Closed on_closed);
  ~HostTransfers();  // cancels what is in flight; no answer runs after it
  HostTransfers(const HostTransfers&) = delete;
  HostTransfers& operator=(const HostTransfers&) = delete;

  void start(bool writable, bool autostop, KeyDone done);
  // AddFiles with @fds (any number: sent in calls of kFdsPerCall, in order).
  void add(const std::string& key, std::vector<common::Fd> fds, Done done);
  void retrieve(const std::string& key, FilesDone done);
  // StopTransfer, answer ignored: the host's TransferClosed follows.
  void stop(const std::string& key);

 private:
  struct Call;
  void call(const char* method, GVariant* parameters, GUnixFDList* fds, const GVariantType* reply_type,
            std::function<void(GVariant* reply, GError* error)> done);
  void add_chunk(std::string key, std::shared_ptr<std::vector<common::Fd>> fds, size_t from, Done done);

  GDBusConnection* host_;
  GCancellable* cancellable_;
  guint closed_subscription_ = 0;
  Closed on_closed_;
};

// What the guest is told for a host portal error: the host's "Invalid
// transfer" (AccessDenied) becomes NotFound, a missing document portal
// NotSupported, anything else Failed with the host's message.
GError* guest_error_for_host(const GError* host_error, const char* what);

}  // namespace sidebus::clipboard
