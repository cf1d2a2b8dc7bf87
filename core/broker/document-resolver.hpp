// document-resolver.hpp — the broker's answer to a document reference that
// came over a framed link (link/framed-link.hpp): the guest's fd stood for
// <guest documents path>/<doc id>/<path>; this opens the host file behind it
// with the same access mode (O_PATH stays O_PATH), if it is this VM's
// document and the VM may write it when the fd was writable. Runs on the
// link's relay thread: the exporter's index is safe to read there, and the
// only waiting is the open() of a host file.
#pragma once

#include <memory>

#include "link/framed-link.hpp"

namespace sidebus {

class DocumentExporter;
class ForwardedDocuments;

// @exporter must outlive every link that uses the resolver (the broker
// destroys its links before its exporter). Opened files are recorded in
// @forwarded.
DocumentResolver make_document_resolver(const DocumentExporter* exporter,
                                        std::shared_ptr<ForwardedDocuments> forwarded);

}  // namespace sidebus
