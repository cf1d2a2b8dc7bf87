// video-source.cpp — the PipeWire video source node (see video-source.hpp):
// the pw_stream producer that paints test-patterns.hpp's frames on a timer,
// and the registry watcher that links its consumers and grants camera
// clients its node. Everything below runs on the source's pw_thread_loop or
// under its lock.
#include "video-source.hpp"

#include <glib.h>
#include <pipewire/pipewire.h>
#include <spa/param/video/format-utils.h>
#include <spa/utils/result.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <map>
#include <mutex>

#include "test-patterns.hpp"

namespace sidebus::test_backend {
namespace {

void ensure_pipewire_initialized() {
  static std::once_flag once;
  std::call_once(once, [] { pw_init(nullptr, nullptr); });
}

bool dict_has_word(const spa_dict* dict, const char* key, const char* word) {
  const char* value = dict != nullptr ? spa_dict_lookup(dict, key) : nullptr;
  if (value == nullptr) return false;
  g_auto(GStrv) words = g_strsplit_set(value, ", ", -1);
  return g_strv_contains(words, word);
}

}  // namespace

struct VideoSource::Impl {
  // A node or client the source bound to read its full properties.
  struct Bound {
    Impl* impl = nullptr;
    uint32_t id = 0;
    bool is_node = false;
    pw_proxy* proxy = nullptr;
    spa_hook listener{};
    bool consumer = false;     // a node that asked for this source
    pw_proxy* link = nullptr;  // our link to it
    bool granted = false;      // a client we gave the node to
  };
  struct Port {
    uint32_t node = 0;
    bool output = false;
  };

  VideoSourceOptions options;
  pw_thread_loop* loop = nullptr;
  pw_context* context = nullptr;
  pw_core* core = nullptr;
  spa_hook core_listener{};
  pw_stream* stream = nullptr;
  spa_hook stream_listener{};
  spa_source* timer = nullptr;
  pw_registry* registry = nullptr;
  spa_hook registry_listener{};

  uint32_t node_id = SPA_ID_INVALID;
  std::string node_serial;
  std::string error;
  bool streaming = false;
  bool have_format = false;
  uint32_t width = 0;
  uint32_t height = 0;
  uint32_t stride = 0;
  std::atomic<uint32_t> frames{0};
  std::map<uint32_t, std::unique_ptr<Bound>> bound;  // by global id
  std::map<uint32_t, Port> ports;                    // by global id

  ~Impl();
  bool connect(std::string* error_out);
  void set_timer(bool armed);
  void try_link();
  void bind(uint32_t id, bool is_node);
  bool targets_us(const spa_dict* props) const;

  static void on_core_error(void* data, uint32_t id, int seq, int res, const char* message);
  static void on_state_changed(void* data, pw_stream_state old, pw_stream_state state, const char* error);
  static void on_param_changed(void* data, uint32_t id, const spa_pod* param);
  static void on_process(void* data);
  static void on_timeout(void* data, uint64_t expirations);
  static void on_global(void* data, uint32_t id, uint32_t permissions, const char* type, uint32_t version,
                        const spa_dict* props);
  static void on_global_remove(void* data, uint32_t id);
  static void on_node_info(void* data, const pw_node_info* info);
  static void on_client_info(void* data, const pw_client_info* info);
};

namespace {

const pw_core_events kCoreEvents = {
    .version = PW_VERSION_CORE_EVENTS,
    .error = VideoSource::Impl::on_core_error,
};
const pw_stream_events kStreamEvents = {
    .version = PW_VERSION_STREAM_EVENTS,
    .state_changed = VideoSource::Impl::on_state_changed,
    .param_changed = VideoSource::Impl::on_param_changed,
    .process = VideoSource::Impl::on_process,
};
const pw_registry_events kRegistryEvents = {
    .version = PW_VERSION_REGISTRY_EVENTS,
    .global = VideoSource::Impl::on_global,
    .global_remove = VideoSource::Impl::on_global_remove,
};
const pw_node_events kNodeEvents = {
    .version = PW_VERSION_NODE_EVENTS,
    .info = VideoSource::Impl::on_node_info,
};
const pw_client_events kClientEvents = {
    .version = PW_VERSION_CLIENT_EVENTS,
    .info = VideoSource::Impl::on_client_info,
};

}  // namespace

VideoSource::Impl::~Impl() {
  if (loop == nullptr) return;
  // The loop's thread stops first: destroying the objects under its lock
  // and then letting it run on could have it dispatch an event of one of
  // them, already freed (a crash seen with MALLOC_PERTURB_ when a consumer
  // and the source went at the same time). Stopped, nothing runs but us.
  pw_thread_loop_stop(loop);
  for (auto& [id, entry] : bound) {
    spa_hook_remove(&entry->listener);
    if (entry->link != nullptr) pw_proxy_destroy(entry->link);
    pw_proxy_destroy(entry->proxy);
  }
  bound.clear();
  if (registry != nullptr) {
    spa_hook_remove(&registry_listener);
    pw_proxy_destroy(reinterpret_cast<pw_proxy*>(registry));
  }
  if (stream != nullptr) {
    spa_hook_remove(&stream_listener);
    pw_stream_destroy(stream);
  }
  if (timer != nullptr) pw_loop_destroy_source(pw_thread_loop_get_loop(loop), timer);
  if (core != nullptr) {
    spa_hook_remove(&core_listener);
    pw_core_disconnect(core);
  }
  if (context != nullptr) pw_context_destroy(context);
  pw_thread_loop_destroy(loop);
}

// With the loop locked: connects, creates the node and waits for its id.
bool VideoSource::Impl::connect(std::string* error_out) {
  core = pw_context_connect(context, pw_properties_new(PW_KEY_APP_NAME, "sidebus-test-video-source", nullptr), 0);
  if (core == nullptr) {
    *error_out = std::string("cannot connect to PipeWire: ") + g_strerror(errno);
    return false;
  }
  pw_core_add_listener(core, &core_listener, &kCoreEvents, this);
  timer = pw_loop_add_timer(pw_thread_loop_get_loop(loop), on_timeout, this);

  pw_properties* props =
      pw_properties_new(PW_KEY_MEDIA_TYPE, "Video", PW_KEY_MEDIA_CLASS, "Video/Source", PW_KEY_NODE_NAME,
                        options.node_name.c_str(), PW_KEY_NODE_DESCRIPTION, options.description.c_str(), nullptr);
  if (!options.media_role.empty()) pw_properties_set(props, PW_KEY_MEDIA_ROLE, options.media_role.c_str());
  stream = pw_stream_new(core, options.node_name.c_str(), props);
  if (stream == nullptr) {
    *error_out = std::string("cannot create the stream: ") + g_strerror(errno);
    return false;
  }
  pw_stream_add_listener(stream, &stream_listener, &kStreamEvents, this);

  uint8_t buffer[1024];
  spa_pod_builder builder = SPA_POD_BUILDER_INIT(buffer, sizeof(buffer));
  spa_rectangle size = SPA_RECTANGLE(options.format.width, options.format.height);
  spa_fraction rate = SPA_FRACTION(options.format.framerate, 1);
  const spa_pod* params[1];
  params[0] = static_cast<const spa_pod*>(spa_pod_builder_add_object(
      &builder, SPA_TYPE_OBJECT_Format, SPA_PARAM_EnumFormat, SPA_FORMAT_mediaType, SPA_POD_Id(SPA_MEDIA_TYPE_video),
      SPA_FORMAT_mediaSubtype, SPA_POD_Id(SPA_MEDIA_SUBTYPE_raw), SPA_FORMAT_VIDEO_format,
      SPA_POD_Id(SPA_VIDEO_FORMAT_BGRx), SPA_FORMAT_VIDEO_size, SPA_POD_Rectangle(&size), SPA_FORMAT_VIDEO_framerate,
      SPA_POD_Fraction(&rate)));
  const auto flags = static_cast<pw_stream_flags>(PW_STREAM_FLAG_DRIVER | PW_STREAM_FLAG_MAP_BUFFERS);
  if (int res = pw_stream_connect(stream, PW_DIRECTION_OUTPUT, PW_ID_ANY, flags, params, 1); res < 0) {
    *error_out = std::string("cannot connect the stream: ") + spa_strerror(res);
    return false;
  }

  for (int waited = 0; node_id == SPA_ID_INVALID && error.empty() && waited < 10; waited++)
    pw_thread_loop_timed_wait(loop, 1);
  if (node_id == SPA_ID_INVALID) {
    *error_out = error.empty() ? "the stream got no node id in 10 s" : error;
    return false;
  }
  // Registered only now that the node id is known: the registry replays
  // every existing global, so no consumer or client is missed.
  registry = pw_core_get_registry(core, PW_VERSION_REGISTRY, 0);
  pw_registry_add_listener(registry, &registry_listener, &kRegistryEvents, this);
  return true;
}

void VideoSource::Impl::set_timer(bool armed) {
  timespec interval{0, static_cast<long>(1000000000L / std::max<uint32_t>(options.format.framerate, 1))};
  if (armed)
    pw_loop_update_timer(pw_thread_loop_get_loop(loop), timer, &interval, &interval, false);
  else
    pw_loop_update_timer(pw_thread_loop_get_loop(loop), timer, nullptr, nullptr, false);
}

void VideoSource::Impl::on_core_error(void* data, uint32_t id, int seq, int res, const char* message) {
  auto* impl = static_cast<Impl*>(data);
  g_warning("video source %s: PipeWire error on object %u: %s (%s)", impl->options.node_name.c_str(), id, message,
            spa_strerror(res));
  if (id == PW_ID_CORE) {
    impl->error = message != nullptr ? message : "PipeWire core error";
    pw_thread_loop_signal(impl->loop, false);
  }
}

void VideoSource::Impl::on_state_changed(void* data, pw_stream_state, pw_stream_state state, const char* error) {
  auto* impl = static_cast<Impl*>(data);
  if (state == PW_STREAM_STATE_ERROR) impl->error = error != nullptr ? error : "stream error";
  if (impl->node_id == SPA_ID_INVALID && (state == PW_STREAM_STATE_PAUSED || state == PW_STREAM_STATE_STREAMING))
    impl->node_id = pw_stream_get_node_id(impl->stream);
  impl->streaming = state == PW_STREAM_STATE_STREAMING;
  impl->set_timer(impl->streaming);
  g_message("video source %s (node %u): %s", impl->options.node_name.c_str(), impl->node_id,
            pw_stream_state_as_string(state));
  pw_thread_loop_signal(impl->loop, false);
}

void VideoSource::Impl::on_param_changed(void* data, uint32_t id, const spa_pod* param) {
  auto* impl = static_cast<Impl*>(data);
  if (param == nullptr || id != SPA_PARAM_Format) return;
  spa_video_info_raw info{};
  if (spa_format_video_raw_parse(param, &info) < 0) return;
  impl->width = info.size.width;
  impl->height = info.size.height;
  impl->stride = impl->width * 4;
  impl->have_format = true;

  uint8_t buffer[1024];
  spa_pod_builder builder = SPA_POD_BUILDER_INIT(buffer, sizeof(buffer));
  const spa_pod* params[2];
  params[0] = static_cast<const spa_pod*>(spa_pod_builder_add_object(
      &builder, SPA_TYPE_OBJECT_ParamBuffers, SPA_PARAM_Buffers, SPA_PARAM_BUFFERS_buffers,
      SPA_POD_CHOICE_RANGE_Int(4, 2, 8), SPA_PARAM_BUFFERS_blocks, SPA_POD_Int(1), SPA_PARAM_BUFFERS_size,
      SPA_POD_Int(static_cast<int32_t>(impl->stride * impl->height)), SPA_PARAM_BUFFERS_stride,
      SPA_POD_Int(static_cast<int32_t>(impl->stride)), SPA_PARAM_BUFFERS_dataType,
      SPA_POD_CHOICE_FLAGS_Int((1 << SPA_DATA_MemFd) | (1 << SPA_DATA_MemPtr))));
  params[1] = static_cast<const spa_pod*>(spa_pod_builder_add_object(
      &builder, SPA_TYPE_OBJECT_ParamMeta, SPA_PARAM_Meta, SPA_PARAM_META_type, SPA_POD_Id(SPA_META_Header),
      SPA_PARAM_META_size, SPA_POD_Int(static_cast<int32_t>(sizeof(spa_meta_header)))));
  pw_stream_update_params(impl->stream, params, 2);
}

void VideoSource::Impl::on_process(void* data) {
  auto* impl = static_cast<Impl*>(data);
  pw_buffer* buffer = pw_stream_dequeue_buffer(impl->stream);
  if (buffer == nullptr) return;
  spa_buffer* spa = buffer->buffer;
  spa_data& plane = spa->datas[0];
  const uint32_t size = impl->stride * impl->height;
  if (plane.data != nullptr && impl->have_format && plane.maxsize >= size) {
    const uint32_t frame = impl->frames.load() + 1;
    test_patterns::paint_frame(static_cast<uint8_t*>(plane.data), impl->width, impl->height, impl->stride, frame,
                               impl->options.tag);
    plane.chunk->offset = 0;
    plane.chunk->size = size;
    plane.chunk->stride = static_cast<int32_t>(impl->stride);
    auto* header =
        static_cast<spa_meta_header*>(spa_buffer_find_meta_data(spa, SPA_META_Header, sizeof(spa_meta_header)));
    if (header != nullptr) {
      header->flags = 0;
      header->offset = 0;
      header->pts = static_cast<int64_t>(g_get_monotonic_time()) * 1000;
      header->dts_offset = 0;
      header->seq = frame;
    }
    impl->frames.store(frame);
  }
  pw_stream_queue_buffer(impl->stream, buffer);
}

void VideoSource::Impl::on_timeout(void* data, uint64_t) {
  auto* impl = static_cast<Impl*>(data);
  if (impl->streaming) pw_stream_trigger_process(impl->stream);
}

bool VideoSource::Impl::targets_us(const spa_dict* props) const {
  // "node.target" is what pw_stream_connect() sets (PW_KEY_NODE_TARGET, deprecated).
  for (const char* key : {PW_KEY_TARGET_OBJECT, "node.target"}) {
    const char* target = spa_dict_lookup(props, key);
    if (target == nullptr) continue;
    if (std::to_string(node_id) == target || (!node_serial.empty() && node_serial == target)) return true;
  }
  return false;
}

void VideoSource::Impl::bind(uint32_t id, bool is_node) {
  auto entry = std::make_unique<Bound>();
  entry->impl = this;
  entry->id = id;
  entry->is_node = is_node;
  entry->proxy =
      static_cast<pw_proxy*>(pw_registry_bind(registry, id, is_node ? PW_TYPE_INTERFACE_Node : PW_TYPE_INTERFACE_Client,
                                              is_node ? PW_VERSION_NODE : PW_VERSION_CLIENT, 0));
  if (entry->proxy == nullptr) return;
  if (is_node)
    pw_node_add_listener(reinterpret_cast<pw_node*>(entry->proxy), &entry->listener, &kNodeEvents, entry.get());
  else
    pw_client_add_listener(reinterpret_cast<pw_client*>(entry->proxy), &entry->listener, &kClientEvents, entry.get());
  bound[id] = std::move(entry);
}

// Links every consumer that asked for this source and has an input port.
void VideoSource::Impl::try_link() {
  uint32_t output_port = SPA_ID_INVALID;
  for (const auto& [id, port] : ports)
    if (port.node == node_id && port.output) output_port = id;
  if (output_port == SPA_ID_INVALID) return;
  for (auto& [node, entry] : bound) {
    if (!entry->is_node || !entry->consumer || entry->link != nullptr) continue;
    uint32_t input_port = SPA_ID_INVALID;
    for (const auto& [id, port] : ports)
      if (port.node == node && !port.output) input_port = id;
    if (input_port == SPA_ID_INVALID) continue;
    pw_properties* props = pw_properties_new(PW_KEY_OBJECT_LINGER, "false", nullptr);
    pw_properties_setf(props, PW_KEY_LINK_OUTPUT_NODE, "%u", node_id);
    pw_properties_setf(props, PW_KEY_LINK_OUTPUT_PORT, "%u", output_port);
    pw_properties_setf(props, PW_KEY_LINK_INPUT_NODE, "%u", node);
    pw_properties_setf(props, PW_KEY_LINK_INPUT_PORT, "%u", input_port);
    entry->link = static_cast<pw_proxy*>(
        pw_core_create_object(core, "link-factory", PW_TYPE_INTERFACE_Link, PW_VERSION_LINK, &props->dict, 0));
    pw_properties_free(props);
    g_message("video source %s: linking node %u to consumer node %u", options.node_name.c_str(), node_id, node);
  }
}

void VideoSource::Impl::on_global(void* data, uint32_t id, uint32_t, const char* type, uint32_t,
                                  const spa_dict* props) {
  auto* impl = static_cast<Impl*>(data);
  if (strcmp(type, PW_TYPE_INTERFACE_Port) == 0) {
    const char* node = props != nullptr ? spa_dict_lookup(props, PW_KEY_NODE_ID) : nullptr;
    const char* direction = props != nullptr ? spa_dict_lookup(props, PW_KEY_PORT_DIRECTION) : nullptr;
    if (node == nullptr || direction == nullptr) return;
    impl->ports[id] = Port{static_cast<uint32_t>(g_ascii_strtoull(node, nullptr, 10)), strcmp(direction, "out") == 0};
    impl->try_link();
  } else if (strcmp(type, PW_TYPE_INTERFACE_Node) == 0) {
    if (id == impl->node_id) {
      const char* serial = props != nullptr ? spa_dict_lookup(props, PW_KEY_OBJECT_SERIAL) : nullptr;
      if (serial != nullptr) impl->node_serial = serial;
      return;
    }
    impl->bind(id, true);
  } else if (strcmp(type, PW_TYPE_INTERFACE_Client) == 0 && impl->options.grant_camera_clients) {
    impl->bind(id, false);
  }
}

void VideoSource::Impl::on_global_remove(void* data, uint32_t id) {
  auto* impl = static_cast<Impl*>(data);
  impl->ports.erase(id);
  auto found = impl->bound.find(id);
  if (found == impl->bound.end()) return;
  spa_hook_remove(&found->second->listener);
  if (found->second->link != nullptr) pw_proxy_destroy(found->second->link);
  pw_proxy_destroy(found->second->proxy);
  impl->bound.erase(found);
}

void VideoSource::Impl::on_node_info(void* data, const pw_node_info* info) {
  auto* entry = static_cast<Bound*>(data);
  if (info->props == nullptr || entry->consumer || !entry->impl->targets_us(info->props)) return;
  entry->consumer = true;
  entry->impl->try_link();
}

void VideoSource::Impl::on_client_info(void* data, const pw_client_info* info) {
  auto* entry = static_cast<Bound*>(data);
  if (entry->granted || !dict_has_word(info->props, "pipewire.access.portal.media_roles", "Camera")) return;
  entry->granted = true;
  pw_permission permission = PW_PERMISSION_INIT(entry->impl->node_id, PW_PERM_RWX);
  pw_client_update_permissions(reinterpret_cast<pw_client*>(entry->proxy), 1, &permission);
  g_message("video source %s: gave node %u to camera client %u", entry->impl->options.node_name.c_str(),
            entry->impl->node_id, entry->id);
}

std::unique_ptr<VideoSource> VideoSource::start(const VideoSourceOptions& options, std::string* error) {
  ensure_pipewire_initialized();
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  impl->loop = pw_thread_loop_new("sidebus-video", nullptr);
  if (impl->loop == nullptr) {
    *error = "cannot create a PipeWire thread loop";
    return nullptr;
  }
  impl->context = pw_context_new(pw_thread_loop_get_loop(impl->loop), nullptr, 0);
  if (impl->context == nullptr) {
    *error = "cannot create a PipeWire context";
    return nullptr;
  }
  if (pw_thread_loop_start(impl->loop) < 0) {
    *error = "cannot start the PipeWire thread loop";
    return nullptr;
  }
  pw_thread_loop_lock(impl->loop);
  const bool connected = impl->connect(error);
  pw_thread_loop_unlock(impl->loop);
  if (!connected) return nullptr;
  return std::unique_ptr<VideoSource>(new VideoSource(std::move(impl)));
}

VideoSource::VideoSource(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
VideoSource::~VideoSource() = default;

uint32_t VideoSource::node_id() const { return impl_->node_id; }
uint32_t VideoSource::frames_sent() const { return impl_->frames.load(); }
const VideoFormat& VideoSource::format() const { return impl_->options.format; }

}  // namespace sidebus::test_backend
