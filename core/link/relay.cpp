// SPDX-License-Identifier: LGPL-2.1-or-later
// relay.cpp — the relay thread (see relay.hpp): one poll loop over the two
// fds and the stop eventfd, a MessageReader and a MessageWriter per side,
// and at the broker end the checks on what the guest sends.
#include "link/relay.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>

#include <algorithm>
#include <cmath>
#include <mutex>
#include <system_error>
#include <thread>

#include "link/link-end.hpp"
#include "link/message-stream.hpp"
#include <csignal>
#include <vector>
#include "util/main-context.hpp"
#include "util/socket.hpp"

namespace sidebus {

namespace {

constexpr int kLocal = 0, kLink = 1;
// What may be queued toward one side before the other is no longer read.
constexpr size_t kHighWater = 4 * 1024 * 1024;
// Messages read from one side per turn, so that neither starves the other.
constexpr int kBatch = 64;
// A refusal is logged, then at most once per this interval with a count.
constexpr gint64 kLogIntervalUs = 10 * G_USEC_PER_SEC;
constexpr const char* kInvalidArgs = "org.freedesktop.DBus.Error.InvalidArgs";
constexpr const char* kLimitsExceeded = "org.freedesktop.DBus.Error.LimitsExceeded";
constexpr const char* kNotSupported = "org.freedesktop.DBus.Error.NotSupported";

struct State {
  UniqueFd fds[2];
  std::string names[2];
  Relay::Options options;
  UniqueFd stop;  // eventfd: readable once a stop was requested
  Relay::Counters counters;

  mutable std::mutex mutex;  // guards error and error_side
  GError* error = nullptr;
  int error_side = -1;

  GMainContext* context = nullptr;
  Relay::DoneFunc on_done;
  std::atomic<bool> owner_gone{false};

  ~State() {
    g_clear_error(&error);
    if (context) g_main_context_unref(context);
  }
  void request_stop() {
    uint64_t one = 1;
    (void)!write(stop.get(), &one, sizeof one);
  }
};

// Guest-originated messages per second with a burst of as many; a message
// over the rate puts the bucket in debt, and reading waits until it is paid.
class RateLimit {
 public:
  explicit RateLimit(unsigned rate) : rate_(rate), tokens_(rate), last_(g_get_monotonic_time()) {}
  // Charges one message; returns how long reading must pause (µs, 0: none).
  gint64 charge(gint64 now) {
    if (rate_ == 0) return 0;
    refill(now);
    tokens_ -= 1;
    return tokens_ >= 0 ? 0 : gint64(std::ceil(-tokens_ * G_USEC_PER_SEC / rate_));
  }

 private:
  void refill(gint64 now) {
    tokens_ = std::min<double>(rate_, tokens_ + double(now - last_) * rate_ / G_USEC_PER_SEC);
    last_ = now;
  }
  const unsigned rate_;
  double tokens_;
  gint64 last_;
};

// The raw link end: messages as they are, fds with SCM_RIGHTS or not at all.
class RawLink : public LinkEnd {
 public:
  RawLink(int fd, const std::string& name, size_t max_message_size, bool pass_fds)
      : fd_(fd), pass_fds_(pass_fds), reader_(fd, name, max_message_size), writer_(fd, name, pass_fds) {}

  void add_pollfds(std::vector<struct pollfd>* pfds, bool deliver, size_t) override {
    short events = 0;
    if (deliver && !ended_) events |= POLLIN;
    if (!writer_.empty()) events |= POLLOUT;
    polled_in_ = events & POLLIN;
    pfds->push_back({fd_, events, 0});
  }
  bool dispatch(const struct pollfd* pfds, GError**) override {
    revents_ = pfds[0].revents;
    return true;
  }
  bool readable() const override {
    // A peer that hung up is read to its end even when we are not reading
    // it otherwise: poll() reports it without being asked, every time.
    return (revents_ & POLLIN) || (polled_in_ && reader_.has_buffered()) ||
           ((revents_ & (POLLHUP | POLLERR)) && !ended_);
  }
  Next next(Message* out, Refusal*, GError** error) override {
    switch (reader_.next(out, pass_fds_, error)) {
      case MessageReader::Result::Message:
        return Next::Message;
      case MessageReader::Result::Skipped:
        return Next::Skipped;
      case MessageReader::Result::WouldBlock:
        return Next::WouldBlock;
      case MessageReader::Result::End:
        ended_ = true;
        return Next::End;
      case MessageReader::Result::Failed:
        return Next::Failed;
    }
    return Next::Failed;
  }
  bool push(Message message, Refusal*) override {
    writer_.push(std::move(message.bytes), std::move(message.fds));
    return true;
  }
  size_t queued_bytes() const override { return writer_.queued_bytes(); }
  bool empty() const override { return writer_.empty(); }
  bool flush(GError** error) override { return writer_.empty() || writer_.flush(error); }
  bool end_stream() override {
    if (!is_socket(fd_)) return false;  // no half-close on a device
    shutdown(fd_, SHUT_WR);
    return true;
  }

 private:
  int fd_;
  bool pass_fds_;
  MessageReader reader_;
  MessageWriter writer_;
  short revents_ = 0;
  bool polled_in_ = false;
  bool ended_ = false;
};

class Loop {
 public:
  explicit Loop(std::shared_ptr<State> holder)
      : state_holder_(holder),
        state_(*holder),
        reader_(holder->fds[kLocal].get(), holder->names[kLocal], wire::kMaxMessageSize),
        writer_(holder->fds[kLocal].get(), holder->names[kLocal], holder->options.pass_fds),
        rate_(holder->options.guest_messages_per_second) {
    const Relay::Options& options = state_.options;
    size_t max_message_size = options.guest_limits ? options.guest_limits->max_message_size : wire::kMaxMessageSize;
    if (options.framed) {
      FramedLinkOptions framed = *options.framed;
      framed.max_message_size = max_message_size;
      link_ = make_framed_link(state_.fds[kLink].get(), state_.names[kLink], std::move(framed),
                               &state_.counters.forwarding);
    } else {
      link_ = std::make_unique<RawLink>(state_.fds[kLink].get(), state_.names[kLink], max_message_size,
                                        options.pass_fds);
    }
    if (options.guest_limits) traffic_.emplace(*options.guest_limits);
  }

  void run();

 private:
  bool read_local();
  bool read_link();
  void from_guest(Message message);
  void refuse(const wire::MessageHeader& header, const char* error_name, const std::string& why);
  void refuse_incoming(const wire::MessageHeader& header, const Refusal& refusal);
  void refuse_outgoing(const wire::MessageHeader& header, const Refusal& refusal);
  uint32_t take_serial();
  void log_refusal(const std::string& what);
  void finish(int side, GError* error);

  std::shared_ptr<State> state_holder_;
  State& state_;
  MessageReader reader_;  // the local side
  MessageWriter writer_;
  std::unique_ptr<LinkEnd> link_;
  bool ended_[2] = {false, false};  // the side closed its stream
  bool shut_[2] = {false, false};   // we passed the other side's end on to it
  int first_end_ = -1;
  std::optional<GuestTraffic> traffic_;
  RateLimit rate_;
  gint64 paused_until_ = 0;  // the link is not read before this (guest over its rate)
  uint32_t next_serial_ = 0xFFFFFFFF;  // of the error replies we write
  gint64 last_log_ = 0;
  uint64_t unlogged_ = 0;
  bool done_ = false;
};

void Loop::run() {
  std::vector<struct pollfd> pfds;
  while (!done_) {
    const gint64 now = g_get_monotonic_time();
    pfds.clear();
    short local_events = 0;
    if (!ended_[kLocal] && link_->queued_bytes() < kHighWater) local_events |= POLLIN;
    if (!writer_.empty()) local_events |= POLLOUT;
    pfds.push_back({state_.fds[kLocal].get(), local_events, 0});
    pfds.push_back({state_.stop.get(), POLLIN, 0});
    const bool paused = paused_until_ > now;
    const bool deliver = !ended_[kLink] && !paused && writer_.queued_bytes() < kHighWater &&
                         (!traffic_ || link_->queued_bytes() < kHighWater);
    link_->add_pollfds(&pfds, deliver, writer_.queued_bytes());
    int timeout_ms = paused ? int((paused_until_ - now + 999) / 1000) : -1;
    // What a reader holds already is not the fd's: do not wait for it.
    const bool local_buffered = (local_events & POLLIN) && reader_.has_buffered();
    if (local_buffered || (deliver && link_->readable())) timeout_ms = 0;
    int n = poll(pfds.data(), nfds_t(pfds.size()), timeout_ms);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 || (pfds[1].revents & POLLIN)) return finish(-1, nullptr);

    short local_revents = pfds[0].revents;
    bool local_readable =
        (local_revents & POLLIN) || local_buffered || ((local_revents & (POLLHUP | POLLERR)) && !ended_[kLocal]);
    if (local_readable && !read_local()) return;
    GError* error = nullptr;
    if (!link_->dispatch(&pfds[2], &error)) return finish(kLink, error);
    if (link_->readable() && !read_link()) return;
    if (!writer_.empty() && !writer_.flush(&error)) return finish(kLocal, error);
    if (!link_->flush(&error)) return finish(kLink, error);
    // An end is passed on once everything queued before it was written.
    if (ended_[kLocal] && !shut_[kLink] && link_->empty()) {
      shut_[kLink] = true;
      if (!link_->end_stream()) return finish(kLocal, nullptr);
      if (!link_->flush(&error)) return finish(kLink, error);
    }
    if (ended_[kLink] && !shut_[kLocal] && writer_.empty()) {
      shut_[kLocal] = true;
      if (!is_socket(state_.fds[kLocal].get())) return finish(kLink, nullptr);
      shutdown(state_.fds[kLocal].get(), SHUT_WR);
    }
    if (ended_[kLocal] && ended_[kLink] && shut_[kLocal] && shut_[kLink] && link_->empty())
      return finish(first_end_, nullptr);
  }
}

// What the local peer sent: to the link (at the broker end, a reply to a
// guest call releases what the call was charged).
bool Loop::read_local() {
  for (int i = 0; i < kBatch; i++) {
    if (link_->queued_bytes() >= kHighWater && !ended_[kLocal]) return true;
    Message message;
    GError* error = nullptr;
    switch (reader_.next(&message, state_.options.pass_fds, &error)) {
      case MessageReader::Result::WouldBlock:
        return true;
      case MessageReader::Result::End:
        ended_[kLocal] = true;
        if (first_end_ < 0) first_end_ = kLocal;
        return true;
      case MessageReader::Result::Failed:
        finish(kLocal, error);
        return false;
      case MessageReader::Result::Skipped:
        break;  // (local messages are never above the protocol's own limit)
      case MessageReader::Result::Message: {
        if (traffic_) traffic_->sent(message.header);
        std::optional<wire::MessageHeader> header;
        if (!message.fds.empty()) header = message.header;
        Refusal refusal;
        if (!link_->push(std::move(message), &refusal)) refuse_outgoing(*header, refusal);
        break;
      }
    }
  }
  return true;
}

// What came over the link: to the local peer (at the broker end, checked first).
bool Loop::read_link() {
  for (int i = 0; i < kBatch; i++) {
    if (paused_until_ > g_get_monotonic_time()) return true;
    if (writer_.queued_bytes() >= kHighWater && !ended_[kLink]) return true;
    // A guest that sends without reading what it is answered (refusals
    // among it) is read no further than that queue's mark either.
    if (traffic_ && link_->queued_bytes() >= kHighWater && !ended_[kLink]) return true;
    Message message;
    Refusal refusal;
    GError* error = nullptr;
    switch (link_->next(&message, &refusal, &error)) {
      case LinkEnd::Next::WouldBlock:
        return true;
      case LinkEnd::Next::End:
        ended_[kLink] = true;
        if (first_end_ < 0) first_end_ = kLink;
        return true;
      case LinkEnd::Next::Failed:
        finish(kLink, error);
        return false;
      case LinkEnd::Next::Skipped: {
        g_autofree char* why = g_strdup_printf(
            "the message is %zu bytes, more than the %zu the broker accepts (broker.max_message_size)", message.size,
            traffic_ ? traffic_->limits().max_message_size : wire::kMaxMessageSize);
        refuse(message.header, kLimitsExceeded, why);
        break;
      }
      case LinkEnd::Next::Refused:
        refuse_incoming(message.header, refusal);
        break;
      case LinkEnd::Next::Message:
        if (!traffic_)
          writer_.push(std::move(message.bytes), std::move(message.fds));
        else
          from_guest(std::move(message));
        break;
    }
  }
  return true;
}

void Loop::from_guest(Message message) {
  const wire::MessageHeader& header = message.header;
  const gint64 now = g_get_monotonic_time();
  using wire::MessageType;
  bool originated = header.sender != "org.freedesktop.DBus" &&
                    (header.fixed.type == MessageType::MethodCall || header.fixed.type == MessageType::Signal);
  if (originated) {
    gint64 pause = rate_.charge(now);
    if (pause > 0) {
      if (paused_until_ <= now) state_.counters.throttled++;
      paused_until_ = now + pause;
    }
  }
  // A handle without its fd: the guest bus had to drop the fd on the way
  // (this link cannot carry fds). Said as the portal would say it.
  if (!state_.options.pass_fds && header.unix_fds == 0 && header.signature.find('h') != std::string::npos) {
    refuse(header, kNotSupported,
           "this VM's link (" + state_.names[kLink] +
               ") cannot carry file descriptors; use a unix-socket link that passes fds, or a link of protocol 2");
    return;
  }
  // The values GDBus would allocate, counted before it sees any of them.
  const GuestTrafficLimits& limits = traffic_->limits();
  uint64_t budget = limits.max_message_values > header.field_elements ? limits.max_message_values - header.field_elements : 0;
  wire::BodyStats stats;
  GError* error = nullptr;
  const size_t header_size = header.fixed.header_size();
  // Handle values are the portal's to check: it answers with the handle
  // named (InvalidArgument), which says more than a malformed message would.
  wire::MessageHeader structure = header;
  structure.unix_fds = UINT32_MAX;
  if (!wire::scan_body(structure, message.bytes.data() + header_size, message.bytes.size() - header_size, budget,
                       &stats, &error)) {
    bool too_many = g_error_matches(error, G_IO_ERROR, G_IO_ERROR_MESSAGE_TOO_LARGE);
    std::string why = too_many ? "the message holds more than " + std::to_string(limits.max_message_values) +
                                     " values, more than the broker accepts (broker.max_message_values)"
                               : std::string("malformed message body: ") + error->message;
    g_error_free(error);
    refuse(header, too_many ? kLimitsExceeded : kInvalidArgs, why);
    return;
  }
  std::string error_name, why;
  switch (traffic_->admit(header, message.size, now, &error_name, &why)) {
    case GuestTraffic::Verdict::Forward:
      state_.counters.forwarded++;
      writer_.push(std::move(message.bytes), std::move(message.fds));
      break;
    case GuestTraffic::Verdict::Refuse:
      refuse(header, error_name.c_str(), why);
      break;
    case GuestTraffic::Verdict::Drop:
      state_.counters.dropped++;
      log_refusal("dropped a " + std::string(header.fixed.type == MessageType::Signal ? "signal" : "no-reply call") +
                  " from " + header.sender + " (over broker.max_signals_per_second)");
      break;
  }
}

uint32_t Loop::take_serial() {
  uint32_t serial = next_serial_;
  next_serial_ = next_serial_ > 0x80000000u ? next_serial_ - 1 : 0xFFFFFFFF;
  return serial;
}

namespace {
std::string describe(const wire::MessageHeader& header) {
  using wire::MessageType;
  std::string what = header.fixed.type == MessageType::MethodReturn ? "a reply"
                     : header.fixed.type == MessageType::Error      ? "an error " + header.error_name
                     : header.fixed.type == MessageType::Signal     ? "signal " + header.interface_name + "." + header.member
                                                                    : header.interface_name + "." + header.member;
  if (!header.sender.empty()) what += " from " + header.sender;
  if (!header.destination.empty()) what += " to " + header.destination;
  return what;
}
}  // namespace

// A message from the link whose fds could not be made here: a call is
// answered over the link, a reply becomes an error for the local caller.
void Loop::refuse_incoming(const wire::MessageHeader& header, const Refusal& refusal) {
  using wire::MessageType;
  bool wants_reply = header.fixed.type == MessageType::MethodCall && !(header.fixed.flags & wire::kFlagNoReplyExpected);
  if (wants_reply && (!header.sender.empty() || !traffic_)) {
    state_.counters.refused++;
    log_refusal("refused " + describe(header) + " with " + refusal.error_name + ": " + refusal.why);
    Message error;
    error.bytes = wire::encode_error(take_serial(), header.fixed.serial, header.sender, refusal.error_name, refusal.why);
    Refusal ignored;
    link_->push(std::move(error), &ignored);
  } else if (header.fixed.type == MessageType::MethodReturn) {
    state_.counters.refused++;
    log_refusal("turned " + describe(header) + " into " + refusal.error_name + ": " + refusal.why);
    writer_.push(wire::encode_error(take_serial(), header.reply_serial, header.destination, refusal.error_name,
                                    refusal.why),
                 {});
  } else {
    state_.counters.dropped++;
    log_refusal("dropped " + describe(header) + ": " + refusal.why);
  }
}

// A message from the local peer whose fds cannot cross: a call is answered
// here, a reply becomes an error for the caller on the other side.
void Loop::refuse_outgoing(const wire::MessageHeader& header, const Refusal& refusal) {
  using wire::MessageType;
  bool wants_reply = header.fixed.type == MessageType::MethodCall && !(header.fixed.flags & wire::kFlagNoReplyExpected);
  if (wants_reply) {
    state_.counters.refused++;
    log_refusal("refused " + describe(header) + " with " + refusal.error_name + ": " + refusal.why);
    writer_.push(wire::encode_error(take_serial(), header.fixed.serial, header.sender, refusal.error_name, refusal.why),
                 {});
  } else if (header.fixed.type == MessageType::MethodReturn) {
    state_.counters.refused++;
    log_refusal("turned " + describe(header) + " into " + refusal.error_name + ": " + refusal.why);
    Message error;
    error.bytes =
        wire::encode_error(take_serial(), header.reply_serial, header.destination, refusal.error_name, refusal.why);
    Refusal ignored;
    link_->push(std::move(error), &ignored);
  } else {
    state_.counters.dropped++;
    log_refusal("dropped " + describe(header) + ": " + refusal.why);
  }
}

// Answers a call the broker will never see with an error from the relay;
// what wants no answer is just dropped.
void Loop::refuse(const wire::MessageHeader& header, const char* error_name, const std::string& why) {
  using wire::MessageType;
  std::string what = header.interface_name + "." + header.member + " from " +
                     (header.sender.empty() ? std::string("(no sender)") : header.sender);
  if (header.fixed.type != MessageType::MethodCall || (header.fixed.flags & wire::kFlagNoReplyExpected) ||
      header.sender.empty()) {
    state_.counters.dropped++;
    log_refusal("dropped " + what + ": " + why);
    return;
  }
  state_.counters.refused++;
  log_refusal("refused " + what + " with " + error_name + ": " + why);
  Message error;
  error.bytes = wire::encode_error(take_serial(), header.fixed.serial, header.sender, error_name, why);
  Refusal ignored;
  link_->push(std::move(error), &ignored);
}

// The first refusal is a warning; a flood of them is one line per
// kLogIntervalUs with a count.
void Loop::log_refusal(const std::string& what) {
  gint64 now = g_get_monotonic_time();
  if (last_log_ != 0 && now - last_log_ < kLogIntervalUs) {
    unlogged_++;
    return;
  }
  if (unlogged_ > 0)
    g_warning("%s: %s (and %" G_GUINT64_FORMAT " more refused or dropped since the last such message)",
              state_.names[kLink].c_str(), what.c_str(), unlogged_);
  else
    g_warning("%s: %s", state_.names[kLink].c_str(), what.c_str());
  last_log_ = now;
  unlogged_ = 0;
}

void Loop::finish(int side, GError* error) {
  done_ = true;
  {
    std::lock_guard lock(state_.mutex);
    if (error != nullptr && state_.error == nullptr) {
      state_.error = error;
      state_.error_side = side;
    } else if (error != nullptr) {
      g_error_free(error);
    }
  }
  // Both peers see the end now (GDBus, the agent, the VMM).
  for (auto& fd : state_.fds) {
    if (fd) shutdown(fd.get(), SHUT_RDWR);
    fd.reset();
  }
  Relay::Side ended = (side >= 0 ? side : first_end_) == kLink ? Relay::Side::Link : Relay::Side::Local;
  post_to_context(state_.context, [state = state_holder_, ended] {
    if (state->owner_gone) return;
    GError* error;
    {
      std::lock_guard lock(state->mutex);
      error = state->error;  // set only before this callback was posted; freed with the state
    }
    state->on_done(ended, error);
  });
}

class RelayImpl : public Relay {
 public:
  explicit RelayImpl(std::shared_ptr<State> state) : state_(std::move(state)) {}
  ~RelayImpl() override {
    state_->owner_gone = true;
    state_->request_stop();
    if (thread_.joinable()) thread_.join();
  }
  bool failed(Side* side, GError** error) const override {
    std::lock_guard lock(state_->mutex);
    if (!state_->error) return false;
    *side = state_->error_side == kLink ? Side::Link : Side::Local;
    *error = g_error_copy(state_->error);
    return true;
  }
  const Counters& counters() const override { return state_->counters; }

  std::shared_ptr<State> state_;
  std::thread thread_;
};

}  // namespace

std::unique_ptr<Relay> Relay::start(UniqueFd local, std::string local_name, UniqueFd link, std::string link_name,
                                    Options options, DoneFunc on_done, GError** error) {
  auto state = std::make_shared<State>();
  state->fds[kLocal] = std::move(local);
  state->fds[kLink] = std::move(link);
  state->names[kLocal] = std::move(local_name);
  state->names[kLink] = std::move(link_name);
  bool both_unix = true;
  for (int side : {kLocal, kLink}) {
    int fd = state->fds[side].get();
    if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) != 0) {
      int saved = errno;
      g_set_error(error, G_IO_ERROR, g_io_error_from_errno(saved), "cannot use %s: %s", state->names[side].c_str(),
                  g_strerror(saved));
      return nullptr;
    }
    both_unix = both_unix && is_unix_socket(fd);
  }
  // A framed link carries no SCM_RIGHTS itself: only the local side must.
  options.pass_fds = options.pass_fds && (options.framed ? is_unix_socket(state->fds[kLocal].get()) : both_unix);
  state->options = std::move(options);
  state->stop = UniqueFd(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!state->stop) {
    int saved = errno;
    g_set_error(error, G_IO_ERROR, g_io_error_from_errno(saved), "eventfd: %s", g_strerror(saved));
    return nullptr;
  }
  state->context = g_main_context_ref_thread_default();
  state->on_done = std::move(on_done);

  auto relay = std::make_unique<RelayImpl>(state);
  try {
    relay->thread_ = std::thread([state] {
      // A pipe whose reader went away is an EPIPE for the framed link to
      // handle, not a signal for the whole process.
      sigset_t set;
      sigemptyset(&set);
      sigaddset(&set, SIGPIPE);
      pthread_sigmask(SIG_BLOCK, &set, nullptr);
      Loop(state).run();
    });
  } catch (const std::system_error& e) {
    g_set_error(error, G_IO_ERROR, G_IO_ERROR_FAILED, "cannot start the relay thread: %s", e.what());
    return nullptr;
  }
  return relay;
}

}  // namespace sidebus
