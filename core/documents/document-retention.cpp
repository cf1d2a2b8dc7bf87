// SPDX-License-Identifier: LGPL-2.1-or-later
// document-retention.cpp — see document-retention.hpp.
#include "documents/document-retention.hpp"

#include <algorithm>

namespace sidebus {

RetentionChoice choose_documents_to_delete(std::vector<std::pair<std::string, gint64>> documents, gint64 now,
                                           const RetentionPolicy& policy) {
  std::sort(documents.begin(), documents.end(), [](const auto& a, const auto& b) {
    return a.second != b.second ? a.second < b.second : a.first < b.first;
  });
  RetentionChoice choice;
  size_t first_kept = 0;
  if (policy.max_unused_days != 0) {
    const gint64 cutoff = now - gint64(policy.max_unused_days) * 24 * 60 * 60 * G_USEC_PER_SEC;
    while (first_kept < documents.size() && documents[first_kept].second < cutoff) first_kept++;
    choice.unused = first_kept;
  }
  if (policy.max_documents != 0 && documents.size() - first_kept > policy.max_documents) {
    choice.over_limit = documents.size() - first_kept - policy.max_documents;
    first_kept += choice.over_limit;
  }
  for (size_t i = 0; i < first_kept; i++) choice.doc_ids.push_back(std::move(documents[i].first));
  return choice;
}

}  // namespace sidebus
