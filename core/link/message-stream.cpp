// SPDX-License-Identifier: LGPL-2.1-or-later
// message-stream.cpp — see message-stream.hpp.
//
// The reader has two ways to read. Where fds may come (a unix socket that
// carries them), it reads exactly up to the end of the current message, so
// the fds of the next message are never received with this one. Where none
// may come, it reads ahead in 64 KiB chunks and cuts messages out of what it
// has: fewer system calls for streams of small messages.
#include "link/message-stream.hpp"

#include <gio/gio.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "util/socket.hpp"

namespace sidebus {

namespace {

constexpr size_t kReadAhead = 64 * 1024;

// EPIPE/ECONNRESET are how a peer going away looks.
bool is_disconnect(int saved) { return saved == EPIPE || saved == ECONNRESET; }

}  // namespace

// ---- MessageReader ----------------------------------------------------------

MessageReader::MessageReader(int fd, std::string name, size_t max_message_size)
    : fd_(fd), name_(std::move(name)), max_message_size_(max_message_size), is_socket_(is_socket(fd)) {}

GError* MessageReader::io_error(int saved, const char* doing) const {
  return g_error_new(G_IO_ERROR, g_io_error_from_errno(saved), "%s %s: %s", doing, name_.c_str(), g_strerror(saved));
}

// Makes buffer_ hold @want bytes, reading what is missing.
bool MessageReader::fill(size_t want, bool accept_fds, bool* would_block, bool* eof, GError** error) {
  *would_block = *eof = false;
  while (buffer_.size() < want) {
    if (!ahead_.empty() && ahead_offset_ < ahead_.size()) {
      size_t take = std::min(want - buffer_.size(), ahead_.size() - ahead_offset_);
      buffer_.insert(buffer_.end(), ahead_.begin() + ptrdiff_t(ahead_offset_),
                     ahead_.begin() + ptrdiff_t(ahead_offset_ + take));
      ahead_offset_ += take;
      if (ahead_offset_ == ahead_.size()) {
        ahead_.clear();
        ahead_offset_ = 0;
      }
      continue;
    }
    const bool read_ahead = !accept_fds;
    size_t room = read_ahead ? kReadAhead : want - buffer_.size();
    std::vector<uint8_t>& target = read_ahead ? ahead_ : buffer_;
    size_t old_size = target.size();
    target.resize(old_size + room);
    ssize_t n;
    bool truncated = false;
    size_t received_fds = 0;
    if (is_socket_) {
      struct iovec iov = {target.data() + old_size, room};
      union {
        char buffer[CMSG_SPACE(sizeof(int) * kMaxFds)];
        struct cmsghdr align;
      } control;
      struct msghdr message = {};
      message.msg_iov = &iov;
      message.msg_iovlen = 1;
      message.msg_control = control.buffer;
      message.msg_controllen = sizeof control.buffer;
      n = recvmsg(fd_, &message, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
      if (n >= 0) {
        for (struct cmsghdr* cmsg = CMSG_FIRSTHDR(&message); cmsg; cmsg = CMSG_NXTHDR(&message, cmsg)) {
          if (cmsg->cmsg_level != SOL_SOCKET || cmsg->cmsg_type != SCM_RIGHTS) continue;
          size_t count = (cmsg->cmsg_len - CMSG_LEN(0)) / sizeof(int);
          for (size_t i = 0; i < count; i++) {
            int received;
            memcpy(&received, CMSG_DATA(cmsg) + i * sizeof(int), sizeof(int));
            fds_.emplace_back(received);
            received_fds++;
          }
        }
        truncated = (message.msg_flags & MSG_CTRUNC) != 0;
      }
    } else {
      n = read(fd_, target.data() + old_size, room);
    }
    int saved = errno;
    target.resize(old_size + size_t(std::max<ssize_t>(n, 0)));
    if (n < 0) {
      if (saved == EINTR) continue;
      if (saved == EAGAIN) {
        *would_block = true;
        return true;
      }
      if (is_disconnect(saved)) {
        *eof = true;
        return true;
      }
      g_propagate_error(error, io_error(saved, "reading from"));
      return false;
    }
    if (truncated || fds_.size() > kMaxFds) {
      g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA, "%s sent more than %zu file descriptors with one message",
                  name_.c_str(), kMaxFds);
      return false;
    }
    if (received_fds > 0 && !accept_fds) {
      fds_.clear();
      g_set_error(error, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED,
                  "%s sent a file descriptor, but this link cannot carry them (closed it and stopped)", name_.c_str());
      return false;
    }
    if (n == 0) {
      *eof = true;
      return true;
    }
  }
  return true;
}

MessageReader::Result MessageReader::next(Message* out, bool accept_fds, GError** error) {
  bool would_block = false, eof = false;
  while (skip_left_ > 0) {
    // The body of a message above the limit: read and dropped, never kept.
    buffer_.clear();
    if (!fill(size_t(std::min<uint64_t>(skip_left_, kReadAhead)), accept_fds, &would_block, &eof, error))
      return Result::Failed;
    skip_left_ -= buffer_.size();
    buffer_.clear();
    fds_.clear();  // they came with the message being dropped
    if (would_block) return Result::WouldBlock;
    if (eof) {
      g_set_error(error, G_IO_ERROR, G_IO_ERROR_CONNECTION_CLOSED, "%s closed the stream in the middle of a message",
                  name_.c_str());
      return Result::Failed;
    }
  }
  if (!have_fixed_) {
    if (!fill(wire::kFixedHeaderSize, accept_fds, &would_block, &eof, error)) return Result::Failed;
    if (would_block) return Result::WouldBlock;
    if (eof) {
      if (buffer_.empty()) return Result::End;
      g_set_error(error, G_IO_ERROR, G_IO_ERROR_CONNECTION_CLOSED, "%s closed the stream in the middle of a message",
                  name_.c_str());
      return Result::Failed;
    }
    GError* parse_error = nullptr;
    if (!wire::parse_fixed_header(buffer_.data(), &fixed_, &parse_error)) {
      g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA, "%s sent something that is not a D-Bus message: %s",
                  name_.c_str(), parse_error->message);
      g_error_free(parse_error);
      return Result::Failed;
    }
    if (fixed_.header_size() > kMaxHeaderSize) {
      g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA,
                  "%s sent a D-Bus message with %zu bytes of header fields (at most %zu)", name_.c_str(),
                  fixed_.header_size(), kMaxHeaderSize);
      return Result::Failed;
    }
    have_fixed_ = true;
  }
  if (!have_header_) {
    if (!fill(fixed_.header_size(), accept_fds, &would_block, &eof, error)) return Result::Failed;
    if (would_block) return Result::WouldBlock;
    if (eof) {
      g_set_error(error, G_IO_ERROR, G_IO_ERROR_CONNECTION_CLOSED, "%s closed the stream in the middle of a message",
                  name_.c_str());
      return Result::Failed;
    }
    GError* parse_error = nullptr;
    if (!wire::parse_header(buffer_.data(), buffer_.size(), &header_, &parse_error)) {
      g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA, "%s sent a malformed D-Bus message header: %s",
                  name_.c_str(), parse_error->message);
      g_error_free(parse_error);
      return Result::Failed;
    }
    have_header_ = true;
    if (fixed_.total_size() > max_message_size_) {
      out->bytes.clear();
      out->fds.clear();
      out->header = header_;
      out->size = fixed_.total_size();
      skip_left_ = fixed_.body_length;
      buffer_.clear();
      fds_.clear();  // closed: they belong to the message that is dropped
      have_fixed_ = have_header_ = false;
      return Result::Skipped;
    }
  }
  if (!fill(fixed_.total_size(), accept_fds, &would_block, &eof, error)) return Result::Failed;
  if (would_block) return Result::WouldBlock;
  if (eof) {
    g_set_error(error, G_IO_ERROR, G_IO_ERROR_CONNECTION_CLOSED, "%s closed the stream in the middle of a message",
                name_.c_str());
    return Result::Failed;
  }
  if (fds_.size() != header_.unix_fds) {
    g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA,
                "%s sent a D-Bus message announcing %u file descriptors with %zu of them", name_.c_str(),
                header_.unix_fds, fds_.size());
    return Result::Failed;
  }
  out->size = fixed_.total_size();
  out->bytes = std::move(buffer_);
  out->fds = std::move(fds_);
  out->header = std::move(header_);
  buffer_.clear();
  fds_.clear();
  header_ = wire::MessageHeader();
  have_fixed_ = have_header_ = false;
  return Result::Message;
}

// ---- MessageWriter ----------------------------------------------------------

MessageWriter::MessageWriter(int fd, std::string name, bool pass_fds)
    : fd_(fd), name_(std::move(name)), pass_fds_(pass_fds), is_socket_(is_socket(fd)) {}

void MessageWriter::push(std::vector<uint8_t> bytes, std::vector<UniqueFd> fds) {
  queued_bytes_ += bytes.size();
  queue_.push_back(Item{std::move(bytes), pass_fds_ ? std::move(fds) : std::vector<UniqueFd>{}, 0});
}

bool MessageWriter::flush(GError** error) {
  while (!queue_.empty()) {
    Item& item = queue_.front();
    const uint8_t* data = item.bytes.data() + item.sent;
    size_t length = item.bytes.size() - item.sent;
    ssize_t n;
    if (is_socket_) {
      struct iovec iov = {const_cast<uint8_t*>(data), length};
      union {
        char buffer[CMSG_SPACE(sizeof(int) * MessageReader::kMaxFds)];
        struct cmsghdr align;
      } control;
      struct msghdr message = {};
      message.msg_iov = &iov;
      message.msg_iovlen = 1;
      if (item.sent == 0 && !item.fds.empty()) {
        message.msg_control = control.buffer;
        message.msg_controllen = CMSG_SPACE(sizeof(int) * item.fds.size());
        struct cmsghdr* cmsg = CMSG_FIRSTHDR(&message);
        cmsg->cmsg_level = SOL_SOCKET;
        cmsg->cmsg_type = SCM_RIGHTS;
        cmsg->cmsg_len = CMSG_LEN(sizeof(int) * item.fds.size());
        for (size_t i = 0; i < item.fds.size(); i++) {
          int raw = item.fds[i].get();
          memcpy(CMSG_DATA(cmsg) + i * sizeof(int), &raw, sizeof(int));
        }
      }
      n = sendmsg(fd_, &message, MSG_NOSIGNAL | MSG_DONTWAIT);
    } else {
      n = write(fd_, data, length);
    }
    if (n < 0) {
      int saved = errno;
      if (saved == EINTR) continue;
      if (saved == EAGAIN) return true;
      if (!is_disconnect(saved))
        g_set_error(error, G_IO_ERROR, g_io_error_from_errno(saved), "writing to %s: %s", name_.c_str(),
                    g_strerror(saved));
      return false;
    }
    if (n > 0 && item.sent == 0) item.fds.clear();  // sent with the first byte: ours are closed now
    item.sent += size_t(n);
    queued_bytes_ -= size_t(n);
    if (item.sent == item.bytes.size()) queue_.pop_front();
  }
  return true;
}

}  // namespace sidebus
