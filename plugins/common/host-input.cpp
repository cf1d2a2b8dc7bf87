// host-input.cpp — documents or copies for the fds a host portal reads
// (see host-input.hpp).
#include "host-input.hpp"

#include <fcntl.h>
#include <unistd.h>

namespace sidebus::common {

std::optional<std::vector<PreparedInput>> prepare_host_inputs(SidebusContext* context, GUnixFDList* fd_list,
                                                              const std::vector<gint32>& handles,
                                                              const HostInputPolicy& policy, GError** error) {
  const char* documents = sidebus_context_get_guest_documents_path(context);
  std::vector<PreparedInput> inputs;
  for (gint32 handle : handles) {
    auto guest = take_guest_fd(fd_list, handle, kRegularFiles | kStreams, error);
    if (!guest) return std::nullopt;
    PreparedInput input;
    input.shown = guest->shown();
    if (auto document = document_path_for(context, guest->path)) {
      auto file = open_document(context, *document, error);
      if (!file) {
        g_prefix_error(error, "%s: ", input.shown.c_str());
        return std::nullopt;
      }
      if (file->is_directory) {
        g_set_error(error, SIDEBUS_ERROR, SIDEBUS_ERROR_NOT_ALLOWED, "%s is a folder, not a file",
                    input.shown.c_str());
        return std::nullopt;
      }
      sidebus_context_log(context, G_LOG_LEVEL_DEBUG, "document %s is host file %s", document->c_str(),
                          file->path.c_str());
      input.document = std::move(file);
      inputs.push_back(std::move(input));
      continue;
    }
    if (!policy.copy_outside_documents) {
      g_set_error(error, SIDEBUS_ERROR, SIDEBUS_ERROR_NOT_ALLOWED,
                  "%s cannot be %s on the host: it is not in the VM's documents directory %s; only documents shared "
                  "with the VM can (an administrator can allow copies of other files with "
                  "portals.%s.copy_outside_documents)",
                  input.shown.c_str(), policy.purpose, *documents != '\0' ? documents : "(none)",
                  policy.portal.c_str());
      return std::nullopt;
    }
    if (guest->is_opath()) {
      g_set_error(error, SIDEBUS_ERROR, SIDEBUS_ERROR_NOT_ALLOWED,
                  "%s cannot be copied to the host: the file descriptor is O_PATH and the file is not a shared "
                  "document; pass one opened for reading so the broker reads only what the caller may read",
                  input.shown.c_str());
      return std::nullopt;
    }
    if ((guest->flags & O_ACCMODE) == O_WRONLY) {
      g_set_error(error, SIDEBUS_ERROR, SIDEBUS_ERROR_NOT_ALLOWED,
                  "%s cannot be copied to the host: the file descriptor is open for writing only",
                  input.shown.c_str());
      return std::nullopt;
    }
    input.content = std::move(guest);
    inputs.push_back(std::move(input));
  }
  return inputs;
}

namespace {

// The inputs being made; the last copy to finish (or the first to fail) ends it.
struct Gathering {
  std::vector<HostInput> inputs;
  size_t waiting = 0;
  bool finished = false;
  HostInputsDone done;
};

}  // namespace

void make_host_inputs(const std::shared_ptr<CopyStore>& store, std::vector<PreparedInput> prepared,
                      const CopyStore::CopyOptions& options, HostInputsDone done) {
  auto gathering = std::make_shared<Gathering>();
  gathering->done = std::move(done);
  gathering->inputs.resize(prepared.size());
  for (size_t i = 0; i < prepared.size(); i++) {
    gathering->inputs[i].shown = prepared[i].shown;
    if (prepared[i].document) {
      gathering->inputs[i].fd = std::move(prepared[i].document->fd);
      gathering->inputs[i].path = std::move(prepared[i].document->path);
    } else {
      gathering->waiting++;
    }
  }
  if (gathering->waiting == 0) {
    gathering->finished = true;
    gathering->done(std::move(gathering->inputs), nullptr);
    return;
  }
  if (store == nullptr) {
    g_autoptr(GError) error =
        g_error_new(SIDEBUS_ERROR, SIDEBUS_ERROR_NOT_ALLOWED, "copies to the host are not allowed");
    gathering->done({}, error);
    return;
  }
  auto fail = [gathering](GError* error) {
    if (gathering->finished) return;
    gathering->finished = true;
    std::vector<HostInput> dropped = std::move(gathering->inputs);  // deletes the copies made so far
    gathering->done({}, error);
  };
  for (size_t i = 0; i < prepared.size() && !gathering->finished; i++) {
    if (!prepared[i].content) continue;
    std::string shown = prepared[i].shown;
    store->copy(std::move(*prepared[i].content), options,
                [gathering, i, shown, fail](std::shared_ptr<HostCopy> copy, GError* error) {
                  if (gathering->finished) return;  // another failed: this copy goes with @copy
                  if (copy == nullptr) {
                    GError* named = g_error_copy(error);
                    g_prefix_error(&named, "%s cannot be copied to the host: ", shown.c_str());
                    fail(named);
                    g_error_free(named);
                    return;
                  }
                  GError* open_error = nullptr;
                  HostInput& input = gathering->inputs[i];
                  input.fd = copy->open(&open_error);
                  if (!input.fd) {
                    fail(open_error);
                    g_error_free(open_error);
                    return;
                  }
                  input.path = copy->path();
                  input.copy = std::move(copy);
                  if (--gathering->waiting == 0) {
                    gathering->finished = true;
                    gathering->done(std::move(gathering->inputs), nullptr);
                  }
                });
  }
}

}  // namespace sidebus::common
