// SPDX-License-Identifier: LGPL-2.1-or-later
// forwarded-documents.hpp — the host files a link's guest sent as its own
// documents. On a byte-only link with fd forwarding (link v2), a guest fd of
// one of its documents crosses as a reference; the broker's relay thread opens
// the host file behind it (document-resolver.hpp) and records it here, so a
// portal that receives that host fd can tell it apart from a guest file the
// link copied (sidebus_context_get_forwarded_document()).
//
// Keyed by the file itself (device, inode): the fd the portal gets is a
// duplicate of the one the resolver opened. Written by the relay thread, read
// on the main thread; bounded (the oldest entries go first).
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <utility>

namespace sidebus {

class ForwardedDocuments {
 public:
  static constexpr size_t kMaxEntries = 4096;

  struct Entry {
    std::string guest_path;  // the document's path in the guest
    bool writable = false;   // the VM may write the document
  };

  void add(dev_t dev, ino_t ino, Entry entry) {
    std::lock_guard lock(mutex_);
    auto key = std::make_pair(dev, ino);
    if (entries_.insert_or_assign(key, std::move(entry)).second) {
      order_.push_back(key);
      if (order_.size() > kMaxEntries) {
        entries_.erase(order_.front());
        order_.pop_front();
      }
    }
  }

  std::optional<Entry> find(dev_t dev, ino_t ino) const {
    std::lock_guard lock(mutex_);
    auto found = entries_.find(std::make_pair(dev, ino));
    if (found == entries_.end()) return std::nullopt;
    return found->second;
  }

 private:
  mutable std::mutex mutex_;
  std::map<std::pair<dev_t, ino_t>, Entry> entries_;
  std::deque<std::pair<dev_t, ino_t>> order_;
};

}  // namespace sidebus
