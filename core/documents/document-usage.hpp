// SPDX-License-Identifier: LGPL-2.1-or-later
// document-usage.hpp — what the broker remembers of each document it gave
// the VM, in its own state file <state-dir>/document-usage: when the guest
// last got it (an export, or the same file exported again), and what the
// document portal keys it by, so that exporting the same host file again
// needs no AddFull (document-export.cpp) and the retention policy
// (document-retention.hpp) can delete the documents unused the longest.
//
// Why a file of our own: the document portal keeps no times, and the host
// file's atime/mtime say what the host did with it, not when the VM was
// given it. The file is the broker's own (never the guest's), one line per
// document, read once at start-up and written asynchronously (coalesced,
// atomically replaced) after changes; a line that does not parse is skipped.
//
//   sidebus-document-usage 1
//   <doc id> <last used, unix microseconds> <parent device> <parent inode> <f|d>
//
// The key fields are what xdg-document-portal 1.16 matches when it reuses a
// document (document-portal.c: the resolved path, its directory's st_dev
// and st_ino, and whether it is a directory); the path itself comes from the
// document portal's own List. "- -" means not known (documents exported for
// saving, or before this file existed): those are never reused without
// AddFull.
#pragma once

#include <gio/gio.h>

#include <map>
#include <optional>
#include <string>

#include "util/gobject-ptr.hpp"

namespace sidebus {

// What the document portal reuses a document by, besides its path.
struct DocumentKey {
  guint64 parent_device = 0;
  guint64 parent_inode = 0;
  bool directory = false;
  bool operator==(const DocumentKey&) const = default;
};

struct DocumentUse {
  gint64 last_used = 0;            // unix microseconds (g_get_real_time())
  std::optional<DocumentKey> key;  // nullopt: not known, never reused without AddFull
};

class DocumentUsage {
 public:
  // @path: the state file; "" keeps everything in memory only.
  explicit DocumentUsage(std::string path);
  ~DocumentUsage();  // writes what is not saved yet (synchronously: the broker is stopping)
  DocumentUsage(const DocumentUsage&) = delete;
  DocumentUsage& operator=(const DocumentUsage&) = delete;

  // Reads the state file (the broker's own, small: read at start-up).
  void load();
  const std::map<std::string, DocumentUse>& entries() const { return entries_; }
  const DocumentUse* find(const std::string& doc_id) const;

  // The guest got @doc_id at @now; @key if known (a known key is kept when
  // none is given).
  void touch(const std::string& doc_id, gint64 now, std::optional<DocumentKey> key = std::nullopt);
  // A document the index has but this file does not: first seen @now.
  void adopt(const std::string& doc_id, gint64 now);
  void forget(const std::string& doc_id);
  // What the document is keyed by, learned from the document portal's table.
  void set_key(const std::string& doc_id, const DocumentKey& key);

  // Saves soon (coalesced: one write a second at most), asynchronously.
  void save_soon();
  bool dirty() const { return dirty_; }
  // Whether it is kept in a state file (not memory only).
  bool persistent() const { return !path_.empty(); }

  static std::optional<std::pair<std::string, DocumentUse>> parse_line(const std::string& line);

 private:
  std::string serialize() const;
  void write();

  std::string path_;
  std::map<std::string, DocumentUse> entries_;
  bool dirty_ = false;
  bool writing_ = false;  // an asynchronous write is on its way
  guint save_source_ = 0;
  GObjectPtr<GCancellable> cancellable_;
};

}  // namespace sidebus
