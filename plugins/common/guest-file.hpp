// guest-file.hpp — what a file from the guest stands for on the host.
//
// Several portals take files from the guest — OpenURI.OpenFile an fd,
// OpenURI.OpenURI and Wallpaper.SetWallpaperURI a file:// path, Print.Print
// and Wallpaper.SetWallpaperFile an fd, Email.ComposeEmail a list of fds —
// and the host portal needs a *host* file. Two ways to get one:
//  - the guest's file is one of its documents (inside the guest documents
//    directory): the core maps it back to the host file, which we open
//    (open_document);
//  - anything else is content, refused unless the portal's configuration
//    allows copying it to the host (copy-store.hpp).
// This file holds the first half and the inspection of guest fds that both
// halves start from. Shared by the plugins in plugins/ (built into each, its
// symbols hidden): OpenURI, Print, Email, Wallpaper.
#pragma once

#include <sidebus-plugin.h>
#include <sys/stat.h>

#include <optional>
#include <string>

namespace sidebus::common {

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
// directory) for reading. Regular files and directories only.
std::optional<HostFile> open_document(SidebusContext* context, const std::string& guest_path, GError** error);

// The guest path of the document an fd stands for, from the path the kernel
// gives the broker for it (GuestFd::path); nullopt when it is no document.
// That path is the one the file was opened through only up to symlinks: a
// documents directory that is a symlink (a VMM's share, the tests' layout)
// shows up resolved, so it is matched against the resolved documents
// directory too, resolved afresh each time (it may appear after the link
// came up).
std::optional<std::string> document_path_for(SidebusContext* context, const std::string& fd_path);

// The kinds of file descriptor a method takes from the guest.
enum GuestFdKinds : unsigned {
  kRegularFiles = 1 << 0,  // files, memfds
  kDirectories = 1 << 1,
  kStreams = 1 << 2,  // pipes and sockets: read to their end (copies only)
};

// A file descriptor the guest sent, inspected.
struct GuestFd {
  Fd fd;
  std::string path;  // as the broker sees it (/proc/self/fd), "" if it has none
  struct stat st = {};
  int flags = 0;  // fcntl(F_GETFL)
  bool is_directory() const { return S_ISDIR(st.st_mode); }
  bool is_stream() const { return S_ISFIFO(st.st_mode) || S_ISSOCK(st.st_mode); }
  bool is_opath() const;
  // Opened for writing (O_RDWR), or an O_PATH fd through which the file is writable.
  bool is_writable() const;
  // How messages to the guest name it: its (guest) path, quoted, or what it is.
  std::string shown() const;
};

// Takes fd number @handle of @fd_list (the message's fds): it must exist and
// be of one of @kinds.
std::optional<GuestFd> take_guest_fd(GUnixFDList* fd_list, gint32 handle, unsigned kinds, GError** error);

// Deletes @path and everything under it, never following symlinks.
void remove_tree(const std::string& path);

// @vm_name made safe for a file name: [A-Za-z0-9._-], at most 64, never empty.
std::string safe_vm_name(const std::string& vm_name);

}  // namespace sidebus::common
