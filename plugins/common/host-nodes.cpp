// SPDX-License-Identifier: LGPL-2.1-or-later
// host-nodes.cpp — see host-nodes.hpp.
#include "host-nodes.hpp"
#include "pw-loop-source.hpp"

#include <gio/gio.h>
#include <pipewire/pipewire.h>
#include <spa/utils/result.h>
#include <unistd.h>

#include <cstring>
#include <mutex>
#include <utility>

namespace sidebus::plugins {
namespace {

void destroy_source(GSource** source) {
  if (*source == nullptr) return;
  g_source_destroy(*source);
  g_source_unref(*source);
  *source = nullptr;
}

}  // namespace

struct HostNodes::Impl {
  std::string media_role;
  unsigned settle_ms = 0;
  DoneFunc done;
  pw_loop* loop = nullptr;
  GSource* loop_source = nullptr;
  GSource* timer = nullptr;
  GSource* finish_source = nullptr;
  pw_context* context = nullptr;
  pw_core* core = nullptr;
  spa_hook core_listener{};
  pw_registry* registry = nullptr;
  spa_hook registry_listener{};
  int seq = 0;
  bool synced = false;
  std::vector<uint32_t> nodes;
  std::string error;

  ~Impl() {
    destroy_source(&timer);
    destroy_source(&finish_source);
    if (registry != nullptr) {
      spa_hook_remove(&registry_listener);
      pw_proxy_destroy(reinterpret_cast<pw_proxy*>(registry));
    }
    if (core != nullptr) {
      spa_hook_remove(&core_listener);
      pw_core_disconnect(core);
    }
    if (context != nullptr) pw_context_destroy(context);
    destroy_source(&loop_source);
    if (loop != nullptr) {
      pw_loop_leave(loop);
      pw_loop_destroy(loop);
    }
  }

  // Reports from an idle: never from inside a PipeWire callback.
  void finish() {
    if (finish_source != nullptr || !done) return;
    destroy_source(&timer);
    finish_source = g_idle_source_new();
    g_source_set_callback(
        finish_source,
        [](gpointer data) -> gboolean {
          auto* self = static_cast<Impl*>(data);
          g_source_unref(std::exchange(self->finish_source, nullptr));
          std::exchange(self->done, nullptr)(self->nodes, self->error);  // may destroy us
          return G_SOURCE_REMOVE;
        },
        this, nullptr);
    g_source_attach(finish_source, g_main_context_get_thread_default());
  }
};

namespace {

const pw_core_events kCoreEvents = {
    .version = PW_VERSION_CORE_EVENTS,
    .done =
        [](void* data, uint32_t id, int seq) {
          auto* self = static_cast<HostNodes::Impl*>(data);
          if (id != PW_ID_CORE || seq != self->seq) return;
          self->synced = true;
          if (!self->nodes.empty()) self->finish();
        },
    .error =
        [](void* data, uint32_t id, int, int res, const char* message) {
          auto* self = static_cast<HostNodes::Impl*>(data);
          if (id != PW_ID_CORE) return;
          self->error = std::string("the host's PipeWire remote broke: ") + (message ? message : spa_strerror(res));
          self->finish();
        },
};

const pw_registry_events kRegistryEvents = {
    .version = PW_VERSION_REGISTRY_EVENTS,
    .global =
        [](void* data, uint32_t id, uint32_t, const char* type, uint32_t, const spa_dict* props) {
          auto* self = static_cast<HostNodes::Impl*>(data);
          if (strcmp(type, PW_TYPE_INTERFACE_Node) != 0 || props == nullptr) return;
          const char* media_class = spa_dict_lookup(props, PW_KEY_MEDIA_CLASS);
          const char* role = spa_dict_lookup(props, PW_KEY_MEDIA_ROLE);
          if (media_class == nullptr || strcmp(media_class, "Video/Source") != 0) return;
          if (!self->media_role.empty() && (role == nullptr || self->media_role != role)) return;
          self->nodes.push_back(id);
          if (self->synced) self->finish();
        },
};

}  // namespace

std::unique_ptr<HostNodes> HostNodes::list(int fd, std::string media_role, unsigned settle_ms, DoneFunc done) {
  static std::once_flag once;
  std::call_once(once, [] { pw_init(nullptr, nullptr); });
  auto impl = std::make_unique<Impl>();
  impl->media_role = std::move(media_role);
  impl->settle_ms = settle_ms;
  impl->done = std::move(done);
  impl->loop = pw_loop_new(nullptr);
  if (impl->loop == nullptr) {
    close(fd);
    impl->error = "cannot make a PipeWire loop";
    impl->finish();
    return std::unique_ptr<HostNodes>(new HostNodes(std::move(impl)));
  }
  pw_loop_enter(impl->loop);
  impl->loop_source = attach_pw_loop(impl->loop);
  impl->context = pw_context_new(impl->loop, nullptr, 0);
  impl->core =
      impl->context != nullptr
          ? pw_context_connect_fd(impl->context, fd, pw_properties_new(PW_KEY_APP_NAME, "sidebus-broker", nullptr), 0)
          : nullptr;
  if (impl->core == nullptr) {
    if (impl->context == nullptr) close(fd);
    impl->error = std::string("cannot connect to the host's PipeWire remote: ") + g_strerror(errno);
    impl->finish();
    return std::unique_ptr<HostNodes>(new HostNodes(std::move(impl)));
  }
  pw_core_add_listener(impl->core, &impl->core_listener, &kCoreEvents, impl.get());
  impl->registry = pw_core_get_registry(impl->core, PW_VERSION_REGISTRY, 0);
  pw_registry_add_listener(impl->registry, &impl->registry_listener, &kRegistryEvents, impl.get());
  impl->seq = pw_core_sync(impl->core, PW_ID_CORE, 0);
  impl->timer = g_timeout_source_new(settle_ms);
  g_source_set_callback(
      impl->timer,
      [](gpointer data) -> gboolean {
        auto* self = static_cast<Impl*>(data);
        g_source_unref(std::exchange(self->timer, nullptr));
        self->finish();  // with what it has, maybe nothing
        return G_SOURCE_REMOVE;
      },
      impl.get(), nullptr);
  g_source_attach(impl->timer, g_main_context_get_thread_default());
  return std::unique_ptr<HostNodes>(new HostNodes(std::move(impl)));
}

HostNodes::HostNodes(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
HostNodes::~HostNodes() = default;

}  // namespace sidebus::plugins
