// SPDX-License-Identifier: LGPL-2.1-or-later
// document-export.cpp — host files to guest files and back, through this VM's
// private xdg-document-portal (see document-export.hpp).
//
// Export does what xdg-desktop-portal's own FileChooser does (1.16,
// src/documents.c register_document): O_PATH fds of the files (or of the
// parent, by name, for saving) to AddFull/AddNamedFull with reuse-existing |
// persistent (| directory), granted to the VM's app id — but asynchronously,
// kFilesPerCall fds per AddFull, all calls of one export in flight at once.
// The document's name is the one the portal gives it: the basename of the
// path the kernel resolved for our O_PATH fd (the portal resolves the very
// same fd), so no Info round trip is needed. Two deliberate differences from
// xdg-desktop-portal:
//  - no as-needed-by-app: the portal would then run `flatpak info` on the
//    app id and, if a flatpak of that name may read the file, return no
//    document at all (the caller is meant to pass the host path instead) —
//    which means nothing to a VM;
//  - only "read" and "write": the guest never talks to the document portal,
//    so "grant-permissions" and "delete" would mean nothing either.
// Persistence: AddFull answers before the permission store has written the
// new document to disk (the portal tells it asynchronously), and the store
// dies at once on SIGTERM, so a broker stopped right after an export would
// forget it. Setting the same permissions again through the store is a write
// barrier: the store answers once the table, with everything the portal sent
// before, is on disk. One barrier per export, sent after the guest has its
// answer (off its critical path); unpersisted() counts those in flight.
#include "documents/document-export.hpp"

#include <errno.h>
#include <fcntl.h>
#include <gio/gunixfdlist.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <deque>

#include "documents/app-id.hpp"
#include "documents/private-bus.hpp"
#include "util/main-context.hpp"
#include "util/unique-fd.hpp"

namespace sidebus {
namespace {

constexpr const char* kDocumentsName = "org.freedesktop.portal.Documents";
constexpr const char* kDocumentsPath = "/org/freedesktop/portal/documents";
constexpr const char* kDocumentsInterface = "org.freedesktop.portal.Documents";
// AddFull flags (document-portal/document-enums.h).
constexpr guint32 kAddReuseExisting = 1 << 0;
constexpr guint32 kAddPersistent = 1 << 1;
constexpr guint32 kAddDirectory = 1 << 3;
constexpr int kCallTimeoutMs = 30 * 1000;

// Document ids are short hexadecimal strings ("%x" of a random 32-bit number).
bool is_document_id(const std::string& id) {
  return !id.empty() && id.size() <= 64 && std::all_of(id.begin(), id.end(), [](char c) { return g_ascii_isalnum(c); });
}

// "/a//b/" → {"a", "b"}
std::vector<std::string> path_components(const std::string& path) {
  std::vector<std::string> components;
  g_auto(GStrv) parts = g_strsplit(path.c_str(), "/", -1);
  for (char** part = parts; *part != nullptr; part++)
    if (**part != '\0') components.emplace_back(*part);
  return components;
}

// Printable in a message, whatever bytes the string holds.
std::string printable(const std::string& text) {
  g_autofree char* valid = g_utf8_make_valid(text.c_str(), gssize(strnlen(text.c_str(), text.size())));
  return valid;
}

// A failed call to the document portal as a SIDEBUS_ERROR saying what was done.
void set_portal_error(GError** error, GError* call_error, const std::string& what) {
  g_dbus_error_strip_remote_error(call_error);
  int code = call_error->domain == SIDEBUS_ERROR ? call_error->code : SIDEBUS_ERROR_FAILED;
  g_set_error(error, SIDEBUS_ERROR, code, "%s: the document portal answered: %s", what.c_str(), call_error->message);
}

// "file:///a/b" on this host → "/a/b".
std::optional<std::string> host_path_from_uri(const std::string& uri, GError** error) {
  if (uri.find('\0') != std::string::npos || !g_utf8_validate(uri.data(), gssize(uri.size()), nullptr)) {
    g_set_error(error, SIDEBUS_ERROR, SIDEBUS_ERROR_INVALID_ARGUMENT, "the URI “%s” is not valid UTF-8",
                printable(uri).c_str());
    return std::nullopt;
  }
  g_autofree char* scheme = g_uri_parse_scheme(uri.c_str());
  if (scheme == nullptr) {
    g_set_error(error, SIDEBUS_ERROR, SIDEBUS_ERROR_INVALID_ARGUMENT,
                "“%s” is not an absolute URI: expected file:///path/to/file", uri.c_str());
    return std::nullopt;
  }
  if (g_ascii_strcasecmp(scheme, "file") != 0) {
    g_set_error(error, SIDEBUS_ERROR, SIDEBUS_ERROR_NOT_ALLOWED,
                "cannot export “%s”: only file:// URIs can be shared with a VM, not %s:", uri.c_str(), scheme);
    return std::nullopt;
  }
  g_autofree char* hostname = nullptr;
  g_autoptr(GError) local_error = nullptr;
  g_autofree char* path = g_filename_from_uri(uri.c_str(), &hostname, &local_error);
  if (path == nullptr) {
    g_set_error(error, SIDEBUS_ERROR, SIDEBUS_ERROR_INVALID_ARGUMENT, "“%s” is not a valid file URI: %s",
                uri.c_str(), local_error->message);
    return std::nullopt;
  }
  if (hostname != nullptr && *hostname != '\0' && g_ascii_strcasecmp(hostname, "localhost") != 0) {
    g_set_error(error, SIDEBUS_ERROR, SIDEBUS_ERROR_NOT_ALLOWED,
                "cannot export “%s”: it names a file on another host (%s)", uri.c_str(), hostname);
    return std::nullopt;
  }
  if (!g_path_is_absolute(path)) {
    g_set_error(error, SIDEBUS_ERROR, SIDEBUS_ERROR_INVALID_ARGUMENT, "“%s” does not name an absolute path",
                uri.c_str());
    return std::nullopt;
  }
  return std::string(path);
}


// The path the kernel resolved for @fd ("/proc/self/fd/N").
std::optional<std::string> resolved_path(int fd) {
  g_autofree char* link = g_strdup_printf("/proc/self/fd/%d", fd);
  g_autofree char* target = g_file_read_link(link, nullptr);
  if (target == nullptr) return std::nullopt;
  return std::string(target);
}

}  // namespace

// One export_uris() call in flight.
struct DocumentExporter::Job {
  struct Item {
    std::string host_path;
    UniqueFd fd;         // the file, or for FOR_SAVE its parent directory
    std::string name;    // the document's name in the guest
    bool directory = false;
    bool by_name = false;
    std::string doc_id;  // once the portal answered, or reused
    // What the document portal reuses the document by: the path it resolves
    // and this key (document-usage.hpp); nullopt if the parent cannot be
    // looked at.
    std::string resolved;
    std::optional<DocumentKey> key;
    bool reused = false;  // known already: no call for it
    bool grant = false;   // known, but without "write": GrantPermissions, no AddFull
  };
  std::vector<Item> items;
  std::deque<std::vector<size_t>> batches;  // not sent yet: indexes into items, one call each
  SidebusExportFlags flags = SIDEBUS_EXPORT_FLAGS_NONE;
  ExportDone done;
  int calls_pending = 0;
  GError* error = nullptr;  // the first failure
  ~Job() { g_clear_error(&error); }
  bool writable() const { return (flags & (SIDEBUS_EXPORT_FLAGS_WRITABLE | SIDEBUS_EXPORT_FLAGS_FOR_SAVE)) != 0; }
};

namespace {

// Opens what @item will be exported from and names it; false with @error.
bool prepare_item(DocumentExporter::Job::Item& item, SidebusExportFlags flags, GError** error) {
  const std::string& host_path = item.host_path;
  UniqueFd fd(open(host_path.c_str(), O_PATH | O_CLOEXEC));
  int open_errno = errno;
  struct stat st = {};
  const bool is_directory = fd && fstat(fd.get(), &st) == 0 && S_ISDIR(st.st_mode);
  // Saving goes by name in the parent directory (the file may not exist yet,
  // and an editor may replace it); a directory picked for saving is the
  // directory itself.
  item.by_name =
      (flags & SIDEBUS_EXPORT_FLAGS_FOR_SAVE) != 0 && !(is_directory && (flags & SIDEBUS_EXPORT_FLAGS_DIRECTORY) != 0);
  if (item.by_name) {
    if (is_directory) {
      g_set_error(error, SIDEBUS_ERROR, SIDEBUS_ERROR_INVALID_ARGUMENT,
                  "cannot save to %s: it is a directory (export it with SIDEBUS_EXPORT_FLAGS_DIRECTORY)",
                  host_path.c_str());
      return false;
    }
    g_autofree char* parent = g_path_get_dirname(host_path.c_str());
    g_autofree char* name = g_path_get_basename(host_path.c_str());
    if (strcmp(name, "/") == 0 || strcmp(name, ".") == 0 || strcmp(name, "..") == 0) {
      g_set_error(error, SIDEBUS_ERROR, SIDEBUS_ERROR_INVALID_ARGUMENT, "%s does not name a file to save to",
                  host_path.c_str());
      return false;
    }
    item.fd = UniqueFd(open(parent, O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (!item.fd) {
      int saved_errno = errno;
      g_set_error(error, SIDEBUS_ERROR, SIDEBUS_ERROR_NOT_FOUND, "cannot save to %s: cannot open its directory: %s",
                  host_path.c_str(), g_strerror(saved_errno));
      return false;
    }
    item.name = name;
    return true;
  }
  if (!fd) {
    g_set_error(error, SIDEBUS_ERROR, SIDEBUS_ERROR_NOT_FOUND, "cannot export %s: %s", host_path.c_str(),
                g_strerror(open_errno));
    return false;
  }
  if (is_directory && (flags & SIDEBUS_EXPORT_FLAGS_DIRECTORY) == 0) {
    g_set_error(error, SIDEBUS_ERROR, SIDEBUS_ERROR_INVALID_ARGUMENT,
                "cannot export %s: it is a directory (export it with SIDEBUS_EXPORT_FLAGS_DIRECTORY)",
                host_path.c_str());
    return false;
  }
  if (!is_directory && !S_ISREG(st.st_mode)) {
    g_set_error(error, SIDEBUS_ERROR, SIDEBUS_ERROR_INVALID_ARGUMENT,
                "cannot export %s: it is neither a regular file nor a directory", host_path.c_str());
    return false;
  }
  // The portal names the document after the path it resolves for this fd
  // (symbolic links followed), which may differ from ours.
  auto resolved = resolved_path(fd.get());
  g_autofree char* name = g_path_get_basename(resolved ? resolved->c_str() : host_path.c_str());
  item.name = name;
  item.directory = is_directory;
  item.fd = std::move(fd);
  return true;
}

// What the document portal will key @item's document by (1.16,
// document-portal.c validate_fd and do_create_doc): the path it resolves for
// the fd, its directory's device and inode, and the directory flag; for a
// save (AddNamedFull) the resolved directory + the name, not a directory.
void find_key(DocumentExporter::Job::Item& item) {
  struct stat st = {};
  if (item.by_name) {
    auto parent = resolved_path(item.fd.get());
    if (!parent || fstat(item.fd.get(), &st) != 0) return;
    item.resolved = (*parent == "/" ? "" : *parent) + "/" + item.name;
  } else {
    auto resolved = resolved_path(item.fd.get());
    if (!resolved) return;
    g_autofree char* parent = g_path_get_dirname(resolved->c_str());
    if (stat(parent, &st) != 0) return;
    item.resolved = *resolved;
  }
  item.key =
      DocumentKey{.parent_device = guint64(st.st_dev), .parent_inode = guint64(st.st_ino), .directory = item.directory};
}

// One AddFull or AddNamedFull call and the items it answers for.
struct Call {
  std::shared_ptr<DocumentExporter::Job> job;
  std::shared_ptr<DocumentExporter*> alive;
  std::vector<size_t> items;
};

}  // namespace

DocumentExporter::DocumentExporter(PrivateBus& private_bus, std::string app_id, std::string guest_documents_path,
                                   std::string usage_path)
    : private_bus_(private_bus),
      app_id_(app_id_for_vm(app_id)),
      documents_mount_(private_bus.documents_mount()),
      guest_documents_path_(std::move(guest_documents_path)),
      usage_(std::move(usage_path)),
      alive_(std::make_shared<DocumentExporter*>(this)) {
  usage_.load();
  retention_period_source_ = g_timeout_add_seconds(
      kRetentionPeriodSeconds,
      [](gpointer data) -> gboolean {
        static_cast<DocumentExporter*>(data)->schedule_retention(0);
        return G_SOURCE_CONTINUE;
      },
      this);
  (void)SIDEBUS_ERROR;  // registers the portal's D-Bus error names, so its errors map onto SIDEBUS_ERROR
  if (app_id_ != app_id) g_debug("documents are shared with VM %s as app id %s", app_id.c_str(), app_id_.c_str());
  reload_index();
}

DocumentExporter::~DocumentExporter() {
  *alive_ = nullptr;
  if (retention_source_ != 0) g_source_remove(retention_source_);
  if (retention_period_source_ != 0) g_source_remove(retention_period_source_);
}

std::string DocumentExporter::guest_view_path() const { return documents_mount_ + "/by-app/" + app_id_; }

GDBusConnection* DocumentExporter::connection() const { return private_bus_.connection(); }

void DocumentExporter::reload_index() {
  GDBusConnection* bus = connection();
  if (bus == nullptr) return;
  holding_exports_++;  // until the index and the documents' keys are known (release_exports)
  auto* alive = new std::shared_ptr<DocumentExporter*>(alive_);
  g_dbus_connection_call(
      bus, kDocumentsName, kDocumentsPath, kDocumentsInterface, "List", g_variant_new("(s)", app_id_.c_str()),
      G_VARIANT_TYPE("(a{say})"), G_DBUS_CALL_FLAGS_NO_AUTO_START, kCallTimeoutMs, nullptr,
      [](GObject* source, GAsyncResult* result, gpointer data) {
        std::unique_ptr<std::shared_ptr<DocumentExporter*>> alive(static_cast<std::shared_ptr<DocumentExporter*>*>(data));
        g_autoptr(GError) error = nullptr;
        g_autoptr(GVariant) reply = g_dbus_connection_call_finish(G_DBUS_CONNECTION(source), result, &error);
        DocumentExporter* self = **alive;
        if (self == nullptr) return;
        if (reply == nullptr) {
          g_dbus_error_strip_remote_error(error);
          g_warning("cannot list the VM's documents (app id %s): %s; guest paths of documents cannot be mapped "
                    "back until the document portal is restarted",
                    self->app_id_.c_str(), error->message);
          self->release_exports();
          return;
        }
        g_autoptr(GVariant) documents = g_variant_get_child_value(reply, 0);
        GVariantIter iter;
        const char* doc_id;
        GVariant* path;
        g_variant_iter_init(&iter, documents);
        std::map<std::string, IndexEntry> index;
        while (g_variant_iter_loop(&iter, "{&s@ay}", &doc_id, &path))
          if (is_document_id(doc_id)) index[doc_id] = IndexEntry{g_variant_get_bytestring(path), std::nullopt};
        std::vector<std::string> ids;
        {
          std::lock_guard lock(self->index_mutex_);
          // Exports that finished while the list was on its way stay, and
          // what is known of the permissions.
          for (auto& [id, entry] : self->index_) {
            auto [it, added] = index.emplace(id, entry);
            if (!added) it->second.writable = entry.writable;
          }
          self->index_ = std::move(index);
          self->index_loaded_ = true;
          self->index_paths_.clear();
          for (auto& [id, entry] : self->index_) {
            ids.push_back(id);
            self->index_paths_.insert(entry.host_path);
          }
        }
        // What usage_ knows of documents the portal no longer has goes; a
        // document it does not know counts as used now.
        const gint64 now = g_get_real_time();
        std::vector<std::string> gone;
        for (const auto& [id, use] : self->usage_.entries())
          if (!self->index_.contains(id)) gone.push_back(id);
        for (const std::string& id : gone) self->usage_.forget(id);
        self->by_path_.clear();
        for (const auto& [id, entry] : self->index_) {
          self->usage_.adopt(id, now);
          if (self->usage_.find(id)->key) self->by_path_[entry.host_path] = id;
        }
        g_debug("document index of %s: %zu documents", self->app_id_.c_str(), ids.size());
        self->learn_permissions(ids);
        self->learn_keys();  // then release_exports()
        self->schedule_retention(0);
      },
      alive);
}

void DocumentExporter::export_uris(const std::vector<std::string>& host_uris, SidebusExportFlags flags,
                                   ExportDone done) {
  if (holding_exports_ != 0) {
    // What the same file is reused by is not known yet: AddFull now could
    // give the guest a second document of a file it has one of.
    held_exports_.push_back(
        [this, host_uris, flags, done = std::move(done)]() mutable { export_uris(host_uris, flags, std::move(done)); });
    return;
  }
  auto job = std::make_shared<Job>();
  job->flags = flags;
  job->done = std::move(done);
  auto fail_soon = [this, job](GError* error) {
    job->error = error;
    post_to_context(g_main_context_get_thread_default(), [alive = alive_, job] {
      if (*alive) (*alive)->finish_job(job);
    });
  };
  GError* error = nullptr;
  for (const std::string& uri : host_uris) {  // all checked before anything is exported
    auto path = host_path_from_uri(uri, &error);
    if (!path) return fail_soon(error);
    job->items.push_back(Job::Item{.host_path = std::move(*path)});
  }
  for (auto& item : job->items) {
    if (!prepare_item(item, flags, &error)) return fail_soon(error);
    find_key(item);
  }
  if (job->items.empty()) return fail_soon(nullptr);  // nothing to export: an empty answer, later
  if (try_reuse(*job)) return fail_soon(nullptr);     // every document known: the answer, later

  // Regular files and directories in separate AddFull calls (the directory
  // flag is per call); saves one AddNamedFull each.
  for (bool directories : {false, true}) {
    std::vector<size_t> batch;
    for (size_t i = 0; i < job->items.size(); i++) {
      const auto& item = job->items[i];
      if (item.reused || item.grant || item.by_name || item.directory != directories) continue;
      batch.push_back(i);
      if (batch.size() == kFilesPerCall) job->batches.push_back(std::exchange(batch, {}));
    }
    if (!batch.empty()) job->batches.push_back(std::move(batch));
  }
  for (size_t i = 0; i < job->items.size(); i++)
    if ((job->items[i].by_name || job->items[i].grant) && !job->items[i].reused) job->batches.push_back({i});
  waiting_.push_back(job);
  dispatch();
}

// Sends batches while fewer than kCallsInFlight are out, taking one batch of
// each waiting export in turn: a 10 000-file answer does not hold up the
// others, and the private bus never holds more replies than it allows.
void DocumentExporter::dispatch() {
  // Deletions of the retention policy in flight: the document portal could
  // otherwise reuse a document for an export just before it deletes it.
  if (deletes_in_flight_ != 0) return;
  while (calls_in_flight_ < kCallsInFlight && !waiting_.empty()) {
    std::shared_ptr<Job> job = waiting_.front();
    waiting_.pop_front();
    if (job->error != nullptr) {  // failed meanwhile: the rest is not sent
      if (job->calls_pending == 0) finish_job(job);
      continue;
    }
    std::vector<size_t> batch = std::move(job->batches.front());
    job->batches.pop_front();
    if (!job->batches.empty()) waiting_.push_back(job);
    send(job, std::move(batch));
  }
}

void DocumentExporter::send(const std::shared_ptr<Job>& job, std::vector<size_t> batch) {
  GDBusConnection* bus = connection();
  GError* error = nullptr;
  if (bus == nullptr || g_dbus_connection_is_closed(bus)) {
    error = g_error_new(SIDEBUS_ERROR, SIDEBUS_ERROR_FAILED,
                        "cannot export: the private document portal is not running (restarting?)");
  }
  g_autoptr(GUnixFDList) fd_list = g_unix_fd_list_new();
  std::vector<gint32> handles;
  for (size_t i = 0; error == nullptr && i < batch.size(); i++) {
    gint32 handle = g_unix_fd_list_append(fd_list, job->items[batch[i]].fd.get(), &error);
    handles.push_back(handle);
  }
  if (error != nullptr) {
    if (job->error == nullptr) job->error = error; else g_error_free(error);
    if (job->calls_pending == 0) finish_job(job);
    return;
  }
  const char* permissions[] = {"read", job->writable() ? "write" : nullptr, nullptr};
  const Job::Item& first = job->items[batch.front()];
  if (first.grant) {
    // A document this VM has, without "write" yet: grant it, keep the id.
    job->calls_pending++;
    calls_in_flight_++;
    g_dbus_connection_call(
        bus, kDocumentsName, kDocumentsPath, kDocumentsInterface, "GrantPermissions",
        g_variant_new("(ss^as)", first.doc_id.c_str(), app_id_.c_str(), permissions), G_VARIANT_TYPE("()"),
        G_DBUS_CALL_FLAGS_NO_AUTO_START, kCallTimeoutMs, nullptr,
        DocumentExporter::on_call_done,
        new Call{job, alive_, std::move(batch)});
    return;
  }
  // reuse-existing makes the document portal compare the file with every
  // document it holds (xdg-document-portal 1.16: a linear scan per file), so
  // that an export costs more the more the VM was ever given. The index
  // holds every document of this VM's private portal: a file whose path no
  // document has cannot be reused, and needs no scan. (While the index is
  // loading, or for a path we could not resolve, the portal looks.) Without
  // the flag the portal marks the document unique: no later reuse-existing
  // finds it. So a document this VM has is reused through the index
  // (try_reuse), and given "write" with GrantPermissions, not AddFull —
  // which needs the keys kept in the state file: an exporter without one
  // always lets the portal look.
  bool may_exist = !index_loaded() || !usage_.persistent();
  for (size_t i = 0; !may_exist && i < batch.size(); i++) {
    const Job::Item& item = job->items[batch[i]];
    may_exist = item.resolved.empty() || index_paths_.contains(item.resolved);
  }
  const guint32 reuse = may_exist ? kAddReuseExisting : 0;
  GVariant* parameters;
  const GVariantType* reply_type;
  const char* method;
  if (first.by_name) {
    method = "AddNamedFull";
    parameters = g_variant_new("(h@ayus^as)", handles[0], g_variant_new_bytestring(first.name.c_str()),
                               guint32(reuse | kAddPersistent), app_id_.c_str(), permissions);
    reply_type = G_VARIANT_TYPE("(sa{sv})");
  } else {
    method = "AddFull";
    parameters = g_variant_new(
        "(@ahus^as)", g_variant_new_fixed_array(G_VARIANT_TYPE_HANDLE, handles.data(), handles.size(), sizeof(gint32)),
        guint32(reuse | kAddPersistent | (first.directory ? kAddDirectory : 0)), app_id_.c_str(), permissions);
    reply_type = G_VARIANT_TYPE("(asa{sv})");
  }
  job->calls_pending++;
  calls_in_flight_++;
  g_dbus_connection_call_with_unix_fd_list(
      bus, kDocumentsName, kDocumentsPath, kDocumentsInterface, method, parameters, reply_type,
      G_DBUS_CALL_FLAGS_NO_AUTO_START, kCallTimeoutMs, fd_list, nullptr,
      DocumentExporter::on_call_done,
      new Call{job, alive_, std::move(batch)});
}

// The answer to a GrantPermissions, AddFull or AddNamedFull of send().
void DocumentExporter::on_call_done(GObject* source, GAsyncResult* result, gpointer data) {
  std::unique_ptr<Call> call(static_cast<Call*>(data));
  g_autoptr(GError) call_error = nullptr;
  g_autoptr(GVariant) reply = g_dbus_connection_call_finish(G_DBUS_CONNECTION(source), result, &call_error);
  DocumentExporter* self = *call->alive;
  if (self == nullptr) return;
  self->on_reply(call->job, call->items, reply, call_error);
}

void DocumentExporter::on_reply(const std::shared_ptr<Job>& job, const std::vector<size_t>& batch, GVariant* reply,
                                GError* call_error) {
  calls_in_flight_--;
  job->calls_pending--;
  if (reply == nullptr) {
    if (job->error == nullptr) set_portal_error(&job->error, call_error, "cannot export " + job->items[batch.front()].host_path);
  } else if (g_variant_is_of_type(reply, G_VARIANT_TYPE_UNIT)) {          // GrantPermissions: the id is known
  } else if (g_variant_is_of_type(reply, G_VARIANT_TYPE("(asa{sv})"))) {  // AddFull
    g_autofree const char** ids = nullptr;
    g_variant_get(reply, "(^a&s@a{sv})", &ids, nullptr);
    for (size_t i = 0; i < batch.size() && ids[i] != nullptr; i++) job->items[batch[i]].doc_id = ids[i];
  } else {  // AddNamedFull
    const char* id;
    g_variant_get(reply, "(&s@a{sv})", &id, nullptr);
    job->items[batch.front()].doc_id = id;
  }
  if (job->calls_pending == 0 && (job->batches.empty() || job->error != nullptr)) {
    // A failed job may still be in the rotation: it is dropped there.
    if (job->error != nullptr) job->batches.clear();
    finish_job(job);
  }
  dispatch();
  pump_deletes();  // deletions of the retention policy wait while exports do
}

void DocumentExporter::finish_job(const std::shared_ptr<Job>& job) {
  if (!job->done) return;  // finished already (a failure before every call was sent)
  ExportDone done = std::move(job->done);
  job->done = nullptr;
  if (job->error != nullptr) return done(std::nullopt, job->error);
  const gint64 now = g_get_real_time();
  // A document the retention policy chose but has not deleted yet is in use
  // again: it stays. One it has deleted since a reuse was decided is gone.
  for (auto& item : job->items) {
    auto waiting = deletes_waiting_.find(item.doc_id);
    if (waiting != deletes_waiting_.end()) {
      {
        std::lock_guard lock(index_mutex_);
        index_[item.doc_id].host_path = waiting->second;
      }
      index_paths_.insert(waiting->second);
      if (item.key) by_path_[waiting->second] = item.doc_id;
      deletes_waiting_.erase(waiting);
    } else if (item.reused && !index_.contains(item.doc_id)) {
      g_autoptr(GError) error = g_error_new(SIDEBUS_ERROR, SIDEBUS_ERROR_FAILED,
                                            "cannot export %s: its document was just deleted (document retention); "
                                            "choose it again",
                                            item.host_path.c_str());
      return done(std::nullopt, error);
    }
  }
  std::vector<std::string> guest_uris;
  for (auto& item : job->items) {
    if (!is_document_id(item.doc_id)) {
      g_autoptr(GError) error = g_error_new(SIDEBUS_ERROR, SIDEBUS_ERROR_FAILED,
                                            "cannot export %s: the document portal returned no document id",
                                            item.host_path.c_str());
      return done(std::nullopt, error);
    }
    g_autofree char* guest_path =
        g_build_filename(guest_documents_path_.c_str(), item.doc_id.c_str(), item.name.c_str(), nullptr);
    g_autoptr(GError) uri_error = nullptr;
    g_autofree char* guest_uri = g_filename_to_uri(guest_path, nullptr, &uri_error);
    if (guest_uri == nullptr) {
      g_autoptr(GError) error = g_error_new(
          SIDEBUS_ERROR, SIDEBUS_ERROR_FAILED, "cannot make a URI of %s (is the guest documents path “%s” absolute?): %s",
          guest_path, guest_documents_path_.c_str(), uri_error->message);
      return done(std::nullopt, error);
    }
    usage_.touch(item.doc_id, now, item.reused ? std::nullopt : item.key);
    if (item.reused) {
      g_debug("exported %s to app %s as %s (the same document again)", item.host_path.c_str(), app_id_.c_str(),
              guest_uri);
      guest_uris.emplace_back(guest_uri);
      continue;
    }
    // The document stands for the path the portal resolved: the parent's
    // for a save, the file's own otherwise.
    std::string indexed;
    if (item.by_name) {
      auto parent = resolved_path(item.fd.get());
      g_autofree char* dirname = g_path_get_dirname(item.host_path.c_str());
      indexed = (parent ? *parent : std::string(dirname)) + "/" + item.name;
    } else {
      auto resolved = resolved_path(item.fd.get());
      indexed = resolved ? *resolved : item.host_path;
    }
    {
      std::lock_guard lock(index_mutex_);
      auto& entry = index_[item.doc_id];
      if (auto old = index_paths_.find(entry.host_path); old != index_paths_.end()) index_paths_.erase(old);
      entry.host_path = indexed;
      index_paths_.insert(indexed);
      // Granted now; what else the document portal holds for it comes below.
      if (job->writable()) entry.writable = true;
    }
    if (item.key && indexed == item.resolved)
      by_path_[indexed] = item.doc_id;
    else
      by_path_.erase(indexed);
    g_debug("exported %s to app %s as %s", item.host_path.c_str(), app_id_.c_str(), guest_uri);
    guest_uris.emplace_back(guest_uri);
  }
  std::string last_doc_id;  // the last one AddFull made or granted: the persistence barrier
  bool writable = job->writable();
  std::vector<std::string> ids;
  for (auto& item : job->items) {
    if (item.reused) continue;
    last_doc_id = item.doc_id;
    if (!writable) ids.push_back(item.doc_id);
  }
  done(std::move(guest_uris), nullptr);
  if (!ids.empty()) learn_permissions(ids);
  if (!last_doc_id.empty()) persist(last_doc_id, writable);  // after the guest has its answer
  if (retention_.max_documents != 0 && documents() > retention_.max_documents)
    schedule_retention(kRetentionIdleSeconds);
}

void DocumentExporter::persist(const std::string& doc_id, bool writable) {
  GDBusConnection* bus = connection();
  if (bus == nullptr) return;
  const char* permissions[] = {"read", writable ? "write" : nullptr, nullptr};
  unpersisted_++;
  g_dbus_connection_call(
      bus, "org.freedesktop.impl.portal.PermissionStore", "/org/freedesktop/impl/portal/PermissionStore",
      "org.freedesktop.impl.portal.PermissionStore", "SetPermission",
      g_variant_new("(sbss^as)", "documents", FALSE, doc_id.c_str(), app_id_.c_str(), permissions), nullptr,
      G_DBUS_CALL_FLAGS_NO_AUTO_START, kCallTimeoutMs, nullptr,
      [](GObject* source, GAsyncResult* result, gpointer data) {
        std::unique_ptr<std::shared_ptr<DocumentExporter*>> alive(static_cast<std::shared_ptr<DocumentExporter*>*>(data));
        g_autoptr(GError) error = nullptr;
        g_autoptr(GVariant) reply = g_dbus_connection_call_finish(G_DBUS_CONNECTION(source), result, &error);
        DocumentExporter* self = **alive;
        if (self == nullptr) return;
        self->unpersisted_--;
        if (reply == nullptr) {
          g_dbus_error_strip_remote_error(error);
          g_warning("exported files, but could not make sure they are saved in the state directory: %s",
                    error->message);
        }
      },
      new std::shared_ptr<DocumentExporter*>(alive_));
}

// Every item whose file has a document this VM holds already, keyed as the
// document portal would key it now, with the permissions asked for, takes
// that document (no call: AddFull with reuse-existing would answer the same
// id and grant nothing new). True if no item needs the portal.
bool DocumentExporter::try_reuse(Job& job) {
  bool all = true;
  for (auto& item : job.items) {
    auto known = item.key ? by_path_.find(item.resolved) : by_path_.end();
    if (known == by_path_.end()) {
      all = false;
      continue;
    }
    const DocumentUse* use = usage_.find(known->second);
    auto indexed = index_.find(known->second);
    const bool same =
        use != nullptr && use->key == item.key && indexed != index_.end() && indexed->second.host_path == item.resolved;
    // Writable only once the portal said so for this app (granted by us).
    const bool permitted = !job.writable() || (indexed != index_.end() && indexed->second.writable == true);
    if (!same) {
      all = false;
      continue;
    }
    item.doc_id = known->second;
    if (!permitted) {  // the same document, with "write" granted
      item.grant = true;
      all = false;
      continue;
    }
    item.reused = true;
  }
  return all;
}

void DocumentExporter::set_retention(const RetentionPolicy& policy) {
  if (policy == retention_) return;
  retention_ = policy;
  g_debug("document retention for %s: at most %u documents, unused for at most %u days (0: no limit)", app_id_.c_str(),
          policy.max_documents, policy.max_unused_days);
  if (index_loaded()) schedule_retention(0);
}

// A pass in @delay_seconds (again from now if one is scheduled already: the
// idle delay starts after the last export).
void DocumentExporter::schedule_retention(guint delay_seconds) {
  if (retention_source_ != 0) g_source_remove(retention_source_);
  auto run = [](gpointer data) -> gboolean {
    auto* self = static_cast<DocumentExporter*>(data);
    self->retention_source_ = 0;
    self->run_retention();
    return G_SOURCE_REMOVE;
  };
  retention_source_ = delay_seconds == 0 ? g_idle_add_full(G_PRIORITY_LOW, run, this, nullptr)
                                         : g_timeout_add_seconds(delay_seconds, run, this);
}

// Chooses what the policy deletes and starts deleting it. Those documents
// leave the index at once (the reverse mapping refuses them, nothing reuses
// them); the calls go out only while no export waits.
void DocumentExporter::run_retention() {
  if (!index_loaded() || !deletes_waiting_.empty() || deletes_in_flight_ != 0) return;
  if (!waiting_.empty() || calls_in_flight_ != 0) return schedule_retention(kRetentionIdleSeconds);
  const gint64 now = g_get_real_time();
  std::vector<std::pair<std::string, gint64>> documents;
  for (const auto& [id, entry] : index_) {
    const DocumentUse* use = usage_.find(id);
    documents.emplace_back(id, use != nullptr ? use->last_used : now);
  }
  const size_t before = documents.size();
  RetentionChoice choice = choose_documents_to_delete(std::move(documents), now, retention_);
  if (choice.doc_ids.empty()) return;
  g_message(
      "document retention: deleting %zu of the %zu documents of %s (%zu unused for more than %u days, %zu "
      "beyond the limit of %u)",
      choice.doc_ids.size(), before, app_id_.c_str(), choice.unused, retention_.max_unused_days, choice.over_limit,
      retention_.max_documents);
  {
    std::lock_guard lock(index_mutex_);
    for (const std::string& id : choice.doc_ids) {
      auto found = index_.find(id);
      auto by_path = by_path_.find(found->second.host_path);
      if (by_path != by_path_.end() && by_path->second == id) by_path_.erase(by_path);
      deletes_waiting_.emplace(id, found->second.host_path);
      if (auto path = index_paths_.find(found->second.host_path); path != index_paths_.end()) index_paths_.erase(path);
      index_.erase(found);
    }
  }
  deletes_failed_ = 0;
  pump_deletes();
}

void DocumentExporter::pump_deletes() {
  GDBusConnection* bus = connection();
  while (deletes_in_flight_ < kCallsInFlight && !deletes_waiting_.empty() && waiting_.empty() &&
         calls_in_flight_ == 0) {
    if (bus == nullptr || g_dbus_connection_is_closed(bus)) {
      // Not deleted: they are in the portal's List next time, and chosen again.
      g_warning("document retention: the private document portal is not running; %zu deletion(s) left for later",
                deletes_waiting_.size());
      deletes_waiting_.clear();
      return;
    }
    auto next = deletes_waiting_.begin();
    std::string doc_id = next->first;
    deletes_waiting_.erase(next);
    deletes_in_flight_++;
    unpersisted_++;  // the broker waits for these before it stops the bus
    struct Deletion {
      std::shared_ptr<DocumentExporter*> alive;
      std::string doc_id;
    };
    g_dbus_connection_call(
        bus, kDocumentsName, kDocumentsPath, kDocumentsInterface, "Delete", g_variant_new("(s)", doc_id.c_str()),
        nullptr, G_DBUS_CALL_FLAGS_NO_AUTO_START, kCallTimeoutMs, nullptr,
        [](GObject* source, GAsyncResult* result, gpointer data) {
          std::unique_ptr<Deletion> deletion(static_cast<Deletion*>(data));
          g_autoptr(GError) error = nullptr;
          g_autoptr(GVariant) reply = g_dbus_connection_call_finish(G_DBUS_CONNECTION(source), result, &error);
          DocumentExporter* self = *deletion->alive;
          if (self == nullptr) return;
          self->on_deleted(deletion->doc_id, reply == nullptr ? error : nullptr);
        },
        new Deletion{alive_, doc_id});
  }
}

void DocumentExporter::on_deleted(const std::string& doc_id, GError* error) {
  deletes_in_flight_--;
  unpersisted_--;
  if (error != nullptr) {
    g_dbus_error_strip_remote_error(error);
    g_debug("document retention: cannot delete document %s: %s", doc_id.c_str(), error->message);
    deletes_failed_++;
  } else {
    documents_deleted_++;
    usage_.forget(doc_id);
  }
  if (deletes_in_flight_ == 0 && deletes_waiting_.empty()) {
    if (deletes_failed_ != 0)
      g_warning("document retention: %zu document(s) of %s could not be deleted", deletes_failed_, app_id_.c_str());
    g_message("document retention: %s now holds %zu documents (%zu deleted since start-up)", app_id_.c_str(),
              documents(), documents_deleted_);
  }
  if (deletes_in_flight_ == 0) dispatch();  // exports that waited go first
  pump_deletes();
}

// The key of every document in the index that usage_ does not know (the
// state file lost, documents migrated from another host, or made by a
// sidebus without it), read from the permission store's table: the (ayttu)
// of xdg-document-portal 1.16 holds the path, its directory's device and
// inode. At most kCallsInFlight at a time; exports wait (release_exports).
void DocumentExporter::learn_keys() {
  GDBusConnection* bus = connection();
  for (const auto& [id, entry] : index_) {
    const DocumentUse* use = usage_.find(id);
    if (use == nullptr || !use->key) keys_to_learn_.push_back(id);
  }
  if (bus == nullptr || keys_to_learn_.empty()) {
    keys_to_learn_.clear();
    return release_exports();
  }
  g_debug("reading the keys of %zu documents from the permission store", keys_to_learn_.size());
  learns_waiting_++;  // released when every lookup has answered
  pump_key_lookups();
}

void DocumentExporter::pump_key_lookups() {
  GDBusConnection* bus = connection();
  while (bus != nullptr && key_lookups_in_flight_ < kCallsInFlight && !keys_to_learn_.empty()) {
    struct Lookup {
      std::shared_ptr<DocumentExporter*> alive;
      std::string doc_id;
    };
    std::string doc_id = keys_to_learn_.back();
    keys_to_learn_.pop_back();
    key_lookups_in_flight_++;
    g_dbus_connection_call(
        bus, "org.freedesktop.impl.portal.PermissionStore", "/org/freedesktop/impl/portal/PermissionStore",
        "org.freedesktop.impl.portal.PermissionStore", "Lookup", g_variant_new("(ss)", "documents", doc_id.c_str()),
        G_VARIANT_TYPE("(a{sas}v)"), G_DBUS_CALL_FLAGS_NO_AUTO_START, kCallTimeoutMs, nullptr,
        [](GObject* source, GAsyncResult* result, gpointer data) {
          std::unique_ptr<Lookup> lookup(static_cast<Lookup*>(data));
          g_autoptr(GError) error = nullptr;
          g_autoptr(GVariant) reply = g_dbus_connection_call_finish(G_DBUS_CONNECTION(source), result, &error);
          DocumentExporter* self = *lookup->alive;
          if (self == nullptr) return;
          self->key_lookups_in_flight_--;
          g_autoptr(GVariant) boxed = reply != nullptr ? g_variant_get_child_value(reply, 1) : nullptr;
          g_autoptr(GVariant) value = boxed != nullptr ? g_variant_get_variant(boxed) : nullptr;
          auto indexed = self->index_.find(lookup->doc_id);
          if (value != nullptr && g_variant_is_of_type(value, G_VARIANT_TYPE("(ayttu)")) &&
              indexed != self->index_.end()) {
            const char* path = nullptr;
            guint64 device = 0, inode = 0;
            guint32 flags = 0;
            g_variant_get(value, "(^&ayttu)", &path, &device, &inode, &flags);
            if (path != nullptr && indexed->second.host_path == path) {
              DocumentKey key{.parent_device = device,
                              .parent_inode = inode,
                              .directory = g_file_test(path, G_FILE_TEST_IS_DIR) != FALSE};
              self->usage_.set_key(lookup->doc_id, key);
              self->by_path_[indexed->second.host_path] = lookup->doc_id;
            }
          } else if (reply == nullptr) {
            g_debug("no key of document %s: %s", lookup->doc_id.c_str(), error->message);
          }
          if (self->key_lookups_in_flight_ == 0 && self->keys_to_learn_.empty()) return self->keys_learned();
          self->pump_key_lookups();
        },
        new Lookup{alive_, std::move(doc_id)});
  }
  if (key_lookups_in_flight_ == 0) {  // the bus went away meanwhile
    keys_to_learn_.clear();
    keys_learned();
  }
}

void DocumentExporter::keys_learned() {
  for (; learns_waiting_ > 0; learns_waiting_--) release_exports();
}

void DocumentExporter::release_exports() {
  if (holding_exports_ == 0 || --holding_exports_ != 0) return;
  auto held = std::exchange(held_exports_, {});
  for (auto& run : held) run();
}

bool DocumentExporter::index_loaded() const {
  std::lock_guard lock(index_mutex_);
  return index_loaded_;
}

std::optional<bool> DocumentExporter::document_writable(const std::string& doc_id) const {
  std::lock_guard lock(index_mutex_);
  auto found = index_.find(doc_id);
  if (found == index_.end()) return std::nullopt;
  return found->second.writable;
}

// Asks the document portal what this app may do with each document
// (Documents.Info: the apps and their permissions), all calls at once.
void DocumentExporter::learn_permissions(const std::vector<std::string>& doc_ids) {
  GDBusConnection* bus = connection();
  if (bus == nullptr) return;
  for (const std::string& doc_id : doc_ids) {
    struct Ask {
      std::shared_ptr<DocumentExporter*> alive;
      std::string doc_id;
    };
    g_dbus_connection_call(
        bus, kDocumentsName, kDocumentsPath, kDocumentsInterface, "Info", g_variant_new("(s)", doc_id.c_str()),
        G_VARIANT_TYPE("(aya{sas})"), G_DBUS_CALL_FLAGS_NO_AUTO_START, kCallTimeoutMs, nullptr,
        [](GObject* source, GAsyncResult* result, gpointer data) {
          std::unique_ptr<Ask> ask(static_cast<Ask*>(data));
          g_autoptr(GError) error = nullptr;
          g_autoptr(GVariant) reply = g_dbus_connection_call_finish(G_DBUS_CONNECTION(source), result, &error);
          DocumentExporter* self = *ask->alive;
          if (self == nullptr) return;
          if (reply == nullptr) {
            g_debug("no permissions of document %s: %s", ask->doc_id.c_str(), error->message);
            return;
          }
          g_autoptr(GVariant) apps = g_variant_get_child_value(reply, 1);
          g_autofree const char** permissions = nullptr;
          bool writable = false;
          if (g_variant_lookup(apps, self->app_id_.c_str(), "^a&s", &permissions))
            for (const char** p = permissions; *p != nullptr; p++) writable = writable || g_str_equal(*p, "write");
          std::lock_guard lock(self->index_mutex_);
          auto found = self->index_.find(ask->doc_id);
          if (found != self->index_.end()) found->second.writable = writable;
        },
        new Ask{alive_, doc_id});
  }
}

std::optional<std::string> DocumentExporter::guest_path_to_host_path(const std::string& guest_path,
                                                                    GError** error) const {
  auto not_allowed = [&](const std::string& why) -> std::optional<std::string> {
    g_set_error(error, SIDEBUS_ERROR, SIDEBUS_ERROR_NOT_ALLOWED, "“%s” %s", printable(guest_path).c_str(),
                why.c_str());
    return std::nullopt;
  };
  auto not_found = [&](const std::string& why) -> std::optional<std::string> {
    g_set_error(error, SIDEBUS_ERROR, SIDEBUS_ERROR_NOT_FOUND, "“%s” %s", printable(guest_path).c_str(),
                why.c_str());
    return std::nullopt;
  };
  const std::string documents = "the documents directory " + guest_documents_path_;

  if (guest_path.find('\0') != std::string::npos) return not_allowed("contains a NUL byte");
  std::string path = guest_path;
  if (g_str_has_prefix(guest_path.c_str(), "file:")) {
    g_autofree char* hostname = nullptr;
    g_autofree char* uri_path = g_filename_from_uri(guest_path.c_str(), &hostname, nullptr);
    if (uri_path == nullptr || (hostname != nullptr && *hostname != '\0' && strcmp(hostname, "localhost") != 0))
      return not_allowed("is not a file:// URI in " + documents);
    path = uri_path;
  }
  if (path.empty() || path[0] != '/') return not_allowed("is not an absolute path in " + documents);

  std::vector<std::string> components = path_components(path);
  for (const std::string& component : components)
    if (component == "." || component == "..") return not_allowed("contains “.” or “..”");
  std::vector<std::string> base = path_components(guest_documents_path_);
  if (components == base) return not_allowed("is " + documents + " itself, not a document in it");
  if (components.size() <= base.size() || !std::equal(base.begin(), base.end(), components.begin()))
    return not_allowed("is outside " + documents);
  const std::string& doc_id = components[base.size()];
  if (!is_document_id(doc_id)) return not_allowed("does not name a document in " + documents);
  if (components.size() == base.size() + 1) return not_allowed("is a document's folder, not a file");
  const std::string& name = components[base.size() + 1];
  std::vector<std::string> inside(components.begin() + ptrdiff_t(base.size()) + 2, components.end());

  std::string host_path;
  {
    std::lock_guard lock(index_mutex_);
    if (!index_loaded_) {
      g_set_error(error, SIDEBUS_ERROR, SIDEBUS_ERROR_FAILED,
                  "cannot look up “%s”: the VM's document index is still loading; try again",
                  printable(guest_path).c_str());
      return std::nullopt;
    }
    auto indexed = index_.find(doc_id);
    if (indexed == index_.end()) return not_allowed("names no document shared with this VM");
    host_path = indexed->second.host_path;
  }
  g_autofree char* document_name = g_path_get_basename(host_path.c_str());
  if (name != document_name) return not_allowed("is not the file of document " + doc_id);

  struct stat st;
  if (inside.empty()) {
    if (lstat(host_path.c_str(), &st) == 0 && S_ISLNK(st.st_mode)) return not_allowed("is a symbolic link");
    return host_path;  // it may not exist yet (exported for saving)
  }

  // A file inside an exported directory: walk down without following links.
  UniqueFd dir(open(host_path.c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  std::string result = host_path;
  for (size_t i = 0; i < inside.size(); i++) {
    if (!dir) {
      if (errno == ENOTDIR || errno == ELOOP) return not_allowed("goes through a file or a symbolic link");
      return not_found("does not exist");
    }
    result += "/" + inside[i];
    if (i + 1 < inside.size()) {
      dir = UniqueFd(openat(dir.get(), inside[i].c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
      continue;
    }
    if (fstatat(dir.get(), inside[i].c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) return not_found("does not exist");
    if (S_ISLNK(st.st_mode)) return not_allowed("is a symbolic link");
  }
  return result;
}

}  // namespace sidebus
