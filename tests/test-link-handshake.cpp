// SPDX-License-Identifier: LGPL-2.1-or-later
// test-link-handshake.cpp — the link handshake parser/formatter (strictness,
// round trips, a deterministic fuzz loop), its blocking line I/O, the
// exchange between both ends over a socketpair, and --listen/--connect
// address parsing.
#include <fcntl.h>
#include <gio/gio.h>
#include <linux/vm_sockets.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <string>
#include <thread>
#include <vector>

#include "link/handshake.hpp"
#include "link/address.hpp"
#include "link/connect.hpp"
#include "link/listener.hpp"

using namespace sidebus;
using namespace sidebus::handshake;

namespace {

// (g_assert_cmpstr keeps a pointer past the end of the full expression, so
// temporaries must not be passed to it directly)
void assert_same(const std::string& a, const std::string& b) { g_assert_cmpstr(a.c_str(), ==, b.c_str()); }

// ---- round trips ----

void test_hello_round_trip() {
  const Hello cases[] = {
      {1, false, 0, "0.1.0"},
      {1, true, 1000, "1.2.3-rc1+git~x_y"},
      {1, true, UINT32_MAX, std::string(kMaxAgentVersionLength, 'a')},
      {2, false, 1000, "0.2.0"},
      {2, true, 0, "x"},
  };
  for (const auto& hello : cases) {
    std::string line = format_hello(hello);
    Hello parsed;
    g_autoptr(GError) error = nullptr;
    g_assert_true(parse_hello(line, &parsed, &error));
    g_assert_no_error(error);
    g_assert_cmpuint(parsed.version, ==, hello.version);
    g_assert_cmpint(parsed.fds, ==, hello.fds);
    g_assert_cmpuint(parsed.uid, ==, hello.uid);
    g_assert_cmpstr(parsed.agent_version.c_str(), ==, hello.agent_version.c_str());
    assert_same(format_hello(parsed), line);
  }
  assert_same(format_hello({1, true, 1000, "0.1.0"}), "SIDEBUS 1 fds=1 uid=1000 agent=0.1.0\n");
  // An invalid version string is never sent as is.
  std::string line = format_hello({1, false, 5, "bad version\n"});
  Hello parsed;
  g_assert_true(parse_hello(line, &parsed, nullptr));
}

Reply ok_reply(uint32_t version, bool fds, bool framed = false, std::string docs = {}) {
  Reply reply;
  reply.ok = true;
  reply.version = version;
  reply.fds = fds;
  reply.framed = framed;
  reply.documents_path = std::move(docs);
  return reply;
}

void test_reply_round_trip() {
  assert_same(format_reply(ok_reply(1, true)), "OK 1 fds=1\n");
  assert_same(format_reply(ok_reply(1, false)), "OK 1 fds=0\n");
  assert_same(format_reply(ok_reply(2, true)), "OK 2 fds=1 framed=0 docs=-\n");
  assert_same(format_reply(ok_reply(2, false, true, "/run/sidebus/documents")),
              "OK 2 fds=0 framed=1 docs=/run/sidebus/documents\n");
  // Every byte but [A-Za-z0-9/._~-] is escaped, in upper case; it parses back.
  assert_same(format_reply(ok_reply(2, false, true, "/home/u\xc3\xa9/My Docs/100%,x")),
              "OK 2 fds=0 framed=1 docs=/home/u%C3%A9/My%20Docs/100%25%2Cx\n");
  for (const char* path : {"/", "/run/sidebus/documents", "/a b/%/\xff\x01", "/~user/a-b_c.d"}) {
    Reply parsed;
    g_autoptr(GError) error = nullptr;
    std::string line = format_reply(ok_reply(2, false, true, path));
    g_assert_true(parse_reply(line, &parsed, &error));
    g_assert_no_error(error);
    g_assert_cmpuint(parsed.version, ==, 2);
    g_assert_true(parsed.framed);
    g_assert_cmpstr(parsed.documents_path.c_str(), ==, path);
    assert_same(format_reply(parsed), line);
  }
  // A path that cannot be sent (relative, NUL, too long) is sent as none.
  for (std::string path : {std::string("relative"), std::string("/a\0b", 4), "/" + std::string(500, 'x')}) {
    Reply parsed;
    g_assert_true(parse_reply(format_reply(ok_reply(2, false, true, path)), &parsed, nullptr));
    g_assert_cmpstr(parsed.documents_path.c_str(), ==, "");
  }
  // Framed and fds at once is not a thing: formatted as fds only.
  assert_same(format_reply(ok_reply(2, true, true, "/d")), "OK 2 fds=1 framed=0 docs=/d\n");
  assert_same(format_reply({false, false, "busy"}), "ERROR busy\n");
  for (std::string reason : {"busy", "unsupported protocol version, this broker speaks 1", "two  spaces ", "x"}) {
    Reply parsed;
    g_autoptr(GError) error = nullptr;
    std::string line = format_reply({false, false, reason});
    g_assert_true(parse_reply(line, &parsed, &error));
    g_assert_no_error(error);
    g_assert_false(parsed.ok);
    g_assert_cmpstr(parsed.reason.c_str(), ==, reason.c_str());
    assert_same(format_reply(parsed), line);
  }
  for (bool fds : {false, true}) {
    for (uint32_t version : {1u, 2u}) {
      Reply parsed;
      g_assert_true(parse_reply(format_reply(ok_reply(version, fds)), &parsed, nullptr));
      g_assert_true(parsed.ok);
      g_assert_cmpint(parsed.fds, ==, fds);
      g_assert_cmpuint(parsed.version, ==, version);
    }
  }
  // Reasons that cannot be sent are made sendable.
  for (std::string reason : {std::string(), std::string("tab\there\xff"), std::string(1000, 'r')}) {
    Reply parsed;
    std::string line = format_reply({false, false, reason});
    g_assert_true(parse_reply(line, &parsed, nullptr));
    g_assert_cmpuint(line.size(), <=, kMaxLineLength);
  }
}

void test_ready_round_trip() {
  for (bool fds : {false, true}) {
    Ready parsed;
    std::string line = format_ready({fds});
    g_assert_true(parse_ready(line, &parsed, nullptr));
    g_assert_cmpint(parsed.fds, ==, fds);
    assert_same(format_ready(parsed), line);
  }
  assert_same(format_ready({true}), "READY fds=1\n");
}

// ---- hostile input ----

struct Bad {
  std::string line;
  GIOErrorEnum code;
};

constexpr GIOErrorEnum kInvalid = G_IO_ERROR_INVALID_DATA;

void expect_rejected(bool (*parse)(std::string_view, void*, GError**), const std::vector<Bad>& cases) {
  for (const auto& bad : cases) {
    g_autoptr(GError) error = nullptr;
    bool ok = parse(bad.line, nullptr, &error);
    if (ok || !g_error_matches(error, G_IO_ERROR, bad.code)) {
      g_autofree char* escaped = g_strescape(bad.line.c_str(), nullptr);
      g_test_message("line “%s” (%zu bytes): %s", escaped, bad.line.size(), error ? error->message : "accepted");
    }
    g_assert_false(ok);
    g_assert_error(error, G_IO_ERROR, bad.code);
    g_assert_nonnull(strstr(error->message, bad.code == kInvalid ? "invalid handshake line" : "protocol version"));
  }
}

// Adapters so one helper drives all three parsers.
bool hello_adapter(std::string_view line, void*, GError** error) {
  Hello out;
  return parse_hello(line, &out, error);
}
bool reply_adapter(std::string_view line, void*, GError** error) {
  Reply out;
  return parse_reply(line, &out, error);
}
bool ready_adapter(std::string_view line, void*, GError** error) {
  Ready out;
  return parse_ready(line, &out, error);
}

void test_hello_hostile() {
  std::string valid = "SIDEBUS 1 fds=1 uid=1000 agent=0.1.0\n";
  std::string overlong = "SIDEBUS 1 fds=1 uid=1000 agent=" + std::string(600, 'a') + "\n";
  std::vector<Bad> cases = {
      {"", kInvalid},
      {"\n", kInvalid},
      {valid.substr(0, valid.size() - 1), kInvalid},  // missing newline
      {overlong, kInvalid},
      {std::string(kMaxLineLength + 1, 'S'), kInvalid},
      {"SIDEBUS 1 fds=1 uid=1000 agent=0.1.0\r\n", kInvalid},
      {"SIDEBUS 1 fds=1 uid=1000 agent=0.1.0\n\n", kInvalid},
      {std::string("SIDEBUS 1 fds=1 uid=10\0"
                   "00 agent=0.1.0\n",
                   37),
       kInvalid},
      {"SIDEBUS 1 fds=1 uid=1000 agent=0.1.\xc3\xa9\n", kInvalid},
      {"SIDEBUS 1 fds=1 uid=1000 agent=\x7f\n", kInvalid},
      {"sidebus 1 fds=1 uid=1000 agent=0.1.0\n", kInvalid},
      {"SIDEBUS\n", kInvalid},
      {"SIDEBUS 3 fds=1 uid=1000 agent=0.1.0\n", G_IO_ERROR_NOT_SUPPORTED},
      {"SIDEBUS 0 fds=1 uid=1000 agent=0.1.0\n", G_IO_ERROR_NOT_SUPPORTED},
      {"SIDEBUS 01 fds=1 uid=1000 agent=0.1.0\n", kInvalid},
      {"SIDEBUS -1 fds=1 uid=1000 agent=0.1.0\n", kInvalid},
      {"SIDEBUS 1 fds=2 uid=1000 agent=0.1.0\n", kInvalid},
      {"SIDEBUS 1 fds= uid=1000 agent=0.1.0\n", kInvalid},
      {"SIDEBUS 1 fds=01 uid=1000 agent=0.1.0\n", kInvalid},
      {"SIDEBUS 1 fds=1 uid=4294967296 agent=0.1.0\n", kInvalid},
      {"SIDEBUS 1 fds=1 uid=99999999999999999999 agent=0.1.0\n", kInvalid},
      {"SIDEBUS 1 fds=1 uid=-1 agent=0.1.0\n", kInvalid},
      {"SIDEBUS 1 fds=1 uid=+1 agent=0.1.0\n", kInvalid},
      {"SIDEBUS 1 fds=1 uid=0x10 agent=0.1.0\n", kInvalid},
      {"SIDEBUS 1 fds=1 uid=x10 agent=0.1.0\n", kInvalid},
      {"SIDEBUS 1 fds=1 uid=10x agent=0.1.0\n", kInvalid},
      {"SIDEBUS 1 fds=1 uid=007 agent=0.1.0\n", kInvalid},
      {"SIDEBUS 1 fds=1 uid= agent=0.1.0\n", kInvalid},
      {"SIDEBUS 1 fds=1 uid=1000 agent=\n", kInvalid},
      {"SIDEBUS 1 fds=1 uid=1000 agent=a/b\n", kInvalid},
      {"SIDEBUS 1 fds=1 uid=1000 agent=" + std::string(kMaxAgentVersionLength + 1, 'a') + "\n", kInvalid},
      {"SIDEBUS 1 fds=1 fds=1 uid=1000 agent=0.1.0\n", kInvalid},        // duplicate
      {"SIDEBUS 1 fds=1 uid=1000 uid=1000 agent=0.1.0\n", kInvalid},     // duplicate
      {"SIDEBUS 1 fds=1 uid=1000 agent=0.1.0 agent=0.1.0\n", kInvalid},  // duplicate
      {"SIDEBUS 1 fds=1 uid=1000 agent=0.1.0 color=blue\n", kInvalid},   // unknown
      {"SIDEBUS 1 fds=1 gid=1000 agent=0.1.0\n", kInvalid},              // unknown
      {"SIDEBUS 1 uid=1000 fds=1 agent=0.1.0\n", kInvalid},              // order
      {"SIDEBUS 1 fds=1 uid=1000\n", kInvalid},                          // missing
      {"SIDEBUS 1 fds=1 uid1000 agent=0.1.0\n", kInvalid},
      {"SIDEBUS 1  fds=1 uid=1000 agent=0.1.0\n", kInvalid},
      {" SIDEBUS 1 fds=1 uid=1000 agent=0.1.0\n", kInvalid},
      {"SIDEBUS 1 fds=1 uid=1000 agent=0.1.0 \n", kInvalid},
      {"SIDEBUS\t1 fds=1 uid=1000 agent=0.1.0\n", kInvalid},
  };
  expect_rejected(hello_adapter, cases);
  Hello parsed;
  g_assert_true(parse_hello(valid, &parsed, nullptr));
}

void test_reply_hostile() {
  std::vector<Bad> cases = {
      {"", kInvalid},
      {"OK 1 fds=1", kInvalid},
      {"OK 1 fds=1\r\n", kInvalid},
      {"OK 3 fds=1\n", G_IO_ERROR_NOT_SUPPORTED},
      {"OK 0 fds=1\n", G_IO_ERROR_NOT_SUPPORTED},
      {"OK 2 fds=1\n", kInvalid},                               // version 2 has more fields
      {"OK 1 fds=0 framed=1 docs=/d\n", kInvalid},              // version 1 has not
      {"OK 2 fds=1 framed=1 docs=/d\n", kInvalid},              // framed only without fds
      {"OK 2 fds=0 framed=2 docs=/d\n", kInvalid},
      {"OK 2 fds=0 docs=/d framed=1\n", kInvalid},              // order
      {"OK 2 fds=0 framed=1\n", kInvalid},                      // missing
      {"OK 2 fds=0 framed=1 docs=\n", kInvalid},                // empty
      {"OK 2 fds=0 framed=1 docs=relative\n", kInvalid},        // not absolute
      {"OK 2 fds=0 framed=1 docs=--\n", kInvalid},
      {"OK 2 fds=0 framed=1 docs=/a%2\n", kInvalid},            // cut escape
      {"OK 2 fds=0 framed=1 docs=/a%\n", kInvalid},
      {"OK 2 fds=0 framed=1 docs=/a%c3%a9\n", kInvalid},        // lower case
      {"OK 2 fds=0 framed=1 docs=/a%41\n", kInvalid},           // 'A' needs no escape
      {"OK 2 fds=0 framed=1 docs=/a%2F\n", kInvalid},           // nor '/'
      {"OK 2 fds=0 framed=1 docs=/a%00b\n", kInvalid},          // NUL
      {"OK 2 fds=0 framed=1 docs=/a+b\n", kInvalid},            // '+' must be escaped
      {"OK 2 fds=0 framed=1 docs=/a%GGb\n", kInvalid},
      {"OK 2 fds=0 framed=1 docs=/" + std::string(kMaxDocsFieldLength, 'a') + "\n", kInvalid},
      {"OK 2 fds=0 framed=1 docs=/d extra=1\n", kInvalid},
      {"OK 1 fds=2\n", kInvalid},
      {"OK 1 fds=1 fds=1\n", kInvalid},
      {"OK 1 fds=1 extra=1\n", kInvalid},
      {"OK 1\n", kInvalid},
      {"OK fds=1\n", kInvalid},
      {"OK 4294967297 fds=1\n", kInvalid},
      {"ok 1 fds=1\n", kInvalid},
      {"ERROR\n", kInvalid},
      {"ERROR \n", kInvalid},
      {"ERROR " + std::string(kMaxReasonLength + 1, 'r') + "\n", kInvalid},
      {"ERROR caf\xc3\xa9\n", kInvalid},
      {std::string("ERROR a\0b\n", 10), kInvalid},
      {"ERRORS busy\n", kInvalid},
      {"READY fds=1\n", kInvalid},
  };
  expect_rejected(reply_adapter, cases);
}

void test_ready_hostile() {
  std::vector<Bad> cases = {
      {"READY\n", kInvalid},           {"READY fds=1", kInvalid},
      {"READY fds=-0\n", kInvalid},    {"READY fds=1 fds=0\n", kInvalid},
      {"READY fds=1 x=1\n", kInvalid}, {"READY fds=1\x80\n", kInvalid},
      {"READY=1\n", kInvalid},         {"OK 1 fds=1\n", kInvalid},
  };
  expect_rejected(ready_adapter, cases);
}

// ---- fuzz: mutate valid lines; never crash, accepted lines re-format identically ----

std::string mutate(GRand* rand, std::string line) {
  static const char interesting[] = {'\0', '\n', '\r', ' ', '=', '0', '1', '9', '-', '+', 'a', '\x7f', '\x80', '\xff'};
  int rounds = g_rand_int_range(rand, 1, 4);
  for (int r = 0; r < rounds; r++) {
    size_t size = line.size();
    size_t at = size ? static_cast<size_t>(g_rand_int_range(rand, 0, static_cast<gint32>(size))) : 0;
    char byte = g_rand_boolean(rand) ? interesting[g_rand_int_range(rand, 0, sizeof interesting)]
                                     : static_cast<char>(g_rand_int_range(rand, 0, 256));
    switch (g_rand_int_range(rand, 0, 7)) {
      case 0:
        if (size) line[at] = byte;
        break;
      case 1:
        line.insert(at, 1, byte);
        break;
      case 2:
        if (size) line.erase(at, 1);
        break;
      case 3:
        line.resize(at);
        break;
      case 4:
        line.insert(at, line.substr(at, g_rand_int_range(rand, 1, 16)));
        break;  // duplicate a piece
      case 5:
        line.insert(at, std::string(g_rand_int_range(rand, 1, 600), byte));
        break;
      case 6:
        line.insert(at, g_rand_boolean(rand) ? " fds=1" : " uid=4294967295");
        break;
    }
  }
  return line;
}

void test_fuzz() {
  g_autoptr(GRand) rand = g_rand_new_with_seed(0x51deb05);
  const std::string seeds[] = {
      "SIDEBUS 1 fds=1 uid=1000 agent=0.1.0\n",
      "SIDEBUS 1 fds=0 uid=0 agent=x\n",
      "OK 1 fds=1\n",
      "OK 1 fds=0\n",
      "OK 2 fds=0 framed=1 docs=/run/sidebus/documents\n",
      "OK 2 fds=1 framed=0 docs=-\n",
      "OK 2 fds=0 framed=1 docs=/a%20b%C3%A9\n",
      "SIDEBUS 2 fds=0 uid=1000 agent=0.2.0\n",
      "ERROR busy\n",
      "READY fds=1\n",
      "READY fds=0\n",
  };
  int iterations = g_test_slow() ? 200000 : 20000;
  int accepted = 0;
  for (int i = 0; i < iterations; i++) {
    std::string line = mutate(rand, seeds[i % G_N_ELEMENTS(seeds)]);
    Hello hello;
    Reply reply;
    Ready ready;
    GError* error = nullptr;
    if (parse_hello(line, &hello, &error)) {
      assert_same(format_hello(hello), line);
      accepted++;
    } else {
      g_assert_nonnull(error);
      g_clear_error(&error);
    }
    if (parse_reply(line, &reply, &error)) {
      assert_same(format_reply(reply), line);
      accepted++;
    } else {
      g_assert_nonnull(error);
      g_clear_error(&error);
    }
    if (parse_ready(line, &ready, &error)) {
      assert_same(format_ready(ready), line);
      accepted++;
    } else {
      g_assert_nonnull(error);
      g_clear_error(&error);
    }
  }
  g_test_message("%d of %d mutated lines accepted", accepted, iterations);
  g_assert_cmpint(accepted, >, 0);
}

// ---- line I/O ----

struct Pair {
  int fds[2];
  Pair() { g_assert_cmpint(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), ==, 0); }
  ~Pair() {
    close(fds[0]);
    close(fds[1]);
  }
};

void test_read_line() {
  Pair pair;
  const char data[] = "SIDEBUS 1 fds=1 uid=1 agent=x\nl\0\0\1rest";
  g_assert_cmpint(write(pair.fds[0], data, sizeof data - 1), ==, static_cast<ssize_t>(sizeof data - 1));
  std::string line;
  g_autoptr(GError) error = nullptr;
  gint64 deadline = g_get_monotonic_time() + G_USEC_PER_SEC;
  g_assert_true(read_line(pair.fds[1], "\n", kMaxLineLength, deadline, "test peer", &line, &error));
  g_assert_no_error(error);
  g_assert_cmpstr(line.c_str(), ==, "SIDEBUS 1 fds=1 uid=1 agent=x\n");
  // Not one byte more was consumed.
  char rest[16];
  g_assert_cmpint(read(pair.fds[1], rest, sizeof rest), ==, 8);
  g_assert_cmpint(memcmp(rest, "l\0\0\1rest", 8), ==, 0);
}

void test_read_line_bounds() {
  Pair pair;
  std::string endless(kMaxLineLength + 10, 'x');
  g_assert_cmpint(write(pair.fds[0], endless.data(), endless.size()), ==, static_cast<ssize_t>(endless.size()));
  std::string line;
  g_autoptr(GError) error = nullptr;
  gint64 deadline = g_get_monotonic_time() + G_USEC_PER_SEC;
  g_assert_false(read_line(pair.fds[1], "\n", kMaxLineLength, deadline, "test peer", &line, &error));
  g_assert_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA);
  g_assert_nonnull(strstr(error->message, "test peer"));
  g_clear_error(&error);

  // Silence until the deadline.
  Pair quiet;
  gint64 start = g_get_monotonic_time();
  g_assert_false(read_line(quiet.fds[1], "\n", kMaxLineLength, start + 100 * 1000, "silent peer", &line, &error));
  g_assert_error(error, G_IO_ERROR, G_IO_ERROR_TIMED_OUT);
  g_assert_cmpint(g_get_monotonic_time() - start, >=, 100 * 1000);
  g_clear_error(&error);

  // EOF mid-line.
  Pair closing;
  g_assert_cmpint(write(closing.fds[0], "SIDE", 4), ==, 4);
  shutdown(closing.fds[0], SHUT_WR);
  g_assert_false(
      read_line(closing.fds[1], "\n", kMaxLineLength, start + G_USEC_PER_SEC, "closing peer", &line, &error));
  g_assert_error(error, G_IO_ERROR, G_IO_ERROR_CONNECTION_CLOSED);
}

// ---- both ends of the exchange ----

void test_exchange(gconstpointer data) {
  // Bits: agent transport fds, broker transport fds, agent READY fds, agent offers protocol 1.
  int bits = GPOINTER_TO_INT(data);
  bool agent_transport = bits & 1, broker_transport = bits & 2, ready = bits & 4;
  uint32_t version = (bits & 8) ? 1 : 2;
  Pair pair;
  gint64 deadline = g_get_monotonic_time() + 5 * G_USEC_PER_SEC;
  bool broker_ok = false;
  Terms broker_terms;
  Hello hello;
  std::thread broker([&] {
    g_autoptr(GError) error = nullptr;
    BrokerOffer offer{true, "/run/sidebus/documents"};
    broker_ok = broker_begin(pair.fds[0], broker_transport, offer, deadline, "agent", &hello, &broker_terms, &error) &&
                broker_finish(pair.fds[0], deadline, "agent", &broker_terms, &error);
    g_assert_no_error(error);
  });
  Terms agent_terms;
  g_autoptr(GError) error = nullptr;
  g_assert_true(
      agent_begin(pair.fds[1], agent_transport, 4242, "9.9", version, deadline, "broker", &agent_terms, &error));
  g_assert_no_error(error);
  bool native = agent_transport && broker_transport;
  g_assert_cmpuint(agent_terms.version, ==, version);
  g_assert_cmpint(agent_terms.native_fds, ==, native);
  // Protocol 2 frames a byte-only link and says where the documents are.
  g_assert_cmpint(agent_terms.framed, ==, version == 2 && !native);
  g_assert_cmpstr(agent_terms.documents_path.c_str(), ==, version == 2 ? "/run/sidebus/documents" : "");
  bool carries = agent_terms.native_fds || agent_terms.framed;
  g_assert_true(agent_finish(pair.fds[1], carries && ready, deadline, "broker", &error));
  broker.join();
  g_assert_true(broker_ok);
  g_assert_cmpuint(broker_terms.version, ==, version);
  g_assert_cmpint(broker_terms.native_fds, ==, native);
  g_assert_cmpint(broker_terms.framed, ==, agent_terms.framed);
  g_assert_cmpint(broker_terms.fds, ==, carries && ready);
  g_assert_cmpuint(hello.uid, ==, 4242);
  g_assert_cmpuint(hello.version, ==, version);
  g_assert_cmpstr(hello.agent_version.c_str(), ==, "9.9");
}

// A broker that does not frame (forward_fds off) serves protocol 2 agents a
// raw byte-only link; READY fds=1 is then a lie.
void test_exchange_unframed() {
  Pair pair;
  gint64 deadline = g_get_monotonic_time() + 5 * G_USEC_PER_SEC;
  std::thread broker([&] {
    Hello hello;
    Terms terms;
    g_autoptr(GError) error = nullptr;
    g_assert_true(broker_begin(pair.fds[0], false, BrokerOffer{false, "/d"}, deadline, "agent", &hello, &terms, &error));
    g_assert_false(terms.framed);
    g_assert_false(broker_finish(pair.fds[0], deadline, "agent", &terms, &error));
    g_assert_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA);
  });
  Terms terms;
  g_assert_true(agent_begin(pair.fds[1], true, 1, "1", 2, deadline, "broker", &terms, nullptr));
  g_assert_false(terms.framed);
  g_assert_false(terms.native_fds);
  g_assert_true(agent_finish(pair.fds[1], true, deadline, "broker", nullptr));
  broker.join();
}

void test_exchange_refused() {
  Pair pair;
  gint64 deadline = g_get_monotonic_time() + 5 * G_USEC_PER_SEC;
  std::thread broker([&] {
    g_autoptr(GError) error = nullptr;
    Hello hello;
    Terms terms;
    g_assert_false(broker_begin(pair.fds[0], true, BrokerOffer{}, deadline, "agent", &hello, &terms, &error));
    g_assert_error(error, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED);
  });
  const char future[] = "SIDEBUS 7 fds=1 uid=1 agent=7.0 shiny=yes\n";
  g_assert_true(write_all(pair.fds[1], future, deadline, "broker", nullptr));
  std::string line;
  g_assert_true(read_line(pair.fds[1], "\n", kMaxLineLength, deadline, "broker", &line, nullptr));
  broker.join();
  Reply reply;
  g_assert_true(parse_reply(line, &reply, nullptr));
  g_assert_false(reply.ok);
  g_assert_true(g_str_has_prefix(reply.reason.c_str(), kUnsupportedVersionReason));

  // The agent side reports the reason.
  Pair busy;
  handshake::broker_refuse(busy.fds[0], "busy");
  Terms terms;
  g_autoptr(GError) error = nullptr;
  g_assert_false(agent_begin(busy.fds[1], false, 1, "1", 2, deadline, "the broker at unix:/x", &terms, &error));
  g_assert_error(error, G_IO_ERROR, G_IO_ERROR_CONNECTION_REFUSED);
  g_assert_nonnull(strstr(error->message, "busy"));
  g_assert_nonnull(strstr(error->message, "unix:/x"));
}

// A protocol 1 broker (what it answered to anything but SIDEBUS 1): a
// protocol 2 agent gets NOT_SUPPORTED, and then speaks 1 to it.
void test_exchange_old_broker() {
  for (uint32_t version : {2u, 1u}) {
    Pair pair;
    gint64 deadline = g_get_monotonic_time() + 5 * G_USEC_PER_SEC;
    std::thread old_broker([&] {
      std::string line;
      g_assert_true(read_line(pair.fds[0], "\n", kMaxLineLength, deadline, "agent", &line, nullptr));
      if (g_str_has_prefix(line.c_str(), "SIDEBUS 1 ")) {
        g_assert_true(write_all(pair.fds[0], "OK 1 fds=0\n", deadline, "agent", nullptr));
      } else {
        g_assert_true(write_all(pair.fds[0], "ERROR unsupported protocol version, this broker speaks 1\n", deadline,
                                "agent", nullptr));
      }
    });
    Terms terms;
    g_autoptr(GError) error = nullptr;
    bool ok = agent_begin(pair.fds[1], false, 1, "1", version, deadline, "the broker", &terms, &error);
    old_broker.join();
    if (version == 2) {
      g_assert_false(ok);
      g_assert_error(error, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED);
    } else {
      g_assert_no_error(error);
      g_assert_true(ok);
      g_assert_cmpuint(terms.version, ==, 1);
      g_assert_false(terms.framed);
    }
  }
  // A broker answering a newer version than offered is broken.
  Pair pair;
  gint64 deadline = g_get_monotonic_time() + 5 * G_USEC_PER_SEC;
  g_assert_true(write_all(pair.fds[0], "OK 2 fds=0 framed=1 docs=-\n", deadline, "agent", nullptr));
  Terms terms;
  g_autoptr(GError) error = nullptr;
  g_assert_false(agent_begin(pair.fds[1], false, 1, "1", 1, deadline, "the broker", &terms, &error));
  g_assert_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA);
}

// ---- addresses ----

void test_listen_addresses() {
  struct Good {
    const char* address;
    LinkAddress::Kind kind;
    const char* path;
    uint32_t port;
    int fd;
    bool nofds;
    int mode;
  };
  const Good good[] = {
      {"unix:/run/vm.sock", LinkAddress::Kind::Unix, "/run/vm.sock", 0, -1, false, -1},
      {"unix:relative.sock", LinkAddress::Kind::Unix, "relative.sock", 0, -1, false, -1},
      {"unix:/tmp/fc.vsock_1234,nofds", LinkAddress::Kind::Unix, "/tmp/fc.vsock_1234", 0, -1, true, -1},
      {"unix:/tmp/a,mode=0666", LinkAddress::Kind::Unix, "/tmp/a", 0, -1, false, 0666},
      {"unix:/tmp/a,nofds,mode=660", LinkAddress::Kind::Unix, "/tmp/a", 0, -1, true, 0660},
      {"vsock:1234", LinkAddress::Kind::Vsock, "", 1234, -1, false, -1},
      {"vsock:0", LinkAddress::Kind::Vsock, "", 0, -1, false, -1},
      {"vsock:4294967294", LinkAddress::Kind::Vsock, "", 4294967294u, -1, false, -1},
      {"fd:3", LinkAddress::Kind::Fd, "", 0, 3, false, -1},
      {"fd:0,nofds", LinkAddress::Kind::Fd, "", 0, 0, true, -1},
      {"systemd", LinkAddress::Kind::Systemd, "", 0, -1, false, -1},
      {"systemd,nofds", LinkAddress::Kind::Systemd, "", 0, -1, true, -1},
  };
  for (const auto& g : good) {
    LinkAddress parsed;
    g_autoptr(GError) error = nullptr;
    g_assert_true(parse_listen_address(g.address, &parsed, &error));
    g_assert_no_error(error);
    g_assert_true(parsed.kind == g.kind);
    g_assert_cmpstr(parsed.path.c_str(), ==, g.path);
    g_assert_cmpuint(parsed.port, ==, g.port);
    g_assert_cmpint(parsed.fd, ==, g.fd);
    g_assert_cmpint(parsed.nofds, ==, g.nofds);
    g_assert_cmpint(parsed.mode, ==, g.mode);
  }
  const char* bad[] = {
      "",
      "unix:",
      "unix",
      "/run/vm.sock",
      "tcp:localhost:1",
      "vsock:",
      "vsock:-1",
      "vsock:4294967295",
      "vsock:99999999999",
      "vsock:2:1234",
      "vsock:0x10",
      "vsock:1234,nofds",
      "fd:",
      "fd:-3",
      "fd:three",
      "fd:3,mode=0600",
      "systemd:3",
      "systemdx",
      "virtio-serial:/dev/virtio-ports/x",
      "unix:/a,b",
      "unix:/a,nofds,nofds",
      "unix:/a,mode=0999",
      "unix:/a,mode=",
      "unix:/a,mode=17777",
      "unix:/a,",
      "UNIX:/a",
  };
  std::string long_path = "unix:/" + std::string(200, 'p');
  std::vector<std::string> all(std::begin(bad), std::end(bad));
  all.push_back(long_path);
  for (const auto& address : all) {
    LinkAddress parsed;
    g_autoptr(GError) error = nullptr;
    if (parse_listen_address(address, &parsed, &error)) g_test_message("accepted “%s”", address.c_str());
    g_assert_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT);
    g_assert_nonnull(strstr(error->message, ("“" + address + "”").c_str()));
  }
}

void test_connect_addresses() {
  LinkAddress parsed;
  g_assert_true(parse_connect_address("vsock:1234", &parsed, nullptr));
  g_assert_true(parsed.kind == LinkAddress::Kind::Vsock);
  g_assert_cmpuint(parsed.cid, ==, 2);
  g_assert_cmpuint(parsed.port, ==, 1234);
  g_assert_true(parse_connect_address("vsock:3:1", &parsed, nullptr));
  g_assert_cmpuint(parsed.cid, ==, 3);
  g_assert_cmpuint(parsed.port, ==, 1);
  g_assert_true(parse_connect_address("unix:/run/sidebus.sock,nofds", &parsed, nullptr));
  g_assert_true(parsed.kind == LinkAddress::Kind::Unix);
  g_assert_true(parsed.nofds);
  g_assert_true(parse_connect_address("virtio-serial:/dev/virtio-ports/sidebus", &parsed, nullptr));
  g_assert_true(parsed.kind == LinkAddress::Kind::VirtioSerial);
  g_assert_cmpstr(parsed.path.c_str(), ==, "/dev/virtio-ports/sidebus");

  for (const char* address : {"", "vsock:", "vsock:2:", "vsock::1", "vsock:a:1", "vsock:1:2:3", "vsock:02:1",
                              "virtio-serial:", "virtio-serial:/dev/x,nofds", "fd:3", "systemd", "unix:/a,mode=0600",
                              "unix:/a,fds", "tcp:host=x"}) {
    g_autoptr(GError) error = nullptr;
    if (parse_connect_address(address, &parsed, &error)) g_test_message("accepted “%s”", address);
    g_assert_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT);
    g_assert_nonnull(strstr(error->message, (std::string("“") + address + "”").c_str()));
  }
}

void test_connect_errors() {
  bool fds = true;
  g_autoptr(GError) error = nullptr;
  UniqueFd fd = connect_link("unix:/nonexistent/sidebus.sock", &fds, &error);
  g_assert_false(fd);
  g_assert_nonnull(error);
  g_assert_nonnull(strstr(error->message, "unix:/nonexistent/sidebus.sock"));
  g_clear_error(&error);
  fd = connect_link("virtio-serial:/nonexistent/port", &fds, &error);
  g_assert_false(fd);
  g_assert_nonnull(strstr(error->message, "virtio-serial:/nonexistent/port"));
}

// ---- the listener ----

struct Accepted {
  int count = 0;
  bool carries_fds = false;
  std::string transport;
  UniqueFd last;
};

std::unique_ptr<Listener> listen_on(const std::vector<std::string>& addresses, Accepted* accepted, GError** error) {
  return Listener::create(
      addresses,
      [accepted](UniqueFd fd, bool carries_fds, std::string transport) {
        accepted->count++;
        accepted->carries_fds = carries_fds;
        accepted->transport = transport;
        accepted->last = std::move(fd);
      },
      error);
}

void spin_until_accepted(Accepted* accepted, int count) {
  gint64 deadline = g_get_monotonic_time() + 5 * G_USEC_PER_SEC;
  while (accepted->count < count) {
    g_assert_cmpint(g_get_monotonic_time(), <, deadline);
    g_main_context_iteration(nullptr, TRUE);
  }
}

int connect_unix(const std::string& path) {
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_un sun = {};
  sun.sun_family = AF_UNIX;
  g_strlcpy(sun.sun_path, path.c_str(), sizeof sun.sun_path);
  if (connect(fd, reinterpret_cast<struct sockaddr*>(&sun), sizeof sun) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

void test_listen_unix() {
  g_autofree char* directory = g_dir_make_tmp("sidebus-test-listen-XXXXXX", nullptr);
  std::string path = std::string(directory) + "/link.sock";
  std::string regular = std::string(directory) + "/file";
  g_assert_true(g_file_set_contents(regular.c_str(), "keep me", -1, nullptr));
  Accepted accepted;
  g_autoptr(GError) error = nullptr;

  // A path that is not a socket is never removed.
  g_assert_null(listen_on({"unix:" + regular}, &accepted, &error));
  g_assert_error(error, G_IO_ERROR, G_IO_ERROR_EXISTS);
  g_assert_nonnull(strstr(error->message, regular.c_str()));
  g_assert_true(g_file_test(regular.c_str(), G_FILE_TEST_IS_REGULAR));
  g_clear_error(&error);

  // A stale socket file is replaced; mode= is applied.
  {
    int stale = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un sun = {};
    sun.sun_family = AF_UNIX;
    g_strlcpy(sun.sun_path, path.c_str(), sizeof sun.sun_path);
    g_assert_cmpint(bind(stale, reinterpret_cast<struct sockaddr*>(&sun), sizeof sun), ==, 0);
    close(stale);
  }
  auto listener = listen_on({"unix:" + path + ",mode=0666"}, &accepted, &error);
  g_assert_no_error(error);
  struct stat st;
  g_assert_cmpint(stat(path.c_str(), &st), ==, 0);
  g_assert_cmpint(st.st_mode & 0777, ==, 0666);

  // A live one is not taken over.
  Accepted other;
  g_assert_null(listen_on({"unix:" + path}, &other, &error));
  g_assert_error(error, G_IO_ERROR, G_IO_ERROR_ADDRESS_IN_USE);
  g_clear_error(&error);
  spin_until_accepted(&accepted, 1);  // (the probe connection)

  int client = connect_unix(path);
  g_assert_cmpint(client, >=, 0);
  spin_until_accepted(&accepted, 2);
  g_assert_true(accepted.carries_fds);
  assert_same(accepted.transport, "unix:" + path);
  g_assert_cmpint(write(client, "x", 1), ==, 1);
  char byte;
  g_assert_cmpint(read(accepted.last.get(), &byte, 1), ==, 1);
  close(client);

  listener.reset();
  g_assert_false(g_file_test(path.c_str(), G_FILE_TEST_EXISTS));

  // ,nofds marks the link byte-only.
  listener = listen_on({"unix:" + path + ",nofds"}, &accepted, &error);
  g_assert_no_error(error);
  client = connect_unix(path);
  spin_until_accepted(&accepted, 3);
  g_assert_false(accepted.carries_fds);
  close(client);
  listener.reset();
  accepted.last.reset();
  unlink(regular.c_str());
  rmdir(directory);
}

void test_listen_vsock() {
  int probe = socket(AF_VSOCK, SOCK_STREAM, 0);
  if (probe < 0) {
    g_test_skip("no AF_VSOCK here");
    return;
  }
  close(probe);
  Accepted accepted;
  g_autoptr(GError) error = nullptr;
  auto listener = listen_on({"vsock:47111"}, &accepted, &error);
  if (!listener && g_error_matches(error, G_IO_ERROR, G_IO_ERROR_ADDRESS_IN_USE)) {
    g_test_skip("vsock port in use");
    return;
  }
  g_assert_no_error(error);
  // Two listeners on one port cannot be.
  Accepted other;
  g_assert_null(listen_on({"vsock:47111"}, &other, &error));
  g_assert_nonnull(strstr(error->message, "vsock:47111"));
}

void test_listen_fd() {
  // A listening socket passed as fd:N.
  int sockets[2];
  int listening = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  g_autofree char* directory = g_dir_make_tmp("sidebus-test-fd-XXXXXX", nullptr);
  std::string path = std::string(directory) + "/s";
  struct sockaddr_un sun = {};
  sun.sun_family = AF_UNIX;
  g_strlcpy(sun.sun_path, path.c_str(), sizeof sun.sun_path);
  g_assert_cmpint(bind(listening, reinterpret_cast<struct sockaddr*>(&sun), sizeof sun), ==, 0);
  g_assert_cmpint(listen(listening, 4), ==, 0);
  g_assert_cmpint(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sockets), ==, 0);
  Accepted accepted;
  g_autoptr(GError) error = nullptr;
  auto listener =
      listen_on({"fd:" + std::to_string(listening), "fd:" + std::to_string(sockets[0]) + ",nofds"}, &accepted, &error);
  g_assert_no_error(error);
  // The connected one arrives as a link of its own, byte-only as asked.
  spin_until_accepted(&accepted, 1);
  g_assert_false(accepted.carries_fds);
  g_assert_cmpint(accepted.last.get(), ==, sockets[0]);
  accepted.last.reset();
  close(sockets[1]);
  int client = connect_unix(path);
  spin_until_accepted(&accepted, 2);
  g_assert_true(accepted.carries_fds);
  assert_same(accepted.transport, "fd:" + std::to_string(listening));
  close(client);
  listener.reset();  // closes the inherited listening fd; does not unlink what it did not create
  g_assert_true(g_file_test(path.c_str(), G_FILE_TEST_EXISTS));
  g_assert_cmpint(fcntl(listening, F_GETFD), <, 0);
  unlink(path.c_str());
  rmdir(directory);

  g_assert_null(listen_on({"fd:987"}, &accepted, &error));
  g_assert_nonnull(strstr(error->message, "fd:987"));
  g_clear_error(&error);
  int pipe_fds[2];
  g_assert_cmpint(pipe(pipe_fds), ==, 0);
  g_assert_null(listen_on({"fd:" + std::to_string(pipe_fds[0])}, &accepted, &error));
  g_assert_nonnull(strstr(error->message, "not a socket"));
  close(pipe_fds[0]);
  close(pipe_fds[1]);
}

// systemd socket activation: LISTEN_PID/LISTEN_FDS, fds from 3 (in a
// subprocess, where fd 3 is still free).
void test_listen_systemd() {
  if (!g_test_subprocess()) {
    g_test_trap_subprocess(nullptr, 0, G_TEST_SUBPROCESS_INHERIT_STDERR);
    g_test_trap_assert_passed();
    return;
  }
  g_autoptr(GError) error = nullptr;
  Accepted accepted;
  g_setenv("LISTEN_PID", "1", TRUE);
  g_setenv("LISTEN_FDS", "1", TRUE);
  g_assert_null(listen_on({"systemd"}, &accepted, &error));  // not for us
  g_assert_nonnull(strstr(error->message, "systemd"));
  g_clear_error(&error);
  if (fcntl(3, F_GETFD) >= 0) {
    g_test_skip("fd 3 is in use");
    return;
  }
  int pair[2];
  g_assert_cmpint(socketpair(AF_UNIX, SOCK_STREAM, 0, pair), ==, 0);
  if (pair[0] != 3) {  // (socketpair may well have picked 3 itself)
    g_assert_cmpint(dup2(pair[0], 3), ==, 3);
    close(pair[0]);
  }
  g_autofree char* pid = g_strdup_printf("%d", getpid());
  g_setenv("LISTEN_PID", pid, TRUE);
  g_setenv("LISTEN_FDNAMES", "link", TRUE);
  auto listener = listen_on({"systemd,nofds"}, &accepted, &error);
  g_assert_no_error(error);
  g_assert_null(g_getenv("LISTEN_PID"));  // not inherited by children
  g_assert_null(g_getenv("LISTEN_FDS"));
  g_assert_null(g_getenv("LISTEN_FDNAMES"));
  spin_until_accepted(&accepted, 1);
  g_assert_false(accepted.carries_fds);
  g_assert_cmpint(fcntl(accepted.last.get(), F_GETFD) & FD_CLOEXEC, ==, FD_CLOEXEC);
  close(pair[1]);
}

}  // namespace

int main(int argc, char** argv) {
  g_test_init(&argc, &argv, nullptr);
  g_test_add_func("/handshake/hello/round-trip", test_hello_round_trip);
  g_test_add_func("/handshake/reply/round-trip", test_reply_round_trip);
  g_test_add_func("/handshake/ready/round-trip", test_ready_round_trip);
  g_test_add_func("/handshake/hello/hostile", test_hello_hostile);
  g_test_add_func("/handshake/reply/hostile", test_reply_hostile);
  g_test_add_func("/handshake/ready/hostile", test_ready_hostile);
  g_test_add_func("/handshake/fuzz", test_fuzz);
  g_test_add_func("/handshake/io/read-line", test_read_line);
  g_test_add_func("/handshake/io/bounds", test_read_line_bounds);
  for (int bits = 0; bits < 16; bits++) {
    g_autofree char* path =
        g_strdup_printf("/handshake/exchange/v%d,agent-fds=%d,broker-fds=%d,ready-fds=%d", (bits & 8) ? 1 : 2,
                        bits & 1, (bits >> 1) & 1, (bits >> 2) & 1);
    g_test_add_data_func(path, GINT_TO_POINTER(bits), test_exchange);
  }
  g_test_add_func("/handshake/exchange/unframed", test_exchange_unframed);
  g_test_add_func("/handshake/exchange/refused", test_exchange_refused);
  g_test_add_func("/handshake/exchange/old-broker", test_exchange_old_broker);
  g_test_add_func("/address/listen", test_listen_addresses);
  g_test_add_func("/address/connect", test_connect_addresses);
  g_test_add_func("/address/connect-errors", test_connect_errors);
  g_test_add_func("/transport/unix", test_listen_unix);
  g_test_add_func("/transport/vsock", test_listen_vsock);
  g_test_add_func("/transport/fd", test_listen_fd);
  g_test_add_func("/transport/systemd", test_listen_systemd);
  return g_test_run();
}
