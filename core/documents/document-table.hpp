// SPDX-License-Identifier: LGPL-2.1-or-later
// document-table.hpp — this VM's document database as a whole, for
// migration: read from, and replaced in, the private permission store, which
// keeps it as the table "documents" (the GVDB file
// <state-dir>/flatpak/db/documents). xdg-document-portal 1.16 reads that
// file once, when it starts, and afterwards only writes through the store; a
// document id is a random number it drew when the file was first exported,
// so the same ids for the same host files on a migration's destination
// means the same table there before its document portal starts.
//
// Both operations are asynchronous (never wait on the main loop) and keep at
// most kCallsInFlight calls to the store in flight (the bus bounds the
// replies one connection may wait for). @done runs on the thread-default
// main context, never inside the call, and not at all once @cancellable is
// cancelled.
#pragma once

#include <gio/gio.h>

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "documents/vmstate-blob.hpp"

namespace sidebus {

inline constexpr size_t kDocumentTableCallsInFlight = 64;

// Every entry of the table (List, then one Lookup per id), sorted by id.
// Entries whose data is not the (ayttu) of xdg-document-portal 1.16 fail the
// read: nothing is silently left out.
using DocumentTableRead = std::function<void(std::optional<std::vector<DocumentEntry>> entries, const GError* error)>;
void read_document_table(GDBusConnection* private_bus, GCancellable* cancellable, DocumentTableRead done);

// Makes @entries the whole table, atomically: they are written through the
// store into a new table of a fresh name (one Set each; the store answers
// each once its file is on disk), and only when every write succeeded is
// that file renamed over <db_dir>/documents. On any failure the staging file
// is removed and <db_dir>/documents is untouched. Only valid while nothing
// has the "documents" table open (the document portal not started yet,
// nothing read it through the store): both would keep the old one in memory.
using DocumentTableReplaced = std::function<void(const GError* error)>;
void replace_document_table(GDBusConnection* private_bus, const std::string& db_dir, std::vector<DocumentEntry> entries,
                            GCancellable* cancellable, DocumentTableReplaced done);

}  // namespace sidebus
