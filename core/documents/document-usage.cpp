// SPDX-License-Identifier: LGPL-2.1-or-later
// document-usage.cpp — see document-usage.hpp.
#include "documents/document-usage.hpp"

#include <errno.h>
#include <stdlib.h>

#include <algorithm>
#include <sstream>
#include <vector>

namespace sidebus {
namespace {

constexpr const char* kHeader = "sidebus-document-usage 1";
constexpr guint kSaveDelayMs = 1000;

bool parse_u64(const std::string& text, guint64* out) {
  if (text.empty() || text.size() > 20 ||
      !std::all_of(text.begin(), text.end(), [](char c) { return g_ascii_isdigit(c); }))
    return false;
  return g_ascii_string_to_unsigned(text.c_str(), 10, 0, G_MAXUINT64, out, nullptr);
}

}  // namespace

DocumentUsage::DocumentUsage(std::string path)
    : path_(std::move(path)), cancellable_(sidebus::adopt(g_cancellable_new())) {}

DocumentUsage::~DocumentUsage() {
  g_cancellable_cancel(cancellable_.get());
  if (save_source_ != 0) g_source_remove(save_source_);
  if ((dirty_ || writing_) && !path_.empty()) {
    std::string text = serialize();
    g_autoptr(GError) error = nullptr;
    if (!g_file_set_contents_full(path_.c_str(), text.data(), gssize(text.size()), G_FILE_SET_CONTENTS_CONSISTENT, 0600,
                                  &error))
      g_warning("cannot save when documents were last used: %s", error->message);
  }
}

std::optional<std::pair<std::string, DocumentUse>> DocumentUsage::parse_line(const std::string& line) {
  std::vector<std::string> fields;
  std::istringstream in(line);
  for (std::string field; in >> field;) fields.push_back(field);
  if (fields.size() != 5) return std::nullopt;
  const std::string& id = fields[0];
  if (id.empty() || id.size() > 64 || !std::all_of(id.begin(), id.end(), [](char c) { return g_ascii_isalnum(c); }))
    return std::nullopt;
  guint64 last_used;
  if (!parse_u64(fields[1], &last_used) || last_used > guint64(G_MAXINT64)) return std::nullopt;
  DocumentUse use{.last_used = gint64(last_used)};
  if (fields[2] == "-" && fields[3] == "-") {
    if (fields[4] != "-") return std::nullopt;
  } else {
    DocumentKey key;
    if (!parse_u64(fields[2], &key.parent_device) || !parse_u64(fields[3], &key.parent_inode)) return std::nullopt;
    if (fields[4] != "f" && fields[4] != "d") return std::nullopt;
    key.directory = fields[4] == "d";
    use.key = key;
  }
  return std::make_pair(id, use);
}

void DocumentUsage::load() {
  if (path_.empty()) return;
  g_autofree char* contents = nullptr;
  gsize length = 0;
  g_autoptr(GError) error = nullptr;
  if (!g_file_get_contents(path_.c_str(), &contents, &length, &error)) {
    if (!g_error_matches(error, G_FILE_ERROR, G_FILE_ERROR_NOENT))
      g_warning("cannot read when documents were last used (%s); every document counts as used now", error->message);
    return;
  }
  std::istringstream in(std::string(contents, length));
  std::string line;
  if (!std::getline(in, line) || line != kHeader) {
    g_warning("%s is not a sidebus document usage file; every document counts as used now", path_.c_str());
    return;
  }
  size_t skipped = 0;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    auto parsed = parse_line(line);
    if (!parsed) {
      skipped++;
      continue;
    }
    entries_[parsed->first] = parsed->second;
  }
  if (skipped != 0) g_warning("%s: %zu line(s) that do not parse were skipped", path_.c_str(), skipped);
  g_debug("document usage: %zu documents from %s", entries_.size(), path_.c_str());
}

const DocumentUse* DocumentUsage::find(const std::string& doc_id) const {
  auto found = entries_.find(doc_id);
  return found == entries_.end() ? nullptr : &found->second;
}

void DocumentUsage::touch(const std::string& doc_id, gint64 now, std::optional<DocumentKey> key) {
  DocumentUse& use = entries_[doc_id];
  use.last_used = std::max(use.last_used, now);
  if (key) use.key = key;
  save_soon();
}

void DocumentUsage::adopt(const std::string& doc_id, gint64 now) {
  if (entries_.emplace(doc_id, DocumentUse{.last_used = now}).second) save_soon();
}

void DocumentUsage::set_key(const std::string& doc_id, const DocumentKey& key) {
  auto found = entries_.find(doc_id);
  if (found == entries_.end()) return;  // only documents adopted or touched
  found->second.key = key;
  save_soon();
}

void DocumentUsage::forget(const std::string& doc_id) {
  if (entries_.erase(doc_id) != 0) save_soon();
}

std::string DocumentUsage::serialize() const {
  std::string text = std::string(kHeader) + "\n";
  for (const auto& [id, use] : entries_) {
    text += id + " " + std::to_string(use.last_used);
    if (use.key)
      text += " " + std::to_string(use.key->parent_device) + " " + std::to_string(use.key->parent_inode) +
              (use.key->directory ? " d\n" : " f\n");
    else
      text += " - - -\n";
  }
  return text;
}

void DocumentUsage::save_soon() {
  dirty_ = true;
  if (path_.empty() || save_source_ != 0 || writing_) return;
  save_source_ = g_timeout_add(
      kSaveDelayMs,
      [](gpointer data) -> gboolean {
        auto* self = static_cast<DocumentUsage*>(data);
        self->save_source_ = 0;
        self->write();
        return G_SOURCE_REMOVE;
      },
      this);
}

// Written in GIO's worker thread (atomically: a new file renamed over the
// old), so the main loop never waits for the disk.
void DocumentUsage::write() {
  dirty_ = false;
  writing_ = true;
  std::string text = serialize();
  g_autoptr(GBytes) bytes = g_bytes_new(text.data(), text.size());
  g_autoptr(GFile) file = g_file_new_for_path(path_.c_str());
  g_file_replace_contents_bytes_async(
      file, bytes, nullptr, FALSE, G_FILE_CREATE_PRIVATE, cancellable_.get(),
      [](GObject* source, GAsyncResult* result, gpointer data) {
        g_autoptr(GError) error = nullptr;
        gboolean ok = g_file_replace_contents_finish(G_FILE(source), result, nullptr, &error);
        if (g_error_matches(error, G_IO_ERROR, G_IO_ERROR_CANCELLED)) return;  // destroyed: it wrote synchronously
        auto* self = static_cast<DocumentUsage*>(data);
        self->writing_ = false;
        if (!ok) {
          g_warning("cannot save when documents were last used: %s", error->message);
          self->dirty_ = true;
        }
        if (self->dirty_) self->save_soon();
      },
      this);
}

}  // namespace sidebus
