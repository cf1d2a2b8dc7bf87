// SPDX-License-Identifier: LGPL-2.1-or-later
// debug-bus.cpp — see debug-bus.hpp. The in-process agent end uses the same
// AgentSession as sidebus-agent; if it ends while the bus is still there it
// reconnects after a second, like the real agent's backoff would.
#include "broker/debug-bus.hpp"

#include <sys/socket.h>

#include "agent/agent-session.hpp"
#include "documents/dbus-daemon.hpp"

namespace sidebus {

namespace {

class DebugBusImpl : public DebugBus {
 public:
  ~DebugBusImpl() override {
    *alive_ = nullptr;
    if (reconnect_source_ != 0) g_source_remove(reconnect_source_);
    session_.reset();
    daemon_.reset();
  }

  bool init(const std::string& dir, const std::string& runtime_dir, Listener::AcceptFunc on_link, GError** error) {
    on_link_ = std::move(on_link);
    daemon_ = DBusDaemon::spawn(runtime_dir + "/debug-bus.conf", dir + "/vm.sock", error);
    if (!daemon_) return false;
    g_message("debug access: guest bus stand-in at %s — run clients with DBUS_SESSION_BUS_ADDRESS=unix:path=%s/vm.sock",
              daemon_->address().c_str(), dir.c_str());
    return connect(error);
  }

 private:
  bool connect(GError** error) {
    int pair[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0) {
      int saved_errno = errno;
      g_set_error(error, G_IO_ERROR, g_io_error_from_errno(saved_errno), "socketpair: %s", g_strerror(saved_errno));
      return false;
    }
    UniqueFd agent_end(pair[0]);
    UniqueFd broker_end(pair[1]);
    // The broker end first: its handshake runs in a thread while the agent
    // end below blocks this one until the link is up.
    on_link_(std::move(broker_end), true, "debug-access");
    auto alive = alive_;
    session_ = AgentSession::start(
        std::move(agent_end), true, "debug-access", daemon_->address(),
        [alive](bool guest_bus_gone, GError* closed_error) {
          if (*alive) (*alive)->on_session_closed(guest_bus_gone, closed_error);
        },
        error);
    return session_ != nullptr;
  }

  void on_session_closed(bool guest_bus_gone, GError* error) {
    g_warning("debug access: in-process agent link closed%s%s%s", error != nullptr ? ": " : "",
              error != nullptr ? error->message : "", guest_bus_gone ? " (the vm.sock bus went away)" : "");
    if (reconnect_source_ != 0) return;
    reconnect_source_ = g_timeout_add_seconds(1, [](gpointer data) -> gboolean {
      auto* self = static_cast<DebugBusImpl*>(data);
      self->reconnect_source_ = 0;
      self->session_.reset();
      g_autoptr(GError) error = nullptr;
      if (!self->connect(&error)) g_warning("debug access: reconnecting failed: %s", error->message);
      return G_SOURCE_REMOVE;
    }, this);
  }

  Listener::AcceptFunc on_link_;
  std::unique_ptr<DBusDaemon> daemon_;
  std::unique_ptr<AgentSession> session_;
  guint reconnect_source_ = 0;
  std::shared_ptr<DebugBusImpl*> alive_ = std::make_shared<DebugBusImpl*>(this);
};

}  // namespace

std::unique_ptr<DebugBus> DebugBus::start(const std::string& dir, const std::string& runtime_dir,
                                          Listener::AcceptFunc on_link, GError** error) {
  auto bus = std::make_unique<DebugBusImpl>();
  if (!bus->init(dir, runtime_dir, std::move(on_link), error)) return nullptr;
  return bus;
}

}  // namespace sidebus
