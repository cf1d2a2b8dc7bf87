// SPDX-License-Identifier: LGPL-2.1-or-later
// document-retention.hpp — which of a VM's documents to delete so that its
// document store stays bounded: those the guest has not been given for more
// than max_unused_days, and, oldest first, those beyond max_documents. A
// pure choice over the "last used" times of document-usage.hpp; the
// exporter deletes what it returns (Documents.Delete, in batches, when no
// export is waiting: document-export.cpp). The configuration keys are
// documents.max_documents and documents.max_unused_days
// (docs/configuration.md).
#pragma once

#include <glib.h>

#include <string>
#include <utility>
#include <vector>

namespace sidebus {

struct RetentionPolicy {
  unsigned max_documents = 10000;  // 0: no limit
  unsigned max_unused_days = 90;   // 0: no limit
  bool operator==(const RetentionPolicy&) const = default;
};

struct RetentionChoice {
  std::vector<std::string> doc_ids;  // to delete, oldest first
  size_t unused = 0;                 // of them, because unused for too long
  size_t over_limit = 0;             // of them, because beyond max_documents
};

// @documents: (doc id, last used in unix microseconds, as g_get_real_time()); @now likewise.
// Ties are broken by doc id, so the choice is the same every time.
RetentionChoice choose_documents_to_delete(std::vector<std::pair<std::string, gint64>> documents, gint64 now,
                                           const RetentionPolicy& policy);

}  // namespace sidebus
