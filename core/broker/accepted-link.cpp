// SPDX-License-Identifier: LGPL-2.1-or-later
// guest-link.cpp — the broker's end of a link: establish_guest_link() and the
// GuestLink it produces.
//
// Setting up one link, in order:
//   1. a detached thread runs the handshake on the link fd (bounded by
//      handshake::kTimeoutUsec), so a slow or hostile guest never blocks the
//      main loop;
//   2. the main loop then starts the broker's GDBusConnection (a client of the
//      guest bus, MESSAGE_BUS flag: it sends Hello itself) on one end of a
//      socketpair, while the thread answers its SASL on the other end (the
//      "pump" end) with sasl::run_server();
//   3. the main loop relays pump ↔ link (link/relay.hpp); GDBus's Hello
//      crosses the link, the guest bus answers, g_dbus_connection_new()
//      completes and done() gets the GuestLink. The relay enforces the
//      GuestLinkLimits on what comes from the link, from the first byte of
//      D-Bus on.
// Everything is also bounded by kSetupTimeoutSeconds. All callbacks run on
// the main context; results from the thread are checked against `finished`,
// so a late one is dropped (and its fds closed).
#include <gio/gio.h>
#include <sys/socket.h>

#include <atomic>
#include <thread>

#include "util/gobject-ptr.hpp"
#include "link/handshake.hpp"
#include "broker/accepted-link.hpp"
#include "link/sasl.hpp"
#include "link/relay.hpp"
#include "util/main-context.hpp"

namespace sidebus {

namespace {

constexpr int kSetupTimeoutSeconds = 30;  // accept → Hello answered
constexpr int kMaxLinksInHandshake = 8;   // per process; more are refused "busy"
std::atomic<int> links_in_handshake{0};


// Shared by the setup steps and, once established, by the GuestLink.
struct LinkCore : std::enable_shared_from_this<LinkCore> {
  using DoneFunc = std::function<void(std::unique_ptr<GuestLink>, GError*)>;

  LinkPeerInfo peer;
  GuestLinkLimits limits;
  GuestLinkForwarding forwarding;
  DoneFunc done;
  std::function<void()> on_closed;

  UniqueFd client_end;  // until GDBus takes it
  GObjectPtr<GCancellable> cancellable{g_cancellable_new()};
  std::unique_ptr<Relay> relay;
  GDBusConnection* connection = nullptr;  // owned
  gulong closed_handler = 0;
  guint timeout = 0;
  bool finished = false;  // done() has been called
  bool closed = false;    // on_closed() has been called, or the owner is gone
  // Keeps the core alive while setup is pending (every step only holds a
  // weak reference); dropped when done() is called.
  std::shared_ptr<LinkCore> self;

  ~LinkCore() { shutdown(); }

  void fail(GError* error) {  // takes error
    if (finished) return g_error_free(error);
    // During setup the relay knows best why the link went (a guest that
    // broke the protocol): that is the one reason given.
    Relay::Side side;
    GError* relay_error = nullptr;
    if (relay && relay->failed(&side, &relay_error)) {
      g_error_free(error);
      error = relay_error;
    }
    auto hold = std::move(self);
    finished = true;
    closed = true;
    g_prefix_error(&error, "guest link %s: ", peer.transport.c_str());
    shutdown();
    auto done_copy = std::move(done);
    done_copy(nullptr, error);
    g_error_free(error);
  }

  // Either the relay ended or GDBus saw its stream end. D-Bus has no
  // half-open state, so the whole link goes down now, whatever the owner does
  // with the GuestLink: the agent sees EOF and reconnects.
  void link_closed() {
    if (!finished) {
      fail(g_error_new(G_IO_ERROR, G_IO_ERROR_CONNECTION_CLOSED, "closed during setup"));  // says why
      return;
    }
    if (!closed) say_why_closed();
    if (closed) return;
    closed = true;
    stop();
    if (on_closed) on_closed();
  }

  // A guest that broke the limits or sent garbage is worth a warning; a link
  // that just went away is not. Asks the relay rather than waiting for its
  // on_done: GDBus may see the stream end first. (The relay's messages name
  // the transport.)
  void say_why_closed() {
    Relay::Side side;
    g_autoptr(GError) error = nullptr;
    if (!relay || !relay->failed(&side, &error)) return;
    bool from_guest = side == Relay::Side::Link;
    if (from_guest && (g_error_matches(error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA) ||
                       g_error_matches(error, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED)))
      g_warning("%s; closed the link", error->message);
    else
      g_debug("guest link %s: %s", peer.transport.c_str(), error->message);
  }

  // Stops everything but keeps `connection` (closed) for the owner to look at.
  void stop() {
    if (timeout) {
      g_source_remove(timeout);
      timeout = 0;
    }
    g_cancellable_cancel(cancellable.get());
    if (connection && closed_handler) {
      g_signal_handler_disconnect(connection, closed_handler);
      closed_handler = 0;
    }
    if (connection && !g_dbus_connection_is_closed(connection))
      g_dbus_connection_close(connection, nullptr, nullptr, nullptr);
    relay.reset();  // stops and joins the relay thread, closes link and pump
    client_end.reset();
  }

  void shutdown() {
    stop();
    g_clear_object(&connection);
  }
};

class GuestLinkImpl : public GuestLink {
 public:
  explicit GuestLinkImpl(std::shared_ptr<LinkCore> core) : core_(std::move(core)) {}
  ~GuestLinkImpl() override {
    core_->closed = true;
    core_->shutdown();
  }
  GDBusConnection* connection() override { return core_->connection; }
  const LinkPeerInfo& peer() override { return core_->peer; }
  const Relay::Counters* counters() override { return core_->relay ? &core_->relay->counters() : nullptr; }

 private:
  std::shared_ptr<LinkCore> core_;
};

using WeakCore = std::weak_ptr<LinkCore>;

// ---- step 3: the connection is up ----

void on_connection_ready(GObject*, GAsyncResult* result, gpointer data) {
  std::unique_ptr<WeakCore> weak(static_cast<WeakCore*>(data));
  GError* error = nullptr;
  GDBusConnection* connection = g_dbus_connection_new_finish(result, &error);
  auto core = weak->lock();
  if (!core || core->finished) {
    g_clear_error(&error);
    if (connection) g_dbus_connection_close(connection, nullptr, nullptr, nullptr);
    g_clear_object(&connection);
    return;
  }
  if (!connection) return core->fail(error);
  core->connection = connection;
  g_dbus_connection_set_exit_on_close(connection, FALSE);
  core->closed_handler = g_signal_connect_data(
      connection, "closed", G_CALLBACK(+[](GDBusConnection*, gboolean, GError*, gpointer data) {
        if (auto core = static_cast<WeakCore*>(data)->lock()) core->link_closed();
      }),
      new WeakCore(core), [](gpointer data, GClosure*) { delete static_cast<WeakCore*>(data); }, GConnectFlags(0));
  if (core->timeout) g_source_remove(core->timeout);
  core->timeout = 0;
  core->finished = true;
  core->self.reset();  // from now on the GuestLink owns the core
  g_debug("guest link %s established: protocol %u, agent %s, guest uid %u, fds %s, broker is %s on the guest bus",
          core->peer.transport.c_str(), core->peer.protocol_version, core->peer.agent_version.c_str(),
          core->peer.guest_uid,
          !core->peer.carries_fds ? "not carried" : core->peer.framed ? "forwarded" : "passed natively",
          g_dbus_connection_get_unique_name(connection));
  auto done = std::move(core->done);
  done(std::make_unique<GuestLinkImpl>(core), nullptr);
}

// ---- step 2: handshake done, GDBus may start authenticating ----

void on_handshake_done(const std::shared_ptr<LinkCore>& core, const handshake::Hello& hello,
                       const handshake::Terms& terms) {
  core->peer.protocol_version = terms.version;
  core->peer.guest_uid = hello.uid;
  core->peer.agent_version = hello.agent_version;
  core->peer.carries_fds = terms.fds;
  core->peer.framed = terms.framed;
  GError* error = nullptr;
  GSocket* socket = g_socket_new_from_fd(core->client_end.get(), &error);
  if (!socket) return core->fail(error);
  core->client_end.release();  // the GSocket owns it now
  GObjectPtr<GSocket> socket_owner(socket);
  GObjectPtr<GSocketConnection> stream(g_socket_connection_factory_create_connection(socket));
  g_dbus_connection_new(G_IO_STREAM(stream.get()), nullptr,
                        GDBusConnectionFlags(G_DBUS_CONNECTION_FLAGS_AUTHENTICATION_CLIENT |
                                             G_DBUS_CONNECTION_FLAGS_MESSAGE_BUS_CONNECTION),
                        nullptr, core->cancellable.get(), on_connection_ready, new WeakCore(core));
}

// ---- step 2½: SASL answered; relay so Hello reaches the guest bus ----

void on_auth_done(const std::shared_ptr<LinkCore>& core, UniqueFd link, UniqueFd pump, bool fds) {
  core->peer.carries_fds = fds;
  GError* error = nullptr;
  WeakCore weak = core;
  Relay::Options options;
  options.pass_fds = fds;
  if (core->peer.framed) {
    FramedLinkOptions framed;
    framed.broker_end = true;
    framed.resolver = core->forwarding.resolver;
    framed.limits = core->limits.forwarding;
    framed.limit_prefix = "broker.";
    options.framed = std::move(framed);
  }
  options.guest_limits = core->limits.traffic;
  options.guest_messages_per_second = core->limits.max_messages_per_second;
  core->relay = Relay::start(
      std::move(pump), "the broker's guest connection", std::move(link), "link " + core->peer.transport, options,
      [weak](Relay::Side, const GError*) {
        if (auto core = weak.lock()) core->link_closed();  // which logs why
      },
      &error);
  if (!core->relay) core->fail(error);
}

// ---- step 1 (thread): handshake, then SASL for the local GDBus client ----

struct ThreadResult {
  UniqueFd link, pump;
};

void setup_thread(GMainContext* context, WeakCore weak, std::string transport, bool transport_fds,
                  handshake::BrokerOffer offer, UniqueFd link, UniqueFd pump) {
  std::string what = "link " + transport;
  auto post_error = [&](GError* error) {
    post_to_context(context, [weak, error] {
      if (auto core = weak.lock())
        core->fail(error);
      else
        g_error_free(error);
    });
  };
  GError* error = nullptr;
  handshake::Hello hello;
  handshake::Terms terms;
  gint64 deadline = g_get_monotonic_time() + handshake::kTimeoutUsec;
  if (!handshake::broker_begin(link.get(), transport_fds, offer, deadline, what.c_str(), &hello, &terms, &error) ||
      !handshake::broker_finish(link.get(), deadline, what.c_str(), &terms, &error)) {
    post_error(error);
  } else {
    post_to_context(context, [weak, hello, terms] {
      auto core = weak.lock();
      if (core && !core->finished) on_handshake_done(core, hello, terms);
    });
    bool agreed = false;
    deadline = g_get_monotonic_time() + handshake::kTimeoutUsec;
    if (!sasl::run_server(pump.get(), terms.fds, deadline, &agreed, &error)) {
      post_error(error);
    } else {
      auto result = std::make_shared<ThreadResult>(ThreadResult{std::move(link), std::move(pump)});
      post_to_context(context, [weak, result, agreed] {
        auto core = weak.lock();
        if (core && !core->finished) on_auth_done(core, std::move(result->link), std::move(result->pump), agreed);
      });
    }
  }
  links_in_handshake--;
  g_main_context_unref(context);
}

}  // namespace

void establish_guest_link(UniqueFd link, bool transport_carries_fds, std::string transport,
                          std::function<void(std::unique_ptr<GuestLink>, GError*)> done,
                          std::function<void()> on_closed, GuestLinkLimits limits,
                          GuestLinkForwarding forwarding) {
  auto core = std::make_shared<LinkCore>();
  core->self = core;
  core->peer.transport = transport;
  core->limits = limits;
  handshake::BrokerOffer offer{forwarding.enabled, forwarding.documents_path};
  core->forwarding = std::move(forwarding);
  core->done = std::move(done);
  core->on_closed = std::move(on_closed);
  GMainContext* context = g_main_context_ref_thread_default();  // the thread's reference
  WeakCore weak = core;

  auto fail_soon = [&](GError* error) {  // done() never runs inside this call
    post_to_context(context, [weak, error] {
      if (auto core = weak.lock())
        core->fail(error);
      else
        g_error_free(error);
    });
    g_main_context_unref(context);
  };

  if (++links_in_handshake > kMaxLinksInHandshake) {
    links_in_handshake--;
    handshake::broker_refuse(link.get(), "busy");
    return fail_soon(g_error_new(G_IO_ERROR, G_IO_ERROR_BUSY,
                                 "refused: already %d links in handshake; is the guest reconnecting in a loop?",
                                 kMaxLinksInHandshake));
  }
  int pair[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0) {
    int saved = errno;
    links_in_handshake--;
    return fail_soon(g_error_new(G_IO_ERROR, g_io_error_from_errno(saved), "socketpair: %s", g_strerror(saved)));
  }
  core->client_end = UniqueFd(pair[0]);
  UniqueFd pump(pair[1]);
  core->timeout = g_timeout_add_seconds_full(
      G_PRIORITY_DEFAULT, kSetupTimeoutSeconds,
      [](gpointer data) -> gboolean {
        if (auto core = static_cast<WeakCore*>(data)->lock()) {
          core->timeout = 0;
          core->fail(
              g_error_new(G_IO_ERROR, G_IO_ERROR_TIMED_OUT, "setup did not finish within %d s", kSetupTimeoutSeconds));
        }
        return G_SOURCE_REMOVE;
      },
      new WeakCore(weak), [](gpointer data) { delete static_cast<WeakCore*>(data); });
  try {
    std::thread(setup_thread, context, weak, transport, transport_carries_fds, std::move(offer), std::move(link),
                std::move(pump))
        .detach();
  } catch (const std::system_error& e) {
    links_in_handshake--;
    fail_soon(g_error_new(G_IO_ERROR, G_IO_ERROR_FAILED, "cannot start the handshake thread: %s", e.what()));
  }
}

}  // namespace sidebus
