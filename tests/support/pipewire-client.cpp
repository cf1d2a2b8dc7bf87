// SPDX-License-Identifier: LGPL-2.1-or-later
// pipewire-client.cpp — see pipewire-client.hpp.
#include "support/pipewire-client.hpp"

#include <spa/param/video/format-utils.h>

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>

#include "backend/test-patterns.hpp"

namespace sidebus::test {

namespace patterns = sidebus::test_patterns;

struct PipeWireClient::Lock {
  explicit Lock(pw_thread_loop* loop) : loop(loop) { pw_thread_loop_lock(loop); }
  ~Lock() { pw_thread_loop_unlock(loop); }
  pw_thread_loop* loop;
};

PipeWireClient::PipeWireClient(int fd) {
  static const pw_core_events core_events = {
      .version = PW_VERSION_CORE_EVENTS,
      .error = on_core_error,
  };
  static const pw_registry_events registry_events = {
      .version = PW_VERSION_REGISTRY_EVENTS,
      .global = on_global,
      .global_remove = on_global_remove,
  };
  loop_ = pw_thread_loop_new("sidebus-test-consumer", nullptr);
  context_ = pw_context_new(pw_thread_loop_get_loop(loop_), nullptr, 0);
  g_assert_cmpint(pw_thread_loop_start(loop_), ==, 0);
  Lock lock(loop_);
  core_ = pw_context_connect_fd(context_, fd, pw_properties_new(PW_KEY_APP_NAME, "sidebus-test-app", nullptr), 0);
  g_assert_nonnull(core_);
  pw_core_add_listener(core_, &core_listener_, &core_events, this);
  registry_ = pw_core_get_registry(core_, PW_VERSION_REGISTRY, 0);
  pw_registry_add_listener(registry_, &registry_listener_, &registry_events, this);
}

PipeWireClient::~PipeWireClient() {
  // The loop's thread stops first, so nothing of this client runs while its
  // objects go. (Destroyed under the lock instead, the thread went on with
  // what the disconnect left queued once the lock was released: a SIGSEGV
  // inside libpipewire, about one run in twenty under load.)
  pw_thread_loop_stop(loop_);
  if (stream_ != nullptr) {
    spa_hook_remove(&stream_listener_);
    pw_stream_destroy(stream_);
  }
  spa_hook_remove(&registry_listener_);
  pw_proxy_destroy(reinterpret_cast<pw_proxy*>(registry_));
  spa_hook_remove(&core_listener_);
  pw_core_disconnect(core_);
  pw_context_destroy(context_);
  pw_thread_loop_destroy(loop_);
}

std::map<uint32_t, PipeWireClient::Node> PipeWireClient::nodes() {
  Lock lock(loop_);
  return nodes_;
}

bool PipeWireClient::broken() {
  Lock lock(loop_);
  return broken_;
}

void PipeWireClient::consume(uint32_t node_id, uint8_t tag) {
  static const pw_stream_events stream_events = {
      .version = PW_VERSION_STREAM_EVENTS,
      .param_changed = on_param_changed,
      .process = on_process,
  };
  Lock lock(loop_);
  tag_ = tag;
  stream_ = pw_stream_new(core_, "sidebus-test-consumer",
                          pw_properties_new(PW_KEY_MEDIA_TYPE, "Video", PW_KEY_MEDIA_CATEGORY, "Capture", nullptr));
  g_assert_nonnull(stream_);
  pw_stream_add_listener(stream_, &stream_listener_, &stream_events, this);
  uint8_t buffer[1024];
  spa_pod_builder builder = SPA_POD_BUILDER_INIT(buffer, sizeof(buffer));
  spa_rectangle size = SPA_RECTANGLE(320, 240), min_size = SPA_RECTANGLE(1, 1), max_size = SPA_RECTANGLE(8192, 8192);
  spa_fraction rate = SPA_FRACTION(30, 1), min_rate = SPA_FRACTION(0, 1), max_rate = SPA_FRACTION(1000, 1);
  const spa_pod* params[1];
  params[0] = static_cast<const spa_pod*>(spa_pod_builder_add_object(
      &builder, SPA_TYPE_OBJECT_Format, SPA_PARAM_EnumFormat, SPA_FORMAT_mediaType, SPA_POD_Id(SPA_MEDIA_TYPE_video),
      SPA_FORMAT_mediaSubtype, SPA_POD_Id(SPA_MEDIA_SUBTYPE_raw), SPA_FORMAT_VIDEO_format,
      SPA_POD_Id(SPA_VIDEO_FORMAT_BGRx), SPA_FORMAT_VIDEO_size,
      SPA_POD_CHOICE_RANGE_Rectangle(&size, &min_size, &max_size), SPA_FORMAT_VIDEO_framerate,
      SPA_POD_CHOICE_RANGE_Fraction(&rate, &min_rate, &max_rate)));
  const auto flags = static_cast<pw_stream_flags>(PW_STREAM_FLAG_AUTOCONNECT | PW_STREAM_FLAG_MAP_BUFFERS);
  g_assert_cmpint(pw_stream_connect(stream_, PW_DIRECTION_INPUT, node_id, flags, params, 1), ==, 0);
}

PipeWireClient::Frames PipeWireClient::frames() {
  Lock lock(loop_);
  return frames_;
}

bool PipeWireClient::wait_for_frames(size_t count, Timeout timeout) {
  return wait_until([&] { return frames().numbers.size() >= count; }, timeout);
}

void PipeWireClient::keep_last_frame() {
  Lock lock(loop_);
  keep_last_ = true;
}

std::vector<uint8_t> PipeWireClient::last_frame() {
  Lock lock(loop_);
  return last_frame_;
}

void PipeWireClient::on_global(void* data, uint32_t id, uint32_t, const char* type, uint32_t, const spa_dict* props) {
  auto* self = static_cast<PipeWireClient*>(data);
  if (strcmp(type, PW_TYPE_INTERFACE_Node) != 0) return;
  auto get = [props](const char* key) {
    const char* value = props != nullptr ? spa_dict_lookup(props, key) : nullptr;
    return std::string(value != nullptr ? value : "");
  };
  self->nodes_[id] = Node{get(PW_KEY_MEDIA_CLASS), get(PW_KEY_MEDIA_ROLE), get(PW_KEY_NODE_NAME)};
}

void PipeWireClient::on_global_remove(void* data, uint32_t id) { static_cast<PipeWireClient*>(data)->nodes_.erase(id); }

void PipeWireClient::on_core_error(void* data, uint32_t id, int, int, const char*) {
  if (id == PW_ID_CORE) static_cast<PipeWireClient*>(data)->broken_ = true;
}

void PipeWireClient::on_param_changed(void* data, uint32_t id, const spa_pod* param) {
  auto* self = static_cast<PipeWireClient*>(data);
  spa_video_info_raw info{};
  if (param == nullptr || id != SPA_PARAM_Format || spa_format_video_raw_parse(param, &info) < 0) return;
  self->frames_.width = info.size.width;
  self->frames_.height = info.size.height;
  // The producers' timestamps, for latencies.
  uint8_t buffer[256];
  spa_pod_builder builder = SPA_POD_BUILDER_INIT(buffer, sizeof(buffer));
  const spa_pod* params[1] = {static_cast<const spa_pod*>(spa_pod_builder_add_object(
      &builder, SPA_TYPE_OBJECT_ParamMeta, SPA_PARAM_Meta, SPA_PARAM_META_type, SPA_POD_Id(SPA_META_Header),
      SPA_PARAM_META_size, SPA_POD_Int(static_cast<int32_t>(sizeof(spa_meta_header)))))};
  pw_stream_update_params(self->stream_, params, 1);
}

void PipeWireClient::on_process(void* data) {
  auto* self = static_cast<PipeWireClient*>(data);
  pw_buffer* buffer = pw_stream_dequeue_buffer(self->stream_);
  if (buffer == nullptr) return;
  const spa_data& plane = buffer->buffer->datas[0];
  const uint32_t width = self->frames_.width, height = self->frames_.height;
  const uint32_t stride = plane.chunk->stride > 0 ? static_cast<uint32_t>(plane.chunk->stride) : width * 4;
  if (plane.data != nullptr && width >= patterns::kCounterPixels && plane.chunk->size >= stride * height) {
    const auto* pixels = static_cast<const uint8_t*>(plane.data) + plane.chunk->offset;
    self->frames_.numbers.push_back(patterns::frame_number(pixels));
    auto* header = static_cast<spa_meta_header*>(
        spa_buffer_find_meta_data(buffer->buffer, SPA_META_Header, sizeof(spa_meta_header)));
    if (header != nullptr && header->pts > 0)
      self->frames_.latencies_ns.push_back(g_get_monotonic_time() * 1000 - header->pts);
    if (!patterns::frame_matches(pixels, width, height, stride, self->tag_)) self->frames_.mismatches++;
    if (self->keep_last_) {
      self->last_frame_.resize(static_cast<size_t>(width) * height * 4);
      for (uint32_t y = 0; y < height; y++)
        memcpy(self->last_frame_.data() + static_cast<size_t>(y) * width * 4, pixels + static_cast<size_t>(y) * stride,
               static_cast<size_t>(width) * 4);
    }
  }
  pw_stream_queue_buffer(self->stream_, buffer);
}

void assert_good_frames(const PipeWireClient::Frames& frames, uint32_t width, uint32_t height, size_t at_least) {
  g_assert_cmpuint(frames.width, ==, width);
  g_assert_cmpuint(frames.height, ==, height);
  g_assert_cmpuint(frames.numbers.size(), >=, at_least);
  for (size_t i = 1; i < frames.numbers.size(); i++) g_assert_cmpuint(frames.numbers[i], >, frames.numbers[i - 1]);
  g_assert_cmpuint(frames.numbers.front(), >=, 1);
  g_assert_cmpuint(frames.mismatches, ==, 0);
}

size_t video_consumers(const HostPipeWire& pipewire) {
  const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  g_strlcpy(address.sun_path, pipewire.socket_path().c_str(), sizeof(address.sun_path));
  if (connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0) {
    close(fd);
    throw FixtureError("cannot connect to " + pipewire.socket_path());
  }
  PipeWireClient client(fd);
  wait_until([&] { return !client.nodes().empty(); }, 2s);  // the registry's first answer
  size_t consumers = 0;
  for (const auto& [id, node] : client.nodes()) consumers += node.media_class == "Stream/Input/Video";
  return consumers;
}

std::unique_ptr<ChildProcess> start_test_camera(const HostPipeWire& pipewire, uint32_t* node_id) {
  auto camera = std::make_unique<ChildProcess>(SpawnOptions{
      .name = "sidebus-test-camera",
      .argv = {env_path("SIDEBUS_TEST_CAMERA")},
      .env = pipewire.env(),
      .cwd = pipewire.dir().path(),
      .stdout_path = pipewire.dir() / "camera.log",
  });
  constexpr char kReady[] = "sidebus-test-camera: node ";
  if (!wait_until([&] { return camera->log().find(kReady) != std::string::npos || !camera->running(); }))
    throw FixtureError("sidebus-test-camera did not announce its node");
  const std::string log = camera->log();
  const size_t at = log.find(kReady);
  if (at == std::string::npos) throw FixtureError("sidebus-test-camera exited: " + log);
  *node_id = static_cast<uint32_t>(g_ascii_strtoull(log.c_str() + at + strlen(kReady), nullptr, 10));
  return camera;
}

}  // namespace sidebus::test
