// SPDX-License-Identifier: LGPL-2.1-or-later
// host-identity.cpp — the move into the VM's app scope (host-identity.hpp).
//
// systemd's StartTransientUnit answers once the job is queued; the scope
// holds the pid only when the job is done, which the manager announces with
// JobRemoved (sent to the client that queued the job without a Subscribe).
// So: subscribe to JobRemoved, ask, wait for our unit's JobRemoved, then
// check /proc/self/cgroup — all on a private main context, each step within
// kHostIdentityTimeoutUs.
#include "broker/host-identity.hpp"

#include <unistd.h>

#include <functional>
#include <optional>
#include <utility>

#include "broker/app-unit-name.hpp"
#include "util/gobject-ptr.hpp"

namespace sidebus {

namespace {

constexpr char kSystemd[] = "org.freedesktop.systemd1";
constexpr char kSystemdPath[] = "/org/freedesktop/systemd1";
constexpr char kManager[] = "org.freedesktop.systemd1.Manager";

std::string own_unit() {
  g_autofree char* contents = nullptr;
  if (!g_file_get_contents("/proc/self/cgroup", &contents, nullptr, nullptr)) return "";
  return unit_name::unit_of_cgroup(contents);
}

// What each generation of xdg-desktop-portal makes of @unit, for the log.
std::string seen_as(const std::string& unit) {
  std::string old_id = unit_name::xdp_app_id(unit, unit_name::XdpParser::k1_14);
  std::string new_id = unit_name::xdp_app_id(unit, unit_name::XdpParser::k1_17);
  if (old_id == new_id) return "app id '" + new_id + "'";
  return "app id '" + new_id + "' (xdg-desktop-portal 1.14.0–1.16.0: '" + old_id + "')";
}

// One StartTransientUnit and its job, on a main context of its own.
class ScopeStart {
 public:
  ScopeStart(GDBusConnection* bus, std::string unit) : bus_(bus), unit_(std::move(unit)) {
    g_main_context_push_thread_default(context_);
  }
  ~ScopeStart() {
    if (subscription_ != 0) g_dbus_connection_signal_unsubscribe(bus_, subscription_);
    // A cancelled call still answers: let it, so nothing points at us.
    g_cancellable_cancel(cancellable_.get());
    while (call_pending_) g_main_context_iteration(context_, TRUE);
    g_main_context_pop_thread_default(context_);
    g_main_context_unref(context_);
  }

  // Ask for the scope holding @pid; true once the manager says its job is
  // done. @error says which step failed.
  bool run(pid_t pid, const std::string& description, GError** error) {
    subscription_ = g_dbus_connection_signal_subscribe(bus_, kSystemd, kManager, "JobRemoved", kSystemdPath, nullptr,
                                                       G_DBUS_SIGNAL_FLAGS_NONE, on_job_removed, this, nullptr);
    const guint32 pids[] = {guint32(pid)};
    GVariantBuilder properties;
    g_variant_builder_init(&properties, G_VARIANT_TYPE("a(sv)"));
    g_variant_builder_add(&properties, "(sv)", "PIDs",
                          g_variant_new_fixed_array(G_VARIANT_TYPE_UINT32, pids, 1, sizeof pids[0]));
    g_variant_builder_add(&properties, "(sv)", "Slice", g_variant_new_string("app.slice"));
    g_variant_builder_add(&properties, "(sv)", "Description", g_variant_new_string(description.c_str()));
    g_variant_builder_add(&properties, "(sv)", "CollectMode", g_variant_new_string("inactive-or-failed"));
    call_pending_ = true;
    // No auto-start: without a user manager the bus's activation file for
    // systemd1 runs /bin/false, which tells us nothing more.
    g_dbus_connection_call(bus_, kSystemd, kSystemdPath, kManager, "StartTransientUnit",
                           g_variant_new("(ssa(sv)a(sa(sv)))", unit_.c_str(), "fail", &properties, nullptr),
                           G_VARIANT_TYPE("(o)"), G_DBUS_CALL_FLAGS_NO_AUTO_START, int(kHostIdentityTimeoutUs / 1000),
                           cancellable_.get(), on_started, this);
    if (!wait([this] { return !call_pending_; })) {
      g_set_error(error, G_IO_ERROR, G_IO_ERROR_TIMED_OUT, "the user manager did not answer StartTransientUnit");
      return false;
    }
    if (call_error_ != nullptr) {
      g_propagate_error(error, std::exchange(call_error_, nullptr));
      g_dbus_error_strip_remote_error(*error);
      return false;
    }
    if (!wait([this] { return job_result_.has_value(); })) {
      g_set_error(error, G_IO_ERROR, G_IO_ERROR_TIMED_OUT, "the job starting %s did not finish", unit_.c_str());
      return false;
    }
    if (*job_result_ != "done") {
      g_set_error(error, G_IO_ERROR, G_IO_ERROR_FAILED, "the job starting %s ended \"%s\"", unit_.c_str(),
                  job_result_->c_str());
      return false;
    }
    return true;
  }

 private:
  bool wait(const std::function<bool()>& done) {
    gint64 deadline = g_get_monotonic_time() + kHostIdentityTimeoutUs;
    while (!done() && g_get_monotonic_time() < deadline) {
      GSource* tick = g_timeout_source_new(50);  // re-check the deadline
      g_source_set_callback(
          tick, [](gpointer) { return G_SOURCE_REMOVE; }, nullptr, nullptr);
      g_source_attach(tick, context_);
      g_main_context_iteration(context_, TRUE);
      g_source_destroy(tick);
      g_source_unref(tick);
    }
    return done();
  }

  static void on_started(GObject* source, GAsyncResult* result, gpointer data) {
    auto* self = static_cast<ScopeStart*>(data);
    g_autoptr(GVariant) reply = g_dbus_connection_call_finish(G_DBUS_CONNECTION(source), result, &self->call_error_);
    self->call_pending_ = false;
  }

  static void on_job_removed(GDBusConnection*, const char*, const char*, const char*, const char*, GVariant* parameters,
                             gpointer data) {
    auto* self = static_cast<ScopeStart*>(data);
    if (!g_variant_is_of_type(parameters, G_VARIANT_TYPE("(uoss)"))) return;
    const char* unit = nullptr;
    const char* result = nullptr;
    g_variant_get(parameters, "(u&o&s&s)", nullptr, nullptr, &unit, &result);
    if (self->unit_ == unit) self->job_result_ = result;
  }

  GDBusConnection* bus_;
  std::string unit_;
  GMainContext* context_ = g_main_context_new();
  GObjectPtr<GCancellable> cancellable_ = adopt(g_cancellable_new());
  guint subscription_ = 0;
  bool call_pending_ = false;
  GError* call_error_ = nullptr;
  std::optional<std::string> job_result_;
};

bool no_user_manager(const GError* error) {
  return g_error_matches(error, G_DBUS_ERROR, G_DBUS_ERROR_SERVICE_UNKNOWN) ||
         g_error_matches(error, G_DBUS_ERROR, G_DBUS_ERROR_NAME_HAS_NO_OWNER);
}

}  // namespace

bool establish_host_identity(GDBusConnection* host_bus, const HostIdentityOptions& options, GError** error) {
  if (options.mode == HostIdentityMode::kOff) {
    g_message("host identity: off (broker.host_identity); the host portal sees this VM as %s",
              seen_as(own_unit()).c_str());
    return true;
  }
  const bool required = options.mode == HostIdentityMode::kRequired;
  // @expected: a host without a user manager is an ordinary setup, not a
  // fault, in auto mode.
  auto fail = [&](const std::string& why, const char* what_to_do, bool expected = false) {
    if (required) {
      g_set_error(error, G_IO_ERROR, G_IO_ERROR_FAILED,
                  "broker.host_identity is \"required\", but %s; %s, or set broker.host_identity to \"auto\" or "
                  "\"off\"",
                  why.c_str(), what_to_do);
      return false;
    }
    g_log_structured(G_LOG_DOMAIN, expected ? G_LOG_LEVEL_MESSAGE : G_LOG_LEVEL_WARNING, "MESSAGE",
                     "host identity: %s; the host portal sees this VM as %s (app id '' is shared with every host "
                     "application and every other VM). %s, or set broker.host_identity to \"off\"",
                     why.c_str(), seen_as(own_unit()).c_str(), what_to_do);
    return true;
  };

  std::string current = own_unit();
  if (!current.empty() && unit_name::xdp_app_id(current, unit_name::XdpParser::k1_17) == options.app_id &&
      unit_name::xdp_app_id(current, unit_name::XdpParser::k1_14) == options.app_id) {
    g_message("host identity: already in %s; the host portal sees this VM as app id '%s'", current.c_str(),
              options.app_id.c_str());
    return true;
  }
  std::string scope = unit_name::app_scope(options.app_id, getpid());
  if (scope.empty())
    return fail("the app id '" + options.app_id + "' makes a unit name longer than systemd's " +
                    std::to_string(unit_name::kMaxUnitNameLength) + " bytes",
                "choose a shorter broker.host_app_id or VM name");

  g_autoptr(GError) local_error = nullptr;
  {
    ScopeStart start(host_bus, scope);
    if (!start.run(getpid(), "sidebus broker of VM " + options.vm_name + " (its app id toward the host portal)",
                   &local_error)) {
      if (no_user_manager(local_error))
        return fail("no systemd user manager (org.freedesktop.systemd1) is on the host bus",
                    "run the broker in a systemd user session", true);
      return fail("the user manager did not move the broker into " + scope + ": " + local_error->message,
                  "run the broker as the session's user, in a systemd user session");
    }
  }
  current = own_unit();
  if (current != scope)
    return fail("the user manager started " + scope + ", but the broker is in " +
                    (current.empty() ? std::string("no unit") : current),
                "check that the host uses the unified cgroup hierarchy for systemd");
  g_message("host identity: running in %s; the host portal sees this VM as %s", scope.c_str(), seen_as(scope).c_str());
  std::string old_id = unit_name::xdp_app_id(scope, unit_name::XdpParser::k1_14);
  if (old_id != options.app_id)
    g_warning(
        "host identity: xdg-desktop-portal 1.14.0–1.16.0 reads app ids of three or more elements only; "
        "it sees this VM as '%s'. Set broker.host_app_id to an id such as dev.sidebus.vm.%s",
        old_id.c_str(), options.vm_name.c_str());
  return true;
}

}  // namespace sidebus
