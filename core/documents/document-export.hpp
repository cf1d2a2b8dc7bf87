// document-export.hpp — host files to guest files through the private
// document portal (org.freedesktop.portal.Documents AddFull/AddNamedFull,
// granted to the VM's app id), and the reverse mapping from a guest path in
// the guest documents directory back to the host file.
//
// What the guest must see is guest_view_path() = <documents_mount>/by-app/<app id>:
// the document portal's per-app view, which holds only this app's documents
// with this app's permissions. Share that directory (virtiofs/9p) at the
// guest documents path, never the whole mount (its root view is the host's
// and shows every document with full access).
#pragma once

#include <gio/gio.h>

#include <optional>
#include <string>
#include <vector>

#include "sidebus-plugin.h"

namespace sidebus {

class PrivateBus;

class DocumentExporter {
 public:
  // private_bus: connection to the private bus (a reference is held; it stops
  // working if the dbus-daemon has to be restarted — prefer the constructor
  // below). documents_mount: the host FUSE mount (<runtime-dir>/doc).
  // guest_documents_path: where guest_view_path() appears in the guest
  // (absolute). app_id: the VM name, mapped by app_id_for_vm() (app-id.hpp).
  DocumentExporter(GDBusConnection* private_bus, std::string app_id, std::string documents_mount,
                   std::string guest_documents_path);
  // Follows private_bus across restarts (uses private_bus.connection() on
  // every call). private_bus must outlive this.
  DocumentExporter(PrivateBus& private_bus, std::string app_id, std::string guest_documents_path);
  ~DocumentExporter();
  DocumentExporter(const DocumentExporter&) = delete;
  DocumentExporter& operator=(const DocumentExporter&) = delete;


  // file:// host URIs in, file://<guest-documents-path>/<doc-id>/<name> out.
  // All URIs are checked before anything is exported. Only file:// URIs on
  // this host (NOT_ALLOWED otherwise); malformed, relative or non-UTF-8 URIs
  // are INVALID_ARGUMENT; a missing file (without FOR_SAVE) is NOT_FOUND.
  // WRITABLE and FOR_SAVE grant "read" + "write", otherwise "read" only.
  // FOR_SAVE exports <parent>/<name> by name (the file need not exist);
  // DIRECTORY is required to export a directory. Exports are persistent
  // (they survive broker restarts) and the same file reuses its document.
  std::optional<std::vector<std::string>> export_uris(const std::vector<std::string>& host_uris,
                                                      SidebusExportFlags flags, GError** error);
  // A guest path (absolute, or a file:// URI) under guest_documents_path →
  // the host path of the file it stands for: <documents>/<doc-id>/<name> is
  // the document itself, <documents>/<doc-id>/<dir>/<a>/<b> a file inside an
  // exported directory (no symbolic links followed). Anything else (outside,
  // "." or ".." segments, unknown doc id, a document not shared with this
  // VM) is a SIDEBUS_ERROR_NOT_ALLOWED error; a missing file inside an
  // exported directory is NOT_FOUND. Error messages name only guest paths:
  // they may be returned to the guest.
  std::optional<std::string> guest_path_to_host_path(const std::string& guest_path, GError** error);

  const std::string& guest_documents_path() const { return guest_documents_path_; }
  const std::string& app_id() const { return app_id_; }
  // <documents_mount>/by-app/<app id>: the directory to share with the guest.
  std::string guest_view_path() const;

 private:
  GDBusConnection* connection() const;
  // One file, without the persistence barrier (export_uris does that once).
  std::optional<std::string> export_path(const std::string& host_path, SidebusExportFlags flags,
                                         std::string* doc_id_out, GError** error);

  GDBusConnection* fixed_connection_ = nullptr;  // first constructor: a reference held
  PrivateBus* private_bus_ = nullptr;            // second constructor: followed across restarts
  std::string app_id_;
  std::string documents_mount_;
  std::string guest_documents_path_;
};

}  // namespace sidebus
