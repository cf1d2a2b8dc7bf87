// SPDX-License-Identifier: LGPL-2.1-or-later
// producer.cpp — see producer.hpp. The pieces: the frame socket's reader
// (a header, then its payload, checked before a byte is kept), the node (a
// pw_stream driving itself: a complete frame waits in `ready` and
// pw_stream_trigger_process() plays it), and the linker (the registry's
// nodes asking for ours, linked through the link-factory).
#include "producer.hpp"

#include <gio/gio.h>
#include <glib-unix.h>
#include <spa/param/video/format-utils.h>
#include <spa/utils/result.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <map>
#include <utility>
#include <vector>

namespace sidebus::guest {
namespace video = plugins::video;

struct Producer::Impl {
  ProducerOptions options;
  ReadyFunc ready;
  EndFunc on_end;
  int frames_fd = -1;
  GSource* socket_source = nullptr;
  GSource* end_source = nullptr;
  GSource* ready_timeout = nullptr;
  pw_core* core = nullptr;
  spa_hook core_listener{};
  pw_registry* registry = nullptr;
  spa_hook registry_listener{};
  pw_stream* stream = nullptr;
  spa_hook stream_listener{};
  uint32_t node_id = SPA_ID_INVALID;
  std::string node_serial;
  bool streaming = false;
  bool ended = false;
  std::string end_reason;

  // reading
  uint8_t header_bytes[video::kHeaderSize];
  size_t header_have = 0;
  bool in_payload = false;
  video::Header header;
  std::vector<uint8_t> payload;
  size_t payload_have = 0;
  video::Format format;  // what the broker sends
  // playing
  std::vector<uint8_t> ready_frame;  // the newest complete frame record's payload: prefix, then rows
  video::FramePrefix ready_prefix;
  bool have_ready = false;
  uint32_t credit_owed = 0;
  uint64_t played = 0, dropped = 0;

  // linking
  struct Port {
    uint32_t node = 0;
    bool output = false;
  };
  struct Bound {
    Impl* impl = nullptr;
    uint32_t id = 0;
    pw_proxy* proxy = nullptr;
    spa_hook listener{};
    bool consumer = false;
    pw_proxy* link = nullptr;
  };
  std::map<uint32_t, Port> ports;
  std::map<uint32_t, std::unique_ptr<Bound>> bound;

  ~Impl();
  void end(std::string reason);
  void report_ready(const std::string& error);
  bool read_socket();
  bool take_record();
  void send_credit();
  void play();
  void set_params();
  void try_link();
  bool targets_us(const spa_dict* props) const;
};

namespace {

void on_core_error(void* data, uint32_t id, int, int res, const char* message) {
  if (id != PW_ID_CORE) return;
  static_cast<Producer::Impl*>(data)->end(std::string("the guest's PipeWire connection broke: ") +
                                          (message != nullptr ? message : spa_strerror(res)));
}

void on_state_changed(void* data, pw_stream_state, pw_stream_state state, const char* error) {
  auto* self = static_cast<Producer::Impl*>(data);
  if (state == PW_STREAM_STATE_ERROR) {
    self->end(std::string("the guest's node failed: ") + (error != nullptr ? error : "no reason given"));
    return;
  }
  if (self->node_id == SPA_ID_INVALID && (state == PW_STREAM_STATE_PAUSED || state == PW_STREAM_STATE_STREAMING)) {
    self->node_id = pw_stream_get_node_id(self->stream);
    if (self->node_id != SPA_ID_INVALID) self->report_ready("");
  }
  self->streaming = state == PW_STREAM_STATE_STREAMING;
  if (self->streaming && self->have_ready) pw_stream_trigger_process(self->stream);
}

void on_param_changed(void* data, uint32_t id, const spa_pod* param) {
  if (id == SPA_PARAM_Format && param != nullptr) static_cast<Producer::Impl*>(data)->set_params();
}

void on_process(void* data) { static_cast<Producer::Impl*>(data)->play(); }

const pw_core_events kCoreEvents = {.version = PW_VERSION_CORE_EVENTS, .error = on_core_error};
const pw_stream_events kStreamEvents = {
    .version = PW_VERSION_STREAM_EVENTS,
    .state_changed = on_state_changed,
    .param_changed = on_param_changed,
    .process = on_process,
};

void on_node_info(void* data, const pw_node_info* info) {
  auto* entry = static_cast<Producer::Impl::Bound*>(data);
  if (info->props == nullptr || entry->consumer || !entry->impl->targets_us(info->props)) return;
  entry->consumer = true;
  entry->impl->try_link();
}
const pw_node_events kNodeEvents = {.version = PW_VERSION_NODE_EVENTS, .info = on_node_info};

void on_global(void* data, uint32_t id, uint32_t, const char* type, uint32_t, const spa_dict* props) {
  auto* self = static_cast<Producer::Impl*>(data);
  if (strcmp(type, PW_TYPE_INTERFACE_Port) == 0) {
    const char* node = props != nullptr ? spa_dict_lookup(props, PW_KEY_NODE_ID) : nullptr;
    const char* direction = props != nullptr ? spa_dict_lookup(props, PW_KEY_PORT_DIRECTION) : nullptr;
    if (node == nullptr || direction == nullptr) return;
    self->ports[id] = {uint32_t(g_ascii_strtoull(node, nullptr, 10)), strcmp(direction, "out") == 0};
    self->try_link();
  } else if (strcmp(type, PW_TYPE_INTERFACE_Node) == 0) {
    if (id == self->node_id) {
      const char* serial = props != nullptr ? spa_dict_lookup(props, PW_KEY_OBJECT_SERIAL) : nullptr;
      if (serial != nullptr) self->node_serial = serial;
      return;
    }
    auto entry = std::make_unique<Producer::Impl::Bound>();
    entry->impl = self;
    entry->id = id;
    entry->proxy =
        static_cast<pw_proxy*>(pw_registry_bind(self->registry, id, PW_TYPE_INTERFACE_Node, PW_VERSION_NODE, 0));
    if (entry->proxy == nullptr) return;
    pw_node_add_listener(reinterpret_cast<pw_node*>(entry->proxy), &entry->listener, &kNodeEvents, entry.get());
    self->bound[id] = std::move(entry);
  }
}

void on_global_remove(void* data, uint32_t id) {
  auto* self = static_cast<Producer::Impl*>(data);
  self->ports.erase(id);
  auto found = self->bound.find(id);
  if (found == self->bound.end()) return;
  spa_hook_remove(&found->second->listener);
  if (found->second->link != nullptr) pw_proxy_destroy(found->second->link);
  pw_proxy_destroy(found->second->proxy);
  self->bound.erase(found);
}
const pw_registry_events kRegistryEvents = {
    .version = PW_VERSION_REGISTRY_EVENTS, .global = on_global, .global_remove = on_global_remove};

void destroy_source(GSource** source) {
  if (*source == nullptr) return;
  g_source_destroy(*source);
  g_source_unref(*source);
  *source = nullptr;
}

}  // namespace

Producer::Impl::~Impl() {
  destroy_source(&socket_source);
  destroy_source(&end_source);
  destroy_source(&ready_timeout);
  for (auto& [id, entry] : bound) {
    spa_hook_remove(&entry->listener);
    if (entry->link != nullptr) pw_proxy_destroy(entry->link);
    pw_proxy_destroy(entry->proxy);
  }
  if (registry != nullptr) {
    spa_hook_remove(&registry_listener);
    pw_proxy_destroy(reinterpret_cast<pw_proxy*>(registry));
  }
  if (stream != nullptr) {
    spa_hook_remove(&stream_listener);
    pw_stream_destroy(stream);
  }
  if (core != nullptr) {
    spa_hook_remove(&core_listener);
    pw_core_disconnect(core);
  }
  if (frames_fd >= 0) close(frames_fd);
}

void Producer::Impl::report_ready(const std::string& error) {
  destroy_source(&ready_timeout);
  if (!ready) return;
  ReadyFunc call = std::move(ready);
  ready = nullptr;
  call(error.empty() ? node_id : SPA_ID_INVALID, error);
}

void Producer::Impl::end(std::string reason) {
  if (ended) return;
  ended = true;
  end_reason = std::move(reason);
  g_message("relayed stream (node %u) ends: %s; %" G_GUINT64_FORMAT " frames played, %" G_GUINT64_FORMAT
            " dropped without a free buffer",
            node_id, end_reason.c_str(), played, dropped);
  destroy_source(&socket_source);
  if (stream != nullptr) pw_stream_set_active(stream, false);
  end_source = g_idle_source_new();
  g_source_set_callback(
      end_source,
      [](gpointer data) -> gboolean {
        auto* self = static_cast<Impl*>(data);
        g_source_unref(std::exchange(self->end_source, nullptr));
        self->report_ready(self->end_reason);
        EndFunc call = std::move(self->on_end);
        const std::string reason = self->end_reason;
        if (call) call(reason);  // may destroy the Producer
        return G_SOURCE_REMOVE;
      },
      this, nullptr);
  g_source_attach(end_source, g_main_context_get_thread_default());
}

// Reads what the socket has; false once the producer ended.
bool Producer::Impl::read_socket() {
  for (int turn = 0; turn < 64; turn++) {
    uint8_t* at;
    size_t want;
    if (!in_payload) {
      at = header_bytes + header_have;
      want = video::kHeaderSize - header_have;
    } else {
      at = payload.data() + payload_have;
      want = payload.size() - payload_have;
    }
    ssize_t n = want > 0 ? read(frames_fd, at, want) : 0;
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) break;
    if (n < 0) {
      end(std::string("reading the frames from the host: ") + g_strerror(errno));
      return false;
    }
    if (n == 0 && want > 0) {
      end(header_have == 0 && !in_payload ? "the host ended the stream (the session closed or the link went)"
                                          : "the host's frame socket closed in the middle of a record");
      return false;
    }
    if (!in_payload) {
      header_have += size_t(n);
      if (header_have < video::kHeaderSize) continue;
      GError* error = nullptr;
      if (!video::check_header(header_bytes, true, format, &header, &error)) {
        end(std::string("the host broke the frame protocol: ") + error->message);
        g_error_free(error);
        return false;
      }
      in_payload = true;
      payload.resize(header.length);  // bounded by check_header: one frame of the format in force
      payload_have = 0;
    } else {
      payload_have += size_t(n);
    }
    if (in_payload && payload_have == payload.size()) {
      header_have = 0;
      in_payload = false;
      if (!take_record()) return false;
    }
  }
  return true;
}

bool Producer::Impl::take_record() {
  switch (header.type) {
    case video::RecordType::Format: {
      video::Format next;
      GError* error = nullptr;
      if (!video::parse_format(payload.data(), &next, &error)) {
        end(std::string("the host broke the frame protocol: ") + error->message);
        g_error_free(error);
        return false;
      }
      const bool changed =
          next.width != format.width || next.height != format.height || next.spa_format != format.spa_format;
      format = next;
      have_ready = false;
      if (changed && stream != nullptr && node_id != SPA_ID_INVALID) {
        // A new format: the node offers it, and its buffers follow (set_params).
        uint8_t buffer[1024];
        spa_pod_builder builder = SPA_POD_BUILDER_INIT(buffer, sizeof(buffer));
        spa_rectangle size = SPA_RECTANGLE(format.width, format.height);
        spa_fraction rate = SPA_FRACTION(format.framerate_num, format.framerate_den);
        const spa_pod* params[1] = {static_cast<const spa_pod*>(spa_pod_builder_add_object(
            &builder, SPA_TYPE_OBJECT_Format, SPA_PARAM_EnumFormat, SPA_FORMAT_mediaType,
            SPA_POD_Id(SPA_MEDIA_TYPE_video), SPA_FORMAT_mediaSubtype, SPA_POD_Id(SPA_MEDIA_SUBTYPE_raw),
            SPA_FORMAT_VIDEO_format, SPA_POD_Id(format.spa_format), SPA_FORMAT_VIDEO_size, SPA_POD_Rectangle(&size),
            SPA_FORMAT_VIDEO_framerate, SPA_POD_Fraction(&rate)))};
        pw_stream_update_params(stream, params, 1);
      }
      return true;
    }
    case video::RecordType::Frame: {
      ready_prefix = video::parse_frame_prefix(payload.data());
      if (have_ready) dropped++;  // the node did not play the one before: the newest wins
      ready_frame.swap(payload);  // no copy: the rows follow the prefix (played from kFramePrefixSize)
      have_ready = true;
      credit_owed++;
      send_credit();
      if (streaming) pw_stream_trigger_process(stream);
      return true;
    }
    case video::RecordType::End:
      end("the host ended the stream: " + std::string(reinterpret_cast<const char*>(payload.data()), payload.size()));
      return false;
    case video::RecordType::Credit:
      break;  // check_header refuses it in this direction
  }
  return true;
}

void Producer::Impl::send_credit() {
  while (credit_owed > 0) {
    std::vector<uint8_t> record;
    const uint32_t frames = std::min(credit_owed, video::kMaxCredit);
    video::append_credit(&record, frames);
    ssize_t n = send(frames_fd, record.data(), record.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n != ssize_t(record.size())) return;  // the socket is full: owed, sent with the next frame's
    credit_owed -= frames;
  }
}

void Producer::Impl::play() {
  pw_buffer* buffer = pw_stream_dequeue_buffer(stream);
  if (buffer == nullptr) {
    if (have_ready) {
      dropped++;  // the consumer holds every buffer: this frame is not shown
      have_ready = false;
    }
    return;
  }
  spa_buffer* spa = buffer->buffer;
  spa_data& plane = spa->datas[0];
  const size_t size = format.frame_bytes();
  if (!have_ready || plane.data == nullptr || plane.maxsize < size ||
      ready_frame.size() != video::kFramePrefixSize + size) {
    if (plane.chunk != nullptr) plane.chunk->size = 0;
    pw_stream_queue_buffer(stream, buffer);
    return;
  }
  memcpy(plane.data, ready_frame.data() + video::kFramePrefixSize, size);
  plane.chunk->offset = 0;
  plane.chunk->size = uint32_t(size);
  plane.chunk->stride = int32_t(format.width * 4);
  auto* meta = static_cast<spa_meta_header*>(spa_buffer_find_meta_data(spa, SPA_META_Header, sizeof(spa_meta_header)));
  if (meta != nullptr) {
    meta->flags = 0;
    meta->offset = 0;
    meta->pts = ready_prefix.pts_ns;
    meta->dts_offset = 0;
    meta->seq = ready_prefix.seq;
  }
  have_ready = false;
  played++;
  pw_stream_queue_buffer(stream, buffer);
}

void Producer::Impl::set_params() {
  const int32_t stride = int32_t(format.width * 4);
  uint8_t buffer[1024];
  spa_pod_builder builder = SPA_POD_BUILDER_INIT(buffer, sizeof(buffer));
  const spa_pod* params[2];
  params[0] = static_cast<const spa_pod*>(spa_pod_builder_add_object(
      &builder, SPA_TYPE_OBJECT_ParamBuffers, SPA_PARAM_Buffers, SPA_PARAM_BUFFERS_buffers,
      SPA_POD_CHOICE_RANGE_Int(4, 2, 8), SPA_PARAM_BUFFERS_blocks, SPA_POD_Int(1), SPA_PARAM_BUFFERS_size,
      SPA_POD_Int(stride * int32_t(format.height)), SPA_PARAM_BUFFERS_stride, SPA_POD_Int(stride),
      SPA_PARAM_BUFFERS_dataType, SPA_POD_CHOICE_FLAGS_Int((1 << SPA_DATA_MemFd) | (1 << SPA_DATA_MemPtr))));
  params[1] = static_cast<const spa_pod*>(spa_pod_builder_add_object(
      &builder, SPA_TYPE_OBJECT_ParamMeta, SPA_PARAM_Meta, SPA_PARAM_META_type, SPA_POD_Id(SPA_META_Header),
      SPA_PARAM_META_size, SPA_POD_Int(int32_t(sizeof(spa_meta_header)))));
  pw_stream_update_params(stream, params, 2);
}

bool Producer::Impl::targets_us(const spa_dict* props) const {
  for (const char* key : {PW_KEY_TARGET_OBJECT, "node.target"}) {
    const char* target = spa_dict_lookup(props, key);
    if (target == nullptr) continue;
    if (std::to_string(node_id) == target || (!node_serial.empty() && node_serial == target)) return true;
  }
  return false;
}

void Producer::Impl::try_link() {
  uint32_t output_port = SPA_ID_INVALID;
  for (const auto& [id, port] : ports)
    if (port.node == node_id && port.output) output_port = id;
  if (output_port == SPA_ID_INVALID) return;
  for (auto& [node, entry] : bound) {
    if (!entry->consumer || entry->link != nullptr) continue;
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
    g_message("relayed stream: linking node %u to consumer node %u", node_id, node);
  }
}

std::unique_ptr<Producer> Producer::start(pw_context* context, int frames, ProducerOptions options, ReadyFunc ready,
                                          EndFunc on_end, std::string* error) {
  auto impl = std::make_unique<Impl>();
  impl->options = std::move(options);
  impl->format = impl->options.format;
  impl->ready = std::move(ready);
  impl->on_end = std::move(on_end);
  impl->frames_fd = frames;
  g_unix_set_fd_nonblocking(frames, TRUE, nullptr);
  impl->core = pw_context_connect(context, pw_properties_new(PW_KEY_APP_NAME, "sidebus-stream-relay", nullptr), 0);
  if (impl->core == nullptr) {
    *error = std::string("cannot connect to the VM's PipeWire: ") + g_strerror(errno);
    return nullptr;
  }
  pw_core_add_listener(impl->core, &impl->core_listener, &kCoreEvents, impl.get());
  const auto& format = impl->format;
  pw_properties* props = pw_properties_new(PW_KEY_MEDIA_TYPE, "Video", PW_KEY_MEDIA_CLASS, "Video/Source",
                                           PW_KEY_MEDIA_ROLE, impl->options.media_role.c_str(), PW_KEY_NODE_DESCRIPTION,
                                           impl->options.description.c_str(), nullptr);
  impl->stream = pw_stream_new(impl->core, "sidebus-relay", props);
  if (impl->stream == nullptr) {
    *error = std::string("cannot make a PipeWire node: ") + g_strerror(errno);
    return nullptr;
  }
  pw_stream_add_listener(impl->stream, &impl->stream_listener, &kStreamEvents, impl.get());
  uint8_t buffer[1024];
  spa_pod_builder builder = SPA_POD_BUILDER_INIT(buffer, sizeof(buffer));
  spa_rectangle size = SPA_RECTANGLE(format.width, format.height);
  spa_fraction rate = SPA_FRACTION(format.framerate_num, format.framerate_den);
  const spa_pod* params[1] = {static_cast<const spa_pod*>(spa_pod_builder_add_object(
      &builder, SPA_TYPE_OBJECT_Format, SPA_PARAM_EnumFormat, SPA_FORMAT_mediaType, SPA_POD_Id(SPA_MEDIA_TYPE_video),
      SPA_FORMAT_mediaSubtype, SPA_POD_Id(SPA_MEDIA_SUBTYPE_raw), SPA_FORMAT_VIDEO_format,
      SPA_POD_Id(format.spa_format), SPA_FORMAT_VIDEO_size, SPA_POD_Rectangle(&size), SPA_FORMAT_VIDEO_framerate,
      SPA_POD_Fraction(&rate)))};
  const auto flags = static_cast<pw_stream_flags>(PW_STREAM_FLAG_DRIVER | PW_STREAM_FLAG_MAP_BUFFERS);
  if (int res = pw_stream_connect(impl->stream, PW_DIRECTION_OUTPUT, PW_ID_ANY, flags, params, 1); res < 0) {
    *error = std::string("cannot connect the PipeWire node: ") + spa_strerror(res);
    return nullptr;
  }
  impl->registry = pw_core_get_registry(impl->core, PW_VERSION_REGISTRY, 0);
  pw_registry_add_listener(impl->registry, &impl->registry_listener, &kRegistryEvents, impl.get());
  impl->socket_source = g_unix_fd_source_new(frames, static_cast<GIOCondition>(G_IO_IN | G_IO_HUP | G_IO_ERR));
  g_source_set_callback(impl->socket_source,
                        reinterpret_cast<GSourceFunc>(+[](int, GIOCondition, gpointer data) -> gboolean {
                          auto* self = static_cast<Impl*>(data);
                          if (!self->read_socket()) return G_SOURCE_CONTINUE;  // end() destroyed the source already
                          self->send_credit();
                          return G_SOURCE_CONTINUE;
                        }),
                        impl.get(), nullptr);
  g_source_attach(impl->socket_source, g_main_context_get_thread_default());
  impl->ready_timeout = g_timeout_source_new_seconds(10);
  g_source_set_callback(
      impl->ready_timeout,
      [](gpointer data) -> gboolean {
        auto* self = static_cast<Impl*>(data);
        g_source_unref(std::exchange(self->ready_timeout, nullptr));
        self->end("the VM's PipeWire gave the node no id within 10 s");
        return G_SOURCE_REMOVE;
      },
      impl.get(), nullptr);
  g_source_attach(impl->ready_timeout, g_main_context_get_thread_default());
  return std::unique_ptr<Producer>(new Producer(std::move(impl)));
}

Producer::Producer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Producer::~Producer() = default;
uint32_t Producer::node_id() const { return impl_->node_id; }

}  // namespace sidebus::guest
