// SPDX-License-Identifier: LGPL-2.1-or-later
// test-host-stream.cpp — the host half of the stream relay
// (plugins/common/host-stream.hpp) against a
// real PipeWire daemon (HostPipeWire) and a real video source painting
// frame-numbered pictures (tests/backend/video-source.hpp). No portal: the
// consumer gets a plain connection to the daemon, as it would get the host
// portal's remote.
//
// Asserted is what the relay promises: the negotiated format, every frame's
// pixels and increasing numbers, frames dropped — never queued, never
// holding the producer up — while the sink has no credit, and one end with
// a reason when the node goes, the format is beyond the limits or the
// connection is no PipeWire.
#include <pipewire/pipewire.h>
#include <spa/param/video/raw.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "backend/test-patterns.hpp"
#include "backend/video-source.hpp"
#include "host-stream.hpp"
#include "support/host-pipewire.hpp"
#include "support/process.hpp"

using namespace sidebus::test;
using sidebus::plugins::Frame;
using sidebus::plugins::FrameFormat;
using sidebus::plugins::FrameSink;
using sidebus::plugins::HostStream;
using sidebus::test_backend::VideoSource;
using sidebus::test_backend::VideoSourceOptions;
namespace patterns = sidebus::test_patterns;

namespace {

bool skip_without_pipewire() {
  g_autofree char* program = g_find_program_in_path("pipewire");
  if (program != nullptr) return false;
  g_test_skip("no pipewire program in PATH (package pipewire-bin)");
  return true;
}

// What a link channel would get.
struct Recorder : FrameSink {
  std::vector<FrameFormat> formats;
  std::vector<uint32_t> numbers;
  size_t mismatches = 0;
  bool credit = true;
  bool ended = false;
  std::string reason;

  void on_format(const FrameFormat& format) override { formats.push_back(format); }
  bool can_take_frame() override { return credit; }
  void on_frame(const Frame& frame) override {
    const FrameFormat& format = formats.back();
    g_assert_cmpuint(frame.size, ==, static_cast<size_t>(format.width) * format.height * 4);
    numbers.push_back(patterns::frame_number(frame.rows));
    if (!patterns::frame_matches(frame.rows, format.width, format.height, format.width * 4, patterns::kScreenCastTag))
      mismatches++;
  }
  void on_end(const std::string& why) override {
    g_assert_false(ended);
    ended = true;
    reason = why;
  }
};

// A plain connection to @pipewire's socket (what OpenPipeWireRemote hands out).
int connect_to(const HostPipeWire& pipewire) {
  const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  g_strlcpy(address.sun_path, pipewire.socket_path().c_str(), sizeof address.sun_path);
  g_assert_cmpint(connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address), ==, 0);
  return fd;
}

// A daemon and a 320×240 source on it.
struct Host {
  HostPipeWire pipewire;
  std::unique_ptr<VideoSource> source;
  explicit Host(uint32_t width = 320, uint32_t height = 240) {
    g_setenv("PIPEWIRE_RUNTIME_DIR", pipewire.runtime_dir().c_str(), TRUE);  // where VideoSource connects
    VideoSourceOptions options;
    options.node_name = "sidebus-test-relay-source";
    options.tag = patterns::kScreenCastTag;
    options.format = {width, height, 30};
    std::string error;
    source = VideoSource::start(options, &error);
    if (!source) throw FixtureError("no video source: " + error);
  }
};

std::unique_ptr<HostStream> consume(Host& host, Recorder& recorder, HostStream::Limits limits = {}) {
  g_autoptr(GError) error = nullptr;
  std::unique_ptr<HostStream> stream =
      HostStream::start(connect_to(host.pipewire), host.source->node_id(), &recorder, limits, &error);
  g_assert_no_error(error);
  g_assert_nonnull(stream.get());
  return stream;
}

void test_frames() {
  if (skip_without_pipewire()) return;
  Host host;
  Recorder recorder;
  std::unique_ptr<HostStream> stream = consume(host, recorder);
  g_assert_true(wait_until([&] { return recorder.numbers.size() >= 10; }));
  g_assert_cmpuint(recorder.formats.size(), ==, 1);
  g_assert_cmpuint(recorder.formats[0].spa_format, ==, SPA_VIDEO_FORMAT_BGRx);
  g_assert_cmpuint(recorder.formats[0].width, ==, 320);
  g_assert_cmpuint(recorder.formats[0].height, ==, 240);
  g_assert_cmpuint(recorder.mismatches, ==, 0);
  for (size_t i = 1; i < recorder.numbers.size(); i++) g_assert_cmpuint(recorder.numbers[i], >, recorder.numbers[i - 1]);
  g_assert_cmpuint(stream->stats().delivered, ==, recorder.numbers.size());
  g_assert_false(recorder.ended);
}

// Without credit frames are dropped, and the producer goes on regardless;
// with credit again the newest frames come, not a backlog.
void test_backpressure() {
  if (skip_without_pipewire()) return;
  Host host;
  Recorder recorder;
  std::unique_ptr<HostStream> stream = consume(host, recorder);
  g_assert_true(wait_until([&] { return recorder.numbers.size() >= 3; }));
  recorder.credit = false;
  const size_t before = recorder.numbers.size();
  const uint32_t last = recorder.numbers.back();
  const uint32_t sent = host.source->frames_sent();
  g_assert_true(wait_until([&] { return stream->stats().dropped >= 10; }));
  g_assert_cmpuint(recorder.numbers.size(), ==, before);
  g_assert_cmpuint(host.source->frames_sent(), >=, sent + 10);  // never held up
  recorder.credit = true;
  g_assert_true(wait_until([&] { return recorder.numbers.size() >= before + 3; }));
  g_assert_cmpuint(recorder.numbers[before], >, last + 10);  // the newest, not a backlog
  g_assert_cmpuint(recorder.mismatches, ==, 0);
}

// The host's node goes (the session closed): the stream ends, once, saying so.
void test_source_goes() {
  if (skip_without_pipewire()) return;
  Host host;
  Recorder recorder;
  std::unique_ptr<HostStream> stream = consume(host, recorder);
  g_assert_true(wait_until([&] { return recorder.numbers.size() >= 3; }));
  host.source.reset();
  g_assert_true(wait_until([&] { return recorder.ended; }));
  g_assert_true(recorder.reason.find("went away") != std::string::npos);
  g_assert_true(stream->ended());
  const size_t frames = recorder.numbers.size();
  wait_until([] { return false; }, 200ms);
  g_assert_cmpuint(recorder.numbers.size(), ==, frames);
}

// A stream beyond the relay's limits is refused with the reason.
void test_beyond_limits() {
  if (skip_without_pipewire()) return;
  Host host;
  Recorder recorder;
  std::unique_ptr<HostStream> stream = consume(host, recorder, {.max_width = 100, .max_height = 100, .negotiation_timeout_ms = 1000});
  g_assert_true(wait_until([&] { return recorder.ended; }, 20s));
  g_test_message("ended: %s", recorder.reason.c_str());
  g_assert_true(recorder.reason.find("100x100") != std::string::npos);
  g_assert_cmpuint(recorder.numbers.size(), ==, 0);
}

// An fd that is no PipeWire remote: an end with the reason, no crash.
void test_not_pipewire() {
  if (skip_without_pipewire()) return;
  int fds[2];
  g_assert_cmpint(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), ==, 0);
  Recorder recorder;
  g_autoptr(GError) error = nullptr;
  std::unique_ptr<HostStream> stream =
      HostStream::start(fds[0], 42, &recorder, {.negotiation_timeout_ms = 1000}, &error);
  if (stream == nullptr) {
    g_assert_nonnull(error);
  } else {
    close(fds[1]);  // the "daemon" hangs up
    g_assert_true(wait_until([&] { return recorder.ended; }, 20s));
    g_test_message("ended: %s", recorder.reason.c_str());
  }
}

// The sink may drop the stream from on_end.
void test_destroyed_from_on_end() {
  if (skip_without_pipewire()) return;
  Host host;
  struct Dropper : Recorder {
    std::unique_ptr<HostStream> stream;
    void on_end(const std::string& why) override {
      Recorder::on_end(why);
      stream.reset();
    }
  } dropper;
  g_autoptr(GError) error = nullptr;
  dropper.stream = HostStream::start(connect_to(host.pipewire), host.source->node_id(), &dropper, {}, &error);
  g_assert_no_error(error);
  g_assert_true(wait_until([&] { return dropper.numbers.size() >= 2; }));
  host.source.reset();
  g_assert_true(wait_until([&] { return dropper.ended; }));
  g_assert_null(dropper.stream.get());
}

}  // namespace

int main(int argc, char** argv) {
  g_test_init(&argc, &argv, nullptr);
  // The video source runs in this process and warns when a consumer's
  // formats do not fit (test_beyond_limits wants exactly that): only
  // criticals are fatal here.
  g_log_set_always_fatal(static_cast<GLogLevelFlags>(G_LOG_FATAL_MASK | G_LOG_LEVEL_CRITICAL));
  pw_init(&argc, &argv);
  add_test("/host-stream/frames", test_frames);
  add_test("/host-stream/backpressure", test_backpressure);
  add_test("/host-stream/source-goes", test_source_goes);
  add_test("/host-stream/beyond-limits", test_beyond_limits);
  add_test("/host-stream/not-pipewire", test_not_pipewire);
  add_test("/host-stream/destroyed-from-on-end", test_destroyed_from_on_end);
  return g_test_run();
}
