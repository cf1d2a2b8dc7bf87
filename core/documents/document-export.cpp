// document-export.cpp — host files to guest files and back, through this VM's
// private xdg-document-portal (see document-export.hpp).
//
// Export does what xdg-desktop-portal's own FileChooser does (1.16,
// src/documents.c register_document): an O_PATH fd of the file (or of its
// parent, by name, for saving) to AddFull/AddNamedFull with reuse-existing |
// persistent (| directory), granted to the VM's app id. Two deliberate
// differences:
//  - no as-needed-by-app: the portal would then run `flatpak info` on the
//    app id and, if a flatpak of that name may read the file, return no
//    document at all (the caller is meant to pass the host path instead) —
//    which means nothing to a VM;
//  - only "read" and "write": the guest never talks to the document portal,
//    so "grant-permissions" and "delete" would mean nothing either.
// The reverse mapping asks the portal (Info) for the document's host path and
// who may access it, rather than trusting anything under the mount.
#include "documents/document-export.hpp"

#include "documents/app-id.hpp"

#include <errno.h>
#include <fcntl.h>
#include <gio/gunixfdlist.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>

#include "documents/private-bus.hpp"
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

// AddFull answers before the permission store has written the new document
// to disk (the portal tells it asynchronously), and the store dies at once on
// SIGTERM: a broker stopped right after an export would forget it. Setting
// the same permissions again through the store is a write barrier: the store
// answers once the table, with everything the portal sent before, is on disk.
bool wait_until_persisted(GDBusConnection* bus, const std::string& doc_id, const std::string& app_id,
                          const char* const* permissions, GError** error) {
  g_autoptr(GVariant) reply = g_dbus_connection_call_sync(
      bus, "org.freedesktop.impl.portal.PermissionStore", "/org/freedesktop/impl/portal/PermissionStore",
      "org.freedesktop.impl.portal.PermissionStore", "SetPermission",
      g_variant_new("(sbss^as)", "documents", FALSE, doc_id.c_str(), app_id.c_str(), permissions), nullptr,
      G_DBUS_CALL_FLAGS_NO_AUTO_START, kCallTimeoutMs, nullptr, error);
  return reply != nullptr;
}

struct DocumentInfo {
  std::string host_path;
  std::vector<std::string> app_permissions;  // of the app id asked about; empty if it has none
};

// Documents.Info: the document's host path and what app_id may do with it.
std::optional<DocumentInfo> lookup_document(GDBusConnection* bus, const std::string& doc_id, const std::string& app_id,
                                            GError** error) {
  g_autoptr(GVariant) reply = g_dbus_connection_call_sync(
      bus, kDocumentsName, kDocumentsPath, kDocumentsInterface, "Info", g_variant_new("(s)", doc_id.c_str()),
      G_VARIANT_TYPE("(aya{sas})"), G_DBUS_CALL_FLAGS_NONE, kCallTimeoutMs, nullptr, error);
  if (!reply) return std::nullopt;
  g_autoptr(GVariant) path = g_variant_get_child_value(reply, 0);
  g_autoptr(GVariant) apps = g_variant_get_child_value(reply, 1);
  DocumentInfo info;
  info.host_path = g_variant_get_bytestring(path);
  g_autofree const char** permissions = nullptr;
  if (g_variant_lookup(apps, app_id.c_str(), "^a&s", &permissions))
    for (const char** permission = permissions; *permission != nullptr; permission++)
      info.app_permissions.emplace_back(*permission);
  return info;
}

}  // namespace

DocumentExporter::DocumentExporter(GDBusConnection* private_bus, std::string app_id, std::string documents_mount,
                                   std::string guest_documents_path)
    : fixed_connection_(private_bus != nullptr ? G_DBUS_CONNECTION(g_object_ref(private_bus)) : nullptr),
      app_id_(app_id_for_vm(app_id)),
      documents_mount_(std::move(documents_mount)),
      guest_documents_path_(std::move(guest_documents_path)) {
  (void)SIDEBUS_ERROR;  // registers the portal's D-Bus error names, so its errors map onto SIDEBUS_ERROR
  if (app_id_ != app_id) g_debug("documents are shared with VM %s as app id %s", app_id.c_str(), app_id_.c_str());
}

DocumentExporter::DocumentExporter(PrivateBus& private_bus, std::string app_id, std::string guest_documents_path)
    : DocumentExporter(nullptr, std::move(app_id), private_bus.documents_mount(), std::move(guest_documents_path)) {
  private_bus_ = &private_bus;
}

DocumentExporter::~DocumentExporter() { g_clear_object(&fixed_connection_); }

std::string DocumentExporter::guest_view_path() const { return documents_mount_ + "/by-app/" + app_id_; }

GDBusConnection* DocumentExporter::connection() const {
  return private_bus_ != nullptr ? private_bus_->connection() : fixed_connection_;
}

std::optional<std::vector<std::string>> DocumentExporter::export_uris(const std::vector<std::string>& host_uris,
                                                                      SidebusExportFlags flags, GError** error) {
  std::vector<std::string> host_paths;
  for (const std::string& uri : host_uris) {  // all checked before anything is exported
    auto path = host_path_from_uri(uri, error);
    if (!path) return std::nullopt;
    host_paths.push_back(std::move(*path));
  }
  std::vector<std::string> guest_uris;
  std::string last_doc_id;
  for (const std::string& path : host_paths) {
    auto guest_uri = export_path(path, flags, &last_doc_id, error);
    if (!guest_uri) return std::nullopt;
    guest_uris.push_back(std::move(*guest_uri));
  }
  // One barrier for the whole batch: the store answers once everything the
  // portal sent before it is on disk.
  const bool writable = (flags & (SIDEBUS_EXPORT_FLAGS_WRITABLE | SIDEBUS_EXPORT_FLAGS_FOR_SAVE)) != 0;
  const char* permissions[] = {"read", writable ? "write" : nullptr, nullptr};
  g_autoptr(GError) persist_error = nullptr;
  if (!last_doc_id.empty() && !wait_until_persisted(connection(), last_doc_id, app_id_, permissions, &persist_error)) {
    g_dbus_error_strip_remote_error(persist_error);
    g_warning("exported %zu files, but could not make sure they are saved in the state directory: %s",
              guest_uris.size(), persist_error->message);
  }
  return guest_uris;
}

std::optional<std::string> DocumentExporter::export_path(const std::string& host_path, SidebusExportFlags flags,
                                                         std::string* doc_id_out, GError** error) {
  GDBusConnection* bus = connection();
  if (bus == nullptr || g_dbus_connection_is_closed(bus)) {
    g_set_error(error, SIDEBUS_ERROR, SIDEBUS_ERROR_FAILED,
                "cannot export %s: the private document portal is not running (restarting?)", host_path.c_str());
    return std::nullopt;
  }
  const bool writable = (flags & (SIDEBUS_EXPORT_FLAGS_WRITABLE | SIDEBUS_EXPORT_FLAGS_FOR_SAVE)) != 0;
  const char* permissions[] = {"read", writable ? "write" : nullptr, nullptr};
  guint32 add_flags = kAddReuseExisting | kAddPersistent;

  UniqueFd fd(open(host_path.c_str(), O_PATH | O_CLOEXEC));
  int open_errno = errno;
  struct stat st = {};
  const bool is_directory = fd && fstat(fd.get(), &st) == 0 && S_ISDIR(st.st_mode);
  // Saving goes by name in the parent directory (the file may not exist yet,
  // and an editor may replace it); a directory picked for saving is the
  // directory itself.
  const bool by_name =
      (flags & SIDEBUS_EXPORT_FLAGS_FOR_SAVE) != 0 && !(is_directory && (flags & SIDEBUS_EXPORT_FLAGS_DIRECTORY) != 0);

  g_autoptr(GUnixFDList) fd_list = g_unix_fd_list_new();
  g_autoptr(GError) call_error = nullptr;
  std::string doc_id;
  if (by_name) {
    if (is_directory) {
      g_set_error(error, SIDEBUS_ERROR, SIDEBUS_ERROR_INVALID_ARGUMENT,
                  "cannot save to %s: it is a directory (export it with SIDEBUS_EXPORT_FLAGS_DIRECTORY)",
                  host_path.c_str());
      return std::nullopt;
    }
    g_autofree char* parent = g_path_get_dirname(host_path.c_str());
    g_autofree char* name = g_path_get_basename(host_path.c_str());
    if (strcmp(name, "/") == 0 || strcmp(name, ".") == 0 || strcmp(name, "..") == 0) {
      g_set_error(error, SIDEBUS_ERROR, SIDEBUS_ERROR_INVALID_ARGUMENT, "%s does not name a file to save to",
                  host_path.c_str());
      return std::nullopt;
    }
    UniqueFd parent_fd(open(parent, O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (!parent_fd) {
      int saved_errno = errno;
      g_set_error(error, SIDEBUS_ERROR, SIDEBUS_ERROR_NOT_FOUND, "cannot save to %s: cannot open its directory: %s",
                  host_path.c_str(), g_strerror(saved_errno));
      return std::nullopt;
    }
    int handle = g_unix_fd_list_append(fd_list, parent_fd.get(), error);
    if (handle < 0) return std::nullopt;
    g_autoptr(GVariant) reply = g_dbus_connection_call_with_unix_fd_list_sync(
        bus, kDocumentsName, kDocumentsPath, kDocumentsInterface, "AddNamedFull",
        g_variant_new("(h@ayus^as)", handle, g_variant_new_bytestring(name), add_flags, app_id_.c_str(), permissions),
        G_VARIANT_TYPE("(sa{sv})"), G_DBUS_CALL_FLAGS_NONE, kCallTimeoutMs, fd_list, nullptr, nullptr, &call_error);
    if (!reply) {
      set_portal_error(error, call_error, "cannot export " + host_path + " for saving");
      return std::nullopt;
    }
    const char* id = nullptr;
    g_variant_get(reply, "(&s@a{sv})", &id, nullptr);
    doc_id = id;
  } else {
    if (!fd) {
      g_set_error(error, SIDEBUS_ERROR, SIDEBUS_ERROR_NOT_FOUND, "cannot export %s: %s", host_path.c_str(),
                  g_strerror(open_errno));
      return std::nullopt;
    }
    if (is_directory) {
      if ((flags & SIDEBUS_EXPORT_FLAGS_DIRECTORY) == 0) {
        g_set_error(error, SIDEBUS_ERROR, SIDEBUS_ERROR_INVALID_ARGUMENT,
                    "cannot export %s: it is a directory (export it with SIDEBUS_EXPORT_FLAGS_DIRECTORY)",
                    host_path.c_str());
        return std::nullopt;
      }
      add_flags |= kAddDirectory;
    } else if (!S_ISREG(st.st_mode)) {
      g_set_error(error, SIDEBUS_ERROR, SIDEBUS_ERROR_INVALID_ARGUMENT,
                  "cannot export %s: it is neither a regular file nor a directory", host_path.c_str());
      return std::nullopt;
    }
    gint32 handle = g_unix_fd_list_append(fd_list, fd.get(), error);
    if (handle < 0) return std::nullopt;
    g_autoptr(GVariant) reply = g_dbus_connection_call_with_unix_fd_list_sync(
        bus, kDocumentsName, kDocumentsPath, kDocumentsInterface, "AddFull",
        g_variant_new("(@ahus^as)", g_variant_new_fixed_array(G_VARIANT_TYPE_HANDLE, &handle, 1, sizeof handle),
                      add_flags, app_id_.c_str(), permissions),
        G_VARIANT_TYPE("(asa{sv})"), G_DBUS_CALL_FLAGS_NONE, kCallTimeoutMs, fd_list, nullptr, nullptr, &call_error);
    if (!reply) {
      set_portal_error(error, call_error, "cannot export " + host_path);
      return std::nullopt;
    }
    g_autofree const char** ids = nullptr;
    g_variant_get(reply, "(^a&s@a{sv})", &ids, nullptr);
    if (ids[0] != nullptr && ids[1] == nullptr) doc_id = ids[0];
  }
  if (!is_document_id(doc_id)) {
    g_set_error(error, SIDEBUS_ERROR, SIDEBUS_ERROR_FAILED, "cannot export %s: the document portal returned no "
                "document id", host_path.c_str());
    return std::nullopt;
  }

  *doc_id_out = doc_id;

  // The portal names the document after the path it resolved (symbolic links
  // followed), which may differ from ours: take the name from it.
  auto info = lookup_document(bus, doc_id, app_id_, &call_error);
  if (!info) {
    set_portal_error(error, call_error, "cannot look up the document " + doc_id + " just made for " + host_path);
    return std::nullopt;
  }
  g_autofree char* name = g_path_get_basename(info->host_path.c_str());
  g_autofree char* guest_path = g_build_filename(guest_documents_path_.c_str(), doc_id.c_str(), name, nullptr);
  g_autoptr(GError) uri_error = nullptr;
  g_autofree char* guest_uri = g_filename_to_uri(guest_path, nullptr, &uri_error);
  if (guest_uri == nullptr) {
    g_set_error(error, SIDEBUS_ERROR, SIDEBUS_ERROR_FAILED,
                "cannot make a URI of %s (is the guest documents path “%s” absolute?): %s", guest_path,
                guest_documents_path_.c_str(), uri_error->message);
    return std::nullopt;
  }
  g_debug("exported %s to app %s as %s", host_path.c_str(), app_id_.c_str(), guest_uri);
  return std::string(guest_uri);
}

std::optional<std::string> DocumentExporter::guest_path_to_host_path(const std::string& guest_path, GError** error) {
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

  GDBusConnection* bus = connection();
  if (bus == nullptr || g_dbus_connection_is_closed(bus)) {
    g_set_error(error, SIDEBUS_ERROR, SIDEBUS_ERROR_FAILED,
                "cannot look up “%s”: the private document portal is not running (restarting?)",
                printable(guest_path).c_str());
    return std::nullopt;
  }
  g_autoptr(GError) lookup_error = nullptr;
  auto info = lookup_document(bus, doc_id, app_id_, &lookup_error);
  if (!info) {
    // 1.16 answers InvalidArgument for an unknown id.
    if (lookup_error->domain == SIDEBUS_ERROR && (lookup_error->code == SIDEBUS_ERROR_INVALID_ARGUMENT ||
                                                  lookup_error->code == SIDEBUS_ERROR_NOT_FOUND))
      return not_allowed("names no document shared with this VM");
    set_portal_error(error, lookup_error, "cannot look up the document " + doc_id);
    return std::nullopt;
  }
  const auto& permissions = info->app_permissions;
  if (std::find(permissions.begin(), permissions.end(), "read") == permissions.end())
    return not_allowed("names no document shared with this VM");  // the same answer: existence is not revealed
  g_autofree char* document_name = g_path_get_basename(info->host_path.c_str());
  if (name != document_name) return not_allowed("is not the file of document " + doc_id);

  const std::string& host_path = info->host_path;
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
