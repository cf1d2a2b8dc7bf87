// copy-store.hpp — host copies of guest content that is not a document.
//
// A guest file outside its documents directory does not exist on the host;
// when a portal's configuration allows it (copy_outside_documents), its
// content is copied into a directory of the broker's user, and the host
// portal gets the copy. What a copy can be made from is what the guest's fd
// is, whatever the link did to it on the way: a regular file (the guest's
// own, or the sealed memfd / private file a byte-only link's fd forwarding
// makes of it) is read from its start, a pipe or socket (a stream channel of
// that forwarding, or the guest's own pipe) is read to its end.
//
// Everything is bounded and charged to the link, as the guest's other
// resources are: max_file per copy, max_total for the copies that exist at
// once (a file's size, a stream's max_file, is reserved before the copy
// starts), max_in_flight copies running, and a stream that sends nothing for
// stream_idle_timeout is given up. Copies run in a worker thread (a read from
// the guest's file may block), the results come back on the main context.
//
// Each copy is a HostCopy, <dir>/<n>/<the guest file's name>: the last
// reference deletes it (and gives its bytes back to max_total), unless it
// was kept. A store without a root is a private directory (0700, under
// $XDG_RUNTIME_DIR) deleted with the store, so nothing outlives the link;
// one with a root (Wallpaper's, which must outlive the VM) leaves kept
// copies there.
#pragma once

#include <functional>
#include <memory>
#include <set>
#include <string>

#include "guest-file.hpp"

namespace sidebus::common {

class HostCopy;

class CopyStore : public std::enable_shared_from_this<CopyStore> {
 public:
  struct Limits {
    goffset max_file = 256 * 1024 * 1024;
    goffset max_total = 1024 * 1024 * 1024;
    guint max_in_flight = 8;
    guint stream_idle_timeout_ms = 30000;
  };
  struct Options {
    std::string portal;  // the plugin's name: messages name its keys (portals.<portal>.max_copy_size)
    std::string vm_name;
    Limits limits;
    // "": a private directory under $XDG_RUNTIME_DIR, deleted with the store.
    // Otherwise this directory (created 0700 if needed), left in place.
    std::string root;
  };
  struct CopyOptions {
    std::string fallback_name = "file";  // when the guest's fd has no name (a pipe)
    std::string dir_name;                // the copy's directory in the store; "" → the next number
  };
  // The copy, or nullptr and an error (a SIDEBUS_ERROR for the guest).
  using Done = std::function<void(std::shared_ptr<HostCopy> copy, GError* error)>;

  static std::shared_ptr<CopyStore> create(Options options);
  ~CopyStore();  // cancels copies in flight; a store without a root deletes its directory
  CopyStore(const CopyStore&) = delete;
  CopyStore& operator=(const CopyStore&) = delete;

  // Copies @source (a regular file or a stream, not O_PATH: the caller
  // checked). @done runs on the main context, never after the store is gone.
  void copy(GuestFd source, const CopyOptions& options, Done done);
  // The store's directory ("" until the first copy).
  const std::string& dir() const { return dir_; }
  goffset used() const { return used_; }

 private:
  friend class HostCopy;
  struct Job;
  explicit CopyStore(Options options);
  bool ensure_dir(GError** error);
  static void copy_in_thread(GTask* task, gpointer source, gpointer task_data, GCancellable* cancellable);
  static void on_copied(GObject* source, GAsyncResult* result, gpointer user_data);
  void release(goffset bytes) { used_ -= bytes; }

  Options options_;
  std::string dir_;  // created on first use
  guint64 next_ = 0;
  goffset used_ = 0;           // copies existing and in flight
  std::set<Job*> in_flight_;   // cancelled by the destructor
};

// One copy on the host. Deleted with its last reference, unless kept.
class HostCopy {
 public:
  ~HostCopy();
  HostCopy(const HostCopy&) = delete;
  HostCopy& operator=(const HostCopy&) = delete;

  const std::string& path() const { return path_; }
  // The copy's own directory in the store (<dir>/<n>).
  const std::string& dir() const { return dir_; }
  goffset size() const { return size_; }
  // Opens the copy for reading (O_RDONLY); an invalid Fd and an error if it cannot.
  Fd open(GError** error) const;
  // Left on disk when the last reference goes; its bytes no longer count
  // against max_total then (the portal that keeps copies bounds them).
  void keep() { kept_ = true; }
  // Deletes the copy's file now: for a host portal that reads only the fd
  // it was given (Print), which keeps the content alive until it closes it.
  // The bytes stay charged to max_total until the last reference goes.
  void unlink();

 private:
  friend class CopyStore;
  HostCopy(std::weak_ptr<CopyStore> store, std::string dir, std::string path, goffset charged)
      : store_(std::move(store)), dir_(std::move(dir)), path_(std::move(path)), charged_(charged) {}
  std::weak_ptr<CopyStore> store_;
  std::string dir_;
  std::string path_;
  goffset charged_ = 0;  // against the store's max_total
  goffset size_ = 0;
  bool kept_ = false;
};

}  // namespace sidebus::common
