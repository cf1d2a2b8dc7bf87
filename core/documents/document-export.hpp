// SPDX-License-Identifier: LGPL-2.1-or-later
// document-export.hpp — host files to guest files through the private
// document portal (org.freedesktop.portal.Documents AddFull/AddNamedFull,
// granted to the VM's app id), and the reverse mapping from a guest path in
// the guest documents directory back to the host file.
//
// Nothing here blocks the broker on the document portal: export is
// asynchronous and batched, and the reverse mapping is answered from an index
// of this VM's documents the exporter keeps itself (loaded with one
// Documents.List when the document portal comes up, extended by every
// export).
//
// What the guest must see is guest_view_path() = <documents_mount>/by-app/<app id>:
// the document portal's per-app view, which holds only this app's documents
// with this app's permissions. Share that directory (virtiofs) at the guest
// documents path, never the whole mount (its root view is the host's and
// shows every document with full access).
#pragma once

#include <gio/gio.h>

#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "documents/document-retention.hpp"
#include "documents/document-usage.hpp"
#include "sidebus-plugin.h"

namespace sidebus {

class PrivateBus;

class DocumentExporter {
 public:
  // Follows private_bus across restarts (uses private_bus.connection() on
  // every call) and reloads its index each time the bus says it restarted
  // (reload_index()). private_bus must outlive this. app_id: the VM name,
  // mapped by app_id_for_vm() (app-id.hpp). guest_documents_path: where
  // guest_view_path() appears in the guest (absolute). usage_path: the
  // state file of when each document was last used and what it is keyed by
  // (document-usage.hpp), "" for memory only.
  DocumentExporter(PrivateBus& private_bus, std::string app_id, std::string guest_documents_path,
                   std::string usage_path = "");
  ~DocumentExporter();  // pending exports are dropped (their done never runs)
  DocumentExporter(const DocumentExporter&) = delete;
  DocumentExporter& operator=(const DocumentExporter&) = delete;

  // Files per AddFull call: the fds one D-Bus message may carry on any bus
  // (dbus-daemon's smallest default), so a 10 000-file answer is many small
  // calls the document portal interleaves with everyone else's.
  static constexpr size_t kFilesPerCall = 16;
  // Calls to the document portal in flight at once, across all exports (it
  // answers them one by one anyway; dbus-daemon bounds pending replies).
  static constexpr size_t kCallsInFlight = 16;

  // file:// host URIs in, file://<guest-documents-path>/<doc-id>/<name> out.
  // All URIs are checked before anything is exported. Only file:// URIs on
  // this host (NOT_ALLOWED otherwise); malformed, relative or non-UTF-8 URIs
  // are INVALID_ARGUMENT; a missing file (without FOR_SAVE) is NOT_FOUND.
  // WRITABLE and FOR_SAVE grant "read" + "write", otherwise "read" only.
  // FOR_SAVE exports <parent>/<name> by name (the file need not exist);
  // DIRECTORY is required to export a directory. Exports are persistent
  // (they survive broker restarts) and the same file reuses its document:
  // without any call to the document portal when this exporter knows the
  // document's key (document-usage.hpp) and it holds the permissions asked
  // for, with AddFull otherwise.
  // @done runs later on the main context (never inside this call), with the
  // guest URIs in order or an error (borrowed); not after destruction.
  using ExportDone = std::function<void(std::optional<std::vector<std::string>> guest_uris, const GError* error)>;
  void export_uris(const std::vector<std::string>& host_uris, SidebusExportFlags flags, ExportDone done);

  // A guest path (absolute, or a file:// URI) under guest_documents_path →
  // the host path of the file it stands for: <documents>/<doc-id>/<name> is
  // the document itself, <documents>/<doc-id>/<dir>/<a>/<b> a file inside an
  // exported directory (no symbolic links followed). Anything else (outside,
  // "." or ".." segments, unknown doc id, a document not shared with this
  // VM) is a SIDEBUS_ERROR_NOT_ALLOWED error; a missing file inside an
  // exported directory is NOT_FOUND; before the index is loaded, FAILED.
  // Error messages name only guest paths: they may be returned to the guest.
  // Thread-safe: the relay thread of a link maps the guest's fds with it
  // (forwarded document references, link/framed-link.hpp).
  std::optional<std::string> guest_path_to_host_path(const std::string& guest_path, GError** error) const;
  // Whether this VM may write document @doc_id, as the document portal says
  // (asked after every export and index load); nullopt while that is not
  // known. Thread-safe.
  std::optional<bool> document_writable(const std::string& doc_id) const;

  // Loads the index of this app's documents again (asynchronously).
  void reload_index();
  bool index_loaded() const;
  // Documents of this VM in the index (what the guest can open).
  size_t documents() const { return index_.size(); }
  // Exports not yet confirmed on disk by the permission store (see
  // document-export.cpp); the broker waits for 0 before it stops the bus.
  size_t unpersisted() const { return unpersisted_; }

  // The retention policy (document-retention.hpp): applied once the index
  // is loaded, when exports have been idle a while with more than
  // max_documents, and hourly; a changed policy soon.
  void set_retention(const RetentionPolicy& policy);
  // Documents deleted by the retention policy since start-up.
  size_t documents_deleted() const { return documents_deleted_; }
  // Seconds without an export before an over-full store is trimmed.
  static constexpr guint kRetentionIdleSeconds = 5;
  static constexpr guint kRetentionPeriodSeconds = 60 * 60;

  const std::string& guest_documents_path() const { return guest_documents_path_; }
  const std::string& app_id() const { return app_id_; }
  // <documents_mount>/by-app/<app id>: the directory to share with the guest.
  std::string guest_view_path() const;

  struct Job;  // one export in flight (document-export.cpp)

 private:
  GDBusConnection* connection() const;
  void dispatch();
  void send(const std::shared_ptr<Job>& job, std::vector<size_t> batch);
  static void on_call_done(GObject* source, GAsyncResult* result, gpointer data);
  void on_reply(const std::shared_ptr<Job>& job, const std::vector<size_t>& batch, GVariant* reply,
                GError* call_error);
  void finish_job(const std::shared_ptr<Job>& job);
  void persist(const std::string& doc_id, bool writable);
  void learn_permissions(const std::vector<std::string>& doc_ids);
  bool try_reuse(Job& job);
  void learn_keys();
  void pump_key_lookups();
  void release_exports();
  void keys_learned();
  void schedule_retention(guint delay_seconds);
  void run_retention();
  void pump_deletes();
  void on_deleted(const std::string& doc_id, GError* error);

  struct IndexEntry {
    std::string host_path;
    std::optional<bool> writable;  // the VM's "write" permission, once known
  };

  PrivateBus& private_bus_;
  std::string app_id_;
  std::string documents_mount_;
  std::string guest_documents_path_;
  // index_ and index_loaded_ are written on the main thread and read from
  // relay threads too: under index_mutex_.
  mutable std::mutex index_mutex_;
  std::map<std::string, IndexEntry> index_;  // document id → host path, this app's documents
  bool index_loaded_ = false;
  size_t unpersisted_ = 0;
  DocumentUsage usage_;
  // Host path (as the document portal resolved it) → the document of it
  // whose key usage_ knows: exporting that file again reuses it.
  std::map<std::string, std::string> by_path_;
  // The host path of every document in index_ (main thread only): a file
  // whose path is not here has no document to reuse.
  std::multiset<std::string> index_paths_;
  RetentionPolicy retention_;
  // Index loads (and the key lookups after them) in progress: exports wait
  // in held_exports_ meanwhile, so the same file is never exported twice.
  unsigned holding_exports_ = 0;
  std::vector<std::function<void()>> held_exports_;
  std::vector<std::string> keys_to_learn_;
  size_t key_lookups_in_flight_ = 0;
  unsigned learns_waiting_ = 0;  // learn_keys() calls whose lookups are out
  guint retention_source_ = 0;
  guint retention_period_source_ = 0;
  std::map<std::string, std::string> deletes_waiting_;  // doc id → host path, not sent yet
  size_t deletes_in_flight_ = 0;
  size_t deletes_failed_ = 0;
  size_t documents_deleted_ = 0;
  std::deque<std::shared_ptr<Job>> waiting_;  // exports with batches to send, in turn
  size_t calls_in_flight_ = 0;
  // Completions check this: a job that completes after the exporter is gone
  // does nothing.
  std::shared_ptr<DocumentExporter*> alive_;
};

}  // namespace sidebus
