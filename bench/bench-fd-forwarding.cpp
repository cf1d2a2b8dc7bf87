// SPDX-License-Identifier: LGPL-2.1-or-later
// bench-fd-forwarding.cpp — what fd forwarding over a byte-only link costs
// (link protocol 2, core/link/framed-link.hpp).
//
// The two relays a link has — the agent's and the broker's — run in this
// process as they do in theirs, over a unix socket pair standing for the
// byte-only transport (marked byte-only: the framed link never sends an fd
// on it), with socket pairs for the guest bus and the broker's connection:
//
//  - throughput: a guest writes a stream into a pipe whose read end it sent
//    in a D-Bus message; the host reads it from the pipe the broker's relay
//    made. Baselines, in the same run: the same bytes written into one unix
//    socket pair and read out (a raw socket copy, one hop); and the same
//    three hops as the forwarded pipe — pipe, socket, pipe, with a thread
//    copying each hop with read()/write() and nothing else (what any relay
//    of a pipe across a byte stream costs before it frames anything).
//  - latency: a small call carrying one fd (a pipe) from the guest, the
//    host's small reply; round trips over the framed link against the same
//    over a link that passes fds natively (SCM_RIGHTS, raw stream).
//
// Prints a table and ratios; asserts nothing about time.
// Usage: bench-fd-forwarding [--mib N] [--rounds N]
#include <fcntl.h>
#include <gio/gio.h>
#include <gio/gunixfdlist.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "link/relay.hpp"
#include "wire/channel-frames.hpp"

using namespace sidebus;
using Clock = std::chrono::steady_clock;

namespace {

constexpr size_t kBlock = 1024 * 1024;

[[noreturn]] void die(const char* what) {
  std::fprintf(stderr, "bench-fd-forwarding: %s: %s\n", what, g_strerror(errno));
  std::exit(1);
}

struct SocketPair {
  int fds[2];
  SocketPair() {
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) die("socketpair");
  }
  ~SocketPair() {
    for (int fd : fds)
      if (fd >= 0) close(fd);
  }
};

double seconds_since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

// ---- the two relays of one link ----

struct Link {
  SocketPair guest_bus, link, gdbus;
  std::unique_ptr<Relay> agent, broker;
  explicit Link(bool framed) {
    Relay::Options agent_options, broker_options;
    agent_options.pass_fds = broker_options.pass_fds = true;
    if (framed) {
      agent_options.framed = FramedLinkOptions{};
      FramedLinkOptions broker_end;
      broker_end.broker_end = true;
      broker_options.framed = broker_end;
    }
    broker_options.guest_limits = GuestTrafficLimits{};
    GError* error = nullptr;
    agent = Relay::start(UniqueFd(guest_bus.fds[0]), "guest bus", UniqueFd(link.fds[0]), "link", agent_options,
                         [](Relay::Side, const GError*) {}, &error);
    broker = Relay::start(UniqueFd(gdbus.fds[0]), "gdbus", UniqueFd(link.fds[1]), "link", broker_options,
                          [](Relay::Side, const GError*) {}, &error);
    if (!agent || !broker) die("relay");
    guest_bus.fds[0] = link.fds[0] = link.fds[1] = gdbus.fds[0] = -1;
  }
  int guest() const { return guest_bus.fds[1]; }
  int host() const { return gdbus.fds[1]; }
};

std::vector<uint8_t> blob_of(GDBusMessage* message) {
  gsize size = 0;
  g_autofree guchar* blob = g_dbus_message_to_blob(message, &size, G_DBUS_CAPABILITY_FLAGS_UNIX_FD_PASSING, nullptr);
  return std::vector<uint8_t>(blob, blob + size);
}

std::vector<uint8_t> call_with_fd(uint32_t serial, int fd) {
  g_autoptr(GDBusMessage) message =
      g_dbus_message_new_method_call(":1.1", "/org/freedesktop/portal/desktop", "dev.sidebus.test.Echo", "ReadFd");
  g_dbus_message_set_serial(message, serial);
  g_dbus_message_set_sender(message, ":1.5");
  g_dbus_message_set_body(message, g_variant_new("(h)", 0));
  g_autoptr(GUnixFDList) list = g_unix_fd_list_new();
  g_unix_fd_list_append(list, fd, nullptr);
  g_dbus_message_set_unix_fd_list(message, list);
  return blob_of(message);
}

std::vector<uint8_t> small_reply(uint32_t serial, uint32_t reply_serial) {
  g_autoptr(GDBusMessage) message = g_dbus_message_new();
  g_dbus_message_set_message_type(message, G_DBUS_MESSAGE_TYPE_METHOD_RETURN);
  g_dbus_message_set_serial(message, serial);
  g_dbus_message_set_reply_serial(message, reply_serial);
  g_dbus_message_set_destination(message, ":1.5");
  g_dbus_message_set_body(message, g_variant_new("(s)", "ok"));
  return blob_of(message);
}

void send_with_fd(int socket, const std::vector<uint8_t>& bytes, int fd) {
  struct iovec iov = {const_cast<uint8_t*>(bytes.data()), bytes.size()};
  union {
    char buffer[CMSG_SPACE(sizeof(int))];
    struct cmsghdr align;
  } control = {};
  struct msghdr header = {};
  header.msg_iov = &iov;
  header.msg_iovlen = 1;
  if (fd >= 0) {
    header.msg_control = control.buffer;
    header.msg_controllen = sizeof control.buffer;
    struct cmsghdr* cmsg = CMSG_FIRSTHDR(&header);
    cmsg->cmsg_level = SOL_SOCKET;
    cmsg->cmsg_type = SCM_RIGHTS;
    cmsg->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(cmsg), &fd, sizeof(int));
  }
  if (sendmsg(socket, &header, MSG_NOSIGNAL) != ssize_t(bytes.size())) die("sendmsg");
}

// One whole message from @socket; returns the fd that came with it (or -1).
int receive(int socket) {
  std::vector<uint8_t> buffer(16);
  int fd = -1;
  size_t have = 0, want = 16;
  while (have < want) {
    struct iovec iov = {buffer.data() + have, want - have};
    union {
      char buffer[CMSG_SPACE(sizeof(int) * 4)];
      struct cmsghdr align;
    } control = {};
    struct msghdr header = {};
    header.msg_iov = &iov;
    header.msg_iovlen = 1;
    header.msg_control = control.buffer;
    header.msg_controllen = sizeof control.buffer;
    ssize_t n = recvmsg(socket, &header, MSG_CMSG_CLOEXEC);
    if (n <= 0) die("recvmsg");
    for (struct cmsghdr* cmsg = CMSG_FIRSTHDR(&header); cmsg; cmsg = CMSG_NXTHDR(&header, cmsg))
      if (cmsg->cmsg_type == SCM_RIGHTS) memcpy(&fd, CMSG_DATA(cmsg), sizeof(int));
    have += size_t(n);
    if (have == 16 && want == 16) {
      gssize total = g_dbus_message_bytes_needed(buffer.data(), 16, nullptr);
      if (total < 16) die("not a D-Bus message");
      want = size_t(total);
      buffer.resize(want);
    }
  }
  return fd;
}

// ---- throughput ----

// Writes @total bytes to @out and reads them from @in, in two threads; MB/s.
double copy_rate(int out, int in, uint64_t total) {
  auto start = Clock::now();
  std::thread writer([&] {
    std::vector<char> block(kBlock, 'x');
    for (uint64_t done = 0; done < total;) {
      ssize_t n = write(out, block.data(), size_t(std::min<uint64_t>(block.size(), total - done)));
      if (n <= 0) die("write");
      done += uint64_t(n);
    }
  });
  std::vector<char> block(kBlock);
  uint64_t got = 0;
  while (got < total) {
    ssize_t n = read(in, block.data(), block.size());
    if (n <= 0) die("read");
    got += uint64_t(n);
  }
  writer.join();
  return double(total) / seconds_since(start) / 1e6;
}

double raw_socket_rate(uint64_t total) {
  SocketPair pair;
  return copy_rate(pair.fds[0], pair.fds[1], total);
}

// pipe → thread → socket pair → thread → pipe, plain read()/write().
double three_hops_rate(uint64_t total) {
  int in[2], out[2];
  if (pipe2(in, O_CLOEXEC) != 0 || pipe2(out, O_CLOEXEC) != 0) die("pipe");
  fcntl(in[0], F_SETPIPE_SZ, 1 << 20);
  fcntl(out[0], F_SETPIPE_SZ, 1 << 20);
  SocketPair link;
  auto hop = [](int from, int to, bool socket) {
    std::vector<char> buffer(wire::kMaxFramePayload);
    for (;;) {
      ssize_t n = read(from, buffer.data(), buffer.size());
      if (n <= 0) break;
      for (ssize_t done = 0; done < n;) {
        ssize_t w = write(to, buffer.data() + done, size_t(n - done));
        if (w <= 0) die("write");
        done += w;
      }
    }
    if (socket)
      shutdown(to, SHUT_WR);
    else
      close(to);
  };
  std::thread first(hop, in[0], link.fds[0], true);
  std::thread second(hop, link.fds[1], out[1], false);
  double rate = copy_rate(in[1], out[0], total);
  close(in[1]);
  first.join();
  second.join();
  close(in[0]);
  close(out[0]);
  return rate;
}

double forwarded_pipe_rate(uint64_t total) {
  Link link(true);
  int p[2];
  if (pipe2(p, O_CLOEXEC) != 0) die("pipe");
  send_with_fd(link.guest(), call_with_fd(1, p[0]), p[0]);
  close(p[0]);
  int host_end = receive(link.host());
  if (host_end < 0) die("no fd came");
  double rate = copy_rate(p[1], host_end, total);
  close(p[1]);
  close(host_end);
  return rate;
}

// ---- latency ----

// Median µs of a call with one fd and its reply, over @rounds.
double round_trip_us(bool framed, int rounds) {
  Link link(framed);
  std::vector<double> samples;
  for (int i = 0; i < rounds; i++) {
    int p[2];
    if (pipe2(p, O_CLOEXEC) != 0) die("pipe");
    auto start = Clock::now();
    send_with_fd(link.guest(), call_with_fd(uint32_t(i + 1), p[0]), p[0]);
    int fd = receive(link.host());
    send_with_fd(link.host(), small_reply(uint32_t(i + 1), uint32_t(i + 1)), -1);
    receive(link.guest());
    samples.push_back(seconds_since(start) * 1e6);
    if (fd >= 0) close(fd);
    close(p[0]);
    close(p[1]);
  }
  std::sort(samples.begin(), samples.end());
  return samples[samples.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  int mib = 2048, rounds = 2000;
  GOptionEntry entries[] = {
      {"mib", 0, 0, G_OPTION_ARG_INT, &mib, "MiB to stream through each", "N"},
      {"rounds", 0, 0, G_OPTION_ARG_INT, &rounds, "Round trips to time", "N"},
      {},
  };
  g_autoptr(GOptionContext) context = g_option_context_new("- fd forwarding over a byte-only link");
  g_option_context_add_main_entries(context, entries, nullptr);
  if (!g_option_context_parse(context, &argc, &argv, nullptr) || mib < 1 || rounds < 1) return 2;
  signal(SIGPIPE, SIG_IGN);
  const uint64_t total = uint64_t(mib) * 1024 * 1024;

  // Warm up both paths once, then measure.
  raw_socket_rate(64 << 20);
  forwarded_pipe_rate(64 << 20);
  double raw = raw_socket_rate(total);
  double hops = three_hops_rate(total);
  double forwarded = forwarded_pipe_rate(total);
  std::printf("stream of %d MiB                                                    MB/s   ratio\n", mib);
  std::printf("  baseline: raw copy through one unix socket pair                 %7.0f   1.00\n", raw);
  std::printf("  the same three hops, plain read/write threads, no framing       %7.0f   %.2f\n", hops, hops / raw);
  std::printf("  a pipe forwarded over a byte-only link (agent + broker relays)  %7.0f   %.2f  (%.2f of the hops)\n",
              forwarded, forwarded / raw, forwarded / hops);

  round_trip_us(false, 100);
  round_trip_us(true, 100);
  double native = round_trip_us(false, rounds);
  double framed = round_trip_us(true, rounds);
  std::printf("a call with one fd (a pipe) and its reply, median of %d              µs   ratio\n", rounds);
  std::printf("  baseline: fd passed natively (SCM_RIGHTS over the link)         %7.1f   1.00\n", native);
  std::printf("  fd forwarded as a channel of a byte-only link                   %7.1f   %.2f  (+%.1f µs)\n", framed,
              framed / native, framed - native);
  return 0;
}
