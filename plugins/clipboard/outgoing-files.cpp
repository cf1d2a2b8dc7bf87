// SPDX-License-Identifier: LGPL-2.1-or-later
// outgoing-files.cpp — guest AddFiles fds → host files (see outgoing-files.hpp).
#include "outgoing-files.hpp"

#include <fcntl.h>
#include <unistd.h>

#include "uri-policy.hpp"

namespace sidebus::clipboard {
using namespace sidebus::common;

namespace {

// An O_PATH fd of a guest-local file on a native link, reopened for reading
// when the broker reads no more than the app may (see the header).
std::optional<GuestFd> reopen_for_reading(const GuestFd& guest, GError** error) {
  bool owned_by_us = guest.st.st_uid == geteuid() && (guest.st.st_mode & S_IRUSR);
  bool readable_by_all = guest.st.st_mode & S_IROTH;
  if (!owned_by_us && !readable_by_all) {
    g_set_error(error, SIDEBUS_ERROR, SIDEBUS_ERROR_NOT_ALLOWED,
                "%s cannot be copied to the host: the file descriptor is O_PATH and the file is neither a shared "
                "document nor readable by everyone; pass one opened for reading",
                guest.shown().c_str());
    return std::nullopt;
  }
  g_autofree char* proc_path = g_strdup_printf("/proc/self/fd/%d", guest.fd.get());
  GuestFd opened;
  opened.fd = Fd(open(proc_path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK));
  if (!opened.fd || fstat(opened.fd.get(), &opened.st) != 0 || !S_ISREG(opened.st.st_mode)) {
    g_set_error(error, SIDEBUS_ERROR, SIDEBUS_ERROR_NOT_ALLOWED, "%s cannot be read: %s", guest.shown().c_str(),
                opened.fd ? "it is no longer a regular file" : g_strerror(errno));
    return std::nullopt;
  }
  opened.flags = fcntl(opened.fd.get(), F_GETFL);
  opened.path = guest.path;
  return opened;
}

}  // namespace

std::optional<std::vector<PreparedInput>> prepare_outgoing(SidebusContext* context, GUnixFDList* fd_list,
                                                           const std::vector<gint32>& handles,
                                                           const OutgoingPolicy& policy, GError** error) {
  std::vector<PreparedInput> prepared;
  for (gint32 handle : handles) {
    auto guest = take_guest_fd(fd_list, handle, kRegularFiles | kDirectories, error);
    if (!guest) return std::nullopt;
    PreparedInput input;
    input.shown = guest->shown();
    if (auto document = guest_document(context, *guest)) {
      // The guest's own name for it (an fd's path is the resolved one).
      std::string shown = quote_for_message(document->path.c_str());
      auto file = open_document(context, document->path, error);
      if (!file) return std::nullopt;
      input.shown = shown;
      if (policy.writable && !document->writable) {
        // GTK makes every transfer writable. The host file itself would let
        // the target write what the VM may not: a copy goes instead.
        if (file->is_directory) {
          g_set_error(error, SIDEBUS_ERROR, SIDEBUS_ERROR_NOT_ALLOWED,
                      "%s cannot be added to a writable transfer: it is a folder the VM may only read", shown.c_str());
          return std::nullopt;
        }
        GuestFd content;
        content.path = file->path;
        content.fd = std::move(file->fd);
        content.flags = fcntl(content.fd.get(), F_GETFL);
        if (fstat(content.fd.get(), &content.st) != 0) {
          g_set_error(error, SIDEBUS_ERROR, SIDEBUS_ERROR_FAILED, "%s cannot be read: %s", shown.c_str(),
                      g_strerror(errno));
          return std::nullopt;
        }
        sidebus_context_log(context, G_LOG_LEVEL_DEBUG, "read-only document %s goes to a writable transfer as a copy",
                            document->path.c_str());
        input.content = std::move(content);
      } else {
        sidebus_context_log(context, G_LOG_LEVEL_DEBUG, "document %s is host file %s", document->path.c_str(),
                            file->path.c_str());
        input.document = std::move(file);
      }
      prepared.push_back(std::move(input));
      continue;
    }
    if (guest->is_directory()) {
      g_set_error(error, SIDEBUS_ERROR, SIDEBUS_ERROR_NOT_ALLOWED,
                  "%s is a folder of the VM's own: only files, and folders shared with the VM as documents, can "
                  "be copied to the host",
                  input.shown.c_str());
      return std::nullopt;
    }
    if (!policy.copy_outside_documents) {
      g_set_error(error, SIDEBUS_ERROR, SIDEBUS_ERROR_NOT_ALLOWED,
                  "%s is not one of the VM's documents, and copies of other files to the host are off "
                  "(portals.clipboard.copy_outside_documents)",
                  input.shown.c_str());
      return std::nullopt;
    }
    if (guest->is_opath() || (guest->flags & O_ACCMODE) == O_WRONLY) {
      auto readable = reopen_for_reading(*guest, error);
      if (!readable) return std::nullopt;
      guest = std::move(readable);
    }
    input.content = std::move(guest);
    prepared.push_back(std::move(input));
  }
  return prepared;
}

namespace {

// The files of one AddFiles being made, one copy at a time: a transfer's
// copies queue behind each other rather than fill the store's in-flight
// slots that every transfer of the VM shares.
struct Making {
  std::weak_ptr<CopyStore> store;
  std::vector<PreparedInput> prepared;
  std::vector<OutgoingFile> files;
  size_t next = 0;
  OutgoingDone done;
};

bool open_for_host(OutgoingFile& file, const std::string& path, GError** error) {
  // O_PATH: the host portal checks a writable transfer's files by their
  // path, not by how this fd was opened. Not O_NOFOLLOW: the host portal
  // refuses such fds (it wants the target); it checks the parent itself.
  file.fd = Fd(open(path.c_str(), O_PATH | O_CLOEXEC));
  if (file.fd) return true;
  g_set_error(error, SIDEBUS_ERROR, SIDEBUS_ERROR_FAILED, "%s: the host file cannot be opened: %s", file.shown.c_str(),
              g_strerror(errno));
  return false;
}

void make_next(const std::shared_ptr<Making>& making) {
  g_autoptr(GError) error = nullptr;
  while (making->next < making->prepared.size() && making->prepared[making->next].document) {
    PreparedInput& input = making->prepared[making->next++];
    OutgoingFile file;
    file.shown = input.shown;
    if (!open_for_host(file, input.document->path, &error)) return making->done({}, error);
    making->files.push_back(std::move(file));
  }
  if (making->next == making->prepared.size()) return making->done(std::move(making->files), nullptr);
  std::shared_ptr<CopyStore> store = making->store.lock();
  if (store == nullptr) {
    error = g_error_new(SIDEBUS_ERROR, SIDEBUS_ERROR_NOT_ALLOWED, "copies to the host are not allowed");
    return making->done({}, error);
  }
  PreparedInput& input = making->prepared[making->next++];
  std::string shown = input.shown;
  store->copy(std::move(*input.content), {.fallback_name = "file", .dir_name = {}},
              [making, shown](std::shared_ptr<HostCopy> copy, GError* copy_error) {
                if (copy == nullptr) {
                  GError* named = g_error_copy(copy_error);
                  g_prefix_error(&named, "%s cannot be copied to the host: ", shown.c_str());
                  making->done({}, named);
                  g_error_free(named);
                  return;
                }
                OutgoingFile file;
                file.shown = shown;
                g_autoptr(GError) error = nullptr;
                if (!open_for_host(file, copy->path(), &error)) return making->done({}, error);
                file.copy = std::move(copy);
                making->files.push_back(std::move(file));
                make_next(making);
              });
}

}  // namespace

void make_outgoing(const std::shared_ptr<CopyStore>& store, std::vector<PreparedInput> prepared, OutgoingDone done) {
  auto making = std::make_shared<Making>();
  making->store = store;
  making->prepared = std::move(prepared);
  making->done = std::move(done);
  make_next(making);
}

}  // namespace sidebus::clipboard
