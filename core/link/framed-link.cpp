// SPDX-License-Identifier: LGPL-2.1-or-later
// framed-link.cpp — see framed-link.hpp.
//
// The pieces, on the relay thread:
//  - input: the link fd is read into in_ and cut into frames
//    (wire::parse_frame); each frame is handled at once: channel 0's DATA
//    goes to the message cutter, an FD record becomes a Slot (the local fd
//    it stands for, or what it waits for, or why it failed), a stream
//    channel's DATA is written to its local fd (what does not fit waits in
//    the channel's buffer, bounded by the credit granted), a content
//    channel's DATA is written to its memfd;
//  - messages: a message cut from channel 0 takes the records announced
//    before it and waits in pending_ until each slot has its fd; next()
//    hands them to the relay in order;
//  - output: push() classifies a message's fds (fd-kinds.hpp) and queues its
//    records and bytes on channel 0 (ch0_out_); fill() turns what may be
//    sent into frames in out_ — channel 0 first, then one chunk per stream or
//    content channel in turn, each read from its local fd straight into out_
//    — and flush() writes out_ to the link.
// Own channels are "announced" once their record is in out_: no frame of
// theirs (credit, stop, data) may go out before it.
#include "link/framed-link.hpp"

#include <fcntl.h>
#include <gio/gio.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <deque>
#include <map>
#include <optional>

#include "link/fd-kinds.hpp"
#include "util/socket.hpp"
#include "wire/message-cutter.hpp"

namespace sidebus {

namespace {

constexpr uint64_t kDBusWindow = 4 * 1024 * 1024;  // channel 0's credit
constexpr size_t kHighWater = 4 * 1024 * 1024;     // local backlog above which channel 0's credit waits
constexpr size_t kOutHigh = 1024 * 1024;           // out_ is filled up to this
constexpr size_t kChunk = wire::kMaxFramePayload;  // one DATA frame at most
constexpr size_t kInSize = 2 * 1024 * 1024;        // link read buffer (≥ one whole frame)
constexpr int kReadsPerTurn = 8;
constexpr uint64_t kMinGrant = 64 * 1024;  // a channel with nothing buffered always gets this much
constexpr uint64_t kMaxCredit = uint64_t(1) << 32;  // more outstanding credit than this from a peer is a lie
constexpr size_t kExtraChannels = 256;  // refused channels kept until their END, beyond max_channels
constexpr size_t kMaxKept = 16;         // fds kept in the guest (agent) / their stand-ins (broker), oldest go first
constexpr size_t kMaxKeptCalls = 64;    // relay helper calls whose replies keep their fds
constexpr const char* kNotSupported = "org.freedesktop.DBus.Error.NotSupported";
constexpr const char* kLimitsExceeded = "org.freedesktop.DBus.Error.LimitsExceeded";
constexpr const char* kFailed = "org.freedesktop.DBus.Error.Failed";

bool is_disconnect(int saved) { return saved == EPIPE || saved == ECONNRESET; }

// A file's content being received: shared by its channel and its slot.
struct ContentResult {
  uint32_t channel = 0;
  bool done = false;
  bool failed = false;
  Refusal refusal;
  UniqueFd fd;
};

// One fd of a message being received.
struct Slot {
  UniqueFd fd;                             // ready
  uint32_t stream = 0;                     // the stream channel behind fd
  std::shared_ptr<ContentResult> content;  // waiting for a content channel
  bool failed = false;
  Refusal refusal;
};

struct Pending {
  wire::CutMessage message;
  bool skipped = false;
  std::vector<Slot> slots;
};

struct OutItem {
  std::vector<uint8_t> bytes;  // a message's bytes, or an FD record
  size_t sent = 0;
  bool record = false;
  uint32_t announces = 0;  // record: the channel it opens (0: none)
};

struct Channel {
  enum class Type { Stream, ContentOut, ContentIn };
  uint32_t id = 0;
  Type type = Type::Stream;
  bool ours = false;
  bool is_socket = false;
  bool counted = true;     // holds resources: counts against max_channels
  bool announced = true;   // own channels: their record went out
  UniqueFd fd;             // the local end (content in: the memfd)

  // out: local fd → peer
  bool has_out = false;
  bool out_end_pending = false;  // END to send (after the data already framed)
  bool out_done = true;          // END sent, or no such direction
  uint64_t out_credit = 0;
  bool readable = false;  // poll said so (streams); content: always
  bool warned_fds = false;
  uint64_t content_offset = 0, content_size = 0;  // content out

  // in: peer → local fd
  bool has_in = false;
  bool in_end = false;      // the peer sent END
  bool in_stopped = false;  // we sent STOP: what comes is dropped
  bool in_done = true;      // END received and everything written, or no such direction
  uint64_t in_window = 0;   // granted, not received yet
  std::vector<uint8_t> in_buf;
  size_t in_off = 0;
  uint64_t held_credit = 0;  // granted before the channel was announced
  bool held_stop = false;
  std::shared_ptr<ContentResult> content;  // content in
  uint64_t content_received = 0;

  size_t buffered() const { return in_buf.size() - in_off; }
};

class FramedLink : public LinkEnd {
 public:
  FramedLink(int fd, std::string name, FramedLinkOptions options, FramedLinkCounters* counters)
      : fd_(fd),
        name_(std::move(name)),
        options_(std::move(options)),
        counters_(counters),
        is_socket_(is_socket(fd)),
        cutter_(options_.max_message_size ? options_.max_message_size : wire::kMaxMessageSize),
        next_own_id_(options_.broker_end ? 2 : 1) {
    in_.resize(kInSize);
    // Channel 0's first credit: the peer may send that much D-Bus.
    ch0_in_window_ = kDBusWindow;
    wire::append_credit(&out_, wire::kDBusChannel, uint32_t(kDBusWindow));
  }

  void add_pollfds(std::vector<struct pollfd>* pfds, bool deliver, size_t local_backlog) override;
  bool dispatch(const struct pollfd* pfds, GError** error) override;
  bool readable() const override;
  Next next(Message* out, Refusal* refusal, GError** error) override;
  bool push(Message message, Refusal* refusal) override;
  size_t queued_bytes() const override { return ch0_out_bytes_ + (out_.size() - out_sent_); }
  bool empty() const override {
    return out_sent_ == out_.size() && ch0_out_.empty() && (!ch0_end_requested_ || ch0_end_sent_);
  }
  bool flush(GError** error) override;
  bool end_stream() override {
    ch0_end_requested_ = true;
    return true;
  }

 private:
  bool violation(const char* format, ...) G_GNUC_PRINTF(2, 3);
  bool read_link();
  bool handle(const wire::Frame& frame);
  bool handle_dbus_data(const uint8_t* data, size_t length);
  bool handle_record(const uint8_t* data, size_t length);
  bool take_peer_channel(uint32_t id);
  Channel* find(uint32_t id, const char* kind, bool* closed);
  bool known_closed(uint32_t id) const;
  bool is_ours(uint32_t id) const { return (id % 2 == 0) == options_.broker_end; }
  size_t counted_channels() const;

  void emit_credit(Channel& channel, uint64_t amount);
  void emit_stop(Channel& channel);
  void grant(Channel& channel);
  void grant_all();
  void grant_dbus();
  void stop_in(Channel& channel);
  void finish_in(Channel& channel);
  void write_in(Channel& channel);
  void stop_out(Channel& channel);
  void maybe_erase(uint32_t id);
  void abandon(Slot& slot);
  void release(Channel& channel);
  void content_finished(Channel& channel);
  void consumed(uint64_t bytes);

  void fill();
  bool fill_channel(Channel& channel);
  bool write_out(GError** error);
  void update_stats();
  Refusal limit(const char* what, const char* key) const;

  int fd_;
  std::string name_;
  FramedLinkOptions options_;
  FramedLinkCounters* counters_;
  bool is_socket_;
  GError* error_ = nullptr;

  // input
  std::vector<uint8_t> in_;
  size_t in_start_ = 0, in_end_ = 0;
  bool eof_ = false;
  wire::MessageCutter cutter_;
  std::deque<Slot> records_;  // announced for the next message
  std::deque<Pending> pending_;
  size_t pending_bytes_ = 0;
  uint64_t ch0_in_window_ = 0;
  bool ch0_in_ended_ = false;
  size_t backlog_ = 0;
  bool deliver_ = true;

  // output
  std::vector<uint8_t> out_;
  size_t out_sent_ = 0;
  std::deque<OutItem> ch0_out_;
  size_t ch0_out_bytes_ = 0;
  uint64_t ch0_out_credit_ = 0;
  bool ch0_end_requested_ = false, ch0_end_sent_ = false;
  uint32_t last_served_ = 0;

  // channels
  std::map<uint32_t, Channel> channels_;
  uint32_t next_own_id_;
  uint32_t highest_peer_id_ = 0;
  uint64_t link_committed_ = 0;  // credit outstanding + bytes buffered, all channels but 0
  uint64_t link_buffered_ = 0;   // bytes buffered, all channels but 0
  uint64_t content_in_flight_ = 0;
  bool starved_ = false;  // a channel could not be granted credit: the link's buffer was full

  std::vector<uint32_t> poll_ids_;  // channel of each pollfd after the link's own

  // KEPT fds (wire/channel-frames.hpp). Agent end: the guest fds it keeps,
  // by key, and the serials of the broker's calls to the relay helpers whose
  // replies keep theirs. Broker end: the stand-ins it made, by inode.
  struct StandIn {
    dev_t dev = 0;
    ino_t ino = 0;
    uint32_t key = 0;
  };
  std::deque<std::pair<uint32_t, UniqueFd>> kept_;
  uint32_t next_kept_key_ = 1;
  std::deque<uint32_t> kept_calls_;
  std::deque<StandIn> stand_ins_;
  bool keeps_reply_fds(const wire::MessageHeader& header);
  bool handle_kept(const wire::KeptRecord& record);
  std::optional<wire::KeptRecord> stand_in_of(int fd);
};

bool FramedLink::violation(const char* format, ...) {
  va_list args;
  va_start(args, format);
  g_autofree char* what = g_strdup_vprintf(format, args);
  va_end(args);
  if (error_ == nullptr)
    error_ = g_error_new(G_IO_ERROR, G_IO_ERROR_INVALID_DATA, "%s broke the link protocol: %s", name_.c_str(), what);
  return false;
}

Refusal FramedLink::limit(const char* what, const char* key) const {
  return Refusal{kLimitsExceeded, std::string(what) + " (" + options_.limit_prefix + key + ")"};
}

size_t FramedLink::counted_channels() const {
  size_t count = 0;
  for (const auto& [id, channel] : channels_) count += channel.counted;
  return count;
}

void FramedLink::update_stats() {
  if (!counters_) return;
  counters_->channels_open = counted_channels();
  if (link_buffered_ > counters_->buffered_peak) counters_->buffered_peak = link_buffered_;
}

// ---- polling ----

void FramedLink::add_pollfds(std::vector<struct pollfd>* pfds, bool deliver, size_t local_backlog) {
  deliver_ = deliver;
  backlog_ = local_backlog;
  grant_dbus();
  fill();
  short events = eof_ ? 0 : POLLIN;
  if (out_sent_ < out_.size()) events |= POLLOUT;
  pfds->push_back({fd_, events, 0});
  poll_ids_.clear();
  const bool room = out_.size() - out_sent_ < kOutHigh;
  for (auto& [id, channel] : channels_) {
    if (!channel.fd || channel.type == Channel::Type::ContentIn || channel.type == Channel::Type::ContentOut) continue;
    short wanted = 0;
    if (channel.has_out && !channel.out_done && !channel.out_end_pending && channel.announced &&
        channel.out_credit > 0 && room && !channel.readable)
      wanted |= POLLIN;
    if (channel.buffered() > 0) wanted |= POLLOUT;
    if (wanted == 0) continue;
    pfds->push_back({channel.fd.get(), wanted, 0});
    poll_ids_.push_back(id);
  }
}

bool FramedLink::dispatch(const struct pollfd* pfds, GError** error) {
  if (pfds[0].revents & (POLLIN | POLLHUP | POLLERR)) {
    if (!read_link()) {
      g_propagate_error(error, g_steal_pointer(&error_));
      return false;
    }
  }
  for (size_t i = 0; i < poll_ids_.size(); i++) {
    short revents = pfds[1 + i].revents;
    if (revents == 0) continue;
    auto found = channels_.find(poll_ids_[i]);
    if (found == channels_.end()) continue;
    Channel& channel = found->second;
    if ((pfds[1 + i].events & POLLIN) && (revents & (POLLIN | POLLHUP | POLLERR))) channel.readable = true;
    if ((pfds[1 + i].events & POLLOUT) && (revents & (POLLOUT | POLLHUP | POLLERR))) write_in(channel);
    maybe_erase(found->first);
  }
  if (starved_) grant_all();
  if (!flush(error)) return false;
  update_stats();
  return true;
}

bool FramedLink::readable() const {
  if (eof_ || ch0_in_ended_) return true;
  if (pending_.empty()) return false;
  for (const Slot& slot : pending_.front().slots)
    if (slot.content && !slot.content->done) return false;
  return true;
}

// ---- input ----

bool FramedLink::read_link() {
  for (int turn = 0; turn < kReadsPerTurn && !eof_; turn++) {
    if (in_start_ > 0 && (in_end_ == in_.size() || in_start_ == in_end_)) {
      memmove(in_.data(), in_.data() + in_start_, in_end_ - in_start_);
      in_end_ -= in_start_;
      in_start_ = 0;
    }
    ssize_t n = read(fd_, in_.data() + in_end_, in_.size() - in_end_);
    if (n < 0) {
      int saved = errno;
      if (saved == EINTR) continue;
      if (saved == EAGAIN) break;
      if (is_disconnect(saved) || saved == EIO) {
        eof_ = true;
        break;
      }
      if (!error_)
        error_ = g_error_new(G_IO_ERROR, g_io_error_from_errno(saved), "reading from %s: %s", name_.c_str(),
                             g_strerror(saved));
      return false;
    }
    if (n == 0) {
      eof_ = true;
      break;
    }
    in_end_ += size_t(n);
    while (in_start_ < in_end_) {
      wire::Frame frame;
      size_t consumed = 0;
      GError* parse_error = nullptr;
      auto result = wire::parse_frame(in_.data() + in_start_, in_end_ - in_start_, &frame, &consumed, &parse_error);
      if (result == wire::ParseResult::Invalid) {
        violation("%s", parse_error->message);
        g_error_free(parse_error);
        return false;
      }
      if (result == wire::ParseResult::NeedMore) break;
      if (!handle(frame)) return false;
      in_start_ += consumed;
    }
    if (size_t(n) < in_.size() / 2) break;  // drained for now
  }
  if (eof_ && in_start_ != in_end_) return violation("the link closed in the middle of a frame");
  return true;
}

bool FramedLink::known_closed(uint32_t id) const {
  if (is_ours(id)) return id < next_own_id_;
  return id <= highest_peer_id_;
}

Channel* FramedLink::find(uint32_t id, const char* kind, bool* closed) {
  *closed = false;
  auto found = channels_.find(id);
  if (found != channels_.end()) return &found->second;
  if (known_closed(id)) {
    *closed = true;
    return nullptr;
  }
  violation("%s frame for channel %u, which was never opened", kind, id);
  return nullptr;
}

bool FramedLink::handle(const wire::Frame& frame) {
  const uint32_t id = frame.header.channel;
  bool closed = false;
  switch (frame.header.kind) {
    case wire::FrameKind::Data: {
      if (id == wire::kDBusChannel) return handle_dbus_data(frame.payload, frame.header.length);
      Channel* channel = find(id, "a DATA", &closed);
      if (closed) return violation("DATA frame for channel %u after its END", id);
      if (!channel) return false;
      if (!channel->has_in || channel->in_end)
        return violation("DATA frame for channel %u, which carries nothing that way", id);
      if (frame.header.length > channel->in_window)
        return violation("%u bytes of DATA on channel %u with %" G_GUINT64_FORMAT " bytes of credit",
                         frame.header.length, id, channel->in_window);
      channel->in_window -= frame.header.length;
      link_committed_ -= frame.header.length;
      if (channel->in_stopped) return true;  // dropped: nobody reads it
      if (channel->type == Channel::Type::ContentIn) {
        if (channel->content_received + frame.header.length > channel->content_size)
          return violation("more content on channel %u than its record announced", id);
        size_t done = 0;
        while (done < frame.header.length) {
          ssize_t n = pwrite(channel->fd.get(), frame.payload + done, frame.header.length - done,
                             off_t(channel->content_received + done));
          if (n < 0 && errno == EINTR) continue;
          if (n <= 0) {
            channel->content->failed = true;
            channel->content->refusal = {kFailed, std::string("cannot store the file's content: ") + g_strerror(errno)};
            stop_in(*channel);
            return true;
          }
          done += size_t(n);
        }
        channel->content_received += frame.header.length;
        grant(*channel);
        return true;
      }
      // A stream: straight to the local fd if nothing is waiting before it.
      size_t done = 0;
      if (channel->buffered() == 0 && channel->fd) {
        while (done < frame.header.length) {
          ssize_t n = write(channel->fd.get(), frame.payload + done, frame.header.length - done);
          if (n < 0 && errno == EINTR) continue;
          if (n < 0 && errno == EAGAIN) break;
          if (n < 0) {
            stop_in(*channel);  // EPIPE: its reader went away
            return true;
          }
          done += size_t(n);
        }
      }
      if (done < frame.header.length) {
        if (channel->in_off > 0 && channel->in_off == channel->in_buf.size()) {
          channel->in_buf.clear();
          channel->in_off = 0;
        }
        channel->in_buf.insert(channel->in_buf.end(), frame.payload + done, frame.payload + frame.header.length);
        size_t kept = frame.header.length - done;
        link_committed_ += kept;
        link_buffered_ += kept;
        if (counters_ && channel->buffered() > counters_->channel_buffered_peak)
          counters_->channel_buffered_peak = channel->buffered();
      }
      grant(*channel);
      return true;
    }
    case wire::FrameKind::End: {
      if (id == wire::kDBusChannel) {
        if (ch0_in_ended_) return violation("a second END of channel 0");
        if (cutter_.in_message()) return violation("END of channel 0 in the middle of a message");
        if (!records_.empty()) return violation("END of channel 0 after fd records for a message that never came");
        ch0_in_ended_ = true;
        return true;
      }
      Channel* channel = find(id, "an END", &closed);
      if (closed) return violation("a second END frame for channel %u", id);
      if (!channel) return false;
      if (!channel->has_in || channel->in_end)
        return violation("END frame for channel %u, which carries nothing that way", id);
      channel->in_end = true;
      link_committed_ -= channel->in_window;
      channel->in_window = 0;
      if (channel->type == Channel::Type::ContentIn) {
        content_finished(*channel);
      } else if (channel->buffered() == 0 || channel->in_stopped) {
        finish_in(*channel);
      }
      maybe_erase(id);
      return true;
    }
    case wire::FrameKind::Credit: {
      if (id == wire::kDBusChannel) {
        ch0_out_credit_ += frame.credit;
        if (ch0_out_credit_ > kMaxCredit) return violation("more than 4 GiB of credit on channel 0");
        return true;
      }
      Channel* channel = find(id, "a CREDIT", &closed);
      if (closed) return true;  // crossed our END
      if (!channel) return false;
      if (!channel->has_out) return violation("CREDIT frame for channel %u, which it does not receive", id);
      if (channel->out_done || channel->out_end_pending) return true;
      channel->out_credit += frame.credit;
      if (channel->out_credit > kMaxCredit) return violation("more than 4 GiB of credit on channel %u", id);
      return true;
    }
    case wire::FrameKind::Stop: {
      Channel* channel = find(id, "a STOP", &closed);
      if (closed) return true;  // crossed our END
      if (!channel) return false;
      if (!channel->has_out) return violation("STOP frame for channel %u, which it does not receive", id);
      if (!channel->out_done) stop_out(*channel);
      return true;
    }
    case wire::FrameKind::Fd:
      return handle_record(frame.payload, frame.header.length);
  }
  return violation("an unknown frame");
}

bool FramedLink::handle_dbus_data(const uint8_t* data, size_t length) {
  if (ch0_in_ended_) return violation("D-Bus data after the END of channel 0");
  if (length > ch0_in_window_)
    return violation("%zu bytes of D-Bus data with %" G_GUINT64_FORMAT " bytes of credit", length, ch0_in_window_);
  ch0_in_window_ -= length;
  while (length > 0) {
    wire::CutMessage message;
    size_t consumed = 0;
    GError* cut_error = nullptr;
    auto result = cutter_.feed(data, length, &consumed, &message, &cut_error);
    data += consumed;
    length -= consumed;
    if (result == wire::MessageCutter::Result::Invalid) {
      violation("%s", cut_error->message);
      g_error_free(cut_error);
      return false;
    }
    if (result == wire::MessageCutter::Result::NeedMore) break;
    uint32_t fds = message.header.unix_fds;
    if (fds != records_.size())
      return violation("a D-Bus message with %u file descriptors after %zu fd records", fds, records_.size());
    Pending pending;
    pending.skipped = result == wire::MessageCutter::Result::Skipped;
    pending.message = std::move(message);
    for (auto& slot : records_) pending.slots.push_back(std::move(slot));
    records_.clear();
    pending_bytes_ += pending.message.bytes.size();
    pending_.push_back(std::move(pending));
  }
  return true;
}

bool FramedLink::take_peer_channel(uint32_t id) {
  if (is_ours(id)) return violation("a record opening channel %u, which is not its to open", id);
  if (id <= highest_peer_id_) return violation("a record opening channel %u again", id);
  if (channels_.size() >= options_.limits.max_channels + kExtraChannels)
    return violation("more than %zu channels open at once", size_t(options_.limits.max_channels) + kExtraChannels);
  highest_peer_id_ = id;
  return true;
}

// ---- kept fds ----

bool FramedLink::keeps_reply_fds(const wire::MessageHeader& header) {
  if (header.fixed.type != wire::MessageType::MethodReturn || !header.has_reply_serial) return false;
  auto found = std::find(kept_calls_.begin(), kept_calls_.end(), header.reply_serial);
  if (found == kept_calls_.end()) return false;
  kept_calls_.erase(found);
  return true;
}

// A KEPT record: at the broker end a stand-in for the guest's fd (a memfd
// recognised by its inode when it goes back); at the agent end the guest
// fd it names, handed on.
bool FramedLink::handle_kept(const wire::KeptRecord& record) {
  Slot slot;
  if (options_.broker_end) {
    slot.fd = UniqueFd(memfd_create("sidebus-kept-in-guest", MFD_CLOEXEC));
    struct stat st {};
    if (!slot.fd || fstat(slot.fd.get(), &st) < 0) {
      slot.fd.reset();
      slot.failed = true;
      slot.refusal = {kFailed, std::string("cannot make a stand-in for a guest fd: ") + g_strerror(errno)};
    } else {
      if (stand_ins_.size() >= kMaxKept) stand_ins_.pop_front();
      stand_ins_.push_back(StandIn{st.st_dev, st.st_ino, record.key});
    }
  } else {
    auto found = std::find_if(kept_.begin(), kept_.end(), [&](const auto& entry) { return entry.first == record.key; });
    if (found == kept_.end()) {
      slot.failed = true;
      slot.refusal = {kFailed, "the guest file descriptor this message hands on is no longer kept"};
    } else {
      slot.fd = std::move(found->second);
      kept_.erase(found);
    }
  }
  records_.push_back(std::move(slot));
  return true;
}

std::optional<wire::KeptRecord> FramedLink::stand_in_of(int fd) {
  if (stand_ins_.empty()) return std::nullopt;
  struct stat st {};
  if (fstat(fd, &st) < 0) return std::nullopt;
  for (auto it = stand_ins_.begin(); it != stand_ins_.end(); ++it) {
    if (it->dev != st.st_dev || it->ino != st.st_ino) continue;
    wire::KeptRecord record{it->key};
    stand_ins_.erase(it);  // once: the guest's fd goes with this message
    return record;
  }
  return std::nullopt;
}

bool FramedLink::handle_record(const uint8_t* data, size_t length) {
  if (cutter_.in_message()) return violation("an fd record in the middle of a D-Bus message");
  if (ch0_in_ended_) return violation("an fd record after the END of channel 0");
  if (records_.size() >= MessageReader::kMaxFds)
    return violation("more than %zu fd records for one message", MessageReader::kMaxFds);
  wire::FdRecord record;
  GError* parse_error = nullptr;
  if (!wire::parse_record(data, length, &record, &parse_error)) {
    violation("%s", parse_error->message);
    g_error_free(parse_error);
    return false;
  }
  if (counters_) counters_->fds_forwarded++;
  if (auto* kept = std::get_if<wire::KeptRecord>(&record)) return handle_kept(*kept);
  Slot slot;
  if (auto* document = std::get_if<wire::DocumentRecord>(&record)) {
    if (!options_.resolver) {
      slot.failed = true;
      slot.refusal = {kNotSupported, "document references are not accepted in this direction"};
    } else {
      DocumentReference reference{document->doc_id, document->path, document->access};
      slot.fd = options_.resolver(reference, &slot.refusal);
      slot.failed = !slot.fd;
    }
    records_.push_back(std::move(slot));
    return true;
  }
  const bool over_channels = counted_channels() >= options_.limits.max_channels;
  if (auto* content = std::get_if<wire::ContentRecord>(&record)) {
    if (!take_peer_channel(content->channel)) return false;
    Channel channel;
    channel.id = content->channel;
    channel.type = Channel::Type::ContentIn;
    channel.has_in = true;
    channel.in_done = false;
    channel.content_size = content->size;
    channel.content = std::make_shared<ContentResult>();
    channel.content->channel = channel.id;
    slot.content = channel.content;
    Refusal refusal;
    g_autofree char* size_text = g_format_size_full(content->size, G_FORMAT_SIZE_IEC_UNITS);
    if (over_channels) {
      refusal = limit(("more than " + std::to_string(options_.limits.max_channels) +
                       " file descriptors of this link are open at once")
                          .c_str(),
                      "max_channels");
    } else if (content->size > options_.limits.max_content_size) {
      g_autofree char* max = g_format_size_full(options_.limits.max_content_size, G_FORMAT_SIZE_IEC_UNITS);
      refusal = limit((std::string("the file is ") + size_text + ", more than the " + max +
                       " the other side takes as a copy")
                          .c_str(),
                      "max_content_size");
    } else if (content_in_flight_ + content->size > options_.limits.max_content_in_flight) {
      g_autofree char* max = g_format_size_full(options_.limits.max_content_in_flight, G_FORMAT_SIZE_IEC_UNITS);
      g_autofree char* now = g_format_size_full(content_in_flight_, G_FORMAT_SIZE_IEC_UNITS);
      refusal = limit((std::string("copies of files of ") + now + " are on their way already; " + size_text +
                       " more would be more than " + max)
                          .c_str(),
                      "max_content_in_flight");
    } else {
      std::string name = content->name.size() <= 240 ? content->name : std::string();
      channel.fd = make_content_file(name);
      if (!channel.fd) refusal = {kFailed, std::string("cannot make a copy of the file: ") + g_strerror(errno)};
    }
    auto [it, inserted] = channels_.emplace(channel.id, std::move(channel));
    Channel& added = it->second;
    if (counters_) counters_->channels_opened++;
    if (!refusal.error_name.empty()) {
      added.counted = false;
      added.content->failed = true;
      added.content->done = true;  // the message is refused now, not when the END comes
      added.content->refusal = refusal;
      stop_in(added);
    } else {
      content_in_flight_ += content->size;
      grant(added);
    }
    records_.push_back(std::move(slot));
    return true;
  }
  const auto& stream = std::get<wire::StreamRecord>(record);
  if (!take_peer_channel(stream.channel)) return false;
  Channel channel;
  channel.id = stream.channel;
  channel.is_socket = stream.object == wire::StreamObject::Socket;
  channel.has_in = (stream.directions & wire::kToReceiver) != 0;
  channel.has_out = (stream.directions & wire::kToAnnouncer) != 0;
  channel.in_done = !channel.has_in;
  channel.out_done = !channel.has_out;
  Refusal refusal;
  if (over_channels) {
    refusal = limit(("more than " + std::to_string(options_.limits.max_channels) +
                     " file descriptors of this link are open at once")
                        .c_str(),
                    "max_channels");
  } else if (!make_stream_ends(stream, &slot.fd, &channel.fd)) {
    refusal = {kFailed, std::string("cannot make a pipe: ") + g_strerror(errno)};
  } else {
    slot.stream = channel.id;
  }
  auto [it, inserted] = channels_.emplace(channel.id, std::move(channel));
  Channel& added = it->second;
  if (counters_) counters_->channels_opened++;
  if (!refusal.error_name.empty()) {
    slot.fd.reset();
    slot.failed = true;
    slot.refusal = refusal;
    added.counted = false;
    added.fd.reset();
    if (added.has_in) stop_in(added);
    if (added.has_out) added.out_end_pending = true;
  } else if (added.has_in) {
    grant(added);
  }
  records_.push_back(std::move(slot));
  return true;
}

// ---- credit, STOP, END ----

void FramedLink::emit_credit(Channel& channel, uint64_t amount) {
  if (!channel.announced) {
    channel.held_credit += amount;
    return;
  }
  wire::append_credit(&out_, channel.id, uint32_t(amount));
}

void FramedLink::emit_stop(Channel& channel) {
  if (!channel.announced) {
    channel.held_stop = true;
    return;
  }
  wire::append_frame(&out_, channel.id, wire::FrameKind::Stop, nullptr, 0);
}

void FramedLink::grant(Channel& channel) {
  if (!channel.has_in || channel.in_end || channel.in_stopped) return;
  const uint64_t target = options_.limits.max_channel_buffer;
  const uint64_t held = channel.in_window + channel.buffered();
  if (held > target / 2) return;
  uint64_t give = target - held;
  uint64_t room = link_committed_ < options_.limits.max_link_buffer ? options_.limits.max_link_buffer - link_committed_ : 0;
  if (give > room) {
    give = room;
    starved_ = true;
  }
  if (give == 0 && held == 0) give = std::min<uint64_t>(target, kMinGrant);  // progress, whatever the others hold
  if (give == 0) return;
  give = std::min<uint64_t>(give, UINT32_MAX);
  channel.in_window += give;
  link_committed_ += give;
  emit_credit(channel, give);
}

void FramedLink::grant_all() {
  starved_ = false;
  for (auto& [id, channel] : channels_) grant(channel);
}

void FramedLink::grant_dbus() {
  if (ch0_in_ended_ || backlog_ + pending_bytes_ >= kHighWater || ch0_in_window_ > kDBusWindow / 2) return;
  uint64_t give = kDBusWindow - ch0_in_window_;
  ch0_in_window_ += give;
  wire::append_credit(&out_, wire::kDBusChannel, uint32_t(give));
}

void FramedLink::consumed(uint64_t bytes) {
  link_committed_ -= bytes;
  link_buffered_ -= bytes;
}

void FramedLink::stop_in(Channel& channel) {
  if (channel.in_stopped || channel.in_end) {
    channel.in_stopped = true;
  } else {
    channel.in_stopped = true;
    emit_stop(channel);
  }
  consumed(channel.buffered());
  channel.in_buf.clear();
  channel.in_off = 0;
  if (channel.type == Channel::Type::Stream && !channel.has_out) channel.fd.reset();
  if (channel.in_end) finish_in(channel);
}

// The peer's direction is over and everything of it was written (or dropped).
void FramedLink::finish_in(Channel& channel) {
  if (channel.in_done) return;
  channel.in_done = true;
  if (channel.type != Channel::Type::Stream || !channel.fd) return;
  if (channel.is_socket)
    shutdown(channel.fd.get(), SHUT_WR);
  else
    channel.fd.reset();  // the write end: its reader sees EOF
}

void FramedLink::write_in(Channel& channel) {
  while (channel.buffered() > 0 && channel.fd) {
    ssize_t n = write(channel.fd.get(), channel.in_buf.data() + channel.in_off, channel.buffered());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) break;
    if (n < 0) {
      stop_in(channel);
      return;
    }
    channel.in_off += size_t(n);
    consumed(uint64_t(n));
  }
  if (channel.buffered() == 0) {
    channel.in_buf.clear();
    channel.in_off = 0;
    if (channel.in_end) finish_in(channel);
  }
  grant(channel);
}

void FramedLink::stop_out(Channel& channel) {
  channel.out_end_pending = true;
  if (!channel.fd) return;
  if (channel.type != Channel::Type::Stream) {
    channel.fd.reset();
  } else if (channel.is_socket) {
    shutdown(channel.fd.get(), SHUT_RD);
  } else if (!channel.has_in) {
    channel.fd.reset();  // the read end: its writer gets EPIPE
  }
}

// The channel no longer counts against the limits (its message was
// refused, or its content is complete).
void FramedLink::release(Channel& channel) {
  if (!channel.counted) return;
  channel.counted = false;
  if (channel.type == Channel::Type::ContentIn) content_in_flight_ -= channel.content_size;
}

void FramedLink::content_finished(Channel& channel) {
  ContentResult& result = *channel.content;
  channel.in_done = true;
  release(channel);
  if (result.done) return;
  result.done = true;
  if (result.failed || channel.in_stopped) {
    if (!result.failed) {
      result.failed = true;
      result.refusal = {kFailed, "the copy of the file was abandoned"};
    }
    channel.fd.reset();
    return;
  }
  if (channel.content_received != channel.content_size) {
    result.failed = true;
    result.refusal = {kFailed, "the file changed while it was copied (" + std::to_string(channel.content_received) +
                                   " of " + std::to_string(channel.content_size) + " bytes came)"};
    channel.fd.reset();
    return;
  }
  result.fd = seal_content_file(std::move(channel.fd));
  if (!result.fd) {
    result.failed = true;
    result.refusal = {kFailed, std::string("cannot seal the copy of the file: ") + g_strerror(errno)};
  }
}

void FramedLink::maybe_erase(uint32_t id) {
  auto found = channels_.find(id);
  if (found == channels_.end()) return;
  Channel& channel = found->second;
  if (!channel.in_done || !channel.out_done) return;
  if (channel.type == Channel::Type::ContentIn && channel.content && !channel.content->done) return;
  channels_.erase(found);
}

// A slot whose message will not be delivered: its channel is not wanted,
// and stops counting against the limits at once.
void FramedLink::abandon(Slot& slot) {
  uint32_t id = slot.content ? slot.content->channel : slot.stream;
  slot.fd.reset();
  auto found = channels_.find(id);
  if (id == 0 || found == channels_.end()) return;
  Channel& channel = found->second;
  release(channel);
  if (channel.has_in && !channel.in_end) stop_in(channel);
  if (channel.has_out && !channel.out_done) stop_out(channel);
}

// ---- messages ----

LinkEnd::Next FramedLink::next(Message* out, Refusal* refusal, GError** error) {
  if (pending_.empty()) {
    if (ch0_in_ended_) return Next::End;
    if (eof_) {
      if (cutter_.in_message() || !records_.empty()) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_CONNECTION_CLOSED, "%s closed in the middle of a message",
                    name_.c_str());
        return Next::Failed;
      }
      return Next::End;
    }
    return Next::WouldBlock;
  }
  Pending& head = pending_.front();
  for (const Slot& slot : head.slots) {
    if (!slot.content || slot.content->done) continue;
    if (!eof_) return Next::WouldBlock;
    g_set_error(error, G_IO_ERROR, G_IO_ERROR_CONNECTION_CLOSED,
                "%s closed while the content of a file was on its way", name_.c_str());
    return Next::Failed;
  }
  Pending pending = std::move(head);
  pending_.pop_front();
  pending_bytes_ -= pending.message.bytes.size();
  out->header = std::move(pending.message.header);
  out->size = pending.message.size;
  if (!options_.broker_end && out->header.fixed.type == wire::MessageType::MethodCall &&
      out->header.interface_name == wire::kKeptRepliesInterface) {
    if (kept_calls_.size() >= kMaxKeptCalls) kept_calls_.pop_front();
    kept_calls_.push_back(out->header.fixed.serial);
  }
  out->bytes.clear();
  out->fds.clear();
  const Slot* failed = nullptr;
  for (Slot& slot : pending.slots) {
    if (slot.content && slot.content->failed) {
      slot.failed = true;
      slot.refusal = slot.content->refusal;
    }
    if (slot.failed && failed == nullptr) failed = &slot;
  }
  if (pending.skipped || failed != nullptr) {
    for (Slot& slot : pending.slots) abandon(slot);
    if (pending.skipped) return Next::Skipped;
    *refusal = failed->refusal;
    return Next::Refused;
  }
  out->bytes = std::move(pending.message.bytes);
  for (Slot& slot : pending.slots) out->fds.push_back(slot.content ? std::move(slot.content->fd) : std::move(slot.fd));
  return Next::Message;
}

bool FramedLink::push(Message message, Refusal* refusal) {
  // Fds that stay in the guest: a relay helper's reply (agent end), or a
  // stand-in for one going back (broker end).
  std::vector<std::optional<wire::KeptRecord>> kept(message.fds.size());
  if (!options_.broker_end && !message.fds.empty() && keeps_reply_fds(message.header)) {
    for (size_t i = 0; i < message.fds.size(); i++) {
      if (kept_.size() >= kMaxKept) kept_.pop_front();  // closes the oldest: nobody named it in time
      uint32_t key = next_kept_key_++;
      if (next_kept_key_ == 0) next_kept_key_ = 1;
      kept_.emplace_back(key, std::move(message.fds[i]));
      kept[i] = wire::KeptRecord{key};
    }
  } else if (options_.broker_end) {
    for (size_t i = 0; i < message.fds.size(); i++) kept[i] = stand_in_of(message.fds[i].get());
  }
  std::vector<ClassifiedFd> classified;
  size_t new_channels = 0;
  for (size_t i = 0; i < message.fds.size(); i++) {
    if (kept[i]) {
      ClassifiedFd stays;
      stays.kind = ClassifiedFd::Kind::Document;  // no channel of its own
      stays.record = *kept[i];
      message.fds[i].reset();
      classified.push_back(std::move(stays));
      continue;
    }
    classified.push_back(classify_fd(std::move(message.fds[i]), options_.documents_path));
    const ClassifiedFd& fd = classified.back();
    if (fd.kind == ClassifiedFd::Kind::Refused) {
      refusal->error_name = kNotSupported;
      refusal->why = "cannot pass file descriptor " + std::to_string(i) + " across this VM's link: it is " + fd.why +
                     "; only files, folders among the VM's documents, pipes and stream sockets can cross";
      return false;
    }
    if (fd.kind != ClassifiedFd::Kind::Document) new_channels++;
  }
  if (counted_channels() + new_channels > options_.limits.max_channels) {
    *refusal = limit(("more than " + std::to_string(options_.limits.max_channels) +
                      " file descriptors of this link would be open at once")
                         .c_str(),
                     "max_channels");
    return false;
  }
  for (ClassifiedFd& fd : classified) {
    uint32_t id = 0;
    if (fd.kind != ClassifiedFd::Kind::Document) {
      id = next_own_id_;
      next_own_id_ += 2;
      Channel channel;
      channel.id = id;
      channel.ours = true;
      channel.announced = false;
      channel.fd = std::move(fd.local);
      if (fd.kind == ClassifiedFd::Kind::Content) {
        std::get<wire::ContentRecord>(fd.record).channel = id;
        channel.type = Channel::Type::ContentOut;
        channel.has_out = true;
        channel.out_done = false;
        channel.readable = true;
        channel.content_size = fd.size;
        if (fd.size == 0) channel.out_end_pending = true;
      } else {
        auto& stream = std::get<wire::StreamRecord>(fd.record);
        stream.channel = id;
        channel.is_socket = fd.kind == ClassifiedFd::Kind::Socket;
        channel.has_out = (stream.directions & wire::kToReceiver) != 0;
        channel.has_in = (stream.directions & wire::kToAnnouncer) != 0;
        channel.out_done = !channel.has_out;
        channel.in_done = !channel.has_in;
      }
      auto [it, inserted] = channels_.emplace(id, std::move(channel));
      if (counters_) counters_->channels_opened++;
      if (it->second.has_in) {
        if (fd.writer_gone)
          stop_in(it->second);
        else
          grant(it->second);
      }
    }
    std::vector<uint8_t> encoded = wire::encode_record(fd.record);
    std::vector<uint8_t> frame;
    wire::append_frame(&frame, wire::kDBusChannel, wire::FrameKind::Fd, encoded.data(), uint32_t(encoded.size()));
    ch0_out_bytes_ += frame.size();  // what is queued counts records too
    ch0_out_.push_back(OutItem{std::move(frame), 0, true, id});
    if (counters_) counters_->fds_forwarded++;
  }
  ch0_out_bytes_ += message.bytes.size();
  ch0_out_.push_back(OutItem{std::move(message.bytes), 0, false, 0});
  return true;
}

// ---- output ----

// One chunk of a channel's local fd into out_; false when it had nothing to send.
bool FramedLink::fill_channel(Channel& channel) {
  if (!channel.announced || channel.out_done) return false;
  if (!channel.out_end_pending && channel.has_out && channel.out_credit > 0 && channel.fd &&
      (channel.readable || channel.type == Channel::Type::ContentOut)) {
    size_t want = size_t(std::min<uint64_t>(channel.out_credit, kChunk));
    if (channel.type == Channel::Type::ContentOut)
      want = size_t(std::min<uint64_t>(want, channel.content_size - channel.content_offset));
    size_t at = out_.size();
    out_.resize(at + wire::kFrameHeaderSize + want);
    uint8_t* payload = out_.data() + at + wire::kFrameHeaderSize;
    ssize_t n;
    int saved = 0;
    do {
      if (channel.type == Channel::Type::ContentOut) {
        n = pread(channel.fd.get(), payload, want, off_t(channel.content_offset));
      } else if (channel.is_socket) {
        struct iovec iov = {payload, want};
        union {
          char buffer[CMSG_SPACE(sizeof(int) * 16)];
          struct cmsghdr align;
        } control;
        struct msghdr header = {};
        header.msg_iov = &iov;
        header.msg_iovlen = 1;
        header.msg_control = control.buffer;
        header.msg_controllen = sizeof control.buffer;
        n = recvmsg(channel.fd.get(), &header, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
        if (n >= 0 && header.msg_controllen > 0) {
          size_t dropped = 0;
          for (struct cmsghdr* cmsg = CMSG_FIRSTHDR(&header); cmsg; cmsg = CMSG_NXTHDR(&header, cmsg)) {
            if (cmsg->cmsg_level != SOL_SOCKET || cmsg->cmsg_type != SCM_RIGHTS) continue;
            size_t count = (cmsg->cmsg_len - CMSG_LEN(0)) / sizeof(int);
            for (size_t i = 0; i < count; i++) {
              int received;
              memcpy(&received, CMSG_DATA(cmsg) + i * sizeof(int), sizeof(int));
              close(received);
              dropped++;
            }
          }
          if (dropped > 0 && !channel.warned_fds) {
            g_warning("%s: dropped %zu file descriptor(s) sent over a forwarded socket (channel %u): fds inside a "
                      "forwarded socket's own traffic do not cross the link",
                      name_.c_str(), dropped, channel.id);
            channel.warned_fds = true;
          }
        }
      } else {
        n = read(channel.fd.get(), payload, want);
      }
      saved = errno;
    } while (n < 0 && saved == EINTR);
    if (n > 0) {
      wire::write_data_header(out_.data() + at, channel.id, uint32_t(n));
      out_.resize(at + wire::kFrameHeaderSize + size_t(n));
      channel.out_credit -= uint64_t(n);
      if (channel.type == Channel::Type::ContentOut) {
        channel.content_offset += uint64_t(n);
        if (channel.content_offset >= channel.content_size) channel.out_end_pending = true;
      }
      if (channel.type == Channel::Type::Stream && size_t(n) < want) channel.readable = false;
      if (!channel.out_end_pending) return true;
    } else {
      out_.resize(at);
      if (n < 0 && saved == EAGAIN) {
        channel.readable = false;
        return false;
      }
      // EOF (or an error: the same for the other side).
      if (n < 0) g_debug("%s: reading for channel %u: %s", name_.c_str(), channel.id, g_strerror(saved));
      channel.out_end_pending = true;
    }
  }
  if (channel.out_end_pending) {
    wire::append_frame(&out_, channel.id, wire::FrameKind::End, nullptr, 0);
    channel.out_done = true;
    if (channel.type != Channel::Type::Stream) {
      channel.fd.reset();
    } else if (!channel.has_in) {
      channel.fd.reset();
    }
    uint32_t id = channel.id;
    maybe_erase(id);
    return true;
  }
  return false;
}

void FramedLink::fill() {
  while (out_.size() - out_sent_ < kOutHigh) {
    bool progress = false;
    // Channel 0: records and messages in order.
    while (!ch0_out_.empty() && out_.size() - out_sent_ < kOutHigh) {
      OutItem& item = ch0_out_.front();
      if (item.record) {
        out_.insert(out_.end(), item.bytes.begin(), item.bytes.end());
        ch0_out_bytes_ -= item.bytes.size();
        uint32_t announced = item.announces;
        ch0_out_.pop_front();
        progress = true;
        auto found = channels_.find(announced);
        if (announced != 0 && found != channels_.end()) {
          Channel& channel = found->second;
          channel.announced = true;
          if (channel.held_credit > 0) wire::append_credit(&out_, channel.id, uint32_t(channel.held_credit));
          channel.held_credit = 0;
          if (channel.held_stop) wire::append_frame(&out_, channel.id, wire::FrameKind::Stop, nullptr, 0);
          channel.held_stop = false;
        }
        continue;
      }
      size_t n = std::min<uint64_t>({item.bytes.size() - item.sent, ch0_out_credit_, kChunk});
      if (n == 0) break;
      wire::append_frame(&out_, wire::kDBusChannel, wire::FrameKind::Data, item.bytes.data() + item.sent, uint32_t(n));
      item.sent += n;
      ch0_out_credit_ -= n;
      ch0_out_bytes_ -= n;
      progress = true;
      if (item.sent == item.bytes.size()) ch0_out_.pop_front();
    }
    if (ch0_out_.empty() && ch0_end_requested_ && !ch0_end_sent_) {
      wire::append_frame(&out_, wire::kDBusChannel, wire::FrameKind::End, nullptr, 0);
      ch0_end_sent_ = true;
      progress = true;
    }
    // The other channels, one chunk each, in turn.
    std::vector<uint32_t> ids;
    for (auto& [id, channel] : channels_)
      if (!channel.out_done) ids.push_back(id);
    if (!ids.empty()) {
      size_t start = size_t(std::upper_bound(ids.begin(), ids.end(), last_served_) - ids.begin());
      for (size_t k = 0; k < ids.size() && out_.size() - out_sent_ < kOutHigh; k++) {
        uint32_t id = ids[(start + k) % ids.size()];
        auto found = channels_.find(id);
        if (found == channels_.end()) continue;
        if (fill_channel(found->second)) {
          progress = true;
          last_served_ = id;
        }
      }
    }
    if (!progress) break;
  }
}

bool FramedLink::write_out(GError** error) {
  while (out_sent_ < out_.size()) {
    size_t length = out_.size() - out_sent_;
    ssize_t n = is_socket_ ? send(fd_, out_.data() + out_sent_, length, MSG_NOSIGNAL | MSG_DONTWAIT)
                           : write(fd_, out_.data() + out_sent_, length);
    if (n < 0) {
      int saved = errno;
      if (saved == EINTR) continue;
      if (saved == EAGAIN) break;
      if (!is_disconnect(saved) && saved != EIO)
        g_set_error(error, G_IO_ERROR, g_io_error_from_errno(saved), "writing to %s: %s", name_.c_str(),
                    g_strerror(saved));
      return false;
    }
    out_sent_ += size_t(n);
  }
  if (out_sent_ == out_.size()) {
    out_.clear();
    out_sent_ = 0;
  } else if (out_sent_ >= kOutHigh) {
    out_.erase(out_.begin(), out_.begin() + ptrdiff_t(out_sent_));
    out_sent_ = 0;
  }
  return true;
}

bool FramedLink::flush(GError** error) {
  grant_dbus();
  for (int round = 0; round < 4; round++) {
    fill();
    size_t before = out_.size() - out_sent_;
    if (!write_out(error)) return false;
    if (before == 0 || out_.size() - out_sent_ == before) break;  // nothing written, or nothing to write
  }
  return true;
}

}  // namespace

std::unique_ptr<LinkEnd> make_framed_link(int fd, std::string name, FramedLinkOptions options,
                                          FramedLinkCounters* counters) {
  return std::make_unique<FramedLink>(fd, std::move(name), std::move(options), counters);
}

}  // namespace sidebus
