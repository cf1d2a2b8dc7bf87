// SPDX-License-Identifier: LGPL-2.1-or-later
// test-fd-forwarding.cpp — fds across a byte-only link (link protocol 2,
// core/link/framed-link.hpp), on real socket pairs: two relays as the agent
// and the broker build them, the agent's local side standing for the guest
// bus, the broker's for its GDBusConnection, and a socket pair between them
// for the byte-only link:
//
//   test (guest bus) ⇄ agent relay ⇄ link ⇄ broker relay ⇄ test (GDBus)
//
// The test writes messages with fds (SCM_RIGHTS) where the guest bus or
// GDBus would, and asserts what the other side receives: which fds, of what
// kind, with which bytes behind them; which calls get which error; that
// channels stay within their limits and one stalled reader holds up nobody;
// that a peer breaking the protocol loses its link.
#include <fcntl.h>
#include <gio/gio.h>
#include <gio/gunixfdlist.h>
#include <glib/gstdio.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "link/relay.hpp"
#include "socket-pair.hpp"
#include "util/gobject-ptr.hpp"
#include "wire/channel-frames.hpp"

using namespace sidebus;
using sidebus::test::Pair;

namespace {

constexpr int kPollMs = 10000;
constexpr char kNotSupported[] = "org.freedesktop.DBus.Error.NotSupported";
constexpr char kLimitsExceeded[] = "org.freedesktop.DBus.Error.LimitsExceeded";
constexpr char kAccessDenied[] = "org.freedesktop.DBus.Error.AccessDenied";

// ---- warnings: counted, not fatal ----

std::mutex warnings_lock;
std::vector<std::string> warnings;

GLogWriterOutput capture_warnings(GLogLevelFlags level, const GLogField* fields, gsize n_fields, gpointer) {
  if (level & (G_LOG_LEVEL_WARNING | G_LOG_LEVEL_MESSAGE)) {
    for (gsize i = 0; i < n_fields; i++) {
      if (g_str_equal(fields[i].key, "MESSAGE")) {
        std::lock_guard lock(warnings_lock);
        warnings.emplace_back(static_cast<const char*>(fields[i].value));
      }
    }
    return G_LOG_WRITER_HANDLED;
  }
  return g_log_writer_standard_streams(level, fields, n_fields, nullptr);
}

size_t warnings_mentioning(const char* text) {
  std::lock_guard lock(warnings_lock);
  return size_t(std::count_if(warnings.begin(), warnings.end(),
                              [text](const std::string& warning) { return warning.find(text) != std::string::npos; }));
}

// ---- messages with fds on a socket ----

std::vector<uint8_t> blob_of(GDBusMessage* message) {
  gsize size = 0;
  g_autoptr(GError) error = nullptr;
  g_autofree guchar* blob = g_dbus_message_to_blob(message, &size, G_DBUS_CAPABILITY_FLAGS_UNIX_FD_PASSING, &error);
  g_assert_no_error(error);
  return std::vector<uint8_t>(blob, blob + size);
}

// A call from guest client :1.5 to the broker (:1.1), as the guest bus
// delivers it, carrying @fds (borrowed).
std::vector<uint8_t> call(uint32_t serial, const char* member, GVariant* body, const std::vector<int>& fds = {}) {
  g_autoptr(GDBusMessage) message =
      g_dbus_message_new_method_call(":1.1", "/org/freedesktop/portal/desktop", "dev.sidebus.test.Echo", member);
  g_dbus_message_set_serial(message, serial);
  g_dbus_message_set_sender(message, ":1.5");
  g_dbus_message_set_body(message, body != nullptr ? body : g_variant_new("(s)", member));
  if (!fds.empty()) {
    g_autoptr(GUnixFDList) list = g_unix_fd_list_new();
    for (int fd : fds) g_unix_fd_list_append(list, fd, nullptr);
    g_dbus_message_set_unix_fd_list(message, list);
  }
  return blob_of(message);
}

// The broker's reply to :1.5's call @reply_serial, carrying @fds.
std::vector<uint8_t> reply(uint32_t serial, uint32_t reply_serial, const std::vector<int>& fds) {
  g_autoptr(GDBusMessage) message = g_dbus_message_new();
  g_dbus_message_set_message_type(message, G_DBUS_MESSAGE_TYPE_METHOD_RETURN);
  g_dbus_message_set_serial(message, serial);
  g_dbus_message_set_reply_serial(message, reply_serial);
  g_dbus_message_set_destination(message, ":1.5");
  g_autoptr(GUnixFDList) list = g_unix_fd_list_new();
  for (int fd : fds) g_unix_fd_list_append(list, fd, nullptr);
  g_dbus_message_set_body(message, g_variant_new("(h)", 0));
  g_dbus_message_set_unix_fd_list(message, list);
  return blob_of(message);
}

void send_message(int socket, const std::vector<uint8_t>& bytes, const std::vector<int>& fds = {}) {
  size_t sent = 0;
  while (sent < bytes.size()) {
    struct iovec iov = {const_cast<uint8_t*>(bytes.data() + sent), bytes.size() - sent};
    union {
      char buffer[CMSG_SPACE(sizeof(int) * 16)];
      struct cmsghdr align;
    } control = {};
    struct msghdr header = {};
    header.msg_iov = &iov;
    header.msg_iovlen = 1;
    if (sent == 0 && !fds.empty()) {
      header.msg_control = control.buffer;
      header.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
      struct cmsghdr* cmsg = CMSG_FIRSTHDR(&header);
      cmsg->cmsg_level = SOL_SOCKET;
      cmsg->cmsg_type = SCM_RIGHTS;
      cmsg->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
      memcpy(CMSG_DATA(cmsg), fds.data(), sizeof(int) * fds.size());
    }
    struct pollfd pfd = {socket, POLLOUT, 0};
    g_assert_cmpint(poll(&pfd, 1, kPollMs), ==, 1);
    ssize_t n = sendmsg(socket, &header, MSG_NOSIGNAL);
    g_assert_cmpint(n, >, 0);
    sent += size_t(n);
  }
}

struct Received {
  GObjectPtr<GDBusMessage> message;
  std::vector<int> fds;  // owned by the test: closed by ~Received
  ~Received() {
    for (int fd : fds) close(fd);
  }
  Received() = default;
  Received(Received&&) = default;
  Received& operator=(Received&&) = default;
};

// The next whole message on @socket with its fds; no message within @timeout_ms: empty.
Received receive_message(int socket, int timeout_ms = kPollMs) {
  Received received;
  struct pollfd pfd = {socket, POLLIN, 0};
  if (poll(&pfd, 1, timeout_ms) != 1) return received;
  std::string header;
  received.fds = sidebus::test::receive_with_fds(socket, 16, &header);
  g_autoptr(GError) error = nullptr;
  gssize total = g_dbus_message_bytes_needed(reinterpret_cast<guchar*>(header.data()), 16, &error);
  g_assert_no_error(error);
  std::string rest;
  if (total > 16) {
    std::vector<int> more = sidebus::test::receive_with_fds(socket, size_t(total) - 16, &rest);
    received.fds.insert(received.fds.end(), more.begin(), more.end());
  }
  std::string blob = header + rest;
  GDBusMessage* message = g_dbus_message_new_from_blob(reinterpret_cast<guchar*>(blob.data()), blob.size(),
                                                       G_DBUS_CAPABILITY_FLAGS_UNIX_FD_PASSING, &error);
  g_assert_no_error(error);
  received.message.reset(message);
  return received;
}

std::string error_name(const Received& received) {
  if (!received.message) return "(nothing)";
  if (g_dbus_message_get_message_type(received.message.get()) != G_DBUS_MESSAGE_TYPE_ERROR) return "(not an error)";
  return g_dbus_message_get_error_name(received.message.get());
}

std::string error_text(const Received& received);

// (g_assert_cmpstr keeps a pointer past its statement: no temporaries in it)
void assert_error(const Received& received, const char* name, const char* mentions) {
  std::string got = error_name(received), text = error_text(received);
  g_test_message("%s: %s", got.c_str(), text.c_str());
  g_assert_cmpstr(got.c_str(), ==, name);
  if (text.find(mentions) == std::string::npos) g_error("“%s” does not mention “%s”", text.c_str(), mentions);
}

std::string error_text(const Received& received) {
  const char* text = "";
  if (received.message && g_dbus_message_get_body(received.message.get()))
    g_variant_get(g_dbus_message_get_body(received.message.get()), "(&s)", &text);
  return text;
}

void write_all(int fd, const void* data, size_t length) {
  const char* bytes = static_cast<const char*>(data);
  while (length > 0) {
    struct pollfd pfd = {fd, POLLOUT, 0};
    g_assert_cmpint(poll(&pfd, 1, kPollMs), ==, 1);
    ssize_t n = write(fd, bytes, length);
    g_assert_cmpint(n, >, 0);
    bytes += n;
    length -= size_t(n);
  }
}

// Everything until EOF (or @limit bytes).
std::string read_to_end(int fd, size_t limit = SIZE_MAX) {
  std::string data;
  char buffer[65536];
  while (data.size() < limit) {
    struct pollfd pfd = {fd, POLLIN, 0};
    g_assert_cmpint(poll(&pfd, 1, kPollMs), ==, 1);
    ssize_t n = read(fd, buffer, std::min(sizeof buffer, limit - data.size()));
    g_assert_cmpint(n, >=, 0);
    if (n == 0) break;
    data.append(buffer, size_t(n));
  }
  return data;
}

std::string fd_target(int fd) {
  g_autofree char* link = g_strdup_printf("/proc/self/fd/%d", fd);
  g_autofree char* target = g_file_read_link(link, nullptr);
  return target ? target : "";
}

// ---- the two relays ----

// What the test's resolver was asked, and where its host files are.
struct Documents {
  char* guest_dir = g_dir_make_tmp("sidebus-test-guest-docs-XXXXXX", nullptr);
  char* host_dir = g_dir_make_tmp("sidebus-test-host-docs-XXXXXX", nullptr);
  std::mutex lock;
  std::vector<DocumentReference> asked;
  ~Documents() {
    for (char* dir : {guest_dir, host_dir}) {
      g_autofree char* command = g_strdup_printf("rm -rf '%s'", dir);
      (void)!system(command);
      g_free(dir);
    }
  }
  // The same file in the guest's documents and on the host.
  std::string add(const std::string& doc_id, const std::string& name, const std::string& contents) {
    for (char* dir : {guest_dir, host_dir}) {
      std::string folder = std::string(dir) + "/" + doc_id;
      g_mkdir_with_parents(folder.c_str(), 0755);
      g_assert_true(g_file_set_contents((folder + "/" + name).c_str(), contents.c_str(), -1, nullptr));
    }
    return std::string(guest_dir) + "/" + doc_id + "/" + name;
  }
  // Like the broker's: documents "f00d…" are this VM's, "dead…" are not.
  DocumentResolver resolver() {
    return [this](const DocumentReference& reference, Refusal* refusal) -> UniqueFd {
      {
        std::lock_guard guard(lock);
        asked.push_back(reference);
      }
      if (!g_str_has_prefix(reference.doc_id.c_str(), "f00d")) {
        *refusal = {kAccessDenied, "“" + reference.doc_id + "” names no document shared with this VM"};
        return {};
      }
      int flags = reference.access == wire::FdAccess::Path        ? O_PATH
                  : reference.access == wire::FdAccess::ReadWrite ? O_RDWR
                  : reference.access == wire::FdAccess::WriteOnly ? O_WRONLY
                                                                  : O_RDONLY;
      std::string path = std::string(host_dir) + "/" + reference.doc_id + "/" + reference.path;
      return UniqueFd(open(path.c_str(), flags | O_CLOEXEC));
    };
  }
};

struct Link {
  Pair guest_bus;  // [1]: the test as the guest bus; [0]: the agent relay's local side
  Pair link;       // [0]: the agent relay's link; [1]: the broker relay's
  Pair gdbus;      // [1]: the test as the broker's GDBus; [0]: the broker relay's local side
  Documents documents;
  std::unique_ptr<Relay> agent, broker;
  bool agent_done = false, broker_done = false;
  GError* broker_error = nullptr;

  explicit Link(ForwardingLimits broker_limits = {}, ForwardingLimits agent_limits = {}) {
    Relay::Options agent_options;
    agent_options.pass_fds = true;
    FramedLinkOptions agent_end;
    agent_end.documents_path = documents.guest_dir;
    agent_end.limits = agent_limits;
    agent_end.limit_prefix = "the agent's ";
    agent_options.framed = agent_end;
    g_autoptr(GError) error = nullptr;
    agent = Relay::start(
        UniqueFd(guest_bus.fds[0]), "the guest bus", UniqueFd(link.fds[0]), "the broker", agent_options,
        [this](Relay::Side, const GError*) { agent_done = true; }, &error);
    g_assert_no_error(error);
    guest_bus.fds[0] = link.fds[0] = -1;
    start_broker(broker_limits);
  }
  void start_broker(ForwardingLimits limits) {
    Relay::Options options;
    options.pass_fds = true;
    FramedLinkOptions broker_end;
    broker_end.broker_end = true;
    broker_end.resolver = documents.resolver();
    broker_end.limits = limits;
    broker_end.limit_prefix = "broker.";
    options.framed = broker_end;
    options.guest_limits = GuestTrafficLimits{};
    g_autoptr(GError) error = nullptr;
    broker = Relay::start(
        UniqueFd(gdbus.fds[0]), "the broker's connection", UniqueFd(link.fds[1]), "link test", options,
        [this](Relay::Side, const GError* e) {
          broker_done = true;
          if (e) broker_error = g_error_copy(e);
        },
        &error);
    g_assert_no_error(error);
    gdbus.fds[0] = link.fds[1] = -1;
  }
  ~Link() {
    agent.reset();
    broker.reset();
    g_clear_error(&broker_error);
  }
  int guest() const { return guest_bus.fds[1]; }
  int host() const { return gdbus.fds[1]; }
  const FramedLinkCounters& broker_counters() const { return broker->counters().forwarding; }
};

// A call that must arrive as it was sent, with its one fd; returns that fd's receiving end.
Received call_through(Link& link, uint32_t serial, int fd) {
  send_message(link.guest(), call(serial, "ReadFd", g_variant_new("(h)", 0), {fd}), {fd});
  Received received = receive_message(link.host());
  g_assert_nonnull(received.message.get());
  g_assert_cmpuint(g_dbus_message_get_serial(received.message.get()), ==, serial);
  g_assert_cmpstr(g_dbus_message_get_member(received.message.get()), ==, "ReadFd");
  g_assert_cmpuint(received.fds.size(), ==, 1);
  return received;
}

void assert_echo_passes(Link& link, uint32_t serial) {
  send_message(link.guest(), call(serial, "Echo", nullptr));
  Received received = receive_message(link.host());
  g_assert_nonnull(received.message.get());
  g_assert_cmpstr(g_dbus_message_get_member(received.message.get()), ==, "Echo");
  g_assert_cmpuint(g_dbus_message_get_serial(received.message.get()), ==, serial);
}

// ---- pipes and sockets ----

void test_pipe_guest_to_host() {
  Link link;
  int p[2];
  g_assert_cmpint(pipe2(p, O_CLOEXEC), ==, 0);
  Received received = call_through(link, 1, p[0]);
  close(p[0]);
  int host_fd = received.fds[0];
  struct stat st;
  g_assert_cmpint(fstat(host_fd, &st), ==, 0);
  g_assert_true(S_ISFIFO(st.st_mode));
  g_assert_cmpint(fcntl(host_fd, F_GETFL) & O_ACCMODE, ==, O_RDONLY);  // the read end, as the guest sent
  std::string data(300000, 'p');
  for (size_t i = 0; i < data.size(); i++) data[i] = char(i * 7);
  std::thread writer([&] {
    write_all(p[1], data.data(), data.size());
    close(p[1]);  // EOF crosses too
  });
  std::string got = read_to_end(host_fd);
  writer.join();
  g_assert_true(got == data);
  g_assert_cmpuint(link.broker_counters().channels_opened, ==, 1);
}

void test_pipe_host_to_guest() {
  Link link;
  int p[2];
  g_assert_cmpint(pipe2(p, O_CLOEXEC), ==, 0);
  // The broker answers a call with the read end of its pipe.
  send_message(link.host(), reply(9, 4, {p[0]}), {p[0]});
  close(p[0]);
  Received received = receive_message(link.guest());
  g_assert_nonnull(received.message.get());
  g_assert_cmpint(g_dbus_message_get_message_type(received.message.get()), ==, G_DBUS_MESSAGE_TYPE_METHOD_RETURN);
  g_assert_cmpuint(g_dbus_message_get_reply_serial(received.message.get()), ==, 4);
  g_assert_cmpuint(received.fds.size(), ==, 1);
  write_all(p[1], "from the host", 13);
  close(p[1]);
  std::string got = read_to_end(received.fds[0]);
  g_assert_cmpstr(got.c_str(), ==, "from the host");
}

// A write end: the host writes, the guest reads; the guest's reader going
// away reaches the host's writer as EPIPE.
void test_pipe_write_end() {
  Link link;
  int p[2];
  g_assert_cmpint(pipe2(p, O_CLOEXEC), ==, 0);
  Received received = call_through(link, 1, p[1]);
  close(p[1]);
  int host_fd = received.fds[0];
  g_assert_cmpint(fcntl(host_fd, F_GETFL) & O_ACCMODE, ==, O_WRONLY);
  write_all(host_fd, "to the guest", 12);
  char buffer[32] = {};
  struct pollfd pfd = {p[0], POLLIN, 0};
  g_assert_cmpint(poll(&pfd, 1, kPollMs), ==, 1);
  g_assert_cmpint(read(p[0], buffer, sizeof buffer), ==, 12);
  g_assert_cmpstr(buffer, ==, "to the guest");
  close(p[0]);
  // The host keeps writing until the guest's STOP closes its pipe.
  signal(SIGPIPE, SIG_IGN);
  fcntl(host_fd, F_SETFL, O_NONBLOCK);
  gint64 deadline = g_get_monotonic_time() + 10 * G_USEC_PER_SEC;
  bool broken = false;
  while (!broken && g_get_monotonic_time() < deadline) {
    ssize_t n = write(host_fd, buffer, sizeof buffer);
    if (n < 0 && errno == EPIPE) broken = true;
    if (n < 0 && errno == EAGAIN) g_usleep(1000);
  }
  g_assert_true(broken);
}

void test_socket_both_ways() {
  Link link;
  int s[2];
  g_assert_cmpint(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, s), ==, 0);
  Received received = call_through(link, 1, s[1]);
  close(s[1]);
  int host_fd = received.fds[0];
  struct stat st;
  g_assert_cmpint(fstat(host_fd, &st), ==, 0);
  g_assert_true(S_ISSOCK(st.st_mode));
  write_all(s[0], "ping", 4);
  char buffer[16] = {};
  struct pollfd pfd = {host_fd, POLLIN, 0};
  g_assert_cmpint(poll(&pfd, 1, kPollMs), ==, 1);
  g_assert_cmpint(read(host_fd, buffer, sizeof buffer), ==, 4);
  g_assert_cmpstr(buffer, ==, "ping");
  // Half-close from the guest: the host reads EOF and can still answer.
  shutdown(s[0], SHUT_WR);
  std::string eof = read_to_end(host_fd);
  g_assert_cmpstr(eof.c_str(), ==, "");
  write_all(host_fd, "pong", 4);
  shutdown(host_fd, SHUT_WR);
  std::string answer = read_to_end(s[0]);
  g_assert_cmpstr(answer.c_str(), ==, "pong");
  close(s[0]);
}

// ---- fds kept in the guest (KEPT records) ----

// The guest's relay helper answers the broker's call with an fd: it stays in
// the guest, and the broker gets a stand-in. When the broker hands the
// stand-in to a guest client, that client gets the helper's own fd — the
// very same socket, not a relay of it. Any other reply's socket still
// becomes a stream.
void test_kept_in_guest() {
  Link link;
  g_autoptr(GDBusMessage) ask = g_dbus_message_new_method_call("org.sidebus.GuestRelay1", "/org/sidebus/GuestRelay1",
                                                               wire::kKeptRepliesInterface, "OpenRemote");
  g_dbus_message_set_serial(ask, 7);
  g_dbus_message_set_body(ask, g_variant_new("(au)", nullptr));
  send_message(link.host(), blob_of(ask));
  Received asked = receive_message(link.guest());
  g_assert_nonnull(asked.message.get());
  g_assert_cmpstr(g_dbus_message_get_member(asked.message.get()), ==, "OpenRemote");

  int s[2];
  g_assert_cmpint(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, s), ==, 0);
  g_autoptr(GDBusMessage) answer = g_dbus_message_new();
  g_dbus_message_set_message_type(answer, G_DBUS_MESSAGE_TYPE_METHOD_RETURN);
  g_dbus_message_set_serial(answer, 3);
  g_dbus_message_set_reply_serial(answer, 7);
  g_dbus_message_set_destination(answer, ":1.1");
  g_dbus_message_set_sender(answer, ":1.9");
  g_autoptr(GUnixFDList) list = g_unix_fd_list_new_from_array(&s[1], 1);  // takes s[1]
  g_dbus_message_set_body(answer, g_variant_new("(h)", 0));
  g_dbus_message_set_unix_fd_list(answer, list);
  int helper_fd = g_unix_fd_list_get(list, 0, nullptr);
  send_message(link.guest(), blob_of(answer), {helper_fd});
  struct stat helper {};
  g_assert_cmpint(fstat(helper_fd, &helper), ==, 0);
  Received stand_in = receive_message(link.host());
  g_assert_nonnull(stand_in.message.get());
  g_assert_cmpuint(stand_in.fds.size(), ==, 1);
  struct stat st {};
  g_assert_cmpint(fstat(stand_in.fds[0], &st), ==, 0);
  g_assert_false(S_ISSOCK(st.st_mode));  // a stand-in, not a channel
  g_assert_cmpuint(link.broker_counters().channels_opened.load(), ==, 0);

  // The broker hands it on to guest client :1.5: the guest gets the helper's socket itself.
  send_message(link.host(), reply(4, 11, {stand_in.fds[0]}), {stand_in.fds[0]});
  Received handed = receive_message(link.guest());
  g_assert_nonnull(handed.message.get());
  g_assert_cmpuint(handed.fds.size(), ==, 1);
  g_assert_cmpint(fstat(handed.fds[0], &st), ==, 0);
  g_assert_true(S_ISSOCK(st.st_mode));
  g_assert_cmpuint(st.st_ino, ==, helper.st_ino);
  g_assert_cmpuint(st.st_dev, ==, helper.st_dev);
  write_all(s[0], "direct", 6);
  char buffer[16] = {};
  struct pollfd pfd = {handed.fds[0], POLLIN, 0};
  g_assert_cmpint(poll(&pfd, 1, kPollMs), ==, 1);
  g_assert_cmpint(read(handed.fds[0], buffer, sizeof buffer), ==, 6);
  g_assert_cmpstr(buffer, ==, "direct");
  g_assert_cmpuint(link.broker_counters().channels_opened.load(), ==, 0);
  close(helper_fd);
  close(s[0]);

  // A call that is not to a relay helper keeps to the usual rules: a socket is a stream.
  int t[2];
  g_assert_cmpint(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, t), ==, 0);
  Received streamed = call_through(link, 12, t[1]);
  g_assert_cmpint(fstat(streamed.fds[0], &st), ==, 0);
  g_assert_true(S_ISSOCK(st.st_mode));
  g_assert_cmpuint(link.broker_counters().channels_opened.load(), ==, 1);
  close(t[0]);
  close(t[1]);
  assert_echo_passes(link, 13);
}

// fds inside a forwarded socket's own traffic do not cross: dropped, with a warning.
void test_socket_fds_dropped() {
  Link link;
  int s[2];
  g_assert_cmpint(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, s), ==, 0);
  Received received = call_through(link, 1, s[1]);
  close(s[1]);
  size_t before = warnings_mentioning("dropped 1 file descriptor");
  int passenger = eventfd(0, EFD_CLOEXEC);
  sidebus::test::send_with_fd(s[0], 'x', passenger);
  close(passenger);
  std::string data;
  std::vector<int> fds = sidebus::test::receive_with_fds(received.fds[0], 1, &data);
  g_assert_cmpstr(data.c_str(), ==, "x");
  g_assert_cmpuint(fds.size(), ==, 0);
  g_assert_cmpuint(warnings_mentioning("dropped 1 file descriptor"), ==, before + 1);
  close(s[0]);
}

// ---- file content ----

void test_content_copies() {
  Link link;
  char* dir = g_dir_make_tmp("sidebus-test-content-XXXXXX", nullptr);
  std::string path = std::string(dir) + "/notes.txt";
  std::string contents(100000, 'c');
  for (size_t i = 0; i < contents.size(); i++) contents[i] = char('a' + i % 26);
  g_assert_true(g_file_set_contents(path.c_str(), contents.data(), gssize(contents.size()), nullptr));
  uint32_t serial = 1;
  for (int flags : {O_RDONLY, O_RDWR, O_WRONLY, O_PATH}) {
    int fd = open(path.c_str(), flags | O_CLOEXEC);
    lseek(fd, 500, SEEK_SET);  // the guest's offset is its own: the copy is of the whole file
    Received received = call_through(link, serial++, fd);
    close(fd);
    int copy = received.fds[0];
    struct stat st;
    g_assert_cmpint(fstat(copy, &st), ==, 0);
    g_assert_true(S_ISREG(st.st_mode));
    g_assert_cmpint(st.st_size, ==, contents.size());
    g_assert_cmpint(fcntl(copy, F_GETFL) & O_ACCMODE, ==, O_RDONLY);
    int seals = fcntl(copy, F_GET_SEALS);
    g_assert_cmpint(seals & (F_SEAL_WRITE | F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_SEAL), ==,
                    F_SEAL_WRITE | F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_SEAL);
    std::string target = fd_target(copy);
    g_assert_cmpstr(target.c_str(), ==, "/memfd:notes.txt (deleted)");  // named after the guest's file
    g_assert_true(read_to_end(copy) == contents);
  }
  unlink(path.c_str());
  rmdir(dir);
  g_free(dir);
}

// Host → guest: a memfd in the broker's reply reaches the guest as a sealed copy.
void test_content_to_guest() {
  Link link;
  int memfd = memfd_create("screenshot.png", MFD_CLOEXEC);
  std::string contents(300000, 'm');
  write_all(memfd, contents.data(), contents.size());
  send_message(link.host(), reply(9, 3, {memfd}), {memfd});
  close(memfd);
  Received received = receive_message(link.guest());
  g_assert_nonnull(received.message.get());
  g_assert_cmpuint(g_dbus_message_get_reply_serial(received.message.get()), ==, 3);
  g_assert_cmpuint(received.fds.size(), ==, 1);
  std::string target = fd_target(received.fds[0]);
  g_assert_cmpstr(target.c_str(), ==, "/memfd:screenshot.png (deleted)");
  g_assert_cmpint(fcntl(received.fds[0], F_GET_SEALS) & F_SEAL_WRITE, ==, F_SEAL_WRITE);
  g_assert_true(read_to_end(received.fds[0]) == contents);
}

// A message waits for its file's content, and the ones behind it for it.
void test_content_keeps_order() {
  Link link;
  char* dir = g_dir_make_tmp("sidebus-test-content-XXXXXX", nullptr);
  std::string path = std::string(dir) + "/big";
  std::string contents(8 * 1024 * 1024, 'b');
  g_assert_true(g_file_set_contents(path.c_str(), contents.data(), gssize(contents.size()), nullptr));
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  send_message(link.guest(), call(1, "ReadFd", g_variant_new("(h)", 0), {fd}), {fd});
  close(fd);
  send_message(link.guest(), call(2, "Echo", nullptr));
  Received first = receive_message(link.host());
  Received second = receive_message(link.host());
  g_assert_cmpuint(g_dbus_message_get_serial(first.message.get()), ==, 1);
  g_assert_cmpuint(g_dbus_message_get_serial(second.message.get()), ==, 2);
  g_assert_cmpuint(first.fds.size(), ==, 1);
  g_assert_true(read_to_end(first.fds[0]) == contents);
  unlink(path.c_str());
  rmdir(dir);
  g_free(dir);
}

// ---- documents ----

void test_documents_by_reference() {
  Link link;
  std::string guest_path = link.documents.add("f00d1", "report.txt", "the host's report");
  std::string host_path = std::string(link.documents.host_dir) + "/f00d1/report.txt";
  struct stat host_st;
  g_assert_cmpint(stat(host_path.c_str(), &host_st), ==, 0);
  uint32_t serial = 1;
  for (int flags : {O_RDONLY, O_RDWR, O_PATH}) {
    int fd = open(guest_path.c_str(), flags | O_CLOEXEC);
    Received received = call_through(link, serial++, fd);
    close(fd);
    struct stat st;
    g_assert_cmpint(fstat(received.fds[0], &st), ==, 0);
    // The host file itself, not a copy.
    g_assert_cmpuint(st.st_ino, ==, host_st.st_ino);
    g_assert_cmpuint(st.st_dev, ==, host_st.st_dev);
    int got = fcntl(received.fds[0], F_GETFL);
    if (flags == O_PATH)
      g_assert_cmpint(got & O_PATH, ==, O_PATH);
    else
      g_assert_cmpint(got & O_ACCMODE, ==, flags);
  }
  std::lock_guard guard(link.documents.lock);
  g_assert_cmpuint(link.documents.asked.size(), ==, 3);
  g_assert_cmpstr(link.documents.asked[0].doc_id.c_str(), ==, "f00d1");
  g_assert_cmpstr(link.documents.asked[0].path.c_str(), ==, "report.txt");
  g_assert_true(link.documents.asked[2].access == wire::FdAccess::Path);
}

void test_documents_refused() {
  Link link;
  // Not this VM's document: refused by the broker, in the resolver's words.
  std::string other = link.documents.add("dead1", "secret.txt", "x");
  int fd = open(other.c_str(), O_RDONLY | O_CLOEXEC);
  send_message(link.guest(), call(1, "ReadFd", g_variant_new("(h)", 0), {fd}), {fd});
  close(fd);
  Received answer = receive_message(link.guest());
  assert_error(answer, kAccessDenied, "names no document shared with this VM");
  // A file in the documents directory but in no document: refused by the agent.
  std::string loose = std::string(link.documents.guest_dir) + "/loose.txt";
  g_assert_true(g_file_set_contents(loose.c_str(), "x", -1, nullptr));
  fd = open(loose.c_str(), O_RDONLY | O_CLOEXEC);
  send_message(link.guest(), call(2, "ReadFd", g_variant_new("(h)", 0), {fd}), {fd});
  close(fd);
  answer = receive_message(link.guest());
  assert_error(answer, kNotSupported, "not inside a document");
  assert_echo_passes(link, 3);
}

// ---- what cannot cross ----

void test_refused_kinds() {
  Link link;
  char* dir = g_dir_make_tmp("sidebus-test-outside-XXXXXX", nullptr);
  int listening = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_un autobind = {};
  autobind.sun_family = AF_UNIX;
  g_assert_cmpint(bind(listening, reinterpret_cast<struct sockaddr*>(&autobind), sizeof(sa_family_t)), ==, 0);
  g_assert_cmpint(listen(listening, 1), ==, 0);
  struct Case {
    int fd;
    const char* kind;
  };
  const Case cases[] = {
      {eventfd(0, EFD_CLOEXEC), "an eventfd"},
      {open("/dev/null", O_RDONLY | O_CLOEXEC), "a character device"},
      {open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC), "a directory outside the VM's documents"},
      {listening, "a listening socket"},
  };
  uint32_t serial = 1;
  for (const Case& c : cases) {
    send_message(link.guest(), call(serial, "ReadFd", g_variant_new("(h)", 0), {c.fd}), {c.fd});
    close(c.fd);
    Received answer = receive_message(link.guest());
    assert_error(answer, kNotSupported, "");
    g_assert_cmpuint(g_dbus_message_get_reply_serial(answer.message.get()), ==, serial);
    g_assert_cmpstr(g_dbus_message_get_destination(answer.message.get()), ==, ":1.5");
    assert_error(answer, kNotSupported, c.kind);
    assert_echo_passes(link, serial + 100);
    serial++;
  }
  rmdir(dir);
  g_free(dir);
  // Nothing reached the broker's side but the echoes.
  g_assert_null(receive_message(link.host(), 200).message.get());
}

// A reply that carries what cannot cross becomes an error for the caller.
void test_refused_reply() {
  Link link;
  int event = eventfd(0, EFD_CLOEXEC);
  send_message(link.host(), reply(9, 7, {event}), {event});
  close(event);
  Received answer = receive_message(link.guest());
  assert_error(answer, kNotSupported, "");
  g_assert_cmpuint(g_dbus_message_get_reply_serial(answer.message.get()), ==, 7);
  g_assert_cmpstr(g_dbus_message_get_destination(answer.message.get()), ==, ":1.5");
}

// ---- limits ----

void test_limits() {
  ForwardingLimits limits;
  limits.max_channels = 2;
  limits.max_content_size = 1000;
  limits.max_content_in_flight = 1500;
  Link link(limits);
  char* dir = g_dir_make_tmp("sidebus-test-limits-XXXXXX", nullptr);
  std::string big = std::string(dir) + "/big", medium = std::string(dir) + "/medium";
  g_assert_true(g_file_set_contents(big.c_str(), std::string(2000, 'b').c_str(), -1, nullptr));
  g_assert_true(g_file_set_contents(medium.c_str(), std::string(900, 'm').c_str(), -1, nullptr));
  // One file larger than a copy may be.
  int fd = open(big.c_str(), O_RDONLY | O_CLOEXEC);
  send_message(link.guest(), call(1, "ReadFd", g_variant_new("(h)", 0), {fd}), {fd});
  close(fd);
  Received answer = receive_message(link.guest());
  assert_error(answer, kLimitsExceeded, "broker.max_content_size");
  // Two files at once, more content than may be on its way.
  int a = open(medium.c_str(), O_RDONLY | O_CLOEXEC), b = open(medium.c_str(), O_RDONLY | O_CLOEXEC);
  send_message(link.guest(), call(2, "ReadFd", g_variant_new("(h)", 0), {a, b}), {a, b});
  close(a);
  close(b);
  answer = receive_message(link.guest());
  assert_error(answer, kLimitsExceeded, "broker.max_content_in_flight");
  // Three pipes at once, more channels than the broker keeps.
  int pipes[3][2];
  std::vector<int> ends;
  for (auto& p : pipes) {
    g_assert_cmpint(pipe2(p, O_CLOEXEC), ==, 0);
    ends.push_back(p[0]);
  }
  send_message(link.guest(), call(3, "ReadFd", g_variant_new("(h)", 0), ends), ends);
  answer = receive_message(link.guest());
  assert_error(answer, kLimitsExceeded, "broker.max_channels");
  for (auto& p : pipes) {
    close(p[0]);
    close(p[1]);
  }
  // Within the limits it all works, and the refused channels were given back.
  fd = open(medium.c_str(), O_RDONLY | O_CLOEXEC);
  Received ok = call_through(link, 4, fd);
  close(fd);
  g_assert_cmpuint(read_to_end(ok.fds[0]).size(), ==, 900);
  g_assert_false(link.broker_done);
  unlink(big.c_str());
  unlink(medium.c_str());
  rmdir(dir);
  g_free(dir);
}

// A host reader that stops reading holds at most its channel's credit; the
// D-Bus stream and other channels go on; once it reads, everything arrives.
void test_stalled_reader() {
  ForwardingLimits limits;
  limits.max_channel_buffer = 64 * 1024;
  limits.max_link_buffer = 256 * 1024;
  Link link(limits);
  int stalled[2];
  g_assert_cmpint(pipe2(stalled, O_CLOEXEC), ==, 0);
  Received slow = call_through(link, 1, stalled[0]);
  close(stalled[0]);
  // The guest writes far more than the host takes.
  const size_t total = 16 * 1024 * 1024;
  std::thread writer([&] {
    std::string block(65536, 's');
    for (size_t done = 0; done < total; done += block.size()) write_all(stalled[1], block.data(), block.size());
    close(stalled[1]);
  });
  g_usleep(300 * 1000);
  // Meanwhile: D-Bus messages, and another channel, pass.
  for (uint32_t serial = 10; serial < 20; serial++) assert_echo_passes(link, serial);
  int other[2];
  g_assert_cmpint(pipe2(other, O_CLOEXEC), ==, 0);
  Received fast = call_through(link, 30, other[0]);
  close(other[0]);
  write_all(other[1], "not held up", 11);
  close(other[1]);
  std::string quick = read_to_end(fast.fds[0]);
  g_assert_cmpstr(quick.c_str(), ==, "not held up");
  g_test_message("held for the stalled channel: at most %" G_GUINT64_FORMAT " bytes, for all: %" G_GUINT64_FORMAT,
                 uint64_t(link.broker_counters().channel_buffered_peak), uint64_t(link.broker_counters().buffered_peak));
  g_assert_cmpuint(link.broker_counters().channel_buffered_peak, <=, limits.max_channel_buffer);
  g_assert_cmpuint(link.broker_counters().buffered_peak, <=, limits.max_link_buffer);
  // The reader comes back: every byte, in order.
  std::string got = read_to_end(slow.fds[0]);
  writer.join();
  g_assert_cmpuint(got.size(), ==, total);
  g_assert_true(got.find_first_not_of('s') == std::string::npos);
}

// ---- a peer that breaks the protocol ----

// The broker's relay alone, the test as a hostile agent on the link.
struct HostileLink {
  Pair link, gdbus;
  std::unique_ptr<Relay> broker;
  bool done = false;
  GError* error = nullptr;
  HostileLink() {
    Relay::Options options;
    options.pass_fds = true;
    FramedLinkOptions broker_end;
    broker_end.broker_end = true;
    options.framed = broker_end;
    options.guest_limits = GuestTrafficLimits{};
    g_autoptr(GError) start_error = nullptr;
    broker = Relay::start(
        UniqueFd(gdbus.fds[0]), "the broker's connection", UniqueFd(link.fds[1]), "link hostile", options,
        [this](Relay::Side, const GError* e) {
          done = true;
          if (e) error = g_error_copy(e);
        },
        &start_error);
    g_assert_no_error(start_error);
    gdbus.fds[0] = link.fds[1] = -1;
  }
  ~HostileLink() {
    broker.reset();
    g_clear_error(&error);
  }
  // As much as the broker takes before it hangs up.
  void send(const std::vector<uint8_t>& bytes) {
    size_t sent = 0;
    while (sent < bytes.size()) {
      struct pollfd pfd = {link.fds[0], POLLOUT, 0};
      if (poll(&pfd, 1, kPollMs) != 1) return;
      ssize_t n = ::send(link.fds[0], bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
      if (n <= 0) return;
      sent += size_t(n);
    }
  }
  void wait_done() {
    gint64 deadline = g_get_monotonic_time() + 10 * G_USEC_PER_SEC;
    while (!done) {
      g_assert_cmpint(g_get_monotonic_time(), <, deadline);
      if (!g_main_context_iteration(nullptr, FALSE)) g_usleep(1000);
    }
  }
};

std::vector<uint8_t> frame(uint32_t channel, wire::FrameKind kind, const std::vector<uint8_t>& payload = {}) {
  std::vector<uint8_t> out;
  wire::append_frame(&out, channel, kind, payload.data(), uint32_t(payload.size()));
  return out;
}
std::vector<uint8_t> credit(uint32_t channel, uint32_t amount) {
  std::vector<uint8_t> out;
  wire::append_credit(&out, channel, amount);
  return out;
}
std::vector<uint8_t> record(const wire::FdRecord& r) { return frame(0, wire::FrameKind::Fd, wire::encode_record(r)); }
std::vector<uint8_t> concat(std::initializer_list<std::vector<uint8_t>> parts) {
  std::vector<uint8_t> out;
  for (const auto& part : parts) out.insert(out.end(), part.begin(), part.end());
  return out;
}

void test_hostile_peer() {
  std::vector<uint8_t> message = call(1, "Echo", nullptr);
  std::vector<uint8_t> half(message.begin(), message.begin() + 20);
  std::vector<uint8_t> with_fd = call(2, "ReadFd", g_variant_new("(h)", 0), {0});
  std::vector<uint8_t> beyond_credit = record(wire::StreamRecord{3, wire::StreamObject::Pipe, wire::kToReceiver});
  for (int i = 0; i < 16; i++) {
    auto data = frame(3, wire::FrameKind::Data, std::vector<uint8_t>(wire::kMaxFramePayload, 1));
    beyond_credit.insert(beyond_credit.end(), data.begin(), data.end());
  }
  struct Case {
    const char* what;
    std::vector<uint8_t> bytes;
    const char* mentions;
  };
  const Case cases[] = {
      {"an unknown frame kind", {1, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0}, "unknown frame kind 9"},
      {"a frame for a channel never opened", frame(3, wire::FrameKind::Data, {1}), "never opened"},
      {"credit for a channel never opened", credit(5, 10), "never opened"},
      {"a record opening a broker channel", record(wire::StreamRecord{2, wire::StreamObject::Pipe, wire::kToReceiver}),
       "not its to open"},
      {"a channel opened twice",
       concat({record(wire::StreamRecord{3, wire::StreamObject::Pipe, wire::kToReceiver}),
               record(wire::StreamRecord{3, wire::StreamObject::Pipe, wire::kToReceiver})}),
       "again"},
      {"a record inside a message",
       concat({frame(0, wire::FrameKind::Data, half),
               record(wire::StreamRecord{3, wire::StreamObject::Pipe, wire::kToReceiver})}),
       "in the middle of a D-Bus message"},
      {"a message with more fds than records", frame(0, wire::FrameKind::Data, with_fd), "after 0 fd records"},
      // Its app end is never read (the message never comes): the pipe fills,
      // then the channel's buffer, then the credit is gone.
      {"DATA beyond a channel's credit", beyond_credit, "bytes of credit"},
      {"DATA the wrong way",
       concat({record(wire::StreamRecord{3, wire::StreamObject::Pipe, wire::kToAnnouncer}),
               frame(3, wire::FrameKind::Data, {1})}),
       "carries nothing that way"},
      {"END twice",
       concat({record(wire::StreamRecord{3, wire::StreamObject::Pipe, wire::kToReceiver}),
               frame(3, wire::FrameKind::End), frame(3, wire::FrameKind::End)}),
       "END"},
      {"a malformed record", frame(0, wire::FrameKind::Fd, {3, 0, 0, 0, 1, 0}), "stream record"},
      {"a content record larger than the wire allows",
       frame(0, wire::FrameKind::Fd, {2, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0, 0}), "content record"},
  };
  for (const Case& c : cases) {
    g_test_message("%s", c.what);
    HostileLink hostile;
    // The first frames are right: credit for the broker's D-Bus, a whole message.
    hostile.send(concat({credit(0, 1 << 22), frame(0, wire::FrameKind::Data, message)}));
    hostile.send(c.bytes);
    hostile.wait_done();
    g_assert_error(hostile.error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA);
    g_test_message("  %s", hostile.error->message);
    g_assert_nonnull(strstr(hostile.error->message, "broke the link protocol"));
    if (strstr(hostile.error->message, c.mentions) == nullptr)
      g_error("“%s” does not mention “%s”", hostile.error->message, c.mentions);
    Relay::Side side;
    g_autoptr(GError) failure = nullptr;
    g_assert_true(hostile.broker->failed(&side, &failure));
    g_assert_true(side == Relay::Side::Link);
  }
  // Random frames after a good start: the link goes, never the process.
  g_autoptr(GRand) rand = g_rand_new_with_seed(0x5eed);
  for (int round = 0; round < 50; round++) {
    HostileLink hostile;
    std::vector<uint8_t> noise(size_t(g_rand_int_range(rand, 12, 4096)));
    for (auto& byte : noise) byte = uint8_t(g_rand_int_range(rand, 0, 256));
    if (round % 2 == 0) noise[5] = noise[6] = noise[7] = 0;  // past the reserved bytes more often
    hostile.send(concat({credit(0, 1 << 22), noise}));
    shutdown(hostile.link.fds[0], SHUT_WR);
    hostile.wait_done();
  }
}

}  // namespace

int main(int argc, char** argv) {
  g_test_init(&argc, &argv, nullptr);
  g_log_set_writer_func(capture_warnings, nullptr, nullptr);
  g_test_add_func("/fd-forwarding/pipe/guest-to-host", test_pipe_guest_to_host);
  g_test_add_func("/fd-forwarding/pipe/host-to-guest", test_pipe_host_to_guest);
  g_test_add_func("/fd-forwarding/pipe/write-end", test_pipe_write_end);
  g_test_add_func("/fd-forwarding/socket/both-ways", test_socket_both_ways);
  g_test_add_func("/fd-forwarding/socket/fds-dropped", test_socket_fds_dropped);
  g_test_add_func("/fd-forwarding/kept-in-guest", test_kept_in_guest);
  g_test_add_func("/fd-forwarding/content/copies", test_content_copies);
  g_test_add_func("/fd-forwarding/content/keeps-order", test_content_keeps_order);
  g_test_add_func("/fd-forwarding/content/to-guest", test_content_to_guest);
  g_test_add_func("/fd-forwarding/documents/by-reference", test_documents_by_reference);
  g_test_add_func("/fd-forwarding/documents/refused", test_documents_refused);
  g_test_add_func("/fd-forwarding/refused/kinds", test_refused_kinds);
  g_test_add_func("/fd-forwarding/refused/reply", test_refused_reply);
  g_test_add_func("/fd-forwarding/limits", test_limits);
  g_test_add_func("/fd-forwarding/stalled-reader", test_stalled_reader);
  g_test_add_func("/fd-forwarding/hostile-peer", test_hostile_peer);
  return g_test_run();
}
