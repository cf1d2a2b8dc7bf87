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
// Phase 2 adds a RelayRoute here (docs/screencast.md): publish() makes a
// producer node on the guest's PipeWire for each granted stream and reports
// the guest's node ids, open_remote() answers with a guest PipeWire
// connection that sees only those, session_ended() stops the relay. Nothing
// else in the plugin changes.
#include "pipewire-remote.hpp"
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

}  // namespace

std::unique_ptr<StreamRoute> stream_route_for(SidebusContext* context) {
  switch (sidebus::plugins::pipewire_route(context)) {
    case sidebus::plugins::PipeWireRoute::kNative: return std::make_unique<NativeRoute>(context);
    case sidebus::plugins::PipeWireRoute::kUnavailable: return std::make_unique<UnavailableRoute>(context);
  }
  return std::make_unique<UnavailableRoute>(context);
}

}  // namespace screencast
