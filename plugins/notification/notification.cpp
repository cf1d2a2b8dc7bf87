// SPDX-License-Identifier: LGPL-2.1-or-later
// notification.cpp — org.freedesktop.portal.Notification for the guest: a
// VM's applications show notifications on the host desktop, and hear which
// of their buttons the user clicked.
//
// Identity is the point. Toward the host every guest application is the
// broker's one connection (app id "" for an unsandboxed host client), so the
// host cannot keep guest applications apart; this file does:
//  - a guest notification is named by (guest client, guest id); its host id
//    is "sidebus.<vm>.<pid>.<n>", a fresh counter value per (client, id), never
//    the guest's string. Two guest applications using the same id never
//    replace or withdraw each other's notification, and two VMs (two
//    brokers) never collide on the host;
//  - the host's ActionInvoked (which xdg-desktop-portal sends to the broker)
//    is passed on to the one guest client that added the notification
//    (unicast), with its own id; an ActionInvoked for a host id we did not
//    give out is dropped;
//  - RemoveNotification only ever withdraws the caller's own;
//  - a guest client that leaves the guest bus has its notifications
//    withdrawn on the host: its unique name is gone for good, so nothing
//    could ever receive their actions (xdg-desktop-portal keeps a sandboxed
//    app's notifications because it can start the app again by its app id;
//    a VM's client has no such id on the host). With
//    portals.notification.keep_after_exit they stay instead, for the user
//    to read ("download finished" from a tool that exits), as orphans:
//    their actions reach nobody, and the oldest orphan is withdrawn when a
//    new notification needs its place. Everything goes with the VM's link;
//  - at most portals.notification.max_notifications are shown per VM,
//    orphans included.
// What a notification may hold, and the host's copy of it (the VM's name in
// the title, icons), is notification-content.cpp. version = min(host, 2).
#include <libpeas/peas.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <string>
#include <utility>

#include "notification-dbus.h"
#include "notification.hpp"
#include "portal-module.hpp"

namespace sidebus::notification {

// ---- Configuration -------------------------------------------------------------

namespace {

gboolean validate_title_prefix(const char*, JsonNode* value, GError** error) {
  const char* prefix = json_node_get_string(value);
  if (strlen(prefix) <= 256) return TRUE;
  g_set_error(error, SIDEBUS_ERROR, SIDEBUS_ERROR_INVALID_ARGUMENT, "is %zu bytes long, at most 256", strlen(prefix));
  return FALSE;
}

}  // namespace

const SidebusConfigKey kConfigKeys[] = {
    {"title_prefix", SIDEBUS_CONFIG_STRING, 0, 0, validate_title_prefix, {}},
    {"max_notifications", SIDEBUS_CONFIG_INTEGER, 1, 1024, nullptr, {}},
    {"max_icon_size", SIDEBUS_CONFIG_INTEGER, 1024, 16 * 1024 * 1024, nullptr, {}},
    {"keep_after_exit", SIDEBUS_CONFIG_BOOLEAN, 0, 0, nullptr, {}},
};
const std::size_t kConfigKeyCount = G_N_ELEMENTS(kConfigKeys);

Config Config::from(JsonObject* object) {
  Config config;
  if (json_object_has_member(object, "title_prefix")) {
    config.has_title_prefix = true;
    config.title_prefix = json_object_get_string_member(object, "title_prefix");
  }
  config.max_notifications =
      json_object_get_int_member_with_default(object, "max_notifications", config.max_notifications);
  config.max_icon_size = json_object_get_int_member_with_default(object, "max_icon_size", config.max_icon_size);
  config.keep_after_exit = json_object_get_boolean_member_with_default(object, "keep_after_exit", FALSE);
  return config;
}

namespace {

std::atomic<guint64> next_host_number{1};

std::string replace_vm(std::string text, const std::string& vm_name) {
  for (std::size_t at = text.find("{vm}"); at != std::string::npos; at = text.find("{vm}", at + vm_name.size()))
    text.replace(at, 4, vm_name);
  return text;
}

// (guest client's unique name, guest id)
using GuestKey = std::pair<std::string, std::string>;

// The notifications of one link. Shared with calls in flight (weakly), which
// may end after the portal stopped.
struct Shown {
  std::map<GuestKey, std::string> host_ids;  // (sender, guest id) → host id
  std::map<std::string, GuestKey> by_host;   // host id → (sender, guest id)
  std::map<std::string, guint> watches;      // sender → guest client watch
  std::deque<std::string> orphans;           // host ids of clients that left, oldest first (keep_after_exit)

  void forget(const GuestKey& key) {
    auto found = host_ids.find(key);
    if (found == host_ids.end()) return;
    by_host.erase(found->second);
    host_ids.erase(found);
  }
  std::size_t count_of(const std::string& sender) const {
    std::size_t count = 0;
    for (const auto& [key, host_id] : host_ids) count += key.first == sender;
    return count;
  }
};

class Notification {
 public:
  static std::unique_ptr<Notification> start(SidebusContext* context, GError** error);
  ~Notification();
  Notification(const Notification&) = delete;
  Notification& operator=(const Notification&) = delete;

 private:
  Notification(SidebusContext* context, Config config, guint32 version);

  static gboolean on_add(SidebusNotificationGenNotification*, GDBusMethodInvocation* invocation, GUnixFDList* fd_list,
                         const char* id, GVariant* notification, gpointer user_data);
  static gboolean on_remove(SidebusNotificationGenNotification*, GDBusMethodInvocation* invocation, const char* id,
                            gpointer user_data);
  static void on_host_action_invoked(SidebusContext* context, const char* object_path, const char* signal_name,
                                     GVariant* parameters, gpointer user_data);
  static void on_client_vanished(SidebusContext* context, const char* sender, gpointer user_data);

  void watch(const std::string& sender);
  void unwatch_if_unused(const std::string& sender);
  // RemoveNotification on the host without waiting for it (teardown).
  void withdraw_on_host(const std::string& host_id);
  void reject(GDBusMethodInvocation* invocation, GError* error) { sidebus_context_reject(context_, invocation, error); }

  SidebusContext* context_;
  Config config_;
  ContentRules rules_;
  std::shared_ptr<Shown> shown_ = std::make_shared<Shown>();
  GObject* skeleton_;  // SidebusNotificationGenNotificationSkeleton, owned
};

std::unique_ptr<Notification> Notification::start(SidebusContext* context, GError** error) {
  guint32 host_version = sidebus_context_get_host_version(context, kInterface);
  if (host_version == 0) {
    g_set_error(error, SIDEBUS_ERROR, SIDEBUS_ERROR_NOT_SUPPORTED,
                "the host portal has no Notification (xdg-desktop-portal offers it only with a Notification backend)");
    return nullptr;
  }
  guint32 version = MIN(host_version, kImplementedVersion);
  std::unique_ptr<Notification> self(
      new Notification(context, Config::from(sidebus_context_get_config(context)), version));
  if (!sidebus_context_export(context, G_DBUS_INTERFACE_SKELETON(self->skeleton_), error)) return nullptr;
  sidebus_context_subscribe_host_signal(context, kInterface, "ActionInvoked", SIDEBUS_PORTAL_OBJECT_PATH,
                                        on_host_action_invoked, self.get(), nullptr);
  g_autofree char* example = sidebus_context_dialog_title(context, "");
  sidebus_context_log(
      context, G_LOG_LEVEL_DEBUG,
      "Notification version %u (host %u); title prefix \"%s\"; at most %zu shown, icons up to %zu bytes", version,
      host_version, self->config_.has_title_prefix ? self->rules_.title_prefix.c_str() : example,
      self->config_.max_notifications, self->config_.max_icon_size);
  return self;
}

Notification::Notification(SidebusContext* context, Config config, guint32 version)
    : context_(context),
      config_(std::move(config)),
      skeleton_(G_OBJECT(sidebus_notification_gen_notification_skeleton_new())) {
  rules_.version = version;
  rules_.config = &config_;
  if (config_.has_title_prefix)
    rules_.title_prefix = replace_vm(config_.title_prefix, sidebus_context_get_vm_name(context));
  auto* skeleton = SIDEBUS_NOTIFICATION_GEN_NOTIFICATION(skeleton_);
  sidebus_notification_gen_notification_set_version(skeleton, version);
  g_autoptr(GVariant) supported =
      version >= 2 ? sidebus_context_get_host_property(context, kInterface, "SupportedOptions") : nullptr;
  sidebus_notification_gen_notification_set_supported_options(
      skeleton, supported != nullptr && g_variant_is_of_type(supported, G_VARIANT_TYPE_VARDICT)
                    ? supported
                    : g_variant_new("a{sv}", nullptr));
  g_signal_connect(skeleton_, "handle-add-notification", G_CALLBACK(on_add), this);
  g_signal_connect(skeleton_, "handle-remove-notification", G_CALLBACK(on_remove), this);
}

// stop(): the link is going away; the host connection still works.
Notification::~Notification() {
  g_signal_handlers_disconnect_by_data(skeleton_, this);
  for (const auto& [key, host_id] : shown_->host_ids) withdraw_on_host(host_id);
  for (const std::string& host_id : shown_->orphans) withdraw_on_host(host_id);
  std::size_t withdrawn = shown_->host_ids.size() + shown_->orphans.size();
  if (withdrawn > 0)
    sidebus_context_log(context_, G_LOG_LEVEL_DEBUG, "withdrew %zu notifications: the VM's link went away", withdrawn);
  shown_->host_ids.clear();
  shown_->by_host.clear();
  shown_->orphans.clear();
  g_object_unref(skeleton_);
}

void Notification::withdraw_on_host(const std::string& host_id) {
  g_dbus_connection_call(sidebus_context_get_host_connection(context_), SIDEBUS_PORTAL_BUS_NAME,
                         SIDEBUS_PORTAL_OBJECT_PATH, kInterface, "RemoveNotification",
                         g_variant_new("(s)", host_id.c_str()), nullptr, G_DBUS_CALL_FLAGS_NO_AUTO_START, -1, nullptr,
                         nullptr, nullptr);
}

void Notification::watch(const std::string& sender) {
  if (shown_->watches.count(sender) != 0) return;
  shown_->watches[sender] =
      sidebus_context_watch_guest_client(context_, sender.c_str(), on_client_vanished, this, nullptr);
}

void Notification::unwatch_if_unused(const std::string& sender) {
  auto found = shown_->watches.find(sender);
  if (found == shown_->watches.end() || shown_->count_of(sender) > 0) return;
  sidebus_context_unwatch_guest_client(context_, found->second);
  shown_->watches.erase(found);
}

void Notification::on_client_vanished(SidebusContext* context, const char* sender, gpointer user_data) {
  auto* self = static_cast<Notification*>(user_data);
  self->shown_->watches.erase(sender);
  std::size_t withdrawn = 0;
  for (auto it = self->shown_->host_ids.begin(); it != self->shown_->host_ids.end();) {
    if (it->first.first != sender) {
      ++it;
      continue;
    }
    if (self->config_.keep_after_exit)
      self->shown_->orphans.push_back(it->second);
    else
      self->withdraw_on_host(it->second);
    self->shown_->by_host.erase(it->second);
    it = self->shown_->host_ids.erase(it);
    withdrawn++;
  }
  if (withdrawn > 0 && self->config_.keep_after_exit)
    sidebus_context_log(context, G_LOG_LEVEL_DEBUG,
                        "%s left the guest bus: its %zu notification%s stay%s on the host, their actions reach nobody",
                        sender, withdrawn, withdrawn == 1 ? "" : "s", withdrawn == 1 ? "s" : "");
  else if (withdrawn > 0)
    sidebus_context_log(context, G_LOG_LEVEL_DEBUG,
                        "%s left the guest bus: withdrew its %zu notification%s (nothing could receive their actions)",
                        sender, withdrawn, withdrawn == 1 ? "" : "s");
}

// One AddNotification in flight: if the host refuses it, a notification
// that was new is forgotten again.
struct AddCall {
  std::weak_ptr<Shown> shown;
  GuestKey key;
  std::string host_id;
  bool is_new = false;
  bool added = false;
  static void destroy(gpointer data) {
    std::unique_ptr<AddCall> call(static_cast<AddCall*>(data));
    auto shown = call->shown.lock();
    if (call->added || !call->is_new || !shown) return;
    auto found = shown->host_ids.find(call->key);
    if (found != shown->host_ids.end() && found->second == call->host_id) shown->forget(call->key);
  }
  static GVariant* on_reply(SidebusContext*, GVariant*, GUnixFDList*, GUnixFDList**, gpointer data, GError**) {
    static_cast<AddCall*>(data)->added = true;
    return g_variant_new("()");
  }
};

gboolean Notification::on_add(SidebusNotificationGenNotification*, GDBusMethodInvocation* invocation,
                              GUnixFDList* fd_list, const char* id, GVariant* notification, gpointer user_data) {
  auto* self = static_cast<Notification*>(user_data);
  const char* sender = g_dbus_method_invocation_get_sender(invocation);
  if (strlen(id) > kMaxIdLength) {
    self->reject(invocation, g_error_new(SIDEBUS_ERROR, SIDEBUS_ERROR_INVALID_ARGUMENT,
                                         "the notification id is %zu bytes long, at most %zu are accepted", strlen(id),
                                         kMaxIdLength));
    return G_DBUS_METHOD_INVOCATION_HANDLED;
  }
  GError* error = nullptr;
  GUnixFDList* host_fds_raw = nullptr;
  g_autoptr(GVariant) host_notification = sidebus::notification::host_notification(
      self->context_, self->rules_, notification, fd_list, &host_fds_raw, &error);
  g_autoptr(GUnixFDList) host_fds = host_fds_raw;
  if (host_notification == nullptr) {
    g_prefix_error(&error, "invalid notification: ");
    self->reject(invocation, error);
    return G_DBUS_METHOD_INVOCATION_HANDLED;
  }

  GuestKey key{sender, id};
  auto call = std::make_unique<AddCall>();
  call->shown = self->shown_;
  call->key = key;
  auto found = self->shown_->host_ids.find(key);
  if (found != self->shown_->host_ids.end()) {
    call->host_id = found->second;  // the same id again: the host replaces it
  } else {
    if (self->shown_->host_ids.size() + self->shown_->orphans.size() >= self->config_.max_notifications &&
        !self->shown_->orphans.empty()) {
      self->withdraw_on_host(self->shown_->orphans.front());  // the oldest orphan makes room
      self->shown_->orphans.pop_front();
    }
    if (self->shown_->host_ids.size() + self->shown_->orphans.size() >= self->config_.max_notifications) {
      self->reject(invocation,
                   g_error_new(SIDEBUS_ERROR, SIDEBUS_ERROR_LIMITS_EXCEEDED,
                               "this VM shows %zu notifications already (portals.notification.max_notifications); "
                               "withdraw one first",
                               self->shown_->host_ids.size()));
      return G_DBUS_METHOD_INVOCATION_HANDLED;
    }
    call->is_new = true;
    call->host_id = "sidebus." + std::string(sidebus_context_get_vm_name(self->context_)) + "." +
                    std::to_string(getpid()) + "." + std::to_string(next_host_number.fetch_add(1));
    self->shown_->host_ids[key] = call->host_id;
    self->shown_->by_host[call->host_id] = key;
    self->watch(sender);
  }
  sidebus_context_log(self->context_, G_LOG_LEVEL_DEBUG, "AddNotification %s of %s → host %s", id, sender,
                      call->host_id.c_str());
  std::string host_id = call->host_id;
  sidebus_context_forward_call(self->context_, invocation, kInterface, "AddNotification",
                               g_variant_new("(s@a{sv})", host_id.c_str(), host_notification), host_fds,
                               AddCall::on_reply, call.release(), AddCall::destroy);
  return G_DBUS_METHOD_INVOCATION_HANDLED;
}

gboolean Notification::on_remove(SidebusNotificationGenNotification* skeleton, GDBusMethodInvocation* invocation,
                                 const char* id, gpointer user_data) {
  auto* self = static_cast<Notification*>(user_data);
  const char* sender = g_dbus_method_invocation_get_sender(invocation);
  GuestKey key{sender, id};
  auto found = self->shown_->host_ids.find(key);
  if (found == self->shown_->host_ids.end()) {
    // Not the caller's (or long gone): nothing to withdraw, as the host
    // portal answers for an unknown id.
    sidebus_notification_gen_notification_complete_remove_notification(skeleton, invocation);
    return G_DBUS_METHOD_INVOCATION_HANDLED;
  }
  std::string host_id = found->second;
  self->shown_->forget(key);
  self->unwatch_if_unused(sender);
  sidebus_context_forward_call(self->context_, invocation, kInterface, "RemoveNotification",
                               g_variant_new("(s)", host_id.c_str()), nullptr, nullptr, nullptr, nullptr);
  return G_DBUS_METHOD_INVOCATION_HANDLED;
}

void Notification::on_host_action_invoked(SidebusContext* context, const char*, const char*, GVariant* parameters,
                                          gpointer user_data) {
  auto* self = static_cast<Notification*>(user_data);
  if (!g_variant_is_of_type(parameters, G_VARIANT_TYPE("(ssav)"))) return;
  const char* host_id;
  const char* action;
  g_autoptr(GVariant) parameter = nullptr;
  g_variant_get(parameters, "(&s&s@av)", &host_id, &action, &parameter);
  auto found = self->shown_->by_host.find(host_id);
  if (found == self->shown_->by_host.end()) return;  // not one of this link's
  const auto& [sender, guest_id] = found->second;
  sidebus_context_log(context, G_LOG_LEVEL_DEBUG, "ActionInvoked %s on %s → %s's %s", action, host_id, sender.c_str(),
                      guest_id.c_str());
  sidebus_context_emit_guest_signal(context, sender.c_str(), nullptr, kInterface, "ActionInvoked",
                                    g_variant_new("(ss@av)", guest_id.c_str(), action, parameter));
}

}  // namespace
}  // namespace sidebus::notification

// ---- The libpeas extension -------------------------------------------------

SIDEBUS_PORTAL_MODULE(SidebusNotificationPortal, sidebus_notification_portal, sidebus::notification::Notification,
                      std::span<const SidebusConfigKey>(sidebus::notification::kConfigKeys))
