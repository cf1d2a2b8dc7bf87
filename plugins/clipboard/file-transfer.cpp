// SPDX-License-Identifier: LGPL-2.1-or-later
// file-transfer.cpp — the guest's FileTransfer (see file-transfer.hpp).
//
// Served as org.freedesktop.portal.Documents at
// /org/freedesktop/portal/documents, where GTK 4 and Qt look for it. Every
// transfer lives on the host: the broker is the owner of a transfer of the
// host's xdg-document-portal (host-transfers.hpp), so the key the guest gets
// is the host's key and works wherever the clipboard takes it — a host app,
// another app of this VM.
//  - StartTransfer: the host's StartTransfer (writable, autostop passed on);
//    at most portals.clipboard.max_transfers of this VM's at once (a client
//    at the limit has its oldest transfer replaced; GTK never stops its
//    own). The guest
//    client that started it owns it: only it adds files and stops it, and
//    its leaving the bus stops it, as the document portal does.
//  - AddFiles: each fd made a host file (outgoing-files.hpp: a document's
//    host file, or a copy staged for this VM), then the host's AddFiles with
//    them, in the order the guest added them (one AddFiles of a transfer at
//    a time); at most max_files per transfer.
//  - RetrieveFiles: the host's RetrieveFiles (any key: a host app's, this
//    VM's own — guest to guest goes the same way), and the host paths it
//    gives the broker exported through the VM's private document portal;
//    the guest gets the paths inside the VM. Writable only for a writable
//    transfer of this VM (the host does not say whether a host app's
//    transfer is). A key another VM started is refused (key-registry.hpp).
//  - StopTransfer, the host's TransferClosed, the owner leaving, the link
//    going: the transfer ends once; its owner gets TransferClosed; its
//    staged copies are kept keep_staged_for seconds if someone may have
//    retrieved them (the target reads them after RetrieveFiles answered; a
//    host app asks the host portal, so the broker only sees that autostop
//    ended it, or that it could be retrieved many times), else deleted.
// Errors are the portal's: NotFound for a key that is no (longer a)
// transfer, NotAllowed for another client's transfer or another VM's key,
// LimitsExceeded for the limits, InvalidArgument for malformed input.
#include "file-transfer.hpp"

#include <gio/gunixfdlist.h>

#include <deque>
#include <functional>
#include <map>
#include <vector>

#include "filetransfer-dbus.h"
#include "host-transfers.hpp"
#include "key-registry.hpp"
#include "outgoing-files.hpp"
#include "uri-policy.hpp"

namespace sidebus::clipboard {
using namespace sidebus::common;

namespace {

constexpr guint32 kVersion = 1;

struct GObjectUnref {
  void operator()(gpointer object) const { g_object_unref(object); }
};
template <typename T>
using GObjectPtr = std::unique_ptr<T, GObjectUnref>;
using Invocation = std::shared_ptr<GDBusMethodInvocation>;
Invocation hold(GDBusMethodInvocation* invocation) {
  return Invocation(G_DBUS_METHOD_INVOCATION(g_object_ref(invocation)), g_object_unref);
}

const SidebusOption kStartOptions[] = {
    {"writable", "b", nullptr, {}},
    {"autostop", "b", nullptr, {}},
};

struct Transfer {
  std::string key;
  std::string owner;  // the guest client that started it
  bool writable = false;
  bool autostop = true;
  size_t files = 0;  // added, or being added
  std::vector<std::shared_ptr<HostCopy>> copies;
  guint owner_watch = 0;
  bool retrieved = false;
  guint64 serial = 0;                         // the order transfers started in
  bool adding = false;                        // an AddFiles in progress
  std::deque<std::function<void()>> waiting;  // the AddFiles after it
};

}  // namespace

// ---- Configuration -----------------------------------------------------------

// A directory the brokers of one user share: it must be absolute, so that
// every broker means the same one whatever its working directory.
gboolean validate_registry(const char*, JsonNode* value, GError** error) {
  const char* dir = json_node_get_string(value);
  if (dir != nullptr && g_path_is_absolute(dir)) return TRUE;
  g_set_error(error, SIDEBUS_ERROR, SIDEBUS_ERROR_INVALID_ARGUMENT,
              "must be an absolute directory (every broker of the host user names the same one)");
  return FALSE;
}

const SidebusConfigKey kConfigKeys[] = {
    {"max_transfers", SIDEBUS_CONFIG_INTEGER, 1, 1024, nullptr, {}},
    {"max_files", SIDEBUS_CONFIG_INTEGER, 1, 1 << 20, nullptr, {}},
    {"copy_outside_documents", SIDEBUS_CONFIG_BOOLEAN, 0, 0, nullptr, {}},
    {"max_copy_size", SIDEBUS_CONFIG_INTEGER, 1, G_GINT64_CONSTANT(1) << 40, nullptr, {}},
    {"max_staged_total", SIDEBUS_CONFIG_INTEGER, 1, G_GINT64_CONSTANT(1) << 40, nullptr, {}},
    {"keep_staged_for", SIDEBUS_CONFIG_INTEGER, 0, 24 * 3600, nullptr, {}},
    {"key_registry", SIDEBUS_CONFIG_STRING, 0, 0, validate_registry, {}},
};
const gsize kNumConfigKeys = G_N_ELEMENTS(kConfigKeys);

Settings Settings::from_config(JsonObject* config) {
  Settings s;
  s.max_transfers = json_object_get_int_member_with_default(config, "max_transfers", s.max_transfers);
  s.max_files = json_object_get_int_member_with_default(config, "max_files", s.max_files);
  s.copy_outside_documents =
      json_object_get_boolean_member_with_default(config, "copy_outside_documents", s.copy_outside_documents);
  s.staging.max_file = json_object_get_int_member_with_default(config, "max_copy_size", s.staging.max_file);
  s.staging.max_total = json_object_get_int_member_with_default(config, "max_staged_total", s.staging.max_total);
  s.keep_staged_for = guint(json_object_get_int_member_with_default(config, "keep_staged_for", s.keep_staged_for));
  s.key_registry = json_object_get_string_member_with_default(config, "key_registry", "");
  return s;
}

// ---- The portal ----------------------------------------------------------------

struct FileTransferPortal::Impl {
  Impl(SidebusContext* context, Settings settings);
  ~Impl();

  static gboolean on_start_transfer(FtGenFileTransfer*, GDBusMethodInvocation* invocation, GVariant* options,
                                    gpointer data);
  static gboolean on_add_files(FtGenFileTransfer*, GDBusMethodInvocation* invocation, GUnixFDList* fd_list,
                               const char* key, GVariant* handles, GVariant* options, gpointer data);
  static gboolean on_retrieve_files(FtGenFileTransfer*, GDBusMethodInvocation* invocation, const char* key,
                                    GVariant* options, gpointer data);
  static gboolean on_stop_transfer(FtGenFileTransfer*, GDBusMethodInvocation* invocation, const char* key,
                                   gpointer data);

  void reject(GDBusMethodInvocation* invocation, GError* error) { sidebus_context_reject(context, invocation, error); }
  void reject_copy(const Invocation& invocation, const GError* error) { reject(invocation.get(), g_error_copy(error)); }
  bool check_key(GDBusMethodInvocation* invocation, const char* key);
  // The caller's transfer @key: NotFound/NotAllowed answered otherwise.
  Transfer* own_transfer(GDBusMethodInvocation* invocation, const char* key);
  void started(const Invocation& invocation, bool writable, bool autostop, const std::string& key);
  void add(const Invocation& invocation, const std::string& key, std::shared_ptr<std::vector<PreparedInput>> prepared);
  void run_next(const std::string& key);
  void added(const std::string& key);  // one AddFiles of @key done: the next
  void retrieved(const Invocation& invocation, bool writable, std::vector<std::string> host_paths);
  // @by_host: the host's TransferClosed (an autostop retrieval, maybe by a host app).
  void end(const std::string& key, const char* why, bool by_host = false);
  void keep_for_a_while(std::vector<std::shared_ptr<HostCopy>> copies);

  SidebusContext* context;
  Settings settings;
  GObjectPtr<FtGenFileTransfer> skeleton;
  std::shared_ptr<CopyStore> staging;
  KeyRegistry registry;
  std::unique_ptr<HostTransfers> host;
  std::map<std::string, std::unique_ptr<Transfer>> transfers;
  size_t starting = 0;  // StartTransfer calls the host has not answered
  guint64 next_serial = 0;
  std::map<guint, std::vector<std::shared_ptr<HostCopy>>> kept;
};

FileTransferPortal::Impl::Impl(SidebusContext* context, Settings settings)
    : context(context),
      settings(settings),
      skeleton(ft_gen_file_transfer_skeleton_new()),
      registry(settings.key_registry, sidebus_context_get_vm_name(context)) {
  // Each transfer copies one file at a time (outgoing-files.cpp): every
  // transfer of the VM can have its copy in flight.
  this->settings.staging.max_in_flight =
      guint(MAX(gint64(this->settings.staging.max_in_flight), settings.max_transfers));
  if (settings.copy_outside_documents)
    staging = CopyStore::create({.portal = "clipboard",
                                 .vm_name = sidebus_context_get_vm_name(context),
                                 .limits = this->settings.staging,
                                 .root = {}});
  host = std::make_unique<HostTransfers>(sidebus_context_get_host_connection(context),
                                         [this](const std::string& key) { end(key, "the host closed it", true); });
  ft_gen_file_transfer_set_version(skeleton.get(), kVersion);
  g_signal_connect(skeleton.get(), "handle-start-transfer", G_CALLBACK(on_start_transfer), this);
  g_signal_connect(skeleton.get(), "handle-add-files", G_CALLBACK(on_add_files), this);
  g_signal_connect(skeleton.get(), "handle-retrieve-files", G_CALLBACK(on_retrieve_files), this);
  g_signal_connect(skeleton.get(), "handle-stop-transfer", G_CALLBACK(on_stop_transfer), this);
}

FileTransferPortal::Impl::~Impl() {
  g_signal_handlers_disconnect_by_data(skeleton.get(), this);
  // The link goes: what this VM started ends on the host too.
  for (auto& [key, transfer] : transfers) {
    host->stop(key);
    registry.release(key);
    if (transfer->owner_watch != 0) sidebus_context_unwatch_guest_client(context, transfer->owner_watch);
  }
  transfers.clear();  // answers nothing more: the guest connection is closing
  for (auto& [source, copies] : kept) g_source_remove(source);
  kept.clear();
  host.reset();     // no host answer after this
  staging.reset();  // its directory, with every copy
}

bool FileTransferPortal::Impl::check_key(GDBusMethodInvocation* invocation, const char* key) {
  if (is_valid_key(key)) return true;
  reject(invocation,
         g_error_new(SIDEBUS_ERROR, SIDEBUS_ERROR_INVALID_ARGUMENT,
                     "“%s” is not a transfer key (1–64 letters, digits, _ or -)", quote_for_message(key).c_str()));
  return false;
}

Transfer* FileTransferPortal::Impl::own_transfer(GDBusMethodInvocation* invocation, const char* key) {
  auto found = transfers.find(key);
  if (found == transfers.end()) {
    bool other_vm = registry.other_owner(key).has_value();
    reject(invocation, g_error_new(SIDEBUS_ERROR, other_vm ? SIDEBUS_ERROR_NOT_ALLOWED : SIDEBUS_ERROR_NOT_FOUND,
                                   other_vm ? "the transfer %s is another VM's"
                                            : "no transfer %s of this VM: it ended "
                                              "or never existed",
                                   key));
    return nullptr;
  }
  const char* caller = g_dbus_method_invocation_get_sender(invocation);
  if (found->second->owner != caller) {
    reject(invocation, g_error_new(SIDEBUS_ERROR, SIDEBUS_ERROR_NOT_ALLOWED,
                                   "the transfer %s belongs to the client that started it, not to %s", key, caller));
    return nullptr;
  }
  return found->second.get();
}

// ---- StartTransfer -------------------------------------------------------------

gboolean FileTransferPortal::Impl::on_start_transfer(FtGenFileTransfer*, GDBusMethodInvocation* invocation,
                                                     GVariant* options, gpointer data) {
  auto* self = static_cast<Impl*>(data);
  g_autoptr(GError) error = nullptr;
  g_autoptr(GVariant) checked =
      sidebus_filter_options(self->context, options, kStartOptions, G_N_ELEMENTS(kStartOptions), &error);
  if (checked == nullptr) {
    self->reject(invocation, g_steal_pointer(&error));
    return G_DBUS_METHOD_INVOCATION_HANDLED;
  }
  gboolean writable = FALSE, autostop = TRUE;
  g_variant_lookup(checked, "writable", "b", &writable);
  g_variant_lookup(checked, "autostop", "b", &autostop);
  const char* caller = g_dbus_method_invocation_get_sender(invocation);
  if (gint64(self->transfers.size() + self->starting) >= self->settings.max_transfers) {
    // GTK starts a transfer each time a target asks for the files and never
    // stops one (autostop ends it only when someone retrieves it): a new
    // transfer of a client at the limit replaces its oldest, as a new copy
    // replaces the last on a clipboard.
    Transfer* oldest = nullptr;
    for (auto& [key, transfer] : self->transfers)
      if (transfer->owner == caller && (oldest == nullptr || transfer->serial < oldest->serial))
        oldest = transfer.get();
    if (oldest != nullptr) {
      std::string key = oldest->key;
      self->host->stop(key);
      self->end(key, "replaced by a newer transfer of its owner");
    }
  }
  if (gint64(self->transfers.size() + self->starting) >= self->settings.max_transfers) {
    self->reject(invocation, g_error_new(G_DBUS_ERROR, G_DBUS_ERROR_LIMITS_EXCEEDED,
                                         "this VM has %zu file transfers already, at most %" G_GINT64_FORMAT
                                         " (portals.clipboard.max_transfers); stop one first",
                                         self->transfers.size() + self->starting, self->settings.max_transfers));
    return G_DBUS_METHOD_INVOCATION_HANDLED;
  }
  self->starting++;
  Invocation held = hold(invocation);
  self->host->start(writable, autostop, [self, held, writable, autostop](const std::string& key, GError* error) {
    self->starting--;
    if (error != nullptr) return self->reject_copy(held, error);
    if (!is_valid_key(key.c_str()) || self->transfers.count(key) != 0) {
      self->host->stop(key);
      return self->reject(held.get(), g_error_new(SIDEBUS_ERROR, SIDEBUS_ERROR_FAILED,
                                                  "the host's file transfer portal gave an unusable key"));
    }
    self->started(held, writable, autostop, key);
  });
  return G_DBUS_METHOD_INVOCATION_HANDLED;
}

void FileTransferPortal::Impl::started(const Invocation& invocation, bool writable, bool autostop,
                                       const std::string& key) {
  auto transfer = std::make_unique<Transfer>();
  transfer->key = key;
  transfer->owner = g_dbus_method_invocation_get_sender(invocation.get());
  transfer->writable = writable;
  transfer->autostop = autostop;
  transfer->serial = next_serial++;
  struct Watch {
    Impl* self;
    std::string key;
  };
  transfer->owner_watch = sidebus_context_watch_guest_client(
      context, transfer->owner.c_str(),
      [](SidebusContext*, const char*, gpointer data) {
        auto* watch = static_cast<Watch*>(data);
        auto found = watch->self->transfers.find(watch->key);
        if (found == watch->self->transfers.end()) return;
        found->second->owner_watch = 0;  // this watch is ending
        watch->self->host->stop(watch->key);
        watch->self->end(watch->key, "its owner left the bus");
      },
      new Watch{this, key}, [](gpointer data) { delete static_cast<Watch*>(data); });
  registry.claim(key);
  sidebus_context_log(context, G_LOG_LEVEL_DEBUG, "%s started transfer %s (%s%s)", transfer->owner.c_str(), key.c_str(),
                      writable ? "writable" : "read-only", autostop ? ", autostop" : "");
  transfers[key] = std::move(transfer);
  g_dbus_method_invocation_return_value(invocation.get(), g_variant_new("(s)", key.c_str()));
}

// ---- AddFiles ------------------------------------------------------------------

gboolean FileTransferPortal::Impl::on_add_files(FtGenFileTransfer*, GDBusMethodInvocation* invocation,
                                                GUnixFDList* fd_list, const char* key, GVariant* handles_value,
                                                GVariant*, gpointer data) {
  auto* self = static_cast<Impl*>(data);
  if (!self->check_key(invocation, key)) return G_DBUS_METHOD_INVOCATION_HANDLED;
  Transfer* transfer = self->own_transfer(invocation, key);
  if (transfer == nullptr) return G_DBUS_METHOD_INVOCATION_HANDLED;
  g_autoptr(GError) error = nullptr;
  gsize n = g_variant_n_children(handles_value);
  if (transfer->files + n > gsize(self->settings.max_files)) {
    self->reject(invocation, g_error_new(G_DBUS_ERROR, G_DBUS_ERROR_LIMITS_EXCEEDED,
                                         "%zu more files for a transfer of %zu, at most %" G_GINT64_FORMAT
                                         " (portals.clipboard.max_files)",
                                         n, transfer->files, self->settings.max_files));
    return G_DBUS_METHOD_INVOCATION_HANDLED;
  }
  if (n > 0 && !sidebus_context_require_fds(self->context, &error)) {
    g_prefix_error(&error, "AddFiles needs the files' descriptors: ");
    self->reject(invocation, g_steal_pointer(&error));
    return G_DBUS_METHOD_INVOCATION_HANDLED;
  }
  std::vector<gint32> handles;
  for (gsize i = 0; i < n; i++) {
    gint32 handle = 0;
    g_variant_get_child(handles_value, i, "h", &handle);
    handles.push_back(handle);
  }
  auto prepared = prepare_outgoing(
      self->context, fd_list, handles,
      {.writable = transfer->writable, .copy_outside_documents = self->settings.copy_outside_documents}, &error);
  if (!prepared) {
    g_prefix_error(&error, "cannot add to transfer %s: ", key);
    self->reject(invocation, g_steal_pointer(&error));
    return G_DBUS_METHOD_INVOCATION_HANDLED;
  }
  transfer->files += n;  // reserved now: calls waiting their turn count too
  auto shared = std::make_shared<std::vector<PreparedInput>>(std::move(*prepared));
  Invocation held = hold(invocation);
  std::string name = key;
  transfer->waiting.push_back([self, held, name, shared] { self->add(held, name, shared); });
  self->run_next(name);
  return G_DBUS_METHOD_INVOCATION_HANDLED;
}

// The next waiting AddFiles of @key, unless one runs.
void FileTransferPortal::Impl::run_next(const std::string& key) {
  auto found = transfers.find(key);
  if (found == transfers.end()) return;
  Transfer& transfer = *found->second;
  if (transfer.adding || transfer.waiting.empty()) return;
  transfer.adding = true;
  auto next = std::move(transfer.waiting.front());
  transfer.waiting.pop_front();
  next();
}

void FileTransferPortal::Impl::added(const std::string& key) {
  auto found = transfers.find(key);
  if (found == transfers.end()) return;
  found->second->adding = false;
  run_next(key);
}

void FileTransferPortal::Impl::add(const Invocation& invocation, const std::string& key,
                                   std::shared_ptr<std::vector<PreparedInput>> prepared) {
  size_t n = prepared->size();
  auto gone = [this, invocation, key]() -> bool {
    if (transfers.count(key) != 0) return false;
    reject(invocation.get(), g_error_new(SIDEBUS_ERROR, SIDEBUS_ERROR_NOT_FOUND,
                                         "the transfer %s ended before its files were added", key.c_str()));
    return true;
  };
  if (gone()) return;
  make_outgoing(staging, std::move(*prepared),
                [this, invocation, key, n, gone](std::vector<OutgoingFile> files, GError* error) {
                  if (gone()) return;
                  Transfer& transfer = *transfers[key];
                  if (error != nullptr) {
                    transfer.files -= n;
                    GError* named = g_error_copy(error);
                    g_prefix_error(&named, "cannot add to transfer %s: ", key.c_str());
                    reject(invocation.get(), named);
                    return added(key);
                  }
                  std::vector<Fd> fds;
                  size_t staged = 0;
                  for (OutgoingFile& file : files) {
                    fds.push_back(std::move(file.fd));
                    if (file.copy != nullptr) {
                      transfer.copies.push_back(std::move(file.copy));
                      staged++;
                    }
                  }
                  sidebus_context_log(context, G_LOG_LEVEL_DEBUG, "transfer %s: %zu files (%zu staged as host copies)",
                                      key.c_str(), n, staged);
                  host->add(key, std::move(fds), [this, invocation, key, n, gone](GError* error) {
                    if (gone()) return;
                    if (error != nullptr) {
                      transfers[key]->files -= n;
                      reject_copy(invocation, error);
                    } else {
                      g_dbus_method_invocation_return_value(invocation.get(), nullptr);
                    }
                    added(key);
                  });
                });
}

// ---- RetrieveFiles -------------------------------------------------------------

gboolean FileTransferPortal::Impl::on_retrieve_files(FtGenFileTransfer*, GDBusMethodInvocation* invocation,
                                                     const char* key, GVariant*, gpointer data) {
  auto* self = static_cast<Impl*>(data);
  if (!self->check_key(invocation, key)) return G_DBUS_METHOD_INVOCATION_HANDLED;
  bool writable = false;
  auto found = self->transfers.find(key);
  if (found != self->transfers.end()) {
    writable = found->second->writable;
    found->second->retrieved = true;  // its copies outlive it a while
  } else if (self->registry.other_owner(key)) {
    self->reject(invocation, g_error_new(SIDEBUS_ERROR, SIDEBUS_ERROR_NOT_ALLOWED,
                                         "the transfer %s is another VM's: files copied in one VM cannot be pasted "
                                         "in another",
                                         key));
    return G_DBUS_METHOD_INVOCATION_HANDLED;
  }
  Invocation held = hold(invocation);
  self->host->retrieve(key, [self, held, writable](std::vector<std::string> paths, GError* error) {
    if (error != nullptr) return self->reject_copy(held, error);
    self->retrieved(held, writable, std::move(paths));
  });
  return G_DBUS_METHOD_INVOCATION_HANDLED;
}

void FileTransferPortal::Impl::retrieved(const Invocation& invocation, bool writable,
                                         std::vector<std::string> host_paths) {
  if (gint64(host_paths.size()) > settings.max_files) {
    reject(invocation.get(),
           g_error_new(G_DBUS_ERROR, G_DBUS_ERROR_LIMITS_EXCEEDED,
                       "the transfer has %zu files, at most %" G_GINT64_FORMAT " (portals.clipboard.max_files)",
                       host_paths.size(), settings.max_files));
    return;
  }
  if (host_paths.empty()) {
    g_dbus_method_invocation_return_value(invocation.get(), g_variant_new("(@as)", g_variant_new_strv(nullptr, 0)));
    return;
  }
  std::vector<std::string> uris;
  for (const std::string& path : host_paths) {
    g_autofree char* uri = g_filename_to_uri(path.c_str(), nullptr, nullptr);
    if (uri == nullptr) {
      reject(invocation.get(), g_error_new(SIDEBUS_ERROR, SIDEBUS_ERROR_FAILED,
                                           "the host's file transfer portal gave a path that is no file"));
      return;
    }
    uris.emplace_back(uri);
  }
  std::vector<const char*> strv;
  for (const std::string& uri : uris) strv.push_back(uri.c_str());
  strv.push_back(nullptr);
  sidebus_context_log(context, G_LOG_LEVEL_DEBUG, "exporting %zu retrieved files%s", uris.size(),
                      writable ? " (writable)" : "");
  auto flags = SidebusExportFlags(SIDEBUS_EXPORT_FLAGS_DIRECTORY | (writable ? SIDEBUS_EXPORT_FLAGS_WRITABLE : 0));
  sidebus_context_export_uris_async(
      context, strv.data(), flags,
      [](SidebusContext* context, char** guest_uris, const GError* error, gpointer data) {
        auto* invocation = static_cast<GDBusMethodInvocation*>(data);
        if (guest_uris == nullptr) {
          GError* named = g_error_copy(error);
          g_prefix_error(&named, "cannot share the files with the VM: ");
          sidebus_context_reject(context, invocation, named);
          return;
        }
        g_auto(GVariantBuilder) paths = G_VARIANT_BUILDER_INIT(G_VARIANT_TYPE("as"));
        for (char** uri = guest_uris; *uri != nullptr; uri++) {
          g_autofree char* path = g_filename_from_uri(*uri, nullptr, nullptr);
          g_variant_builder_add(&paths, "s", path != nullptr ? path : *uri);
        }
        g_dbus_method_invocation_return_value(invocation, g_variant_new("(as)", &paths));
      },
      g_object_ref(invocation.get()), g_object_unref);
}

// ---- StopTransfer and the end of a transfer --------------------------------------

gboolean FileTransferPortal::Impl::on_stop_transfer(FtGenFileTransfer*, GDBusMethodInvocation* invocation,
                                                    const char* key, gpointer data) {
  auto* self = static_cast<Impl*>(data);
  if (!self->check_key(invocation, key)) return G_DBUS_METHOD_INVOCATION_HANDLED;
  if (self->own_transfer(invocation, key) == nullptr) return G_DBUS_METHOD_INVOCATION_HANDLED;
  self->host->stop(key);
  self->end(key, "its owner stopped it");
  g_dbus_method_invocation_return_value(invocation, nullptr);
  return G_DBUS_METHOD_INVOCATION_HANDLED;
}

void FileTransferPortal::Impl::end(const std::string& key, const char* why, bool by_host) {
  auto found = transfers.find(key);
  if (found == transfers.end()) return;  // ended already (a StopTransfer's TransferClosed)
  std::unique_ptr<Transfer> transfer = std::move(found->second);
  transfers.erase(found);
  registry.release(key);
  if (transfer->owner_watch != 0) sidebus_context_unwatch_guest_client(context, transfer->owner_watch);
  sidebus_context_log(context, G_LOG_LEVEL_DEBUG, "transfer %s ended: %s (%zu files, %zu staged copies)", key.c_str(),
                      why, transfer->files, transfer->copies.size());
  sidebus_context_emit_guest_signal(context, transfer->owner.c_str(), kDocumentsPath, kFileTransferInterface,
                                    "TransferClosed", g_variant_new("(s)", key.c_str()));
  // Host apps retrieve from the host portal, unseen here: a transfer someone
  // may have retrieved keeps its copies a while, for the target to read.
  if (transfer->retrieved || by_host || !transfer->autostop) keep_for_a_while(std::move(transfer->copies));
  // AddFiles calls still waiting: each finds its transfer gone and says so.
  for (auto& waiting : transfer->waiting) waiting();
}

void FileTransferPortal::Impl::keep_for_a_while(std::vector<std::shared_ptr<HostCopy>> copies) {
  if (copies.empty() || settings.keep_staged_for == 0) return;  // deleted at once
  struct Expiry {
    Impl* self;
    guint source = 0;
  };
  auto* expiry = new Expiry{this};
  expiry->source = g_timeout_add_seconds_full(
      G_PRIORITY_DEFAULT, settings.keep_staged_for,
      [](gpointer data) -> gboolean {
        auto* expiry = static_cast<Expiry*>(data);
        expiry->self->kept.erase(expiry->source);  // deletes the copies
        return G_SOURCE_REMOVE;
      },
      expiry, [](gpointer data) { delete static_cast<Expiry*>(data); });
  kept[expiry->source] = std::move(copies);
}

// ---- Start and stop ------------------------------------------------------------

std::unique_ptr<FileTransferPortal> FileTransferPortal::start(SidebusContext* context, GError** error) {
  auto impl = std::make_unique<Impl>(context, Settings::from_config(sidebus_context_get_config(context)));
  if (!sidebus_context_export_at(context, G_DBUS_INTERFACE_SKELETON(impl->skeleton.get()), kDocumentsBusName,
                                 kDocumentsPath, error))
    return nullptr;
  sidebus_context_log(context, G_LOG_LEVEL_DEBUG,
                      "FileTransfer version %u; at most %" G_GINT64_FORMAT " transfers of %" G_GINT64_FORMAT
                      " files; copies outside the documents: %s",
                      kVersion, impl->settings.max_transfers, impl->settings.max_files,
                      impl->settings.copy_outside_documents ? "yes" : "no");
  return std::unique_ptr<FileTransferPortal>(new FileTransferPortal(std::move(impl)));
}

FileTransferPortal::FileTransferPortal(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
FileTransferPortal::~FileTransferPortal() = default;

}  // namespace sidebus::clipboard
