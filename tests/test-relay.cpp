// SPDX-License-Identifier: LGPL-2.1-or-later
// test-relay.cpp — the relay between a link and a local D-Bus stream
// (core/link/relay.hpp), on real socket pairs, as the broker's end of a link
// builds it: the local side stands for the broker's GDBusConnection, the link
// side for the guest. The test writes as the guest bus on guest() (messages
// serialized by GDBus, with the SENDER field a bus would set) and reads as
// the broker on broker(); what the relay answers in the broker's place comes
// back on guest().
//
// What is asserted is what a guest client or the broker would notice: which
// messages arrive, in which order, with which fds; which calls get an error
// reply, under which name. Time is never asserted but as a lower bound.
#include <fcntl.h>
#include <gio/gio.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <algorithm>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "link/relay.hpp"
#include "socket-pair.hpp"
#include "util/gobject-ptr.hpp"

using namespace sidebus;
using sidebus::test::Pair;
using sidebus::test::send_with_fd;

namespace {

constexpr int kPollMs = 5000;

// The relay's warnings (it logs what it refuses), captured instead of being
// fatal, so tests can count them.
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
  }
  return g_log_writer_standard_streams(level, fields, n_fields, nullptr);
}

size_t warnings_mentioning(const char* text) {
  std::lock_guard lock(warnings_lock);
  return size_t(std::count_if(warnings.begin(), warnings.end(),
                              [text](const std::string& warning) { return warning.find(text) != std::string::npos; }));
}
constexpr char kLimitsExceeded[] = "org.freedesktop.DBus.Error.LimitsExceeded";

// broker_pair.fds[0] ← relay → guest_pair.fds[0]; the test talks on fds[1].
struct RelayRun {
  Pair broker_pair, guest_pair;
  std::unique_ptr<Relay> relay;
  bool done = false;
  Relay::Side ended = Relay::Side::Local;
  GError* error = nullptr;

  explicit RelayRun(Relay::Options options) {
    g_autoptr(GError) start_error = nullptr;
    relay = Relay::start(
        UniqueFd(broker_pair.fds[0]), "broker", UniqueFd(guest_pair.fds[0]), "guest", options,
        [this](Relay::Side side, const GError* e) {
          done = true;
          ended = side;
          if (e) error = g_error_copy(e);
        },
        &start_error);
    g_assert_no_error(start_error);
    broker_pair.fds[0] = guest_pair.fds[0] = -1;
  }
  ~RelayRun() {
    relay.reset();
    g_clear_error(&error);
  }
  int broker() const { return broker_pair.fds[1]; }
  int guest() const { return guest_pair.fds[1]; }

  // Iterates the main context until the relay reported its end (15 s bound).
  void wait_done() {
    gint64 deadline = g_get_monotonic_time() + 15 * G_USEC_PER_SEC;
    while (!done) {
      g_assert_cmpint(g_get_monotonic_time(), <, deadline);
      if (!g_main_context_iteration(nullptr, FALSE)) g_usleep(1000);
    }
  }
};

// The broker's end of a link with the default guest limits (or @limits).
Relay::Options broker_end(bool pass_fds = false, GuestTrafficLimits limits = {}, unsigned rate = 0) {
  Relay::Options options;
  options.pass_fds = pass_fds;
  options.guest_limits = limits;
  options.guest_messages_per_second = rate;
  return options;
}

void write_all(int fd, const std::string& data) {
  size_t done = 0;
  while (done < data.size()) {
    struct pollfd pfd = {fd, POLLOUT, 0};
    g_assert_cmpint(poll(&pfd, 1, kPollMs), ==, 1);
    ssize_t n = write(fd, data.data() + done, data.size() - done);
    g_assert_cmpint(n, >, 0);
    done += static_cast<size_t>(n);
  }
}

// Exactly @length bytes, or nullopt after @timeout_ms of silence or at EOF.
std::optional<std::string> read_exact(int fd, size_t length, int timeout_ms = kPollMs) {
  std::string data(length, '\0');
  size_t have = 0;
  while (have < length) {
    struct pollfd pfd = {fd, POLLIN, 0};
    if (poll(&pfd, 1, timeout_ms) != 1) return std::nullopt;
    ssize_t n = read(fd, data.data() + have, length - have);
    if (n <= 0) return std::nullopt;
    have += static_cast<size_t>(n);
  }
  return data;
}

// The next whole message on @fd, parsed by GDBus; nullptr if none comes
// within @timeout_ms.
GObjectPtr<GDBusMessage> read_message(int fd, int timeout_ms = kPollMs) {
  auto header = read_exact(fd, 16, timeout_ms);
  if (!header) return nullptr;
  g_autoptr(GError) error = nullptr;
  gssize total = g_dbus_message_bytes_needed(reinterpret_cast<guchar*>(header->data()), 16, &error);
  g_assert_no_error(error);
  auto rest = read_exact(fd, size_t(total) - 16);
  g_assert_true(rest.has_value());
  std::string blob = *header + *rest;
  GDBusMessage* message =
      g_dbus_message_new_from_blob(reinterpret_cast<guchar*>(blob.data()), blob.size(), G_DBUS_CAPABILITY_FLAGS_NONE,
                                   &error);
  g_assert_no_error(error);
  return GObjectPtr<GDBusMessage>(message);
}

std::string blob_of(GDBusMessage* message) {
  gsize size = 0;
  g_autoptr(GError) error = nullptr;
  g_autofree guchar* blob = g_dbus_message_to_blob(message, &size, G_DBUS_CAPABILITY_FLAGS_NONE, &error);
  g_assert_no_error(error);
  return std::string(reinterpret_cast<char*>(blob), size);
}

// A method call from guest client @sender to the broker, as the guest bus
// delivers it. @body: floating is fine; NULL: ("<member>").
std::string call_blob(const char* sender, uint32_t serial, const char* member = "Echo", GVariant* body = nullptr,
                      bool no_reply = false) {
  g_autoptr(GDBusMessage) message =
      g_dbus_message_new_method_call(":1.1", "/org/freedesktop/portal/desktop", "dev.sidebus.test.Echo", member);
  g_dbus_message_set_serial(message, serial);
  g_dbus_message_set_sender(message, sender);
  g_dbus_message_set_body(message, body != nullptr ? body : g_variant_new("(s)", member));
  if (no_reply) g_dbus_message_set_flags(message, G_DBUS_MESSAGE_FLAGS_NO_REPLY_EXPECTED);
  return blob_of(message);
}

std::string signal_blob(const char* sender, uint32_t serial, const char* member = "Ping") {
  g_autoptr(GDBusMessage) message = g_dbus_message_new_signal("/dev/sidebus/Test", "dev.sidebus.Test", member);
  g_dbus_message_set_serial(message, serial);
  g_dbus_message_set_sender(message, sender);
  g_dbus_message_set_body(message, g_variant_new("(s)", member));
  return blob_of(message);
}

// The broker's reply to guest client @destination's call @serial.
std::string reply_blob(const char* destination, uint32_t reply_serial, uint32_t serial) {
  g_autoptr(GDBusMessage) message = g_dbus_message_new();
  g_dbus_message_set_message_type(message, G_DBUS_MESSAGE_TYPE_METHOD_RETURN);
  g_dbus_message_set_serial(message, serial);
  g_dbus_message_set_reply_serial(message, reply_serial);
  g_dbus_message_set_destination(message, destination);
  g_dbus_message_set_body(message, g_variant_new("(s)", "ok"));
  return blob_of(message);
}

// Asserts that @message is the relay's error reply to call @serial of @sender.
void assert_refusal(GDBusMessage* message, const char* sender, uint32_t serial, const char* error_name,
                    const char* mentions) {
  g_assert_nonnull(message);
  g_assert_cmpint(g_dbus_message_get_message_type(message), ==, G_DBUS_MESSAGE_TYPE_ERROR);
  g_assert_cmpuint(g_dbus_message_get_reply_serial(message), ==, serial);
  g_assert_cmpstr(g_dbus_message_get_destination(message), ==, sender);
  g_assert_cmpstr(g_dbus_message_get_error_name(message), ==, error_name);
  const char* text = nullptr;
  g_variant_get(g_dbus_message_get_body(message), "(&s)", &text);
  g_test_message("%s: %s", error_name, text);
  g_assert_nonnull(strstr(text, mentions));
}

uint32_t serial_of(GDBusMessage* message) { return message != nullptr ? g_dbus_message_get_serial(message) : 0; }

// ---- messages both ways ----

// Whole messages pass both ways, also when they arrive one byte at a time;
// the agent end (no limits) the same.
void test_passes_messages(gconstpointer data) {
  bool broker = GPOINTER_TO_INT(data) != 0;
  Relay::Options options = broker ? broker_end() : Relay::Options{};
  RelayRun run(options);
  std::string first = call_blob(":1.5", 1), second = call_blob(":1.5", 2, "Other");
  std::string both = first + second;
  for (char byte : both) write_all(run.guest(), std::string(1, byte));
  g_assert_cmpuint(serial_of(read_message(run.broker()).get()), ==, 1);
  auto other = read_message(run.broker());
  g_assert_cmpstr(g_dbus_message_get_member(other.get()), ==, "Other");
  write_all(run.broker(), reply_blob(":1.5", 2, 7));
  auto reply = read_message(run.guest());
  g_assert_cmpint(g_dbus_message_get_message_type(reply.get()), ==, G_DBUS_MESSAGE_TYPE_METHOD_RETURN);
  g_assert_cmpuint(g_dbus_message_get_reply_serial(reply.get()), ==, 2);
  g_assert_false(run.done);
}

// On an fd-passing link, an fd arrives with the message it was sent with,
// even when the next message follows at once.
void test_fds_stay_with_message() {
  RelayRun run(broker_end(true));
  int pipe_fds[2];
  g_assert_cmpint(pipe2(pipe_fds, O_CLOEXEC), ==, 0);
  g_autoptr(GDBusMessage) with_fd =
      g_dbus_message_new_method_call(":1.1", "/org/freedesktop/portal/desktop", "dev.sidebus.test.Echo", "ReadFd");
  g_dbus_message_set_serial(with_fd, 1);
  g_dbus_message_set_sender(with_fd, ":1.5");
  g_dbus_message_set_body(with_fd, g_variant_new("(h)", 0));
  g_autoptr(GUnixFDList) fds = g_unix_fd_list_new_from_array(&pipe_fds[0], 1);
  g_dbus_message_set_unix_fd_list(with_fd, fds);
  std::string first = blob_of(with_fd), second = call_blob(":1.5", 2);
  // The fd goes with the first byte of its message, then both messages at once.
  int sent_fd = g_unix_fd_list_get(fds, 0, nullptr);
  send_with_fd(run.guest(), first[0], sent_fd);
  close(sent_fd);
  write_all(run.guest(), first.substr(1) + second);

  // Read as GDBus would: the fds of one message come with its bytes.
  std::string bytes;
  std::vector<int> received = sidebus::test::receive_with_fds(run.broker(), first.size(), &bytes);
  g_assert_cmpuint(received.size(), ==, 1);
  g_assert_true(bytes == first);
  // It is the same pipe: what goes in comes out of our read end.
  g_assert_cmpint(write(pipe_fds[1], "z", 1), ==, 1);
  char z = 0;
  g_assert_cmpint(read(received[0], &z, 1), ==, 1);
  g_assert_cmpint(z, ==, 'z');
  close(received[0]);
  close(pipe_fds[1]);
  g_assert_cmpuint(serial_of(read_message(run.broker()).get()), ==, 2);
}

// On a byte-only link an fd from the guest ends the link at once: nothing
// ever passes an fd it cannot carry.
void test_refuses_fds() {
  RelayRun run(broker_end(false));
  int pipe_fds[2];
  g_assert_cmpint(pipe2(pipe_fds, O_CLOEXEC), ==, 0);
  std::string call = call_blob(":1.5", 1);
  send_with_fd(run.guest(), call[0], pipe_fds[0]);
  write_all(run.guest(), call.substr(1));
  run.wait_done();
  g_assert_error(run.error, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED);
  g_assert_true(run.ended == Relay::Side::Link);
  g_assert_null(read_message(run.broker(), 200).get());  // the call never reached the broker
  close(pipe_fds[0]);
  close(pipe_fds[1]);
}

// The end of one side is passed on as a half-close once what was queued is
// written; the relay ends when both sides ended.
void test_end_is_passed_on() {
  RelayRun run(broker_end());
  write_all(run.guest(), call_blob(":1.5", 1));
  shutdown(run.guest(), SHUT_WR);
  g_assert_cmpuint(serial_of(read_message(run.broker()).get()), ==, 1);
  char byte;
  struct pollfd pfd = {run.broker(), POLLIN, 0};
  g_assert_cmpint(poll(&pfd, 1, kPollMs), ==, 1);
  g_assert_cmpint(read(run.broker(), &byte, 1), ==, 0);  // EOF
  write_all(run.broker(), reply_blob(":1.5", 1, 9));  // the other way still works
  g_assert_cmpuint(g_dbus_message_get_reply_serial(read_message(run.guest()).get()), ==, 1);
  g_assert_false(run.done);
  shutdown(run.broker(), SHUT_WR);
  run.wait_done();
  g_assert_null(run.error);
  g_assert_true(run.ended == Relay::Side::Link);
}

// A relay whose peers read nothing stops at once when destroyed, and never
// reports afterwards.
void test_destroy_stops() {
  auto run = std::make_unique<RelayRun>(broker_end());
  std::string lots;
  for (uint32_t i = 1; i <= 2000; i++) lots += call_blob(":1.5", i, "Echo", g_variant_new("(s)", std::string(2000, 'x').c_str()), true);
  // More than the socket buffers hold: the relay is blocked on the broker side.
  fcntl(run->guest(), F_SETFL, O_NONBLOCK);
  (void)!write(run->guest(), lots.data(), lots.size());
  run->relay.reset();
  g_main_context_iteration(nullptr, FALSE);
  g_assert_false(run->done);
}

// ---- what the guest may send ----

// A message above broker.max_message_size is answered with LimitsExceeded
// without the broker seeing any of it; the link stays up and the next call
// passes. One above it that wants no answer is just dropped.
void test_oversized_refused() {
  GuestTrafficLimits limits;
  limits.max_message_size = 4096;
  RelayRun run(broker_end(false, limits));
  std::string big(5000, 'b');
  write_all(run.guest(), call_blob(":1.5", 1, "Echo", g_variant_new("(s)", big.c_str())));
  write_all(run.guest(), call_blob(":1.5", 2, "Echo", g_variant_new("(s)", big.c_str()), true));
  write_all(run.guest(), call_blob(":1.5", 3));
  assert_refusal(read_message(run.guest()).get(), ":1.5", 1, kLimitsExceeded, "broker.max_message_size");
  g_assert_cmpuint(serial_of(read_message(run.broker()).get()), ==, 3);
  g_assert_null(read_message(run.guest(), 200).get());  // nothing for the no-reply call
  g_assert_cmpuint(run.relay->counters().refused, ==, 1);
  g_assert_cmpuint(run.relay->counters().dropped, ==, 1);
  g_assert_false(run.done);
}

// The limit counts the whole message, header fields included.
void test_size_counts_header() {
  std::string call = call_blob(":1.5", 1, "Echo", g_variant_new("(s)", "x"));
  GuestTrafficLimits limits;
  limits.max_message_size = call.size();
  {
    RelayRun run(broker_end(false, limits));
    write_all(run.guest(), call);
    g_assert_cmpuint(serial_of(read_message(run.broker()).get()), ==, 1);  // exactly at the limit passes
  }
  limits.max_message_size = call.size() - 1;
  RelayRun run(broker_end(false, limits));
  write_all(run.guest(), call);
  assert_refusal(read_message(run.guest()).get(), ":1.5", 1, kLimitsExceeded, "broker.max_message_size");
}

// A message whose body would make GDBus allocate more than
// broker.max_message_values values is refused before GDBus sees it.
void test_too_many_values() {
  GuestTrafficLimits limits;
  limits.max_message_values = 1000;
  RelayRun run(broker_end(false, limits));
  auto dict = [](int keys) {
    g_auto(GVariantBuilder) builder = G_VARIANT_BUILDER_INIT(G_VARIANT_TYPE_VARDICT);
    for (int i = 0; i < keys; i++)
      g_variant_builder_add(&builder, "{sv}", ("key" + std::to_string(i)).c_str(), g_variant_new_string("v"));
    return g_variant_new("(@a{sv})", g_variant_builder_end(&builder));
  };
  write_all(run.guest(), call_blob(":1.5", 1, "Echo", dict(100)));     // ~400 values
  write_all(run.guest(), call_blob(":1.5", 2, "Echo", dict(100000)));  // ~400 000 values
  // One big byte array is one value, however long.
  std::string bytes(100000, 'y');
  write_all(run.guest(), call_blob(":1.5", 3, "Echo", g_variant_new("(@ay)", g_variant_new_fixed_array(G_VARIANT_TYPE_BYTE, bytes.data(), bytes.size(), 1))));
  g_assert_cmpuint(serial_of(read_message(run.broker()).get()), ==, 1);
  assert_refusal(read_message(run.guest()).get(), ":1.5", 2, kLimitsExceeded, "broker.max_message_values");
  g_assert_cmpuint(serial_of(read_message(run.broker()).get()), ==, 3);
}

// A guest that breaks the framing loses its link: nothing of it is passed on.
void test_malformed_cuts_link() {
  const char* cases[] = {
      "X\1\0\1\0\0\0\0\1\0\0\0\0\0\0\0",  // endianness
      "l\1\0\2\0\0\0\0\1\0\0\0\0\0\0\0",  // protocol version
      "l\1\0\1\0\0\0\0\0\0\0\0\0\0\0\0",  // serial 0
      "l\1\0\1\0\0\0\0\1\0\0\0\0\0\1\0",  // 64 KiB of header fields
  };
  for (const char* bytes : cases) {
    RelayRun run(broker_end());
    write_all(run.guest(), std::string(bytes, 16) + std::string(64, '\0'));
    run.wait_done();
    g_assert_error(run.error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA);
    g_assert_true(run.ended == Relay::Side::Link);
    g_test_message("%s", run.error->message);
    g_assert_null(read_message(run.broker(), 100).get());
  }
}

// A client with too many calls the broker has not answered gets
// LimitsExceeded for the next ones; another client of the same VM is still
// served, and answers free the first client's room again.
void test_pending_calls_per_client() {
  GuestTrafficLimits limits;
  limits.max_calls_per_client = 4;
  RelayRun run(broker_end(false, limits));
  for (uint32_t serial = 1; serial <= 6; serial++) write_all(run.guest(), call_blob(":1.7", serial));
  write_all(run.guest(), call_blob(":1.8", 1));
  for (uint32_t serial = 1; serial <= 4; serial++) g_assert_cmpuint(serial_of(read_message(run.broker()).get()), ==, serial);
  auto other = read_message(run.broker());
  g_assert_cmpstr(g_dbus_message_get_sender(other.get()), ==, ":1.8");
  assert_refusal(read_message(run.guest()).get(), ":1.7", 5, kLimitsExceeded, "broker.max_pending_calls_per_client");
  assert_refusal(read_message(run.guest()).get(), ":1.7", 6, kLimitsExceeded, "broker.max_pending_calls_per_client");
  write_all(run.broker(), reply_blob(":1.7", 1, 100));
  g_assert_cmpuint(g_dbus_message_get_reply_serial(read_message(run.guest()).get()), ==, 1);
  write_all(run.guest(), call_blob(":1.7", 7));
  g_assert_cmpuint(serial_of(read_message(run.broker()).get()), ==, 7);
}

// The VM's calls together, and their bytes, are bounded too.
void test_pending_totals() {
  GuestTrafficLimits limits;
  limits.max_calls = 3;
  {
    RelayRun run(broker_end(false, limits));
    for (int client = 1; client <= 4; client++)
      write_all(run.guest(), call_blob((":1." + std::to_string(client)).c_str(), 1));
    for (int i = 0; i < 3; i++) g_assert_nonnull(read_message(run.broker()).get());
    assert_refusal(read_message(run.guest()).get(), ":1.4", 1, kLimitsExceeded, "broker.max_pending_calls");
  }
  limits = {};
  limits.max_bytes_per_client = 64 * 1024;
  RelayRun run(broker_end(false, limits));
  std::string chunk(30 * 1024, 'c');
  for (uint32_t serial = 1; serial <= 3; serial++)
    write_all(run.guest(), call_blob(":1.5", serial, "Echo", g_variant_new("(s)", chunk.c_str())));
  g_assert_nonnull(read_message(run.broker()).get());
  g_assert_nonnull(read_message(run.broker()).get());
  assert_refusal(read_message(run.guest()).get(), ":1.5", 3, kLimitsExceeded, "broker.max_pending_bytes_per_client");
}

// Signals from one client beyond its rate are dropped; the bus's own
// signals and replies are never charged.
void test_signal_flood_dropped() {
  GuestTrafficLimits limits;
  limits.signals_per_second = 10;  // burst 20
  RelayRun run(broker_end(false, limits));
  std::string flood;
  for (uint32_t serial = 1; serial <= 200; serial++) flood += signal_blob(":1.9", serial);
  for (uint32_t serial = 1; serial <= 50; serial++) flood += signal_blob("org.freedesktop.DBus", 1000 + serial, "NameOwnerChanged");
  write_all(run.guest(), flood);
  size_t from_client = 0, from_bus = 0;
  while (auto message = read_message(run.broker(), 500)) {
    if (g_strcmp0(g_dbus_message_get_sender(message.get()), ":1.9") == 0) from_client++;
    else from_bus++;
  }
  g_test_message("%zu of 200 signals passed", from_client);
  g_assert_cmpuint(from_client, >=, 20);
  g_assert_cmpuint(from_client, <, 60);
  g_assert_cmpuint(from_bus, ==, 50);
  g_assert_cmpuint(run.relay->counters().dropped, ==, 200 - from_client);
  // A flood is one warning, not one per message.
  g_assert_cmpuint(warnings_mentioning("over broker.max_signals_per_second"), ==, 1);
}

// Above broker.max_messages_per_second the guest is read more slowly:
// every message arrives, in order, no sooner than the rate allows.
void test_rate_backpressure() {
  gint64 start = g_get_monotonic_time();
  RelayRun run(broker_end(false, {}, 10));
  std::string all;
  for (uint32_t serial = 1; serial <= 30; serial++) all += call_blob(":1.5", serial, "Echo", nullptr, true);
  write_all(run.guest(), all);
  for (uint32_t serial = 1; serial <= 30; serial++) g_assert_cmpuint(serial_of(read_message(run.broker()).get()), ==, serial);
  gint64 elapsed = g_get_monotonic_time() - start;
  g_test_message("30 messages at 10/s took %" G_GINT64_FORMAT " ms", elapsed / 1000);
  g_assert_cmpint(elapsed, >=, 1500 * 1000);
  g_assert_cmpuint(run.relay->counters().throttled, >, 0);
  g_assert_false(run.done);
}

// A throttled relay still stops at once when destroyed (these messages
// would take 100 s).
void test_rate_stop() {
  auto run = std::make_unique<RelayRun>(broker_end(false, {}, 10));
  std::string all;
  for (uint32_t serial = 1; serial <= 1000; serial++) all += call_blob(":1.5", serial, "Echo", nullptr, true);
  write_all(run->guest(), all);
  g_assert_nonnull(read_message(run->broker()).get());
  run->relay.reset();
  g_main_context_iteration(nullptr, FALSE);
  g_assert_false(run->done);
}

}  // namespace

int main(int argc, char** argv) {
  g_test_init(&argc, &argv, nullptr);
  g_log_set_writer_func(capture_warnings, nullptr, nullptr);
  g_log_set_always_fatal(GLogLevelFlags(G_LOG_FATAL_MASK | G_LOG_LEVEL_CRITICAL));
  g_test_add_data_func("/relay/passes-messages/broker-end", GINT_TO_POINTER(1), test_passes_messages);
  g_test_add_data_func("/relay/passes-messages/agent-end", GINT_TO_POINTER(0), test_passes_messages);
  g_test_add_func("/relay/fds-stay-with-message", test_fds_stay_with_message);
  g_test_add_func("/relay/refuses-fds", test_refuses_fds);
  g_test_add_func("/relay/end-is-passed-on", test_end_is_passed_on);
  g_test_add_func("/relay/destroy-stops", test_destroy_stops);
  g_test_add_func("/relay/guest/oversized-refused", test_oversized_refused);
  g_test_add_func("/relay/guest/size-counts-header", test_size_counts_header);
  g_test_add_func("/relay/guest/too-many-values", test_too_many_values);
  g_test_add_func("/relay/guest/malformed-cuts-link", test_malformed_cuts_link);
  g_test_add_func("/relay/guest/pending-calls-per-client", test_pending_calls_per_client);
  g_test_add_func("/relay/guest/pending-totals", test_pending_totals);
  g_test_add_func("/relay/guest/signal-flood-dropped", test_signal_flood_dropped);
  g_test_add_func("/relay/guest/rate-backpressure", test_rate_backpressure);
  g_test_add_func("/relay/guest/rate-stop", test_rate_stop);
  return g_test_run();
}
