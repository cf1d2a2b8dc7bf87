// SPDX-License-Identifier: LGPL-2.1-or-later
// stream-relay.cpp — see stream-relay.hpp. Every asynchronous step carries
// the relay's GCancellable: destroying the relay cancels them, and a
// cancelled step touches nothing.
#include "stream-relay.hpp"

#include <gio/gunixfdlist.h>
#include <sys/socket.h>
#include <unistd.h>

#include <utility>

#include "host-nodes.hpp"
#include "relay-sender.hpp"

namespace sidebus::plugins {
namespace {

constexpr char kHostPortal[] = "org.freedesktop.portal.Desktop";
constexpr char kHostPath[] = "/org/freedesktop/portal/desktop";
constexpr char kGuestRelay[] = "org.sidebus.GuestRelay1";
constexpr char kGuestRelayPath[] = "/org/sidebus/GuestRelay1";
constexpr char kNoPipeWire[] = "org.sidebus.GuestRelay1.Error.NoPipeWire";
constexpr uint32_t kWindow = 2;  // frames in flight per stream
constexpr int kGuestTimeoutMs = 15000;

}  // namespace

struct StreamRelay::Impl {
  SidebusContext* context;
  std::string host_interface;
  GVariant* host_parameters;
  std::string media_role;
  GCancellable* cancellable = g_cancellable_new();
  struct Relayed {
    uint32_t host_node = 0;
    uint32_t guest_node = 0;
    bool ready = false;
    bool creating = false;  // CreateStream is on its way: its answer decides
    std::string ended;      // why the sender ended, if it did
    std::unique_ptr<RelaySender> sender;
  };
  std::vector<Relayed> streams;
  StartedFunc done;
  std::string unavailable;
  std::unique_ptr<HostNodes> discovery;

  ~Impl() {
    discovery.reset();
    g_cancellable_cancel(cancellable);
    g_object_unref(cancellable);
    g_variant_unref(host_parameters);
  }
  void open_host_remote(size_t index, std::function<void(Impl*, int fd)> then);
  void host_remote_opened(size_t index, int fd);
  void create_guest_node(size_t index, int guest_end, const video::Format& format);
  void guest_node_made(size_t index, uint32_t node_id);
  void guest_unavailable(const GError* error);
  void fail(GError* error);
  void maybe_done();
  void stream_ended(size_t index, const std::string& reason);
};

namespace {

// What a step needs to find its relay again, unless it was cancelled.
struct Step {
  StreamRelay::Impl* impl;
  GCancellable* cancellable;
  size_t index;
  std::function<void(StreamRelay::Impl*, int)> then;
  Step(StreamRelay::Impl* i, size_t n) : impl(i), cancellable(G_CANCELLABLE(g_object_ref(i->cancellable))), index(n) {}
  ~Step() { g_object_unref(cancellable); }
  bool cancelled() const { return g_cancellable_is_cancelled(cancellable); }
};

}  // namespace

void StreamRelay::Impl::fail(GError* error) {
  streams.clear();
  if (done) std::exchange(done, nullptr)({}, error);
  g_error_free(error);
}

void StreamRelay::Impl::maybe_done() {
  if (!done) return;
  std::vector<uint32_t> nodes;
  for (const Relayed& relayed : streams) {
    if (!relayed.ready && unavailable.empty()) return;
    nodes.push_back(unavailable.empty() ? relayed.guest_node : 0);
  }
  std::exchange(done, nullptr)(nodes, nullptr);
}

void StreamRelay::Impl::open_host_remote(size_t index, std::function<void(Impl*, int fd)> then) {
  auto* step = new Step(this, index);
  step->then = std::move(then);
  GDBusConnection* host = sidebus_context_get_host_connection(context);
  g_dbus_connection_call_with_unix_fd_list(
      host, kHostPortal, kHostPath, host_interface.c_str(), "OpenPipeWireRemote", host_parameters,
      G_VARIANT_TYPE("(h)"), G_DBUS_CALL_FLAGS_NONE, -1, nullptr, cancellable,
      [](GObject* source, GAsyncResult* result, gpointer data) {
        std::unique_ptr<Step> step(static_cast<Step*>(data));
        GUnixFDList* fds = nullptr;
        GError* error = nullptr;
        GVariant* reply =
            g_dbus_connection_call_with_unix_fd_list_finish(G_DBUS_CONNECTION(source), &fds, result, &error);
        if (step->cancelled()) {
          if (reply != nullptr) g_variant_unref(reply);
          if (fds != nullptr) g_object_unref(fds);
          if (error != nullptr) g_error_free(error);
          return;
        }
        int fd = -1;
        if (reply != nullptr) {
          gint32 handle = -1;
          g_variant_get(reply, "(h)", &handle);
          g_variant_unref(reply);
          if (fds != nullptr && handle >= 0 && handle < g_unix_fd_list_get_length(fds))
            fd = g_unix_fd_list_get(fds, handle, &error);
          else
            error = g_error_new(SIDEBUS_ERROR, SIDEBUS_ERROR_FAILED, "the host portal answered without a remote");
        }
        if (fds != nullptr) g_object_unref(fds);
        if (fd < 0) {
          // The host's refusal (no consent: NotAllowed) reaches the app as such.
          g_autofree char* name = g_dbus_error_get_remote_error(error);
          const bool not_allowed = name != nullptr && g_str_equal(name, "org.freedesktop.portal.Error.NotAllowed");
          g_dbus_error_strip_remote_error(error);
          step->impl->fail(g_error_new(SIDEBUS_ERROR, not_allowed ? SIDEBUS_ERROR_NOT_ALLOWED : SIDEBUS_ERROR_FAILED,
                                       "the host's PipeWire remote for the relay: %s", error->message));
          g_error_free(error);
          return;
        }
        step->then(step->impl, fd);
      },
      step);
}

void StreamRelay::Impl::host_remote_opened(size_t index, int fd) {
  int ends[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, ends) < 0) {
    close(fd);
    fail(g_error_new(SIDEBUS_ERROR, SIDEBUS_ERROR_FAILED, "cannot make the relay's frame socket: %s",
                     g_strerror(errno)));
    return;
  }
  const int guest_end = ends[1];
  Relayed& relayed = streams[index];
  relayed.sender = std::make_unique<RelaySender>(
      ends[0], kWindow,
      [this, index, guest_end](const video::Format& format) { create_guest_node(index, guest_end, format); },
      [this, index](const std::string& reason) { stream_ended(index, reason); });
  GError* error = nullptr;
  if (!relayed.sender->start(fd, relayed.host_node, HostStream::Limits{}, &error)) {
    close(guest_end);
    fail(error);
  }
  // The guest end is handed over once the format is known (create_guest_node), or closed with the sender.
}

void StreamRelay::Impl::create_guest_node(size_t index, int guest_end, const video::Format& format) {
  g_auto(GVariantBuilder) properties = G_VARIANT_BUILDER_INIT(G_VARIANT_TYPE_VARDICT);
  g_variant_builder_add(&properties, "{sv}", "format", g_variant_new_uint32(format.spa_format));
  g_variant_builder_add(&properties, "{sv}", "width", g_variant_new_uint32(format.width));
  g_variant_builder_add(&properties, "{sv}", "height", g_variant_new_uint32(format.height));
  g_variant_builder_add(&properties, "{sv}", "framerate",
                        g_variant_new("(uu)", format.framerate_num, format.framerate_den));
  g_variant_builder_add(&properties, "{sv}", "media_role", g_variant_new_string(media_role.c_str()));
  g_autoptr(GUnixFDList) fds = g_unix_fd_list_new_from_array(&guest_end, 1);  // takes guest_end
  streams[index].creating = true;
  sidebus_context_log(context, G_LOG_LEVEL_DEBUG, "relay: host node %u agreed %ux%u; asking the guest for a node",
                      streams[index].host_node, format.width, format.height);
  g_dbus_connection_call_with_unix_fd_list(
      sidebus_context_get_guest_connection(context), kGuestRelay, kGuestRelayPath, kGuestRelay, "CreateStream",
      g_variant_new("(h@a{sv})", 0, g_variant_builder_end(&properties)), G_VARIANT_TYPE("(u)"), G_DBUS_CALL_FLAGS_NONE,
      kGuestTimeoutMs, fds, cancellable,
      [](GObject* source, GAsyncResult* result, gpointer data) {
        std::unique_ptr<Step> step(static_cast<Step*>(data));
        GError* error = nullptr;
        GVariant* reply =
            g_dbus_connection_call_with_unix_fd_list_finish(G_DBUS_CONNECTION(source), nullptr, result, &error);
        if (step->cancelled()) {
          if (reply != nullptr) g_variant_unref(reply);
          if (error != nullptr) g_error_free(error);
          return;
        }
        step->impl->streams[step->index].creating = false;
        if (reply == nullptr) {
          step->impl->guest_unavailable(error);
          g_error_free(error);
          return;
        }
        guint32 node = 0;
        g_variant_get(reply, "(u)", &node);
        g_variant_unref(reply);
        step->impl->guest_node_made(step->index, node);
      },
      new Step(this, index));
}

void StreamRelay::Impl::guest_node_made(size_t index, uint32_t node_id) {
  Relayed& relayed = streams[index];
  if (relayed.sender == nullptr) {
    if (done) fail(g_error_new(SIDEBUS_ERROR, SIDEBUS_ERROR_FAILED, "%s", relayed.ended.c_str()));
    return;
  }
  relayed.guest_node = node_id;
  relayed.ready = true;
  relayed.sender->guest_ready();
  sidebus_context_log(context, G_LOG_LEVEL_INFO, "relay: host node %u is guest node %u", relayed.host_node, node_id);
  maybe_done();
}

void StreamRelay::Impl::guest_unavailable(const GError* error) {
  g_autofree char* name = g_dbus_error_get_remote_error(error);
  if (name != nullptr && (g_str_equal(name, "org.freedesktop.DBus.Error.ServiceUnknown") ||
                          g_str_equal(name, "org.freedesktop.DBus.Error.NameHasNoOwner"))) {
    unavailable =
        "the VM has no stream relay: sidebus-stream-relay (org.sidebus.GuestRelay1) is not on its session "
        "bus; install it in the VM (it is built with libpipewire) so it is started on demand";
  } else {
    GError* copy = g_error_copy(error);
    g_dbus_error_strip_remote_error(copy);
    unavailable = name != nullptr && g_str_equal(name, kNoPipeWire)
                      ? std::string(copy->message)
                      : std::string("the VM's stream relay could not make a node: ") + copy->message;
    g_error_free(copy);
  }
  sidebus_context_log(context, G_LOG_LEVEL_WARNING, "relay: %s", unavailable.c_str());
  for (Relayed& relayed : streams) relayed.sender.reset();
  maybe_done();
}

void StreamRelay::Impl::stream_ended(size_t index, const std::string& reason) {
  Relayed& relayed = streams[index];
  RelaySender::Stats stats = relayed.sender ? relayed.sender->stats() : RelaySender::Stats{};
  sidebus_context_log(context, G_LOG_LEVEL_INFO,
                      "relay: host node %u ends: %s (%" G_GUINT64_FORMAT " frames sent, %" G_GUINT64_FORMAT " dropped)",
                      relayed.host_node, reason.c_str(), stats.sent, stats.dropped);
  // Destroyed from an idle: we are inside its callback.
  RelaySender* ending = relayed.sender.release();
  g_idle_add_full(
      G_PRIORITY_DEFAULT,
      [](gpointer data) -> gboolean {
        delete static_cast<RelaySender*>(data);
        return G_SOURCE_REMOVE;
      },
      ending, nullptr);
  relayed.ended = reason;
  if (!relayed.ready && !relayed.creating && done)
    fail(g_error_new(SIDEBUS_ERROR, SIDEBUS_ERROR_FAILED, "%s", reason.c_str()));
}

StreamRelay::StreamRelay(SidebusContext* context, std::string host_interface, GVariant* host_parameters,
                         std::string media_role)
    : impl_(std::make_unique<Impl>()) {
  impl_->context = context;
  impl_->host_interface = std::move(host_interface);
  impl_->host_parameters = g_variant_ref_sink(host_parameters);
  impl_->media_role = std::move(media_role);
}

StreamRelay::~StreamRelay() = default;

void StreamRelay::start(const std::vector<uint32_t>& host_nodes, StartedFunc done) {
  impl_->done = std::move(done);
  impl_->streams.resize(host_nodes.size());
  for (size_t i = 0; i < host_nodes.size(); i++) impl_->streams[i].host_node = host_nodes[i];
  for (size_t i = 0; i < host_nodes.size(); i++)
    impl_->open_host_remote(i, [i](Impl* impl, int fd) { impl->host_remote_opened(i, fd); });
}

void StreamRelay::start_discovering(StartedFunc done) {
  impl_->done = std::move(done);
  impl_->open_host_remote(0, [](Impl* impl, int fd) {
    impl->discovery =
        HostNodes::list(fd, impl->media_role, 2000, [impl](std::vector<uint32_t> nodes, const std::string& error) {
          // Destroyed from an idle: we are inside its callback.
          g_idle_add_full(
              G_PRIORITY_DEFAULT,
              [](gpointer data) -> gboolean {
                delete static_cast<HostNodes*>(data);
                return G_SOURCE_REMOVE;
              },
              impl->discovery.release(), nullptr);
          if (!error.empty() || nodes.empty()) {
            impl->fail(g_error_new(SIDEBUS_ERROR, SIDEBUS_ERROR_NOT_FOUND, "%s",
                                   error.empty() ? ("the host's remote shows this VM no " + impl->media_role +
                                                    " node (none present, or not granted)")
                                                       .c_str()
                                                 : error.c_str()));
            return;
          }
          StartedFunc done = std::move(impl->done);
          impl->streams.resize(nodes.size());
          for (size_t i = 0; i < nodes.size(); i++) impl->streams[i].host_node = nodes[i];
          impl->done = std::move(done);
          for (size_t i = 0; i < nodes.size(); i++)
            impl->open_host_remote(i, [i](Impl* relay, int remote) { relay->host_remote_opened(i, remote); });
        });
  });
}

const std::string& StreamRelay::unavailable() const { return impl_->unavailable; }

void StreamRelay::open_remote(GDBusMethodInvocation* invocation) {
  SidebusContext* context = impl_->context;
  if (!impl_->unavailable.empty()) {
    sidebus_context_reject(context, invocation,
                           g_error_new(SIDEBUS_ERROR, SIDEBUS_ERROR_NOT_SUPPORTED, "%s", impl_->unavailable.c_str()));
    return;
  }
  GVariantBuilder nodes;
  g_variant_builder_init(&nodes, G_VARIANT_TYPE("au"));
  size_t live = 0;
  for (const auto& relayed : impl_->streams) {
    if (!relayed.ready || relayed.sender == nullptr) continue;
    g_variant_builder_add(&nodes, "u", relayed.guest_node);
    live++;
  }
  if (live == 0) {
    g_variant_builder_clear(&nodes);
    sidebus_context_reject(context, invocation,
                           g_error_new(SIDEBUS_ERROR, SIDEBUS_ERROR_FAILED, "no relayed stream is running any more"));
    return;
  }
  struct Answer {
    Step step;
    GDBusMethodInvocation* invocation;
  };
  g_dbus_connection_call_with_unix_fd_list(
      sidebus_context_get_guest_connection(context), kGuestRelay, kGuestRelayPath, kGuestRelay, "OpenRemote",
      g_variant_new("(au)", &nodes), G_VARIANT_TYPE("(h)"), G_DBUS_CALL_FLAGS_NONE, kGuestTimeoutMs, nullptr,
      impl_->cancellable,
      [](GObject* source, GAsyncResult* result, gpointer data) {
        // Every way out answers the invocation once: that consumes the caller's reference.
        std::unique_ptr<Answer> answer(static_cast<Answer*>(data));
        GDBusMethodInvocation* invocation = answer->invocation;
        GUnixFDList* fds = nullptr;
        GError* error = nullptr;
        g_autoptr(GVariant) reply =
            g_dbus_connection_call_with_unix_fd_list_finish(G_DBUS_CONNECTION(source), &fds, result, &error);
        g_autoptr(GUnixFDList) owned = fds;
        if (answer->step.cancelled()) {
          if (error != nullptr) g_error_free(error);
          g_dbus_method_invocation_return_error_literal(invocation, SIDEBUS_ERROR, SIDEBUS_ERROR_FAILED,
                                                        "the session ended");
          return;
        }
        SidebusContext* ctx = answer->step.impl->context;
        gint32 handle = -1;
        if (reply != nullptr) g_variant_get(reply, "(h)", &handle);
        if (reply == nullptr || fds == nullptr || g_unix_fd_list_get_length(fds) != 1 || handle != 0) {
          GError* why = g_error_new(SIDEBUS_ERROR, SIDEBUS_ERROR_FAILED, "the VM's stream relay gave no remote: %s",
                                    error != nullptr ? error->message : "a malformed answer");
          if (error != nullptr) g_error_free(error);
          sidebus_context_reject(ctx, invocation, why);
          return;
        }
        // The fd is the link's stand-in for the guest's own: the agent hands that on.
        g_dbus_method_invocation_return_value_with_unix_fd_list(invocation, g_variant_new("(h)", 0), fds);
      },
      new Answer{Step(impl_.get(), 0), invocation});
}

}  // namespace sidebus::plugins
