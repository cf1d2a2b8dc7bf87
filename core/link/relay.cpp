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

#include "link/message-stream.hpp"
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

class Loop {
 public:
  explicit Loop(std::shared_ptr<State> holder)
      : state_holder_(holder),
        state_(*holder),
        readers_{MessageReader(holder->fds[kLocal].get(), holder->names[kLocal], wire::kMaxMessageSize),
                 MessageReader(holder->fds[kLink].get(), holder->names[kLink],
                               holder->options.guest_limits ? holder->options.guest_limits->max_message_size
                                                            : wire::kMaxMessageSize)},
        writers_{MessageWriter(holder->fds[kLocal].get(), holder->names[kLocal], holder->options.pass_fds),
                 MessageWriter(holder->fds[kLink].get(), holder->names[kLink], holder->options.pass_fds)},
        rate_(holder->options.guest_messages_per_second) {
    if (state_.options.guest_limits) traffic_.emplace(*state_.options.guest_limits);
  }

  void run();

 private:
  bool read_from(int side);
  void from_guest(Message message);
  void refuse(const wire::MessageHeader& header, const char* error_name, const std::string& why);
  void log_refusal(const std::string& what);
  void finish(int side, GError* error);

  std::shared_ptr<State> state_holder_;
  State& state_;
  MessageReader readers_[2];
  MessageWriter writers_[2];  // writers_[side] writes to that side
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
  while (!done_) {
    const gint64 now = g_get_monotonic_time();
    struct pollfd pfds[3] = {};
    for (int side : {kLocal, kLink}) {
      int other = 1 - side;
      short events = 0;
      bool paused = side == kLink && paused_until_ > now;
      if (!ended_[side] && !paused && writers_[other].queued_bytes() < kHighWater) events |= POLLIN;
      if (!writers_[side].empty()) events |= POLLOUT;
      pfds[side] = {state_.fds[side].get(), events, 0};
    }
    pfds[2] = {state_.stop.get(), POLLIN, 0};
    int timeout_ms = paused_until_ > now ? int((paused_until_ - now + 999) / 1000) : -1;
    // What a reader holds already is not the fd's: do not wait for it.
    bool buffered[2];
    for (int side : {kLocal, kLink}) {
      buffered[side] = (pfds[side].events & POLLIN) && readers_[side].has_buffered();
      if (buffered[side]) timeout_ms = 0;
    }
    int n = poll(pfds, 3, timeout_ms);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 || (pfds[2].revents & POLLIN)) return finish(-1, nullptr);

    for (int side : {kLocal, kLink}) {
      short revents = pfds[side].revents;
      // A peer that hung up is read to its end even when we are not reading
      // it otherwise: poll() reports it without being asked, every time.
      bool readable =
          (revents & POLLIN) || buffered[side] || ((revents & (POLLHUP | POLLERR)) && !ended_[side]);
      if (readable && !read_from(side)) return;
    }
    for (int side : {kLocal, kLink}) {
      if (writers_[side].empty()) continue;
      GError* error = nullptr;
      if (!writers_[side].flush(&error)) return finish(side, error);
    }
    // An end is passed on once everything queued before it was written.
    for (int side : {kLocal, kLink}) {
      int other = 1 - side;
      if (!ended_[side] || shut_[other] || !writers_[other].empty()) continue;
      shut_[other] = true;
      if (!is_socket(state_.fds[other].get())) return finish(side, nullptr);  // no half-close on a device
      shutdown(state_.fds[other].get(), SHUT_WR);
    }
    if (ended_[kLocal] && ended_[kLink] && shut_[kLocal] && shut_[kLink]) return finish(first_end_, nullptr);
  }
}

bool Loop::read_from(int side) {
  for (int i = 0; i < kBatch; i++) {
    if (side == kLink && paused_until_ > g_get_monotonic_time()) return true;
    if (writers_[1 - side].queued_bytes() >= kHighWater && !ended_[side]) return true;
    Message message;
    GError* error = nullptr;
    switch (readers_[side].next(&message, state_.options.pass_fds, &error)) {
      case MessageReader::Result::WouldBlock:
        return true;
      case MessageReader::Result::End:
        ended_[side] = true;
        if (first_end_ < 0) first_end_ = side;
        return true;
      case MessageReader::Result::Failed:
        finish(side, error);
        return false;
      case MessageReader::Result::Skipped: {
        g_autofree char* why = g_strdup_printf(
            "the message is %zu bytes, more than the %zu the broker accepts (broker.max_message_size)", message.size,
            traffic_ ? traffic_->limits().max_message_size : wire::kMaxMessageSize);
        refuse(message.header, kLimitsExceeded, why);
        break;
      }
      case MessageReader::Result::Message:
        if (side == kLocal) {
          if (traffic_) traffic_->sent(message.header);
          writers_[kLink].push(std::move(message.bytes), std::move(message.fds));
        } else {
          from_guest(std::move(message));
        }
        break;
    }
  }
  return true;
}

void Loop::from_guest(Message message) {
  if (!traffic_) {
    writers_[kLocal].push(std::move(message.bytes), std::move(message.fds));
    return;
  }
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
               ") cannot carry file descriptors; use a unix-socket link that passes fds");
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
      writers_[kLocal].push(std::move(message.bytes), std::move(message.fds));
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
  writers_[kLink].push(wire::encode_error(next_serial_, header.fixed.serial, header.sender, error_name, why), {});
  next_serial_ = next_serial_ > 0x80000000u ? next_serial_ - 1 : 0xFFFFFFFF;
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
  options.pass_fds = options.pass_fds && both_unix;
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
    relay->thread_ = std::thread([state] { Loop(state).run(); });
  } catch (const std::system_error& e) {
    g_set_error(error, G_IO_ERROR, G_IO_ERROR_FAILED, "cannot start the relay thread: %s", e.what());
    return nullptr;
  }
  return relay;
}

}  // namespace sidebus
