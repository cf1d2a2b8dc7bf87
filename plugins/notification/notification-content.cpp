// notification-content.cpp — what a guest's notification may hold, and the
// copy the host gets.
//
// One table per interface version (org.freedesktop.portal.Notification, as
// xdg-desktop-portal checks it in notification.c): key, type, validator.
// sidebus_filter_options() drops every key the table does not name (newer
// xdg-desktop-portal drops unknown keys too; 1.16 refused them) and rejects
// wrong types, so the host only ever sees keys of the version the guest was
// told. The validators apply xdg-desktop-portal's rules (priority values,
// buttons with a label and an action, display hints, categories and button
// purposes from their lists or "x-"), and caps of ours on every size: the
// guest is untrusted and the host's notification server renders all of it.
//
// Then the host's copy is built:
//  - title: the VM's name first (portals.notification.title_prefix, else the
//    broker's dialog title prefix), so a guest cannot pose as a host
//    application; a notification without a title gets the prefix alone;
//  - icon: a themed icon (a name, or ("themed", names)) and ("bytes", data)
//    pass; ("file", uri) and other GIcon kinds are refused — a path in the
//    guest means nothing on the host, and a host path must never be chosen
//    by the guest; ("file-descriptor", h) (version 2) is copied into a new
//    sealed memfd for the host, if the link carries fds at all;
//  - sound (version 2): "default", "silent", or ("file-descriptor", h),
//    copied the same way;
//  - buttons: rebuilt from the keys they may have (label, action, target,
//    and purpose in version 2).
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdarg>
#include <cstring>
#include <span>
#include <string_view>

#include "notification.hpp"

namespace sidebus::notification {

namespace {

constexpr std::size_t kMaxTitleLength = 1024;
constexpr std::size_t kMaxBodyLength = 16 * 1024;
constexpr std::size_t kMaxButtons = 8;
constexpr std::size_t kMaxLabelLength = 256;
constexpr std::size_t kMaxActionLength = 256;
constexpr std::size_t kMaxTargetSize = 4096;  // serialized bytes of an action's target
constexpr std::size_t kMaxIconNames = 16;
constexpr std::size_t kMaxIconNameLength = 256;
constexpr std::size_t kMaxDisplayHints = 8;
constexpr std::size_t kMaxCategoryLength = 256;

gboolean invalid(GError** error, const char* format, ...) G_GNUC_PRINTF(2, 3);
gboolean invalid(GError** error, const char* format, ...) {
  va_list args;
  va_start(args, format);
  g_autofree char* message = g_strdup_vprintf(format, args);
  va_end(args);
  g_set_error_literal(error, SIDEBUS_ERROR, SIDEBUS_ERROR_INVALID_ARGUMENT, message);
  return FALSE;
}

bool check_length(const char* text, std::size_t max, const char* what, GError** error) {
  std::size_t length = strlen(text);
  if (length <= max) return true;
  return invalid(error, "%s is %zu bytes long, at most %zu are accepted", what, length, max);
}

bool one_of(std::string_view value, std::span<const char* const> allowed) {
  for (const char* candidate : allowed)
    if (value == candidate) return true;
  return false;
}

// ---- validators (sidebus_filter_options prefixes "option 'KEY': ") --------------

gboolean validate_title(SidebusContext*, const char*, GVariant* value, GError** error) {
  return check_length(g_variant_get_string(value, nullptr), kMaxTitleLength, "the title", error);
}

gboolean validate_body(SidebusContext*, const char*, GVariant* value, GError** error) {
  return check_length(g_variant_get_string(value, nullptr), kMaxBodyLength, "the body", error);
}

// Only the markup xdg-desktop-portal keeps (<b>, <i>, <a href>) means
// anything; the host strips the rest. It must at least parse.
gboolean validate_markup_body(SidebusContext*, const char*, GVariant* value, GError** error) {
  const char* text = g_variant_get_string(value, nullptr);
  if (!check_length(text, kMaxBodyLength, "the markup body", error)) return FALSE;
  static const GMarkupParser no_callbacks = {};
  g_autoptr(GMarkupParseContext) parser =
      g_markup_parse_context_new(&no_callbacks, G_MARKUP_DEFAULT_FLAGS, nullptr, nullptr);
  g_autoptr(GError) parse_error = nullptr;
  if (!g_markup_parse_context_parse(parser, "<markup>", -1, &parse_error) ||
      !g_markup_parse_context_parse(parser, text, -1, &parse_error) ||
      !g_markup_parse_context_parse(parser, "</markup>", -1, &parse_error) ||
      !g_markup_parse_context_end_parse(parser, &parse_error))
    return invalid(error, "not valid markup: %s", parse_error->message);
  return TRUE;
}

constexpr const char* kPriorities[] = {"low", "normal", "high", "urgent"};

gboolean validate_priority(SidebusContext*, const char*, GVariant* value, GError** error) {
  const char* priority = g_variant_get_string(value, nullptr);
  if (one_of(priority, kPriorities)) return TRUE;
  g_autofree char* shown = g_strescape(priority, nullptr);
  return invalid(error, "\"%.64s\" is not a priority (low, normal, high, urgent)", shown);
}

bool check_action(const char* action, GError** error) {
  if (!check_length(action, kMaxActionLength, "the action name", error)) return false;
  if (g_action_name_is_valid(action)) return true;
  g_autofree char* shown = g_strescape(action, nullptr);
  return invalid(error, "\"%.64s\" is not an action name (letters, digits, '-' and '.')", shown);
}

gboolean validate_action(SidebusContext*, const char*, GVariant* value, GError** error) {
  return check_action(g_variant_get_string(value, nullptr), error);
}

bool check_target(GVariant* target, GError** error) {
  if (g_variant_get_size(target) <= kMaxTargetSize) return true;
  return invalid(error, "the action target is %zu bytes, at most %zu are accepted", g_variant_get_size(target),
                 kMaxTargetSize);
}

gboolean validate_target(SidebusContext*, const char*, GVariant* value, GError** error) {
  return check_target(value, error);
}

constexpr const char* kButtonPurposes[] = {
    "system.custom-alert",      "im.reply-with-text",       "call.accept", "call.decline", "call.hang-up",
    "call.enable-speakerphone", "call.disable-speakerphone"};

bool check_vendor_or_listed(const char* value, std::span<const char* const> listed, const char* what, GError** error) {
  if (!check_length(value, kMaxCategoryLength, what, error)) return false;
  if (one_of(value, listed) || (g_str_has_prefix(value, "x-") && value[2] != '\0')) return true;
  g_autofree char* shown = g_strescape(value, nullptr);
  return invalid(error, "\"%.64s\" is not a %s the portal defines (nor an \"x-\" one)", shown, what);
}

// label or purpose, and action, as xdg-desktop-portal requires; @with_purpose
// for version 2. Other keys are dropped when the button is rebuilt.
bool check_button(GVariant* button, bool with_purpose, GError** error) {
  g_autoptr(GVariant) label = g_variant_lookup_value(button, "label", nullptr);
  g_autoptr(GVariant) action = g_variant_lookup_value(button, "action", nullptr);
  g_autoptr(GVariant) target = g_variant_lookup_value(button, "target", nullptr);
  g_autoptr(GVariant) purpose = with_purpose ? g_variant_lookup_value(button, "purpose", nullptr) : nullptr;
  if (label != nullptr) {
    if (!g_variant_is_of_type(label, G_VARIANT_TYPE_STRING)) return invalid(error, "a button's label is not a string");
    if (!check_length(g_variant_get_string(label, nullptr), kMaxLabelLength, "a button's label", error)) return false;
  }
  if (purpose != nullptr) {
    if (!g_variant_is_of_type(purpose, G_VARIANT_TYPE_STRING))
      return invalid(error, "a button's purpose is not a string");
    if (!check_vendor_or_listed(g_variant_get_string(purpose, nullptr), kButtonPurposes, "button purpose", error))
      return false;
  }
  if (label == nullptr && purpose == nullptr)
    return invalid(error, with_purpose ? "a button has neither a label nor a purpose" : "a button has no label");
  if (action == nullptr) return invalid(error, "a button has no action");
  if (!g_variant_is_of_type(action, G_VARIANT_TYPE_STRING)) return invalid(error, "a button's action is not a string");
  if (!check_action(g_variant_get_string(action, nullptr), error)) return false;
  return target == nullptr || check_target(target, error);
}

bool check_buttons(GVariant* buttons, bool with_purpose, GError** error) {
  if (g_variant_n_children(buttons) > kMaxButtons)
    return invalid(error, "%zu buttons, at most %zu are accepted", g_variant_n_children(buttons), kMaxButtons);
  for (gsize i = 0; i < g_variant_n_children(buttons); i++) {
    g_autoptr(GVariant) button = g_variant_get_child_value(buttons, i);
    if (!check_button(button, with_purpose, error)) return false;
  }
  return true;
}

gboolean validate_buttons_v1(SidebusContext*, const char*, GVariant* value, GError** error) {
  return check_buttons(value, false, error);
}

gboolean validate_buttons_v2(SidebusContext*, const char*, GVariant* value, GError** error) {
  return check_buttons(value, true, error);
}

constexpr const char* kDisplayHints[] = {
    "transient", "tray", "persistent", "hide-on-lock-screen", "hide-content-on-lock-screen", "show-as-new"};

gboolean validate_display_hint(SidebusContext*, const char*, GVariant* value, GError** error) {
  if (g_variant_n_children(value) > kMaxDisplayHints)
    return invalid(error, "%zu display hints, at most %zu are accepted", g_variant_n_children(value), kMaxDisplayHints);
  GVariantIter iter;
  const char* hint;
  g_variant_iter_init(&iter, value);
  while (g_variant_iter_next(&iter, "&s", &hint)) {
    if (!one_of(hint, kDisplayHints)) {
      g_autofree char* shown = g_strescape(hint, nullptr);
      return invalid(error, "\"%.64s\" is not a display hint", shown);
    }
  }
  return TRUE;
}

constexpr const char* kCategories[] = {"im.received",
                                       "alarm.ringing",
                                       "call.incoming",
                                       "call.ongoing",
                                       "call.unanswered",
                                       "weather.warning.extreme",
                                       "cellbroadcast.danger.presidential",
                                       "cellbroadcast.danger.extreme",
                                       "cellbroadcast.danger.severe",
                                       "cellbroadcast.public-safety",
                                       "cellbroadcast.amber-alert",
                                       "cellbroadcast.test",
                                       "os.battery.low",
                                       "browser.web-notification"};

gboolean validate_category(SidebusContext*, const char*, GVariant* value, GError** error) {
  return check_vendor_or_listed(g_variant_get_string(value, nullptr), kCategories, "category", error);
}

// "icon" and "sound" take several shapes ("*": any type here); their checks
// need the link and the limits, so they are made when the host's copy is
// built (below).
constexpr SidebusOption kVersion1[] = {
    {"title", "s", validate_title},
    {"body", "s", validate_body},
    {"icon", "*", nullptr},
    {"priority", "s", validate_priority},
    {"default-action", "s", validate_action},
    {"default-action-target", "*", validate_target},
    {"buttons", "aa{sv}", validate_buttons_v1},
};

constexpr SidebusOption kVersion2[] = {
    {"title", "s", validate_title},
    {"body", "s", validate_body},
    {"markup-body", "s", validate_markup_body},
    {"icon", "*", nullptr},
    {"sound", "*", nullptr},
    {"priority", "s", validate_priority},
    {"default-action", "s", validate_action},
    {"default-action-target", "*", validate_target},
    {"buttons", "aa{sv}", validate_buttons_v2},
    {"display-hint", "as", validate_display_hint},
    {"category", "s", validate_category},
};

// ---- the host's copy ----------------------------------------------------------

// A guest's fd (handle @handle of @guest_fds) copied into a new sealed memfd
// appended to *@host_fds; its handle there, or -1 with @error set. Only
// sealed-able memory (a memfd, as the portal documents) is read: reading it
// never blocks the broker, whatever the guest is.
gint32 copy_fd(SidebusContext* context, const Config& config, GVariant* handle, GUnixFDList* guest_fds,
               GUnixFDList** host_fds, const char* what, GError** error) {
  if (!sidebus_context_require_fds(context, error)) return -1;
  gint32 index = g_variant_get_handle(handle);
  if (guest_fds == nullptr || index < 0 || index >= g_unix_fd_list_get_length(guest_fds)) {
    invalid(error, "the %s's file descriptor handle %d names no file descriptor of the call", what, index);
    return -1;
  }
  int fd = g_unix_fd_list_get(guest_fds, index, error);
  if (fd < 0) return -1;
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || fcntl(fd, F_GET_SEALS) < 0) {
    close(fd);
    invalid(error, "the %s's file descriptor is not a memfd (the portal takes sealable memfds only)", what);
    return -1;
  }
  if (static_cast<std::size_t>(st.st_size) > config.max_icon_size) {
    close(fd);
    g_set_error(error, SIDEBUS_ERROR, SIDEBUS_ERROR_INVALID_ARGUMENT,
                "the %s is %lld bytes, at most %zu are accepted (portals.notification.max_icon_size)", what,
                static_cast<long long>(st.st_size), config.max_icon_size);
    return -1;
  }
  int copy = memfd_create("sidebus-notification", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  bool copied = copy >= 0;
  char buffer[16384];
  off_t offset = 0;
  while (copied && offset < st.st_size) {
    ssize_t n = pread(fd, buffer, MIN(sizeof buffer, static_cast<std::size_t>(st.st_size - offset)), offset);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;  // it shrank meanwhile: what was there is the content
    copied = write(copy, buffer, n) == n;
    offset += n;
  }
  close(fd);
  if (copied)
    copied = fcntl(copy, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL) == 0 &&
             lseek(copy, 0, SEEK_SET) == 0;
  if (!copied) {
    int saved = errno;
    if (copy >= 0) close(copy);
    g_set_error(error, SIDEBUS_ERROR, SIDEBUS_ERROR_FAILED, "cannot copy the %s: %s", what, g_strerror(saved));
    return -1;
  }
  if (*host_fds == nullptr) *host_fds = g_unix_fd_list_new();
  gint32 host_index = g_unix_fd_list_append(*host_fds, copy, error);
  close(copy);
  return host_index;
}

bool is_icon_name(const char* name) {
  if (*name == '\0' || strlen(name) > kMaxIconNameLength) return false;
  for (const char* c = name; *c != '\0'; c++)
    if (!g_ascii_isalnum(*c) && strchr("-_.+", *c) == nullptr) return false;
  return true;
}

GError* bad_icon_name(const char* name) {
  g_autofree char* shown = g_strescape(name, nullptr);
  return g_error_new(SIDEBUS_ERROR, SIDEBUS_ERROR_INVALID_ARGUMENT,
                     "option 'icon': \"%.64s\" is not an icon name (1 to %zu of A-Z a-z 0-9 - _ . +)", shown,
                     kMaxIconNameLength);
}

// The icon for the host, or nullptr with @error set.
GVariant* host_icon(SidebusContext* context, const ContentRules& rules, GVariant* icon, GUnixFDList* guest_fds,
                    GUnixFDList** host_fds, GError** error) {
  // A plain string is a themed icon's name (the portal's historical form);
  // GIcon would also read a path or a URI from it: never here.
  if (g_variant_is_of_type(icon, G_VARIANT_TYPE_STRING)) {
    const char* name = g_variant_get_string(icon, nullptr);
    if (!is_icon_name(name)) {
      if (strchr(name, '/') != nullptr) {
        g_set_error(error, SIDEBUS_ERROR, SIDEBUS_ERROR_NOT_ALLOWED,
                    "option 'icon': a file in the VM means nothing on the host; send an icon name or its bytes");
        return nullptr;
      }
      *error = bad_icon_name(name);
      return nullptr;
    }
    const char* names[] = {name, nullptr};
    return g_variant_new("(sv)", "themed", g_variant_new_strv(names, -1));
  }
  if (!g_variant_is_of_type(icon, G_VARIANT_TYPE("(sv)"))) {
    invalid(error, "option 'icon' must be an icon name or a serialized icon (sv), not '%s'",
            g_variant_get_type_string(icon));
    return nullptr;
  }
  const char* kind;
  g_autoptr(GVariant) value = nullptr;
  g_variant_get(icon, "(&sv)", &kind, &value);
  if (strcmp(kind, "themed") == 0) {
    if (!g_variant_is_of_type(value, G_VARIANT_TYPE_STRING_ARRAY)) {
      invalid(error, "option 'icon': a themed icon's names must be 'as'");
      return nullptr;
    }
    gsize n = g_variant_n_children(value);
    if (n == 0 || n > kMaxIconNames) {
      invalid(error, "option 'icon': a themed icon has %zu names, 1 to %zu are accepted", n, kMaxIconNames);
      return nullptr;
    }
    GVariantIter iter;
    const char* name;
    g_variant_iter_init(&iter, value);
    while (g_variant_iter_next(&iter, "&s", &name)) {
      if (!is_icon_name(name)) {
        *error = bad_icon_name(name);
        return nullptr;
      }
    }
    return g_variant_ref(icon);
  }
  if (strcmp(kind, "bytes") == 0) {
    if (!g_variant_is_of_type(value, G_VARIANT_TYPE_BYTESTRING)) {
      invalid(error, "option 'icon': an icon's bytes must be 'ay'");
      return nullptr;
    }
    if (g_variant_get_size(value) > rules.config->max_icon_size) {
      g_set_error(error, SIDEBUS_ERROR, SIDEBUS_ERROR_INVALID_ARGUMENT,
                  "option 'icon': the icon is %zu bytes, at most %zu are accepted (portals.notification.max_icon_size)",
                  g_variant_get_size(value), rules.config->max_icon_size);
      return nullptr;
    }
    return g_variant_ref(icon);  // the host portal checks the image itself
  }
  if (strcmp(kind, "file-descriptor") == 0 && rules.version >= 2) {
    if (!g_variant_is_of_type(value, G_VARIANT_TYPE_HANDLE)) {
      invalid(error, "option 'icon': a file-descriptor icon must be 'h'");
      return nullptr;
    }
    gint32 handle = copy_fd(context, *rules.config, value, guest_fds, host_fds, "icon", error);
    if (handle < 0) return nullptr;
    return g_variant_new("(sv)", "file-descriptor", g_variant_new_handle(handle));
  }
  if (strcmp(kind, "file") == 0) {
    g_set_error(error, SIDEBUS_ERROR, SIDEBUS_ERROR_NOT_ALLOWED,
                "option 'icon': a file in the VM means nothing on the host; send an icon name or its bytes");
    return nullptr;
  }
  g_autofree char* shown = g_strescape(kind, nullptr);
  g_set_error(error, SIDEBUS_ERROR, SIDEBUS_ERROR_INVALID_ARGUMENT,
              "option 'icon': \"%.64s\" icons are not accepted (themed%s)", shown,
              rules.version >= 2 ? ", bytes, file-descriptor" : " or bytes");
  return nullptr;
}

// The sound for the host (version 2), or nullptr with @error set.
GVariant* host_sound(SidebusContext* context, const ContentRules& rules, GVariant* sound, GUnixFDList* guest_fds,
                     GUnixFDList** host_fds, GError** error) {
  if (g_variant_is_of_type(sound, G_VARIANT_TYPE_STRING)) {
    const char* name = g_variant_get_string(sound, nullptr);
    if (strcmp(name, "default") == 0 || strcmp(name, "silent") == 0) return g_variant_ref(sound);
    invalid(error, "option 'sound': only \"default\" and \"silent\" are sounds by name");
    return nullptr;
  }
  const char* kind = nullptr;
  g_autoptr(GVariant) value = nullptr;
  if (g_variant_is_of_type(sound, G_VARIANT_TYPE("(sv)"))) g_variant_get(sound, "(&sv)", &kind, &value);
  if (kind == nullptr || strcmp(kind, "file-descriptor") != 0 || !g_variant_is_of_type(value, G_VARIANT_TYPE_HANDLE)) {
    invalid(error, "option 'sound' must be \"default\", \"silent\" or ('file-descriptor', <handle>)");
    return nullptr;
  }
  gint32 handle = copy_fd(context, *rules.config, value, guest_fds, host_fds, "sound", error);
  if (handle < 0) return nullptr;
  return g_variant_new("(sv)", "file-descriptor", g_variant_new_handle(handle));
}

GVariant* host_buttons(GVariant* buttons, bool with_purpose) {
  g_auto(GVariantBuilder) rebuilt = G_VARIANT_BUILDER_INIT(G_VARIANT_TYPE("aa{sv}"));
  for (gsize i = 0; i < g_variant_n_children(buttons); i++) {
    g_autoptr(GVariant) button = g_variant_get_child_value(buttons, i);
    g_variant_builder_open(&rebuilt, G_VARIANT_TYPE_VARDICT);
    for (const char* key : {"label", "action", "target", "purpose"}) {
      if (strcmp(key, "purpose") == 0 && !with_purpose) continue;
      g_autoptr(GVariant) value = g_variant_lookup_value(button, key, nullptr);
      if (value != nullptr) g_variant_builder_add(&rebuilt, "{sv}", key, value);
    }
    g_variant_builder_close(&rebuilt);
  }
  return g_variant_builder_end(&rebuilt);
}

std::string host_title(SidebusContext* context, const ContentRules& rules, const char* guest_title) {
  if (!rules.config->has_title_prefix) {
    g_autofree char* title = sidebus_context_dialog_title(context, guest_title != nullptr ? guest_title : "");
    std::string result = title;
    if (guest_title == nullptr) result.erase(result.find_last_not_of(' ') + 1);
    return result;
  }
  std::string result = rules.title_prefix;
  if (guest_title == nullptr) {
    result.erase(result.find_last_not_of(' ') + 1);
  } else {
    g_autofree char* valid = g_utf8_make_valid(guest_title, -1);
    result += valid;
  }
  return result;
}

}  // namespace

GVariant* host_notification(SidebusContext* context, const ContentRules& rules, GVariant* notification,
                            GUnixFDList* guest_fds, GUnixFDList** host_fds, GError** error) {
  std::span<const SidebusOption> table =
      rules.version >= 2 ? std::span<const SidebusOption>(kVersion2) : std::span<const SidebusOption>(kVersion1);
  g_autoptr(GVariant) filtered = sidebus_filter_options(context, notification, table.data(), table.size(), error);
  if (filtered == nullptr) return nullptr;

  g_auto(GVariantBuilder) host = G_VARIANT_BUILDER_INIT(G_VARIANT_TYPE_VARDICT);
  const char* guest_title = nullptr;
  g_variant_lookup(filtered, "title", "&s", &guest_title);
  std::string title = host_title(context, rules, guest_title);
  if (!title.empty()) g_variant_builder_add(&host, "{sv}", "title", g_variant_new_string(title.c_str()));

  for (gsize i = 0; i < g_variant_n_children(filtered); i++) {
    const char* key;
    g_autoptr(GVariant) value = nullptr;
    g_variant_get_child(filtered, i, "{&sv}", &key, &value);
    if (strcmp(key, "title") == 0) continue;
    GVariant* host_value = nullptr;
    if (strcmp(key, "icon") == 0)
      host_value = host_icon(context, rules, value, guest_fds, host_fds, error);
    else if (strcmp(key, "sound") == 0)
      host_value = host_sound(context, rules, value, guest_fds, host_fds, error);
    else if (strcmp(key, "buttons") == 0)
      host_value = host_buttons(value, rules.version >= 2);
    else
      host_value = g_variant_ref(value);
    if (host_value == nullptr) {
      g_clear_object(host_fds);
      return nullptr;
    }
    g_autoptr(GVariant) owned = g_variant_take_ref(host_value);  // floating or not, ours now
    g_variant_builder_add(&host, "{sv}", key, owned);
  }
  return g_variant_ref_sink(g_variant_builder_end(&host));
}

}  // namespace sidebus::notification
