// SPDX-License-Identifier: LGPL-2.1-or-later
// guest-file.hpp — what a file from the guest stands for on the host.
//
// OpenFile and OpenDirectory carry an fd, OpenURI may carry a file:// path;
// the host portal needs an fd of a *host* file. Two ways to get one:
//  - the guest's file is one of its documents (inside the guest documents
//    directory): the core maps it back to the host file, which we open;
//  - anything else is refused, unless portals.openuri.copy_outside_documents
//    allows copying its content into a private host directory (CopyStore),
//    whose files live until the link goes away.
#pragma once

#include <sidebus-plugin.h>
#include <sys/stat.h>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace sidebus::openuri {

// An owned file descriptor.
class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() { reset(); }
  Fd(Fd&& other) noexcept : fd_(other.release()) {}
  Fd& operator=(Fd&& other) noexcept {
    if (this != &other) reset(other.release());
    return *this;
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;

  int get() const { return fd_; }
  explicit operator bool() const { return fd_ >= 0; }
  int release() {
    int fd = fd_;
    fd_ = -1;
    return fd;
  }
  void reset(int fd = -1);

 private:
  int fd_ = -1;
};

// A host file, opened, ready to hand to the host portal.
struct HostFile {
  Fd fd;
  std::string path;
  bool is_directory = false;
};

// Opens the host file behind @guest_path (inside the guest documents
// directory). Regular files and directories only.
std::optional<HostFile> open_document(SidebusContext* context, const std::string& guest_path, GError** error);

// A file descriptor the guest sent, inspected.
struct GuestFd {
  Fd fd;
  std::string path;  // as the broker sees it (/proc/self/fd), "" if it has none
  struct stat st = {};
  int flags = 0;  // fcntl(F_GETFL)
  bool is_directory() const { return S_ISDIR(st.st_mode); }
  bool is_opath() const;
  // Opened for writing (O_RDWR), or an O_PATH fd through which the file is writable.
  bool is_writable() const;
};

// Takes fd number @handle of @fd_list (the message's fds): it must exist and
// be a regular file or a directory.
std::optional<GuestFd> take_guest_fd(GUnixFDList* fd_list, gint32 handle, GError** error);

// Copies of guest files that are not documents, in a private directory of
// the broker's user (0700, under $XDG_RUNTIME_DIR), each as
// <dir>/<n>/<original name>. Copying runs in a thread; it is bounded by
// max_file per file and max_total per link (portals.openuri.max_copy_size,
// max_copied_total), the file's size reserved against the total before the
// copy starts.
class CopyStore {
 public:
  struct Limits {
    goffset max_file = 256 * 1024 * 1024;
    goffset max_total = 1024 * 1024 * 1024;
  };

  CopyStore(std::string vm_name, Limits limits);
  ~CopyStore();  // cancels copies in flight and deletes every copy
  CopyStore(const CopyStore&) = delete;
  CopyStore& operator=(const CopyStore&) = delete;

  // @done runs in the main context with the copy's host path, or an error.
  // It is not called once the store is destroyed.
  using Done = std::function<void(std::optional<std::string> host_path, GError* error)>;
  void copy(GuestFd source, Done done);
  // Deletes one copy (its numbered directory), e.g. when opening it failed.
  void remove(const std::string& host_path);
  const std::string& dir() const { return dir_; }

 private:
  struct Job;
  static void copy_in_thread(GTask* task, gpointer source, gpointer task_data, GCancellable* cancellable);
  static void on_copied(GObject* source, GAsyncResult* result, gpointer user_data);
  bool ensure_dir(GError** error);

  std::string vm_name_;
  Limits limits_;
  std::string dir_;  // created on first use
  guint64 next_ = 0;
  goffset reserved_total_ = 0;  // copies done and in flight
  GCancellable* cancellable_;
};

}  // namespace sidebus::openuri
