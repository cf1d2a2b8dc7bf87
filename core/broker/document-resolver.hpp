// SPDX-License-Identifier: LGPL-2.1-or-later
// document-resolver.hpp — the broker's answer to a document reference that
// came over a framed link (link/framed-link.hpp): the guest's fd stood for
// <guest documents path>/<doc id>/<path>; this opens the host file behind it
// with the same access mode (O_PATH stays O_PATH), if it is this VM's
// document and the VM may write it when the fd was writable. Runs on the
// link's relay thread: the exporter's index is safe to read there, and the
// only waiting is the open() of a host file.
#pragma once

#include <memory>
#include <mutex>

#include "link/framed-link.hpp"

namespace sidebus {

class DocumentExporter;
class ForwardedDocuments;

// The exporter as the relay threads see it: detach() (on the main thread,
// before the exporter goes) waits for a resolution in progress and makes the
// later ones refuse. A link still in setup when the broker stops may outlive
// the exporter, never its handle.
class ExporterHandle {
 public:
  explicit ExporterHandle(const DocumentExporter* exporter) : exporter_(exporter) {}
  void detach() {
    std::lock_guard lock(mutex_);
    exporter_ = nullptr;
  }

 private:
  friend DocumentResolver make_document_resolver(std::shared_ptr<ExporterHandle>, std::shared_ptr<ForwardedDocuments>);
  std::mutex mutex_;
  const DocumentExporter* exporter_;
};

// Opened files are recorded in @forwarded.
DocumentResolver make_document_resolver(std::shared_ptr<ExporterHandle> exporter,
                                        std::shared_ptr<ForwardedDocuments> forwarded);

}  // namespace sidebus
