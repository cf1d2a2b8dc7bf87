// SPDX-License-Identifier: LGPL-2.1-or-later
// document-resolver.cpp — see document-resolver.hpp.
#include "broker/document-resolver.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "documents/document-export.hpp"
#include "documents/forwarded-documents.hpp"

namespace sidebus {

namespace {

constexpr const char* kAccessDenied = "org.freedesktop.DBus.Error.AccessDenied";
constexpr const char* kFailed = "org.freedesktop.DBus.Error.Failed";

}  // namespace

DocumentResolver make_document_resolver(std::shared_ptr<ExporterHandle> handle,
                                        std::shared_ptr<ForwardedDocuments> forwarded) {
  return [handle, forwarded](const DocumentReference& reference, Refusal* refusal) -> UniqueFd {
    std::lock_guard lock(handle->mutex_);
    const DocumentExporter* exporter = handle->exporter_;
    if (exporter == nullptr) {
      *refusal = {kFailed, "the broker is stopping"};
      return {};
    }
    std::string guest_path = exporter->guest_documents_path();
    while (guest_path.size() > 1 && guest_path.back() == '/') guest_path.pop_back();
    guest_path += "/" + reference.doc_id + "/" + reference.path;
    GError* error = nullptr;
    std::optional<std::string> host_path = exporter->guest_path_to_host_path(guest_path, &error);
    if (!host_path) {
      *refusal = {kAccessDenied, std::string("cannot pass the file across this VM's link: ") + error->message};
      g_error_free(error);
      return {};
    }
    const bool write = reference.access == wire::FdAccess::WriteOnly || reference.access == wire::FdAccess::ReadWrite;
    std::optional<bool> writable = exporter->document_writable(reference.doc_id);
    if (write && writable != true) {
      *refusal = {kAccessDenied, "cannot pass “" + guest_path + "” open for writing across this VM's link: " +
                                     (writable ? std::string("the VM may only read that document")
                                               : std::string("its permissions are not known yet; try again"))};
      return {};
    }
    int flags = O_CLOEXEC | O_NOCTTY | O_NOFOLLOW;
    switch (reference.access) {
      case wire::FdAccess::Path:
        flags |= O_PATH;
        break;
      case wire::FdAccess::ReadOnly:
        flags |= O_RDONLY | O_NONBLOCK;  // never hang on a FIFO that took the document's place
        break;
      case wire::FdAccess::WriteOnly:
        flags |= O_WRONLY | O_NONBLOCK;
        break;
      case wire::FdAccess::ReadWrite:
        flags |= O_RDWR | O_NONBLOCK;
        break;
    }
    UniqueFd fd(open(host_path->c_str(), flags));
    if (!fd) {
      int saved = errno;
      *refusal = {saved == ENOENT ? kFailed : kAccessDenied,
                  "cannot pass “" + guest_path + "” across this VM's link: its host file cannot be opened (" +
                      g_strerror(saved) + ")"};
      return {};
    }
    struct stat st;
    if (fstat(fd.get(), &st) != 0 || (!S_ISREG(st.st_mode) && !S_ISDIR(st.st_mode))) {
      *refusal = {kAccessDenied,
                  "cannot pass “" + guest_path + "” across this VM's link: its host file is not a file or a folder"};
      return {};
    }
    if (reference.access != wire::FdAccess::Path) (void)fcntl(fd.get(), F_SETFL, fcntl(fd.get(), F_GETFL) & ~O_NONBLOCK);
    forwarded->add(st.st_dev, st.st_ino, ForwardedDocuments::Entry{guest_path, writable == true});
    return fd;
  };
}

}  // namespace sidebus
