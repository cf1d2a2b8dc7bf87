// SPDX-License-Identifier: LGPL-2.1-or-later
// message-cutter.cpp — see message-cutter.hpp.
#include "wire/message-cutter.hpp"

#include <gio/gio.h>

#include <algorithm>

namespace sidebus::wire {

MessageCutter::Result MessageCutter::feed(const uint8_t* data, size_t length, size_t* consumed, CutMessage* out,
                                          GError** error) {
  *consumed = 0;
  if (skip_left_ > 0) {
    size_t take = size_t(std::min<uint64_t>(skip_left_, length));
    skip_left_ -= take;
    *consumed = take;
    if (skip_left_ > 0 || take == length) return Result::NeedMore;
    data += take;
    length -= take;
  }
  size_t at = 0;
  auto take_up_to = [&](size_t want) {
    if (buffer_.size() >= want) return true;
    size_t take = std::min(want - buffer_.size(), length - at);
    buffer_.insert(buffer_.end(), data + at, data + at + take);
    at += take;
    return buffer_.size() >= want;
  };
  auto done = [&](Result result) {
    *consumed += at;
    return result;
  };
  if (!have_fixed_) {
    if (!take_up_to(kFixedHeaderSize)) return done(Result::NeedMore);
    GError* parse_error = nullptr;
    if (!parse_fixed_header(buffer_.data(), &fixed_, &parse_error)) {
      g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA, "not a D-Bus message: %s", parse_error->message);
      g_error_free(parse_error);
      return done(Result::Invalid);
    }
    if (fixed_.header_size() > max_header_size_) {
      g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA,
                  "a D-Bus message with %zu bytes of header fields (at most %zu)", fixed_.header_size(),
                  max_header_size_);
      return done(Result::Invalid);
    }
    have_fixed_ = true;
  }
  if (!have_header_) {
    if (!take_up_to(fixed_.header_size())) return done(Result::NeedMore);
    GError* parse_error = nullptr;
    if (!parse_header(buffer_.data(), buffer_.size(), &header_, &parse_error)) {
      g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA, "a malformed D-Bus message header: %s",
                  parse_error->message);
      g_error_free(parse_error);
      return done(Result::Invalid);
    }
    have_header_ = true;
    if (fixed_.total_size() > max_message_size_) {
      out->bytes.clear();
      out->header = std::move(header_);
      out->size = fixed_.total_size();
      skip_left_ = fixed_.body_length;
      buffer_.clear();
      header_ = MessageHeader();
      have_fixed_ = have_header_ = false;
      return done(Result::Skipped);  // the body is dropped by the next calls

    }
  }
  if (!take_up_to(fixed_.total_size())) return done(Result::NeedMore);
  out->size = fixed_.total_size();
  out->bytes = std::move(buffer_);
  out->header = std::move(header_);
  buffer_.clear();
  header_ = MessageHeader();
  have_fixed_ = have_header_ = false;
  return done(Result::Message);
}

}  // namespace sidebus::wire
