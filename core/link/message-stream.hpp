// SPDX-License-Identifier: LGPL-2.1-or-later
// message-stream.hpp — a D-Bus byte stream cut into whole messages, both
// ways, on a non-blocking fd: MessageReader takes messages (and, on a unix
// socket, the fds sent with them) out of it; MessageWriter queues messages
// and writes them out with their fds.
//
// Why whole messages: the relay (relay.hpp) must see each message from the
// guest before the broker does — its header to know who sent it, its body to
// count the values GDBus would allocate — and fds must stay with the message
// they belong to. On a unix stream socket one recvmsg() may return the bytes
// of earlier writes together with a later write that carried fds, so the
// reader never reads across a message boundary (as GDBus does itself): every
// fd it receives belongs to the message being read. The writer sends a
// message's fds with its first byte.
//
// Untrusted input: every length comes from wire::parse_fixed_header(), the
// header is parsed before the body is read, a header above kMaxHeaderSize is
// an error, and a message above the reader's size limit is not buffered at
// all: its header is kept and its body skipped.
#pragma once

#include <glib.h>

#include <cstddef>
#include <cstdint>
#include <deque>
#include <string>
#include <vector>

#include "util/unique-fd.hpp"
#include "wire/dbus-message.hpp"

namespace sidebus {

struct Message {
  std::vector<uint8_t> bytes;  // the whole message (empty for one that was skipped)
  std::vector<UniqueFd> fds;   // the fds that came with it
  wire::MessageHeader header;  // parsed (header fields; the body is not scanned here)
  size_t size = 0;             // total size, also of a skipped message
};

class MessageReader {
 public:
  // Header fields beyond this are not a portal's: the reader stops with an error.
  static constexpr size_t kMaxHeaderSize = 64 * 1024;
  // Fds one message may carry (the kernel's SCM_MAX_FD per sendmsg).
  static constexpr size_t kMaxFds = 253;

  // @fd: non-blocking, borrowed. @name names the peer in errors ("link
  // vsock:1234"). @max_message_size: larger messages are skipped.
  MessageReader(int fd, std::string name, size_t max_message_size);

  enum class Result {
    Message,     // *out holds a whole message
    Skipped,     // *out holds the header of a message above the size limit; its body is being skipped
    WouldBlock,  // nothing more to read now
    End,         // the peer closed the stream at a message boundary
    Failed,      // *error says why (malformed header, fds where none may come, EOF mid-message, I/O)
  };
  // Reads what is there; returns one result. @accept_fds: whether fds may
  // come with messages (false: an fd is an error, and it is closed).
  Result next(Message* out, bool accept_fds, GError** error);
  // Bytes already read from the fd and not yet returned: poll() will not
  // report them, so the caller must call next() again without waiting.
  bool has_buffered() const { return ahead_offset_ < ahead_.size(); }

 private:
  bool fill(size_t want, bool accept_fds, bool* would_block, bool* eof, GError** error);
  GError* io_error(int saved, const char* doing) const;

  int fd_;
  std::string name_;
  size_t max_message_size_;
  bool is_socket_;
  std::vector<uint8_t> buffer_;  // the message being read
  std::vector<uint8_t> ahead_;   // read ahead (only where no fds may come), from ahead_offset_ on
  size_t ahead_offset_ = 0;
  std::vector<UniqueFd> fds_;    // its fds so far
  wire::FixedHeader fixed_;
  wire::MessageHeader header_;
  bool have_fixed_ = false;
  bool have_header_ = false;
  uint64_t skip_left_ = 0;  // body bytes of an oversized message still to discard
};

class MessageWriter {
 public:
  // @fd: non-blocking, borrowed. @pass_fds: a unix socket that may carry fds.
  MessageWriter(int fd, std::string name, bool pass_fds);

  void push(std::vector<uint8_t> bytes, std::vector<UniqueFd> fds);
  bool empty() const { return queue_.empty(); }
  size_t queued_bytes() const { return queued_bytes_; }
  // Writes what it can without blocking. False when the peer went away
  // (@error left NULL) or on an error.
  bool flush(GError** error);

 private:
  struct Item {
    std::vector<uint8_t> bytes;
    std::vector<UniqueFd> fds;
    size_t sent = 0;
  };
  int fd_;
  std::string name_;
  bool pass_fds_;
  bool is_socket_;
  std::deque<Item> queue_;
  size_t queued_bytes_ = 0;
};

}  // namespace sidebus
