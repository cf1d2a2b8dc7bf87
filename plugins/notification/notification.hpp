// notification.hpp — the pieces of the Notification plugin and how they meet.
//
// notification.cpp          the portal object on the guest bus: AddNotification,
//                           RemoveNotification, ActionInvoked; the guest's ids
//                           mapped to host ids per guest application
// notification-content.cpp  what a notification may hold: the option table
//                           (per interface version), every value checked and
//                           capped, the host's copy built (the VM's name in the
//                           title, icons and sounds the host can use)
#pragma once

#include <sidebus-plugin.h>

#include <cstddef>
#include <string>

namespace sidebus::notification {

inline constexpr char kInterface[] = "org.freedesktop.portal.Notification";
// Version 2 added markup-body, sound, display-hint, category, button
// purposes, fd icons and SupportedOptions.
inline constexpr guint32 kImplementedVersion = 2;

// A guest's notification id: at most this many bytes.
inline constexpr std::size_t kMaxIdLength = 256;

// portals.notification, checked against its schema when the broker started.
struct Config {
  // Put before the title on the host; "{vm}" is the VM's name. Unset: the
  // broker's dialog title prefix (broker.dialog_title_prefix).
  bool has_title_prefix = false;
  std::string title_prefix;
  std::size_t max_notifications = 64;  // shown at once, per VM
  // A client that leaves the guest bus: keep its notifications on the host
  // (their actions go nowhere) instead of withdrawing them.
  bool keep_after_exit = false;
  std::size_t max_icon_size = 256 * 1024;  // bytes of an icon (or sound) the guest sends

  static Config from(JsonObject* config);
};
extern const SidebusConfigKey kConfigKeys[];
extern const std::size_t kConfigKeyCount;

// What the content checks need to know about the portal.
struct ContentRules {
  guint32 version;  // the interface version the guest was told
  const Config* config;
  std::string title_prefix;  // resolved: "{vm}" replaced (when has_title_prefix)
};

// The notification to send to the host for the guest's @notification:
// only the keys of the version's table, each checked; the title names the
// VM; a themed icon given as a plain string becomes a serialized one; fd
// icons and sounds are copied into new sealed memfds appended to
// *@host_fds (created on first use). A new non-floating a{sv}, or nullptr
// with @error set (InvalidArgument, NotAllowed, NotSupported).
GVariant* host_notification(SidebusContext* context, const ContentRules& rules, GVariant* notification,
                            GUnixFDList* guest_fds, GUnixFDList** host_fds, GError** error);

}  // namespace sidebus::notification
