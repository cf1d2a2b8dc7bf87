// SPDX-License-Identifier: LGPL-2.1-or-later
// fuzz-handshake-lines.cpp — libFuzzer target for handshake-lines.hpp
// (corpus: tests/fuzz/handshake-lines/; docs/testing.md, "Fuzzing").
//
// Each input is one candidate line, given to all three parsers. The grammar
// is strict (one spelling per value), so whatever a parser accepts must
// format back to the very same line, and that line must parse back to an
// equal value. A refusal must come with an error; an acceptance without.
#include <gio/gio.h>

#include <cstdio>
#include <cstdlib>

#include "wire/handshake-lines.hpp"

using namespace sidebus::handshake;

namespace {

void check(bool condition, const char* what, std::string_view line) {
  if (condition) return;
  g_autofree char* escaped = g_strescape(std::string(line).c_str(), nullptr);
  fprintf(stderr, "fuzz-handshake-lines: %s, for the line \"%s\"\n", what, escaped);
  abort();
}

// One parser and its formatter: accepted ⇒ no error, format(parse(line)) ==
// line, parse(format(value)) == value; refused ⇒ an error.
template <typename Value, typename Equal>
void round_trip(std::string_view line, bool (*parse)(std::string_view, Value*, GError**),
                std::string (*format)(const Value&), Equal equal, const char* name) {
  Value value;
  GError* error = nullptr;
  bool accepted = parse(line, &value, &error);
  check(accepted == (error == nullptr), "an error is set exactly when a line is refused", line);
  if (!accepted) {
    check(error->domain == G_IO_ERROR, "refusals are G_IO_ERRORs", line);
    g_error_free(error);
    return;
  }
  std::string formatted = format(value);
  check(formatted == line, name, line);
  Value again;
  check(parse(formatted, &again, nullptr), "a formatted line parses", line);
  check(equal(value, again), "a formatted line parses back to the same value", line);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view line(reinterpret_cast<const char*>(data), size);
  round_trip<Hello>(
      line, parse_hello, format_hello,
      [](const Hello& a, const Hello& b) {
        return a.version == b.version && a.fds == b.fds && a.uid == b.uid && a.agent_version == b.agent_version;
      },
      "an accepted SIDEBUS line formats back to itself");
  round_trip<Reply>(
      line, parse_reply, format_reply,
      [](const Reply& a, const Reply& b) {
        return a.ok == b.ok && a.fds == b.fds && a.reason == b.reason &&
               (!a.ok || (a.version == b.version && a.framed == b.framed && a.documents_path == b.documents_path));
      },
      "an accepted OK/ERROR line formats back to itself");
  round_trip<Ready>(
      line, parse_ready, format_ready, [](const Ready& a, const Ready& b) { return a.fds == b.fds; },
      "an accepted READY line formats back to itself");
  return 0;
}
