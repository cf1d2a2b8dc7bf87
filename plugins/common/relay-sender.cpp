// SPDX-License-Identifier: LGPL-2.1-or-later
// relay-sender.cpp — see relay-sender.hpp.
#include "relay-sender.hpp"

#include <glib-unix.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <utility>

namespace sidebus::plugins {
namespace {

void destroy_source(GSource** source) {
  if (*source == nullptr) return;
  g_source_destroy(*source);
  g_source_unref(*source);
  *source = nullptr;
}

uint64_t monotonic_ns() {
  timespec now{};
  clock_gettime(CLOCK_MONOTONIC, &now);
  return uint64_t(now.tv_sec) * 1000000000ull + uint64_t(now.tv_nsec);
}

}  // namespace

RelaySender::RelaySender(int socket, uint32_t window, FormatFunc first_format, EndFunc on_end)
    : socket_(socket),
      window_(window),
      credit_(window),
      first_format_(std::move(first_format)),
      on_end_(std::move(on_end)) {
  g_unix_set_fd_nonblocking(socket_, TRUE, nullptr);
  read_source_ = g_unix_fd_source_new(socket_, static_cast<GIOCondition>(G_IO_IN | G_IO_HUP | G_IO_ERR));
  g_source_set_callback(read_source_, reinterpret_cast<GSourceFunc>(+[](int, GIOCondition, gpointer data) -> gboolean {
                          static_cast<RelaySender*>(data)->read_credit();
                          return G_SOURCE_CONTINUE;
                        }),
                        this, nullptr);
  g_source_attach(read_source_, g_main_context_get_thread_default());
}

RelaySender::~RelaySender() {
  host_.reset();
  destroy_source(&read_source_);
  destroy_source(&write_source_);
  if (socket_ >= 0) close(socket_);
}

bool RelaySender::start(int fd, uint32_t node_id, HostStream::Limits limits, GError** error) {
  host_ = HostStream::start(fd, node_id, this, limits, error);
  return host_ != nullptr;
}

void RelaySender::on_format(const FrameFormat& format) {
  if (ended_) return;
  format_ = video::Format{format.spa_format, format.width, format.height, format.framerate_num, format.framerate_den};
  if (!have_format_) {
    have_format_ = true;
    // The guest's node is made with this format: no record needed for it.
    if (first_format_) std::exchange(first_format_, nullptr)(format_);
    return;
  }
  video::append_format(&out_, format_);
  flush();
}

bool RelaySender::can_take_frame() {
  if (ended_ || !guest_ready_ || credit_ == 0) {
    if (!ended_ && guest_ready_) stats_.dropped++;
    return false;
  }
  // At most one frame waits here beyond what the socket took.
  if (out_.size() - out_sent_ > format_.frame_bytes()) {
    stats_.dropped++;
    return false;
  }
  return true;
}

void RelaySender::on_frame(const Frame& frame) {
  if (frame.size != format_.frame_bytes()) return;  // HostStream packs exactly the format's rows
  if (out_sent_ > 0 && out_sent_ == out_.size()) {
    out_.clear();
    out_sent_ = 0;
  }
  video::append_frame_start(&out_, format_, video::FramePrefix{frame.seq, frame.pts_ns, monotonic_ns()});
  out_.insert(out_.end(), frame.rows, frame.rows + frame.size);
  credit_--;
  stats_.sent++;
  flush();
}

void RelaySender::on_end(const std::string& reason) {
  if (ended_) return;
  std::vector<uint8_t> record;
  video::append_end(&record, reason);
  if (out_sent_ == out_.size()) (void)!send(socket_, record.data(), record.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
  finish(reason);
}

void RelaySender::finish(const std::string& reason) {
  if (ended_) return;
  ended_ = true;
  destroy_source(&read_source_);
  destroy_source(&write_source_);
  shutdown(socket_, SHUT_RDWR);
  if (on_end_) std::exchange(on_end_, nullptr)(reason);  // may destroy this
}

void RelaySender::watch_writable(bool on) {
  if (!on) {
    destroy_source(&write_source_);
    return;
  }
  if (write_source_ != nullptr) return;
  write_source_ = g_unix_fd_source_new(socket_, static_cast<GIOCondition>(G_IO_OUT | G_IO_ERR | G_IO_HUP));
  g_source_set_callback(write_source_, reinterpret_cast<GSourceFunc>(+[](int, GIOCondition, gpointer data) -> gboolean {
                          static_cast<RelaySender*>(data)->flush();
                          return G_SOURCE_CONTINUE;
                        }),
                        this, nullptr);
  g_source_attach(write_source_, g_main_context_get_thread_default());
}

void RelaySender::flush() {
  while (out_sent_ < out_.size()) {
    ssize_t n = send(socket_, out_.data() + out_sent_, out_.size() - out_sent_, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) {
      watch_writable(true);
      return;
    }
    if (n < 0) {
      finish(std::string("the guest's end of the stream went: ") + g_strerror(errno));
      return;
    }
    out_sent_ += size_t(n);
  }
  out_.clear();
  out_sent_ = 0;
  watch_writable(false);
}

void RelaySender::read_credit() {
  for (;;) {
    ssize_t n = recv(socket_, in_ + in_have_, sizeof(in_) - in_have_, MSG_DONTWAIT);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) return;
    if (n <= 0) {
      finish(n == 0 ? "the guest's end of the stream closed (its node went, or the link dropped)"
                    : std::string("reading from the guest's end of the stream: ") + g_strerror(errno));
      return;
    }
    in_have_ += size_t(n);
    if (in_have_ < sizeof(in_)) continue;
    in_have_ = 0;
    video::Header header;
    GError* error = nullptr;
    if (!video::check_header(in_, false, format_, &header, &error)) {
      std::string why = std::string("the guest broke the stream relay's protocol: ") + error->message;
      g_error_free(error);
      finish(why);
      return;
    }
    const uint32_t frames = video::read_u32(in_ + video::kHeaderSize);
    if (frames == 0 || frames > video::kMaxCredit || credit_ + frames > window_) {
      finish("the guest broke the stream relay's protocol: credit for frames it was never sent");
      return;
    }
    credit_ += frames;
  }
}

}  // namespace sidebus::plugins
