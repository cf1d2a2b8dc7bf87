// splice.cpp — the two pump threads behind Splice (see splice.hpp). Each
// direction: wait (poll on the source fd and the stop eventfd), receive a chunk
// with its fds, send the chunk with those fds, repeat. The fds are made
// non-blocking so a stop request is never stuck behind a blocking call. With
// fd passing, or with limits on a side, reads stop at D-Bus message boundaries
// (MessageFramer) and each fixed header is held until it is whole and checked;
// a rate-limited side waits for a token (TokenBucket) before each message.
#include "link/splice.hpp"

#include <fcntl.h>
#include <gio/gio.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <mutex>
#include <system_error>
#include <thread>
#include <vector>

namespace sidebus {

namespace {

constexpr size_t kChunkSize = 64 * 1024;
constexpr size_t kMaxFdsPerChunk = 253;  // SCM_MAX_FD

struct State {
  UniqueFd fds[2];
  std::string names[2];
  bool is_socket[2] = {false, false};
  bool pass_fds = false;
  bool framed[2] = {false, false};  // what this side sends is parsed as D-Bus messages
  SpliceLimits limits[2];           // on what this side sends
  UniqueFd stop;  // eventfd: readable once a stop was requested

  std::mutex mutex;  // guards what follows
  int running = 2;
  int first_end = -1;
  GError* error = nullptr;
  int error_side = -1;  // where error came from

  GMainContext* context = nullptr;
  Splice::DoneFunc on_done;
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

enum class Wait { Ready, Stopped, TimedOut };

// Waits for `events` on fd (or, with fd -1, for nothing but a stop request)
// for at most timeout_ms (-1: no limit).
Wait wait_for(State& state, int fd, short events, int timeout_ms = -1) {
  struct pollfd pfds[2] = {{fd, events, 0}, {state.stop.get(), POLLIN, 0}};
  while (true) {
    int n = poll(pfds, 2, timeout_ms);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 || (pfds[1].revents & POLLIN)) return Wait::Stopped;
    if (n == 0) return Wait::TimedOut;
    if (pfds[0].revents) return Wait::Ready;  // including HUP/ERR: the next call reports it
  }
}

// The end of one direction. ended: which side ended (or -1 when just
// stopped); error: owned, may be NULL; stop_all: also stop the other direction.
void finish(const std::shared_ptr<State>& state, int ended, GError* error, bool stop_all) {
  std::lock_guard lock(state->mutex);
  if (ended >= 0 && state->first_end < 0) state->first_end = ended;
  if (error && !state->error) {
    state->error = error;
    state->error_side = ended;
  } else if (error)
    g_error_free(error);
  if (stop_all) {
    state->request_stop();
    for (auto& fd : state->fds)
      if (fd) shutdown(fd.get(), SHUT_RDWR);  // tell both peers now
  }
  if (--state->running > 0) return;
  // Last one out: close both fds and tell the owner.
  for (auto& fd : state->fds) fd.reset();
  post_to_context(state->context, [state] {
    if (state->owner_gone) return;
    Splice::Side side = state->first_end == 1 ? Splice::Side::B : Splice::Side::A;
    state->on_done(side, state->error);
  });
}

GError* errno_error(int saved, const char* doing, const std::string& name) {
  return g_error_new(G_IO_ERROR, g_io_error_from_errno(saved), "%s %s: %s", doing, name.c_str(), g_strerror(saved));
}

// EPIPE/ECONNRESET are how a peer going away looks; not worth an error.
bool is_disconnect(int saved) { return saved == EPIPE || saved == ECONNRESET; }

// Receives one chunk and the fds that came with it. Returns bytes, 0 on EOF,
// -1 with errno set.
ssize_t receive(State& state, int side, char* buffer, size_t size, std::vector<UniqueFd>* fds, bool* truncated) {
  int fd = state.fds[side].get();
  if (!state.is_socket[side]) return read(fd, buffer, size);
  struct iovec iov = {buffer, size};
  union {
    char buffer[CMSG_SPACE(sizeof(int) * kMaxFdsPerChunk)];
    struct cmsghdr align;
  } control;
  struct msghdr message = {};
  message.msg_iov = &iov;
  message.msg_iovlen = 1;
  message.msg_control = control.buffer;
  message.msg_controllen = sizeof control.buffer;
  ssize_t n = recvmsg(fd, &message, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
  if (n < 0) return n;
  for (struct cmsghdr* cmsg = CMSG_FIRSTHDR(&message); cmsg; cmsg = CMSG_NXTHDR(&message, cmsg)) {
    if (cmsg->cmsg_level != SOL_SOCKET || cmsg->cmsg_type != SCM_RIGHTS) continue;
    size_t count = (cmsg->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < count; i++) {
      int received;
      memcpy(&received, CMSG_DATA(cmsg) + i * sizeof(int), sizeof(int));
      fds->emplace_back(received);
    }
  }
  *truncated = (message.msg_flags & MSG_CTRUNC) != 0;
  return n;
}

// Sends the whole chunk; the fds go with its first byte. Returns false when
// stopped (error left NULL) or on error.
bool send_chunk(State& state, int side, const char* data, size_t length, const std::vector<UniqueFd>& fds,
                GError** error) {
  int fd = state.fds[side].get();
  bool fds_sent = fds.empty();
  while (length > 0) {
    if (wait_for(state, fd, POLLOUT) == Wait::Stopped) return false;
    ssize_t n;
    if (state.is_socket[side]) {
      struct iovec iov = {const_cast<char*>(data), length};
      union {
        char buffer[CMSG_SPACE(sizeof(int) * kMaxFdsPerChunk)];
        struct cmsghdr align;
      } control;
      struct msghdr message = {};
      message.msg_iov = &iov;
      message.msg_iovlen = 1;
      if (!fds_sent) {
        message.msg_control = control.buffer;
        message.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
        struct cmsghdr* cmsg = CMSG_FIRSTHDR(&message);
        cmsg->cmsg_level = SOL_SOCKET;
        cmsg->cmsg_type = SCM_RIGHTS;
        cmsg->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
        for (size_t i = 0; i < fds.size(); i++) {
          int raw = fds[i].get();
          memcpy(CMSG_DATA(cmsg) + i * sizeof(int), &raw, sizeof(int));
        }
      }
      n = sendmsg(fd, &message, MSG_NOSIGNAL | MSG_DONTWAIT);
    } else {
      n = write(fd, data, length);
    }
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (n < 0) {
      int saved = errno;
      if (!is_disconnect(saved)) *error = errno_error(saved, "writing to", state.names[side]);
      return false;
    }
    fds_sent = true;
    data += n;
    length -= static_cast<size_t>(n);
  }
  return true;
}

// Why fd-passing splices read one D-Bus message at a time: on a unix stream
// socket, one recvmsg() may return the bytes of earlier writes together with
// a later write that carried fds, so the fds would come out ahead of their
// message. GDBus attaches every fd read so far to the message it is reading,
// so it would give them to the wrong message. Never reading across a message
// boundary (as GDBus does itself) keeps every fd within its own message.
// The same framing lets a limited side be checked message by message.
class MessageFramer {
 public:
  static constexpr size_t kHeaderSize = 16;
  static constexpr size_t kDBusMaxMessage = size_t(1) << 27;    // the spec: 128 MiB
  static constexpr uint64_t kDBusMaxArray = uint64_t(1) << 26;  // the spec: 64 MiB

  explicit MessageFramer(size_t max_size)
      : max_size_(max_size == 0 || max_size > kDBusMaxMessage ? kDBusMaxMessage : max_size) {}

  // Between two messages: the next byte starts a message.
  bool at_boundary() const { return left_ == 0 && have_ == 0; }
  // Part of a fixed header has been read: hold it until it is whole.
  bool header_pending() const { return have_ > 0; }
  // How much may be read next without crossing a message boundary (or the
  // end of the fixed header).
  size_t next_read() const { return left_ ? std::min(left_, kChunkSize) : kHeaderSize - have_; }

  // Accounts for n bytes just read (into data), at most next_read(). False
  // with error set when a fixed header is malformed or over the limit.
  bool consume(const char* data, size_t n, const std::string& name, GError** error) {
    if (left_) {
      left_ -= n;
      return true;
    }
    memcpy(header_ + have_, data, n);
    have_ += n;
    if (have_ < kHeaderSize) return true;
    have_ = 0;
    return check_header(name, error);
  }

 private:
  // Fixed header: endianness, type, flags, version, body length, serial,
  // header fields array length; the fields are padded to 8, then the body.
  bool check_header(const std::string& name, GError** error) {
    auto* h = reinterpret_cast<const unsigned char*>(header_);
    bool little = h[0] == 'l';
    auto u32 = [&](int offset) {
      const unsigned char* b = h + offset;
      return little ? uint64_t(b[0]) | uint64_t(b[1]) << 8 | uint64_t(b[2]) << 16 | uint64_t(b[3]) << 24
                    : uint64_t(b[3]) | uint64_t(b[2]) << 8 | uint64_t(b[1]) << 16 | uint64_t(b[0]) << 24;
    };
    auto malformed = [&](const char* what, uint64_t value) {
      g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA,
                  "%s sent something that is not a D-Bus message (%s %" G_GUINT64_FORMAT ")", name.c_str(), what,
                  value);
      return false;
    };
    if (h[0] != 'l' && h[0] != 'B') return malformed("endianness byte", h[0]);
    if (h[1] == 0) return malformed("message type", h[1]);
    if (h[3] != 1) return malformed("protocol version", h[3]);
    uint64_t fields = u32(12), body = u32(4);  // each < 2^32: no overflow below
    if (fields > kDBusMaxArray) return malformed("header fields length", fields);
    uint64_t total = kHeaderSize + ((fields + 7) & ~uint64_t(7)) + body;
    if (total > kDBusMaxMessage) {
      g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA,
                  "%s sent a D-Bus message of %" G_GUINT64_FORMAT " bytes, more than the %zu the spec allows",
                  name.c_str(), total, kDBusMaxMessage);
      return false;
    }
    if (total > max_size_) {
      g_set_error(error, G_IO_ERROR, G_IO_ERROR_MESSAGE_TOO_LARGE,
                  "%s sent a D-Bus message of %" G_GUINT64_FORMAT " bytes, more than the limit of %zu bytes",
                  name.c_str(), total, max_size_);
      return false;
    }
    left_ = static_cast<size_t>(total - kHeaderSize);
    return true;
  }

  const size_t max_size_;
  char header_[kHeaderSize] = {};
  size_t have_ = 0;  // fixed header bytes read so far
  size_t left_ = 0;  // bytes of the current message after its fixed header
};

// Messages per second with a burst of as many. take() waits in poll() on the
// stop eventfd, so a splice that is being destroyed never waits for a token.
class TokenBucket {
 public:
  explicit TokenBucket(unsigned rate) : rate_(rate), tokens_(rate), last_(g_get_monotonic_time()) {}

  // Takes one token, waiting for it if need be. False when stopped.
  bool take(State& state, const std::string& name) {
    if (rate_ == 0) return true;
    while (true) {
      gint64 now = g_get_monotonic_time();
      tokens_ = std::min<double>(rate_, tokens_ + double(now - last_) * rate_ / G_USEC_PER_SEC);
      last_ = now;
      if (tokens_ >= 1) {
        tokens_ -= 1;
        return true;
      }
      if (!logged_) {
        g_debug("%s sends more than %u D-Bus messages per second; reading from it more slowly", name.c_str(), rate_);
        logged_ = true;
      }
      int wait_ms = std::max(1, static_cast<int>(std::ceil((1 - tokens_) * 1000 / rate_)));
      if (wait_for(state, -1, 0, wait_ms) == Wait::Stopped) return false;
    }
  }

 private:
  const unsigned rate_;
  double tokens_;
  gint64 last_;
  bool logged_ = false;
};

void pump(std::shared_ptr<State> state, int from, int to) {
  std::vector<char> buffer(kChunkSize);
  const bool framed = state->framed[from];
  MessageFramer framer(state->limits[from].max_message_size);
  TokenBucket bucket(state->limits[from].messages_per_second);
  size_t held = 0;                 // bytes of a fixed header at the start of buffer, not sent yet
  std::vector<UniqueFd> held_fds;  // the fds that came with them
  while (true) {
    if (wait_for(*state, state->fds[from].get(), POLLIN) == Wait::Stopped) return finish(state, -1, nullptr, false);
    if (framed && framer.at_boundary() && !bucket.take(*state, state->names[from]))
      return finish(state, -1, nullptr, false);
    std::vector<UniqueFd> fds;  // closed on every exit path unless sent
    bool truncated = false;
    size_t size = framed ? framer.next_read() : kChunkSize;
    ssize_t n = receive(*state, from, buffer.data() + held, size, &fds, &truncated);
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (n < 0) {
      int saved = errno;
      return finish(state, from,
                    is_disconnect(saved) ? nullptr : errno_error(saved, "reading from", state->names[from]), true);
    }
    if (truncated)
      return finish(
          state, from,
          g_error_new(G_IO_ERROR, G_IO_ERROR_INVALID_DATA, "%s sent more than %zu file descriptors with one chunk",
                      state->names[from].c_str(), kMaxFdsPerChunk),
          true);
    if (!fds.empty() && !state->pass_fds)
      return finish(state, from,
                    g_error_new(G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED,
                                "%s sent a file descriptor, but this link cannot carry them (closed it and stopped)",
                                state->names[from].c_str()),
                    true);
    GError* error = nullptr;  // stays NULL when stopped or when the peer went away
    if (n == 0) {
      // EOF: a partial fixed header goes on as it is (the peer sees a
      // truncated message), then the other side is half-closed; without
      // sockets there is no half-close.
      if (held && !send_chunk(*state, to, buffer.data(), held, held_fds, &error))
        return finish(state, to, error, true);
      if (!state->is_socket[to]) return finish(state, from, nullptr, true);
      shutdown(state->fds[to].get(), SHUT_WR);
      return finish(state, from, nullptr, false);
    }
    if (framed && !framer.consume(buffer.data() + held, static_cast<size_t>(n), state->names[from], &error))
      return finish(state, from, error, true);
    held += static_cast<size_t>(n);
    for (auto& fd : fds) held_fds.push_back(std::move(fd));
    if (framed && framer.header_pending()) continue;  // not whole yet, so not checked: hold it
    if (!send_chunk(*state, to, buffer.data(), held, held_fds, &error)) return finish(state, to, error, true);
    held = 0;
    held_fds.clear();
  }
}

bool check_socket(int fd, bool* is_socket, bool* is_unix) {
  struct stat st;
  if (fstat(fd, &st) != 0) return false;
  *is_socket = S_ISSOCK(st.st_mode);
  *is_unix = false;
  if (*is_socket) {
    struct sockaddr_storage address = {};
    socklen_t length = sizeof address;
    *is_unix =
        getsockname(fd, reinterpret_cast<struct sockaddr*>(&address), &length) == 0 && address.ss_family == AF_UNIX;
  }
  return true;
}

class SpliceImpl : public Splice {
 public:
  explicit SpliceImpl(std::shared_ptr<State> state) : state_(std::move(state)) {}
  ~SpliceImpl() override {
    state_->owner_gone = true;
    state_->request_stop();
    for (auto& thread : threads_)
      if (thread.joinable()) thread.join();
  }
  bool failed(Side* side, GError** error) const override {
    std::lock_guard lock(state_->mutex);
    if (!state_->error) return false;
    *side = state_->error_side == 1 ? Side::B : Side::A;
    *error = g_error_copy(state_->error);
    return true;
  }
  std::shared_ptr<State> state_;
  std::thread threads_[2];
};

}  // namespace

std::unique_ptr<Splice> Splice::start(UniqueFd a, std::string a_name, UniqueFd b, std::string b_name, bool pass_fds,
                                      DoneFunc on_done, GError** error, const SpliceLimits& b_limits) {
  auto state = std::make_shared<State>();
  state->fds[0] = std::move(a);
  state->fds[1] = std::move(b);
  state->names[0] = std::move(a_name);
  state->names[1] = std::move(b_name);
  bool both_unix = true;
  for (int side = 0; side < 2; side++) {
    int fd = state->fds[side].get();
    bool is_unix = false;
    if (!check_socket(fd, &state->is_socket[side], &is_unix) ||
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) != 0) {
      int saved = errno;
      g_set_error(error, G_IO_ERROR, g_io_error_from_errno(saved), "cannot use %s: %s", state->names[side].c_str(),
                  g_strerror(saved));
      return nullptr;
    }
    both_unix = both_unix && is_unix;
  }
  state->pass_fds = pass_fds && both_unix;
  state->limits[1] = b_limits;
  for (int side = 0; side < 2; side++)
    state->framed[side] =
        state->pass_fds || state->limits[side].max_message_size != 0 || state->limits[side].messages_per_second != 0;
  state->stop = UniqueFd(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!state->stop) {
    int saved = errno;
    g_set_error(error, G_IO_ERROR, g_io_error_from_errno(saved), "eventfd: %s", g_strerror(saved));
    return nullptr;
  }
  state->context = g_main_context_ref_thread_default();
  state->on_done = std::move(on_done);

  auto splice = std::make_unique<SpliceImpl>(state);
  try {
    splice->threads_[0] = std::thread(pump, state, 0, 1);
    splice->threads_[1] = std::thread(pump, state, 1, 0);
  } catch (const std::system_error& e) {
    g_set_error(error, G_IO_ERROR, G_IO_ERROR_FAILED, "cannot start the splice threads: %s", e.what());
    // A thread that did start sees the stop request; its finish() posts to a
    // splice whose owner is gone.
    return nullptr;
  }
  return splice;
}

}  // namespace sidebus
