// test-link-limits.cpp — what one guest may push at the broker (DESIGN.md,
// "Security model"): the splice's limits on one side, message size and rate,
// on real socket pairs; the broker.max_messages_per_second key; and, with the
// fixture, a real broker cutting a real agent's link over a call that is too
// big, then taking the reconnected agent back.
//
// Splices here are built like the broker's end of a link: side A stands for
// the broker's GDBus connection, side B (the limited one) for the guest. The
// test talks as the guest on guest() and reads as the broker on broker().
// Timing is only ever asserted as a lower bound.
#include <fcntl.h>
#include <gio/gio.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "broker/config.hpp"
#include "splice-harness.hpp"
#include "support/topology.hpp"
#include "broker/accepted-link.hpp"
#include "link/splice.hpp"

using namespace sidebus;
using sidebus::test::receive_with_fds;
using sidebus::test::send_with_fd;
using sidebus::test::SpliceRun;

namespace {

constexpr int kPollMs = 5000;

// A link's splice: the broker on the left, the guest (limited) on the right.
struct LimitedSplice : SpliceRun {
  LimitedSplice(bool pass_fds, SpliceLimits limits) : SpliceRun(pass_fds, limits, "broker", "guest") {}
  int guest() const { return right.fds[1]; }
  int broker() const { return left.fds[1]; }
};

void write_all(int fd, const std::string& data) {
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n = write(fd, data.data() + done, data.size() - done);
    g_assert_cmpint(n, >, 0);
    done += static_cast<size_t>(n);
  }
}

// Exactly `length` bytes (fails on EOF or after kPollMs of silence).
std::string read_exact(int fd, size_t length) {
  std::string data(length, '\0');
  size_t have = 0;
  while (have < length) {
    struct pollfd pfd = {fd, POLLIN, 0};
    g_assert_cmpint(poll(&pfd, 1, kPollMs), ==, 1);
    ssize_t n = read(fd, data.data() + have, length - have);
    g_assert_cmpint(n, >, 0);
    have += static_cast<size_t>(n);
  }
  return data;
}

// Whatever arrives until EOF.
std::string read_to_eof(int fd) {
  std::string data;
  char buffer[4096];
  while (true) {
    struct pollfd pfd = {fd, POLLIN, 0};
    g_assert_cmpint(poll(&pfd, 1, kPollMs), ==, 1);
    ssize_t n = read(fd, buffer, sizeof buffer);
    g_assert_cmpint(n, >=, 0);
    if (n == 0) return data;
    data.append(buffer, static_cast<size_t>(n));
  }
}

void put_u32le(std::string& blob, size_t offset, uint32_t value) {
  for (int i = 0; i < 4; i++) blob[offset + i] = static_cast<char>((value >> (8 * i)) & 0xff);
}

// A message of exactly `total` bytes as far as framing goes: a fixed header
// (little endian, method call, no header fields) and a body of `fill`.
std::string raw_message(size_t total, uint32_t serial = 1, char fill = 'x') {
  g_assert_cmpuint(total, >=, 16);
  std::string blob("l\1\0\1", 4);
  blob.resize(16, '\0');
  put_u32le(blob, 4, static_cast<uint32_t>(total - 16));
  put_u32le(blob, 8, serial);
  put_u32le(blob, 12, 0);
  blob.append(total - 16, fill);
  return blob;
}

// A real signal, serialized by GDBus.
std::string signal_blob(const char* member, uint32_t serial, const std::string& text = "") {
  g_autoptr(GDBusMessage) message = g_dbus_message_new_signal("/dev/sidebus/Test", "dev.sidebus.Test", member);
  g_dbus_message_set_serial(message, serial);
  g_dbus_message_set_body(message, g_variant_new("(s)", text.empty() ? member : text.c_str()));
  gsize size = 0;
  g_autofree guchar* blob = g_dbus_message_to_blob(message, &size, G_DBUS_CAPABILITY_FLAGS_NONE, nullptr);
  return std::string(reinterpret_cast<char*>(blob), size);
}

// ---- message size ----

// At the limit passes byte for byte; one byte over closes the link before
// any of that message is forwarded. data: pass_fds.
void test_size_limit(gconstpointer data) {
  LimitedSplice run(GPOINTER_TO_INT(data), SpliceLimits{1024, 0});
  std::string under = raw_message(1023, 1, 'u'), at = raw_message(1024, 2, 'a');
  write_all(run.guest(), under + at);
  g_assert_true(read_exact(run.broker(), under.size()) == under);
  g_assert_true(read_exact(run.broker(), at.size()) == at);

  write_all(run.guest(), raw_message(1025, 3));
  g_assert_cmpuint(read_to_eof(run.broker()).size(), ==, 0);
  run.wait_done();
  g_assert_error(run.error, G_IO_ERROR, G_IO_ERROR_MESSAGE_TOO_LARGE);
  g_assert_true(run.ended == Splice::Side::B);
  g_assert_nonnull(strstr(run.error->message, "guest sent a D-Bus message of 1025 bytes"));
  g_assert_nonnull(strstr(run.error->message, "limit of 1024 bytes"));
}

// The size counts header fields with their padding to 8: 16 + 8 + 1001 is
// over 1024 (without the padding it would not be).
void test_size_counts_header_fields() {
  LimitedSplice run(false, SpliceLimits{1024, 0});
  std::string blob = raw_message(16 + 1001);
  put_u32le(blob, 12, 1);  // one byte of header fields, padded to 8
  blob.insert(16, std::string(8, '\0'));
  write_all(run.guest(), blob);
  g_assert_cmpuint(read_to_eof(run.broker()).size(), ==, 0);
  run.wait_done();
  g_assert_error(run.error, G_IO_ERROR, G_IO_ERROR_MESSAGE_TOO_LARGE);
  g_assert_nonnull(strstr(run.error->message, "1025 bytes"));
}

// Fixed headers that are not D-Bus close the link; nothing of them is forwarded.
void test_malformed_headers() {
  struct Case {
    const char* what;
    size_t offset;
    std::string bytes;
    const char* expected;  // in the error message
  };
  const Case cases[] = {
      {"endianness", 0, "x", "endianness byte 120"},
      {"endianness NUL", 0, std::string(1, '\0'), "endianness byte 0"},
      {"version 2", 3, "\2", "protocol version 2"},
      {"version 0", 3, std::string(1, '\0'), "protocol version 0"},
      {"type 0", 1, std::string(1, '\0'), "message type 0"},
      {"fields over 64 MiB", 12, std::string("\1\0\0\4", 4), "header fields length 67108865"},
      {"fields 4 GiB", 12, "\xff\xff\xff\xff", "header fields length 4294967295"},
      {"body 4 GiB", 4, "\xff\xff\xff\xff", "the spec allows"},
      {"total just over 128 MiB", 4, std::string("\xf1\xff\xff\x07", 4), "134217729 bytes"},
  };
  for (const Case& c : cases) {
    g_test_message("%s", c.what);
    // Without a size limit of its own, the D-Bus maximum still applies.
    LimitedSplice run(false, SpliceLimits{0, 1000});
    std::string blob = raw_message(64);
    blob.replace(c.offset, c.bytes.size(), c.bytes);
    write_all(run.guest(), blob);
    g_assert_cmpuint(read_to_eof(run.broker()).size(), ==, 0);
    run.wait_done();
    g_assert_error(run.error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA);
    g_assert_true(run.ended == Splice::Side::B);
    g_assert_nonnull(strstr(run.error->message, c.expected));
  }
  // Big endian is fine.
  LimitedSplice run(false, SpliceLimits{1024, 0});
  std::string blob = raw_message(16);
  blob[0] = 'B';
  blob.replace(4, 12, std::string("\0\0\0\0\0\0\0\1\0\0\0\0", 12));
  write_all(run.guest(), blob + raw_message(100));
  g_assert_true(read_exact(run.broker(), 116) == blob + raw_message(100));
  g_assert_false(run.done);
}

// Messages dribbled in a few bytes at a time come out whole and identical,
// and the other direction is not limited. data: pass_fds.
void test_tiny_writes(gconstpointer data) {
  LimitedSplice run(GPOINTER_TO_INT(data), SpliceLimits{4096, 10});
  std::string stream;
  for (uint32_t i = 1; i <= 5; i++) stream += signal_blob("Dribble", i, std::string(100 * i, 'a' + char(i)));
  stream += raw_message(16, 6);  // a header and nothing else
  // Read while writing: every tiny write costs a whole socket buffer entry,
  // so the buffers fill up long before the bytes do.
  std::string got;
  std::thread reader([&] { got = read_exact(run.broker(), stream.size()); });
  for (size_t i = 0; i < stream.size(); i += 3) {
    write_all(run.guest(), stream.substr(i, 3));
    if (i % 48 == 0) g_usleep(500);  // let the splice see the pieces one by one
  }
  reader.join();
  g_assert_true(got == stream);
  size_t offset = 0;
  for (uint32_t i = 1; i <= 5; i++) {
    g_autoptr(GError) error = nullptr;
    auto* bytes = reinterpret_cast<guchar*>(got.data() + offset);
    gssize size = g_dbus_message_bytes_needed(bytes, 16, &error);
    g_assert_no_error(error);
    g_autoptr(GDBusMessage) message =
        g_dbus_message_new_from_blob(bytes, static_cast<gsize>(size), G_DBUS_CAPABILITY_FLAGS_NONE, &error);
    g_assert_no_error(error);
    g_assert_cmpuint(g_dbus_message_get_serial(message), ==, i);
    offset += static_cast<size_t>(size);
  }
  // Broker → guest: neither framed by the limits nor rate limited.
  std::string back = std::string(20000, 'z');  // not a D-Bus message at all
  if (!GPOINTER_TO_INT(data)) {
    write_all(run.broker(), back);
    g_assert_true(read_exact(run.guest(), back.size()) == back);
  }
  g_assert_false(run.done);
}

// On an fd link, fds stay with their message even when they arrive inside a
// fixed header that the splice holds back until it is whole.
void test_fds_stay_with_message() {
  LimitedSplice run(true, SpliceLimits{4096, 1000});
  std::string first = signal_blob("First", 1), second = signal_blob("Second", 2), third = signal_blob("Third", 3);
  int pipes[2][2];
  for (auto& p : pipes) g_assert_cmpint(pipe2(p, O_CLOEXEC), ==, 0);
  write_all(run.guest(), first);
  // Second: its fd comes with byte 1, in the fixed header.
  write_all(run.guest(), second.substr(0, 1));
  send_with_fd(run.guest(), second[1], pipes[0][1]);
  write_all(run.guest(), second.substr(2));
  // Third: its fd comes with the body's last byte.
  write_all(run.guest(), third.substr(0, third.size() - 1));
  send_with_fd(run.guest(), third.back(), pipes[1][1]);
  close(pipes[0][1]);
  close(pipes[1][1]);

  std::string got;
  g_assert_cmpuint(receive_with_fds(run.broker(), first.size(), &got).size(), ==, 0);
  g_assert_true(got == first);
  for (int i = 0; i < 2; i++) {
    const std::string& expected = i == 0 ? second : third;
    std::vector<int> fds = receive_with_fds(run.broker(), expected.size(), &got);
    g_assert_true(got == expected);
    g_assert_cmpuint(fds.size(), ==, 1);
    char byte;
    g_assert_cmpint(write(fds[0], "!", 1), ==, 1);
    g_assert_cmpint(read(pipes[i][0], &byte, 1), ==, 1);
    g_assert_cmpint(byte, ==, '!');
    close(fds[0]);
    close(pipes[i][0]);
  }
  g_assert_false(run.done);
}

// ---- rate ----

// 10 per second, burst 10: 30 messages need at least 2 s after the splice
// started; all arrive, in order, nothing dropped.
void test_rate_limit() {
  gint64 start = g_get_monotonic_time();
  LimitedSplice run(false, SpliceLimits{0, 10});
  std::string all;
  for (uint32_t i = 1; i <= 30; i++) all += raw_message(24, i, char('a' + i % 26));
  write_all(run.guest(), all);

  std::string first_ten = read_exact(run.broker(), 10 * 24);
  gint64 ten = g_get_monotonic_time() - start;
  std::string rest = read_exact(run.broker(), 20 * 24);
  gint64 thirty = g_get_monotonic_time() - start;
  g_test_message("10 messages after %" G_GINT64_FORMAT " ms, 30 after %" G_GINT64_FORMAT " ms", ten / 1000,
                 thirty / 1000);
  g_assert_true(first_ten + rest == all);  // every message, in order
  g_assert_cmpint(thirty, >=, 1500 * 1000);
  g_assert_false(run.done);
}

// A splice waiting for tokens still stops at once when destroyed (the test
// would hang otherwise: these messages need 100 s).
void test_rate_limit_stop() {
  auto run = std::make_unique<LimitedSplice>(false, SpliceLimits{0, 10});
  std::string all;
  for (uint32_t i = 1; i <= 1000; i++) all += raw_message(16, i);
  write_all(run->guest(), all);
  read_exact(run->broker(), 10 * 16);  // the burst
  run->splice.reset();
  std::string rest = read_to_eof(run->broker());
  g_assert_cmpuint(rest.size(), <, all.size() - 10 * 16);
  g_main_context_iteration(nullptr, FALSE);
  g_assert_false(run->done);  // on_done never runs after destruction
}

// ---- configuration ----

struct ConfigDir {
  char* path = g_dir_make_tmp("sidebus-test-limits-XXXXXX", nullptr);
  ~ConfigDir() {
    g_autofree char* file = g_build_filename(path, "50-limits.json", nullptr);
    unlink(file);
    rmdir(path);
    g_free(path);
  }
  std::unique_ptr<Config> load(const std::string& json, GError** error) {
    g_autofree char* file = g_build_filename(path, "50-limits.json", nullptr);
    g_assert_true(g_file_set_contents(file, json.c_str(), -1, nullptr));
    return Config::load({path}, "", error);
  }
};

void test_config_key() {
  ConfigDir dir;
  g_autoptr(GError) error = nullptr;
  auto config = dir.load(R"({"portals": {}})", &error);
  g_assert_no_error(error);
  g_assert_cmpuint(config->max_messages_per_second(), ==, Config::kDefaultMaxMessagesPerSecond);
  g_assert_cmpuint(config->max_messages_per_second(), ==, GuestLinkLimits{}.max_messages_per_second);

  for (gint64 value : {10, 250, 1000000}) {
    g_autofree char* json = g_strdup_printf("{\"broker\": {\"max_messages_per_second\": %" G_GINT64_FORMAT "}}", value);
    config = dir.load(json, &error);
    g_assert_no_error(error);
    g_assert_cmpint(config->max_messages_per_second(), ==, value);
  }
  for (const char* value : {"9", "0", "-1", "1000001", "4294967306", "1.5", "\"1000\"", "true"}) {
    g_autofree char* json = g_strdup_printf(R"({"broker": {"max_messages_per_second": %s}})", value);
    config = dir.load(json, &error);
    g_assert_null(config);
    g_assert_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA);
    g_assert_nonnull(strstr(error->message, "broker.max_messages_per_second: expected an integer in 10..1000000"));
    g_clear_error(&error);
  }
}

// ---- a real broker and agent ----

// A guest call bigger than broker.max_message_size cuts the link, the broker
// says why, the agent comes back and calls work again.
void test_broker_cuts_oversized_call() {
  using namespace sidebus::test;
  TopologyOptions options;
  options.broker.config = {{"50-echo.json", R"({"portals":{"echo":{"enabled":true}}})"},
                           {"50-limits.json", R"({"broker":{"max_message_size":65536}})"}};
  options.broker.extra_args = {"--plugin-dir", env_path("SIDEBUS_TEST_PLUGIN_DIR")};
  Topology topology(options);
  GDBusConnection* guest = topology.guest().connection();
  auto echo = [&](const std::string& text) -> std::string {
    g_autoptr(GError) error = nullptr;
    g_autoptr(GVariant) reply = g_dbus_connection_call_sync(
        guest, "org.freedesktop.portal.Desktop", "/org/freedesktop/portal/desktop", "dev.sidebus.test.Echo", "Echo",
        g_variant_new("(s)", text.c_str()), G_VARIANT_TYPE("(s)"), G_DBUS_CALL_FLAGS_NONE, 10000, nullptr, &error);
    if (!reply) return std::string("error:") + error->message;
    const char* answer;
    g_variant_get(reply, "(&s)", &answer);
    return answer;
  };

  std::string fits(60000, 'f');
  g_assert_true(echo(fits) == fits);
  std::string log_before = topology.broker().process().log();
  g_assert_true(log_before.find("broker.max_message_size") == std::string::npos);

  std::string answer = echo(std::string(70000, 'b'));
  g_assert_true(g_str_has_prefix(answer.c_str(), "error:"));
  g_test_message("%s", answer.c_str());
  g_assert_true(wait_until([&] {
    return topology.broker().process().log().find("broker.max_message_size") != std::string::npos;
  }));
  std::string log = topology.broker().process().log();
  size_t warning = log.find("bytes, more than the limit of 65536 bytes; closed the link");
  g_assert_true(warning != std::string::npos);
  g_assert_true(log.rfind("warning: link unix:", warning) != std::string::npos);
  size_t count = 0;
  for (size_t at = log.find("broker.max_message_size"); at != std::string::npos;
       at = log.find("broker.max_message_size", at + 1))
    count++;
  g_assert_cmpuint(count, ==, 1);  // one warning

  // The agent reconnects; the portal is back and works.
  g_assert_true(wait_until([&] {
    return topology.broker().process().log().find("guest link 2 up") != std::string::npos;
  }));
  g_assert_true(topology.wait_for_guest_name("org.freedesktop.portal.Desktop"));
  g_assert_true(echo("after") == "after");
  g_assert_true(topology.agent().process().running());
}

}  // namespace

int main(int argc, char** argv) {
  g_test_init(&argc, &argv, nullptr);
  g_test_add_data_func("/link-limits/size/byte-only", GINT_TO_POINTER(0), test_size_limit);
  g_test_add_data_func("/link-limits/size/fds", GINT_TO_POINTER(1), test_size_limit);
  g_test_add_func("/link-limits/size/header-fields", test_size_counts_header_fields);
  g_test_add_func("/link-limits/malformed", test_malformed_headers);
  g_test_add_data_func("/link-limits/tiny-writes/byte-only", GINT_TO_POINTER(0), test_tiny_writes);
  g_test_add_data_func("/link-limits/tiny-writes/fds", GINT_TO_POINTER(1), test_tiny_writes);
  g_test_add_func("/link-limits/fds-stay-with-message", test_fds_stay_with_message);
  g_test_add_func("/link-limits/rate", test_rate_limit);
  g_test_add_func("/link-limits/rate-stop", test_rate_limit_stop);
  g_test_add_func("/link-limits/config", test_config_key);
  sidebus::test::add_test("/link-limits/broker-cuts-oversized-call", test_broker_cuts_oversized_call);
  return g_test_run();
}
