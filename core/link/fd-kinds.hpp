// SPDX-License-Identifier: LGPL-2.1-or-later
// fd-kinds.hpp — what a file descriptor becomes on the other side of a
// framed link (link v2, docs/broker.md), decided by the end that holds it,
// and the local fds the receiving end builds for it. Used by the framed link
// end (framed-link.hpp) on the relay thread: no main loop, nothing here
// waits for another process.
//
//   local fd                                 becomes (wire/channel-frames.hpp)
//   file or folder under the documents path  DOCUMENT: document id, path inside, access mode
//   other regular file (memfds too)          CONTENT: its bytes, as a sealed read-only memfd there
//   pipe (read end / write end)              STREAM pipe, the same end there, bytes one way
//   stream socket (connected)                STREAM socket, a socketpair end there, both ways
//   anything else                            refused: the message does not cross
//
// Only the agent has a documents path (what the broker announced in the
// handshake); at the broker end every regular file is CONTENT.
#pragma once

#include <sys/stat.h>

#include <cstdint>
#include <optional>
#include <string>

#include "util/unique-fd.hpp"
#include "wire/channel-frames.hpp"

namespace sidebus {

struct ClassifiedFd {
  enum class Kind { Document, Content, Pipe, Socket, Refused };
  Kind kind = Kind::Refused;
  wire::FdRecord record;  // Document, Content, Pipe, Socket; channel ids are the caller's to fill in
  // What the sending end keeps: Content the fd to pread() from (reopened
  // read-only when it was not readable); Pipe its own non-blocking open of
  // the pipe (the app's file description keeps its flags); Socket the fd.
  UniqueFd local;
  uint64_t size = 0;       // Content
  bool writer_gone = false;  // Pipe to the announcer: nobody reads the pipe any more
  std::string why;         // Refused: what the fd is, for the error message
};

// Decides what @fd becomes. @documents_path: files under it (or under what
// it resolves to) are document references; "" for none.
ClassifiedFd classify_fd(UniqueFd fd, const std::string& documents_path);

// "a character device", "an eventfd", … for messages.
std::string describe_fd(int fd, const struct stat& st);

// ---- the receiving end ----

// A pipe or socketpair for a STREAM record: *app goes with the message, *ours
// (non-blocking) is pumped. False with errno set.
bool make_stream_ends(const wire::StreamRecord& record, UniqueFd* app, UniqueFd* ours);
// A memfd to receive CONTENT into (named after the file).
UniqueFd make_content_file(const std::string& name);
// Seals the content (no more writes, no resizing) and returns a read-only
// fd of it, positioned at 0. Invalid fd with errno set on failure.
UniqueFd seal_content_file(UniqueFd memfd);

}  // namespace sidebus
