// SPDX-License-Identifier: LGPL-2.1-or-later
// stream-route.cpp — how a session's streams reach the guest, by link
// (the kinds are pipewire-remote.hpp's):
//  - NativeRoute (fd-capable links): the host's streams are the guest's —
//    Start's node ids are the host's nodes, and OpenPipeWireRemote is the
//    host's call, its fd (a PipeWire connection that sees only the granted
//    nodes) passed as it is. The guest app talks to the host's PipeWire.
//  - UnavailableRoute (byte-only links): the user can consent and the
//    session starts (the host's node ids are reported, though the guest
//    cannot reach them), but OpenPipeWireRemote fails with NotSupported
//    before the host opens anything, naming what is missing.
//  - RelayRoute (byte-only links with fd forwarding): the stream relay
//    (plugins/common/stream-relay.hpp). publish() relays each granted host
//    stream to a producer node on the guest's own PipeWire and reports the
//    guest's node ids; open_remote() answers with a guest PipeWire
//    connection that sees only those; session_ended() stops the relay.
#include "pipewire-remote.hpp"
#if SIDEBUS_HAVE_RELAY
#include "stream-relay.hpp"
#endif

#include <map>

#include "screencast.hpp"

namespace screencast {
namespace {

class NativeRoute : public StreamRoute {
 public:
  explicit NativeRoute(SidebusContext* context) : context_(context) {}
  void publish(SidebusSession*, const std::vector<Stream>& host_streams, PublishedFunc done) override {
    done(host_streams, nullptr);
  }
  void open_remote(SidebusSession* session, GDBusMethodInvocation* invocation, GVariant* host_options) override {
    sidebus_context_forward_call(context_, invocation, kInterface, "OpenPipeWireRemote",
                                 g_variant_new("(o@a{sv})", sidebus_session_get_host_path(session), host_options),
                                 nullptr, sidebus::plugins::pass_pipewire_fd, nullptr, nullptr);
  }
  void session_ended(SidebusSession*) override {}  // the host's session closing ends its streams

 private:
  SidebusContext* context_;
};

class UnavailableRoute : public StreamRoute {
 public:
  explicit UnavailableRoute(SidebusContext* context) : context_(context) {}
  void publish(SidebusSession*, const std::vector<Stream>& host_streams, PublishedFunc done) override {
    done(host_streams, nullptr);
  }
  void open_remote(SidebusSession*, GDBusMethodInvocation* invocation, GVariant*) override {
    sidebus_context_reject(context_, invocation,
                           sidebus::plugins::pipewire_unavailable_error(context_, "the screen cast"));
  }
  void session_ended(SidebusSession*) override {}

 private:
  SidebusContext* context_;
};

// At most this many sessions of one link relay at once (each stream costs
// the broker a host consumer and up to three frames of memory).
#if SIDEBUS_HAVE_RELAY
constexpr size_t kMaxRelayedSessions = 4;

class RelayRoute : public StreamRoute {
 public:
  explicit RelayRoute(SidebusContext* context) : context_(context) {}
  void publish(SidebusSession* session, const std::vector<Stream>& host_streams, PublishedFunc done) override {
    if (relays_.size() >= kMaxRelayedSessions) {
      GError* error = g_error_new(SIDEBUS_ERROR, SIDEBUS_ERROR_LIMITS_EXCEEDED,
                                  "this VM relays %zu screen cast sessions at once already", kMaxRelayedSessions);
      done({}, error);
      g_error_free(error);
      return;
    }
    auto relay = std::make_unique<sidebus::plugins::StreamRelay>(
        context_, kInterface,
        g_variant_new("(o@a{sv})", sidebus_session_get_host_path(session),
                      g_variant_new_array(G_VARIANT_TYPE("{sv}"), nullptr, 0)),
        "Screen");
    std::vector<uint32_t> host_nodes;
    for (const Stream& stream : host_streams) host_nodes.push_back(stream.node_id);
    sidebus::plugins::StreamRelay* started = relay.get();
    relays_[session] = std::move(relay);
    started->start(host_nodes, [host_streams, done](std::vector<uint32_t> guest_nodes, GError* error) {
      if (error != nullptr) {
        done({}, error);
        return;
      }
      std::vector<Stream> guest_streams;
      for (size_t i = 0; i < host_streams.size(); i++)
        guest_streams.emplace_back(guest_nodes[i], host_streams[i].properties);
      done(guest_streams, nullptr);
    });
  }
  void open_remote(SidebusSession* session, GDBusMethodInvocation* invocation, GVariant*) override {
    auto found = relays_.find(session);
    if (found == relays_.end()) {
      sidebus_context_reject(context_, invocation,
                             g_error_new(SIDEBUS_ERROR, SIDEBUS_ERROR_FAILED, "the session's relay is not running"));
      return;
    }
    found->second->open_remote(invocation);
  }
  void session_ended(SidebusSession* session) override { relays_.erase(session); }

 private:
  SidebusContext* context_;
  std::map<SidebusSession*, std::unique_ptr<sidebus::plugins::StreamRelay>> relays_;
};
#endif

}  // namespace

std::unique_ptr<StreamRoute> stream_route_for(SidebusContext* context) {
  switch (sidebus::plugins::pipewire_route(context)) {
    case sidebus::plugins::PipeWireRoute::kNative: return std::make_unique<NativeRoute>(context);
    case sidebus::plugins::PipeWireRoute::kRelay:
#if SIDEBUS_HAVE_RELAY
      return std::make_unique<RelayRoute>(context);
#else
      return std::make_unique<UnavailableRoute>(context);  // built without libpipewire
#endif
    case sidebus::plugins::PipeWireRoute::kUnavailable: return std::make_unique<UnavailableRoute>(context);
  }
  return std::make_unique<UnavailableRoute>(context);
}

}  // namespace screencast
