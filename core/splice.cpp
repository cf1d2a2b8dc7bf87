// splice.cpp — the two pump threads behind Splice (see splice.hpp). Each
// direction: wait (poll on the source fd and the stop eventfd), receive a chunk
// with its fds, send the chunk with those fds, repeat. The fds are made
// non-blocking so a stop request is never stuck behind a blocking call. With
// fd passing, reads stop at D-Bus message boundaries (MessageFramer).
#include "splice.hpp"

#include <fcntl.h>
#include <gio/gio.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <system_error>
#include <thread>
#include <vector>

namespace sidebus {

void post_to_context(GMainContext* context, std::function<void()> fn) {
  GSource* source = g_idle_source_new();
  g_source_set_priority(source, G_PRIORITY_DEFAULT);
  g_source_set_callback(
      source,
      [](gpointer data) -> gboolean {
        (*static_cast<std::function<void()>*>(data))();
        return G_SOURCE_REMOVE;
      },
      new std::function<void()>(std::move(fn)),
      [](gpointer data) { delete static_cast<std::function<void()>*>(data); });
  g_source_attach(source, context);
  g_source_unref(source);
}

namespace {

constexpr size_t kChunkSize = 64 * 1024;
constexpr size_t kMaxFdsPerChunk = 253;  // SCM_MAX_FD

struct State {
  UniqueFd fds[2];
  std::string names[2];
  bool is_socket[2] = {false, false};
  bool pass_fds = false;
  UniqueFd stop;  // eventfd: readable once a stop was requested

  std::mutex mutex;  // guards what follows
  int running = 2;
  int first_end = -1;
  GError* error = nullptr;

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

enum class Wait { Ready, Stopped };

Wait wait_for(State& state, int fd, short events) {
  struct pollfd pfds[2] = {{fd, events, 0}, {state.stop.get(), POLLIN, 0}};
  while (true) {
    int n = poll(pfds, 2, -1);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 || (pfds[1].revents & POLLIN)) return Wait::Stopped;
    if (pfds[0].revents) return Wait::Ready;  // including HUP/ERR: the next call reports it
  }
}

// The end of one direction. ended: which side ended (or -1 when just
// stopped); error: owned, may be NULL; stop_all: also stop the other direction.
void finish(const std::shared_ptr<State>& state, int ended, GError* error, bool stop_all) {
  std::lock_guard lock(state->mutex);
  if (ended >= 0 && state->first_end < 0) state->first_end = ended;
  if (error && !state->error)
    state->error = error;
  else if (error)
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
class MessageFramer {
 public:
  // How much may be read next without crossing a message boundary.
  size_t next_read() const { return left_ ? std::min(left_, kChunkSize) : sizeof header_ - have_; }

  // Accounts for n bytes just read (into data).
  bool consume(const char* data, size_t n, const std::string& name, GError** error) {
    if (left_) {
      left_ -= n;
      return true;
    }
    memcpy(header_ + have_, data, n);
    have_ += n;
    if (have_ < sizeof header_) return true;
    have_ = 0;
    // Fixed header: endianness, type, flags, version, body length, serial,
    // header fields array length; the fields are padded to 8.
    bool little = header_[0] == 'l';
    if ((header_[0] != 'l' && header_[0] != 'B') || header_[3] != 1) {
      g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA, "%s sent something that is not a D-Bus message",
                  name.c_str());
      return false;
    }
    auto u32 = [&](int offset) {
      auto* b = reinterpret_cast<const unsigned char*>(header_ + offset);
      return little ? uint64_t(b[0]) | uint64_t(b[1]) << 8 | uint64_t(b[2]) << 16 | uint64_t(b[3]) << 24
                    : uint64_t(b[3]) | uint64_t(b[2]) << 8 | uint64_t(b[1]) << 16 | uint64_t(b[0]) << 24;
    };
    uint64_t fields = u32(12), body = u32(4);
    uint64_t total = sizeof header_ + ((fields + 7) & ~uint64_t(7)) + body;
    if (total > kMaxMessageSize) {
      g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA,
                  "%s sent a D-Bus message of %" G_GUINT64_FORMAT " bytes, more than the %zu the spec allows",
                  name.c_str(), total, kMaxMessageSize);
      return false;
    }
    left_ = static_cast<size_t>(total - sizeof header_);
    return true;
  }

 private:
  static constexpr size_t kMaxMessageSize = size_t(1) << 27;  // D-Bus: 128 MiB
  char header_[16] = {};
  size_t have_ = 0;
  size_t left_ = 0;
};

void pump(std::shared_ptr<State> state, int from, int to) {
  std::vector<char> buffer(kChunkSize);
  MessageFramer framer;
  while (true) {
    if (wait_for(*state, state->fds[from].get(), POLLIN) == Wait::Stopped) return finish(state, -1, nullptr, false);
    std::vector<UniqueFd> fds;  // closed on every exit path unless sent
    bool truncated = false;
    size_t size = state->pass_fds ? framer.next_read() : kChunkSize;
    ssize_t n = receive(*state, from, buffer.data(), size, &fds, &truncated);
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
    if (n == 0) {
      // EOF: half-close the other side; without sockets there is no half-close.
      if (!state->is_socket[to]) return finish(state, from, nullptr, true);
      shutdown(state->fds[to].get(), SHUT_WR);
      return finish(state, from, nullptr, false);
    }
    GError* error = nullptr;  // stays NULL when stopped or when the peer went away
    if (state->pass_fds && !framer.consume(buffer.data(), static_cast<size_t>(n), state->names[from], &error))
      return finish(state, from, error, true);
    if (!send_chunk(*state, to, buffer.data(), static_cast<size_t>(n), fds, &error))
      return finish(state, to, error, true);
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
  std::shared_ptr<State> state_;
  std::thread threads_[2];
};

}  // namespace

std::unique_ptr<Splice> Splice::start(UniqueFd a, std::string a_name, UniqueFd b, std::string b_name, bool pass_fds,
                                      DoneFunc on_done, GError** error) {
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
