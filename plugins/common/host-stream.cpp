// SPDX-License-Identifier: LGPL-2.1-or-later
// host-stream.cpp — see host-stream.hpp. Everything runs on the pw_loop
// this file iterates from the thread-default GLib main context; the stream
// is not RT_PROCESS, so process() runs there too. The sink hears the end
// from an idle callback, never from inside a PipeWire callback, so it may
// destroy the HostStream then.
#include "host-stream.hpp"
#include "pw-loop-source.hpp"

#include <pipewire/pipewire.h>
#include <spa/param/video/format-utils.h>
#include <spa/utils/result.h>
#include <unistd.h>

#include <cstring>
#include <mutex>
#include <utility>
#include <vector>

namespace sidebus::plugins {
namespace {

// The formats a guest producer can offer as they are: 4 bytes a pixel.
constexpr uint32_t kFormats[] = {SPA_VIDEO_FORMAT_BGRx, SPA_VIDEO_FORMAT_BGRA, SPA_VIDEO_FORMAT_RGBx,
                                 SPA_VIDEO_FORMAT_RGBA, SPA_VIDEO_FORMAT_xRGB, SPA_VIDEO_FORMAT_ARGB,
                                 SPA_VIDEO_FORMAT_xBGR, SPA_VIDEO_FORMAT_ABGR};

}  // namespace

struct HostStream::Impl {
  FrameSink* sink = nullptr;
  Limits limits;
  uint32_t node_id = 0;
  pw_loop* loop = nullptr;
  GSource* loop_source = nullptr;
  GSource* end_source = nullptr;      // the pending on_end()
  GSource* negotiation_timeout = nullptr;  // until the first format
  pw_context* context = nullptr;
  pw_core* core = nullptr;
  spa_hook core_listener{};
  pw_registry* registry = nullptr;
  spa_hook registry_listener{};
  pw_stream* stream = nullptr;
  spa_hook stream_listener{};
  FrameFormat format;
  bool have_format = false;
  bool ended = false;
  std::string end_reason;
  uint64_t next_seq = 0;
  std::vector<uint8_t> packed;
  Stats stats;

  ~Impl();
  void cancel_negotiation_timeout() {
    if (negotiation_timeout == nullptr) return;
    g_source_destroy(negotiation_timeout);
    g_source_unref(std::exchange(negotiation_timeout, nullptr));
  }
  void end(std::string reason);
  void on_format(const spa_pod* param);
  void on_buffer(pw_buffer* buffer);
  bool connect(int fd, GError** error);
};

namespace {

void on_core_error(void* data, uint32_t id, int, int res, const char* message) {
  if (id != PW_ID_CORE) return;
  static_cast<HostStream::Impl*>(data)->end(std::string("the connection to the host's PipeWire broke: ") +
                                            (message != nullptr ? message : spa_strerror(res)));
}

void on_global_remove(void* data, uint32_t id) {
  auto* self = static_cast<HostStream::Impl*>(data);
  if (id == self->node_id) self->end("the host's stream node went away");
}

void on_state_changed(void* data, pw_stream_state, pw_stream_state state, const char* error) {
  auto* self = static_cast<HostStream::Impl*>(data);
  if (state == PW_STREAM_STATE_ERROR)
    self->end(std::string("the host's stream failed: ") + (error != nullptr ? error : "no reason given"));
  else if (state == PW_STREAM_STATE_UNCONNECTED && self->have_format)
    self->end("the host's stream was disconnected");
}

void on_param_changed(void* data, uint32_t id, const spa_pod* param) {
  if (id == SPA_PARAM_Format && param != nullptr) static_cast<HostStream::Impl*>(data)->on_format(param);
}

void on_process(void* data) {
  auto* self = static_cast<HostStream::Impl*>(data);
  pw_buffer* buffer = pw_stream_dequeue_buffer(self->stream);
  if (buffer == nullptr) return;
  self->on_buffer(buffer);
  pw_stream_queue_buffer(self->stream, buffer);  // at once: the host is never held up
}

const pw_core_events kCoreEvents = {.version = PW_VERSION_CORE_EVENTS, .error = on_core_error};
const pw_registry_events kRegistryEvents = {.version = PW_VERSION_REGISTRY_EVENTS, .global_remove = on_global_remove};
const pw_stream_events kStreamEvents = {
    .version = PW_VERSION_STREAM_EVENTS,
    .state_changed = on_state_changed,
    .param_changed = on_param_changed,
    .process = on_process,
};

}  // namespace

HostStream::Impl::~Impl() {
  cancel_negotiation_timeout();
  if (end_source != nullptr) {
    g_source_destroy(end_source);
    g_source_unref(end_source);
  }
  if (stream != nullptr) {
    spa_hook_remove(&stream_listener);
    pw_stream_destroy(stream);
  }
  if (registry != nullptr) {
    spa_hook_remove(&registry_listener);
    pw_proxy_destroy(reinterpret_cast<pw_proxy*>(registry));
  }
  if (core != nullptr) {
    spa_hook_remove(&core_listener);
    pw_core_disconnect(core);
  }
  if (context != nullptr) pw_context_destroy(context);
  if (loop_source != nullptr) {
    g_source_destroy(loop_source);
    g_source_unref(loop_source);
  }
  if (loop != nullptr) {
    pw_loop_leave(loop);
    pw_loop_destroy(loop);
  }
}

void HostStream::Impl::end(std::string reason) {
  if (ended) return;
  ended = true;
  end_reason = std::move(reason);
  if (stream != nullptr) pw_stream_set_active(stream, false);
  end_source = g_idle_source_new();
  g_source_set_callback(
      end_source,
      [](gpointer data) -> gboolean {
        auto* self = static_cast<Impl*>(data);
        g_source_unref(std::exchange(self->end_source, nullptr));
        self->sink->on_end(self->end_reason);  // may destroy the HostStream: touch nothing after
        return G_SOURCE_REMOVE;
      },
      this, nullptr);
  g_source_attach(end_source, g_main_context_get_thread_default());
}

void HostStream::Impl::on_format(const spa_pod* param) {
  spa_video_info_raw info{};
  if (spa_format_video_raw_parse(param, &info) < 0) {
    end("the host's stream sent a format that is not raw video");
    return;
  }
  if (info.size.width == 0 || info.size.height == 0 || info.size.width > limits.max_width ||
      info.size.height > limits.max_height) {
    end("the host's stream is " + std::to_string(info.size.width) + "x" + std::to_string(info.size.height) +
        ", beyond the relay's limit of " + std::to_string(limits.max_width) + "x" + std::to_string(limits.max_height));
    return;
  }
  cancel_negotiation_timeout();
  FrameFormat agreed{info.format, info.size.width, info.size.height, info.framerate.num,
                     info.framerate.denom != 0 ? info.framerate.denom : 1};
  have_format = true;
  if (!(agreed == format)) {
    format = agreed;
    sink->on_format(format);
  }
  // Shared memory only: the relay reads the pixels on the CPU.
  uint8_t buffer[1024];
  spa_pod_builder builder = SPA_POD_BUILDER_INIT(buffer, sizeof(buffer));
  const spa_pod* params[2];
  params[0] = static_cast<const spa_pod*>(spa_pod_builder_add_object(
      &builder, SPA_TYPE_OBJECT_ParamBuffers, SPA_PARAM_Buffers, SPA_PARAM_BUFFERS_buffers,
      SPA_POD_CHOICE_RANGE_Int(4, 2, 8), SPA_PARAM_BUFFERS_blocks, SPA_POD_Int(1), SPA_PARAM_BUFFERS_dataType,
      SPA_POD_CHOICE_FLAGS_Int((1 << SPA_DATA_MemFd) | (1 << SPA_DATA_MemPtr))));
  params[1] = static_cast<const spa_pod*>(spa_pod_builder_add_object(
      &builder, SPA_TYPE_OBJECT_ParamMeta, SPA_PARAM_Meta, SPA_PARAM_META_type, SPA_POD_Id(SPA_META_Header),
      SPA_PARAM_META_size, SPA_POD_Int(sizeof(spa_meta_header))));
  pw_stream_update_params(stream, params, 2);
}

void HostStream::Impl::on_buffer(pw_buffer* buffer) {
  if (ended || !have_format) return;
  spa_buffer* spa = buffer->buffer;
  if (spa->n_datas < 1) {
    stats.skipped++;
    return;
  }
  const spa_data& plane = spa->datas[0];
  if (plane.type == SPA_DATA_DmaBuf) {
    end("the host's stream delivers DMA-BUF buffers, which the relay cannot read");
    return;
  }
  auto* header = static_cast<spa_meta_header*>(spa_buffer_find_meta_data(spa, SPA_META_Header, sizeof(spa_meta_header)));
  if (plane.data == nullptr || plane.chunk == nullptr || plane.chunk->size == 0 ||
      (plane.chunk->flags & SPA_CHUNK_FLAG_CORRUPTED) != 0 ||
      (header != nullptr && (header->flags & SPA_META_HEADER_FLAG_CORRUPTED) != 0)) {
    stats.skipped++;
    return;
  }
  const size_t row = static_cast<size_t>(format.width) * 4;
  const size_t stride = plane.chunk->stride > 0 ? static_cast<size_t>(plane.chunk->stride) : row;
  const size_t offset = plane.chunk->offset;
  // Every byte read lies inside the mapped plane.
  if (stride < row || offset > plane.maxsize ||
      (format.height - 1) * stride + row > plane.maxsize - offset) {
    stats.skipped++;
    return;
  }
  if (!sink->can_take_frame()) {
    stats.dropped++;
    return;
  }
  packed.resize(row * format.height);
  const auto* pixels = static_cast<const uint8_t*>(plane.data) + offset;
  for (uint32_t y = 0; y < format.height; y++) memcpy(packed.data() + y * row, pixels + y * stride, row);
  Frame frame;
  frame.seq = header != nullptr ? header->seq : next_seq;
  next_seq++;
  frame.pts_ns = header != nullptr ? header->pts : -1;
  frame.rows = packed.data();
  frame.size = packed.size();
  stats.delivered++;
  sink->on_frame(frame);
}

bool HostStream::Impl::connect(int fd, GError** error) {
  static std::once_flag once;
  std::call_once(once, [] { pw_init(nullptr, nullptr); });
  loop = pw_loop_new(nullptr);
  if (loop == nullptr) {
    close(fd);
    g_set_error(error, G_IO_ERROR, G_IO_ERROR_FAILED, "cannot make a PipeWire loop");
    return false;
  }
  pw_loop_enter(loop);
  loop_source = attach_pw_loop(loop);

  context = pw_context_new(loop, nullptr, 0);
  if (context == nullptr) {
    close(fd);
    g_set_error(error, G_IO_ERROR, G_IO_ERROR_FAILED, "cannot make a PipeWire context");
    return false;
  }
  core = pw_context_connect_fd(context, fd, pw_properties_new(PW_KEY_APP_NAME, "sidebus-broker", nullptr), 0);
  if (core == nullptr) {  // pw_context_connect_fd closed @fd
    g_set_error(error, G_IO_ERROR, g_io_error_from_errno(errno), "cannot connect to the host's PipeWire remote: %s",
                g_strerror(errno));
    return false;
  }
  pw_core_add_listener(core, &core_listener, &kCoreEvents, this);
  registry = pw_core_get_registry(core, PW_VERSION_REGISTRY, 0);
  pw_registry_add_listener(registry, &registry_listener, &kRegistryEvents, this);

  stream = pw_stream_new(core, "sidebus relay",
                         pw_properties_new(PW_KEY_MEDIA_TYPE, "Video", PW_KEY_MEDIA_CATEGORY, "Capture",
                                           PW_KEY_MEDIA_ROLE, "Screen", nullptr));
  if (stream == nullptr) {
    g_set_error(error, G_IO_ERROR, G_IO_ERROR_FAILED, "cannot make a PipeWire stream");
    return false;
  }
  pw_stream_add_listener(stream, &stream_listener, &kStreamEvents, this);

  uint8_t buffer[1024];
  spa_pod_builder builder = SPA_POD_BUILDER_INIT(buffer, sizeof(buffer));
  const uint32_t default_width = MIN(1280u, limits.max_width), default_height = MIN(720u, limits.max_height);
  spa_rectangle size = SPA_RECTANGLE(default_width, default_height), min_size = SPA_RECTANGLE(1, 1),
                max_size = SPA_RECTANGLE(limits.max_width, limits.max_height);
  spa_fraction rate = SPA_FRACTION(MIN(30u, limits.max_framerate), 1), min_rate = SPA_FRACTION(0, 1),
               max_rate = SPA_FRACTION(limits.max_framerate, 1);
  spa_pod_frame choice;
  spa_pod_builder_push_object(&builder, &choice, SPA_TYPE_OBJECT_Format, SPA_PARAM_EnumFormat);
  spa_pod_builder_add(&builder, SPA_FORMAT_mediaType, SPA_POD_Id(SPA_MEDIA_TYPE_video), SPA_FORMAT_mediaSubtype,
                      SPA_POD_Id(SPA_MEDIA_SUBTYPE_raw), 0);
  spa_pod_builder_prop(&builder, SPA_FORMAT_VIDEO_format, 0);
  spa_pod_frame formats;
  spa_pod_builder_push_choice(&builder, &formats, SPA_CHOICE_Enum, 0);
  spa_pod_builder_id(&builder, kFormats[0]);  // the default
  for (uint32_t value : kFormats) spa_pod_builder_id(&builder, value);
  spa_pod_builder_pop(&builder, &formats);
  spa_pod_builder_add(&builder, SPA_FORMAT_VIDEO_size, SPA_POD_CHOICE_RANGE_Rectangle(&size, &min_size, &max_size),
                      SPA_FORMAT_VIDEO_framerate, SPA_POD_CHOICE_RANGE_Fraction(&rate, &min_rate, &max_rate), 0);
  const spa_pod* params[1] = {static_cast<const spa_pod*>(spa_pod_builder_pop(&builder, &choice))};
  const auto flags = static_cast<pw_stream_flags>(PW_STREAM_FLAG_AUTOCONNECT | PW_STREAM_FLAG_MAP_BUFFERS);
  const int result = pw_stream_connect(stream, PW_DIRECTION_INPUT, node_id, flags, params, 1);
  if (result < 0) {
    g_set_error(error, G_IO_ERROR, g_io_error_from_errno(-result), "cannot connect to the host's stream %u: %s",
                node_id, spa_strerror(result));
    return false;
  }
  negotiation_timeout = g_timeout_source_new(limits.negotiation_timeout_ms);
  g_source_set_callback(
      negotiation_timeout,
      [](gpointer data) -> gboolean {
        auto* self = static_cast<Impl*>(data);
        g_source_unref(std::exchange(self->negotiation_timeout, nullptr));
        self->end("no format was agreed with the host's stream within " +
                  std::to_string(self->limits.negotiation_timeout_ms) +
                  " ms (the relay takes raw video in shared memory, up to " +
                  std::to_string(self->limits.max_width) + "x" + std::to_string(self->limits.max_height) + " at " +
                  std::to_string(self->limits.max_framerate) + " frames/s)");
        return G_SOURCE_REMOVE;
      },
      this, nullptr);
  g_source_attach(negotiation_timeout, g_main_context_get_thread_default());
  return true;
}

HostStream::HostStream(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
HostStream::~HostStream() = default;

std::unique_ptr<HostStream> HostStream::start(int fd, uint32_t node_id, FrameSink* sink, Limits limits,
                                              GError** error) {
  auto impl = std::make_unique<Impl>();
  impl->sink = sink;
  impl->limits = limits;
  impl->node_id = node_id;
  if (!impl->connect(fd, error)) return nullptr;
  return std::unique_ptr<HostStream>(new HostStream(std::move(impl)));
}

HostStream::Stats HostStream::stats() const { return impl_->stats; }
bool HostStream::ended() const { return impl_->ended; }

}  // namespace sidebus::plugins
