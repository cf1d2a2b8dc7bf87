// SPDX-License-Identifier: LGPL-2.1-or-later
// wallpaper.cpp — org.freedesktop.portal.Wallpaper for the guest: "set as
// background" in a VM sets the host's background picture, once the host
// user has seen it.
//
// A VM changing the host's desktop is host policy, so the portal is off
// unless an administrator enables it (data/sidebus.d/10-defaults.json), and
// even then the host user confirms every picture: portals.wallpaper.
// always_show_preview (default true) makes every call ask the host for its
// preview dialog, whatever the guest asked. Without it, xdg-desktop-portal
// asks its "Allow Applications to Set Backgrounds?" question once and
// remembers the answer for the app id every unsandboxed host client shares
// (the broker is one), after which any VM could change the background
// silently. Neither dialog can say which VM asks: the Wallpaper backend
// interface has no title or other text field (docs/wallpaper.md).
//
// What the host gets is always a host file (the host call is SetWallpaperFile
// with an fd; xdg-desktop-portal turns it into a file:// URI of its path):
//  - SetWallpaperURI: only file:// URIs of the VM's documents (uri-policy
//    in plugins/common/, as OpenURI checks them), mapped to the host file.
//    Other schemes are refused: the host backend would fetch an http(s) URI
//    itself, from the host's network position, for the VM — a guest that
//    wants a picture from the web downloads it and uses SetWallpaperFile;
//  - SetWallpaperFile: the fd by what it is (plugins/common/host-input.hpp):
//    a document as its host file, other content (the guest's own file, a
//    memfd, a pipe) as a host copy only if portals.wallpaper.
//    copy_outside_documents allows it (default false), at most max_copy_size.
// A copy must outlive the request and the VM: some desktops keep the path
// and read the picture at every login. So copies live in
// $XDG_DATA_HOME/sidebus/wallpapers/<vm>/<target>-<time>/, a copy the host
// did not take is deleted at once, and a copy that became the wallpaper
// replaces the VM's earlier copies for the same target ("both" covers
// background and lockscreen): at most one per target is left.
//
// parent_window means nothing on the host and is dropped; version:
// min(host portal's version, kImplementedVersion).
#include <libpeas/peas.h>
#include <sidebus-plugin.h>

#include <cstring>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "host-input.hpp"
#include "uri-policy.hpp"
#include "wallpaper-dbus.h"
#include "portal-module.hpp"

namespace sidebus::wallpaper {
using namespace sidebus::common;
namespace {

constexpr const char* kInterface = "org.freedesktop.portal.Wallpaper";
constexpr guint32 kImplementedVersion = 1;
constexpr const char* kTargets[] = {"background", "lockscreen", "both"};

struct GObjectUnref {
  void operator()(gpointer object) const { g_object_unref(object); }
};
template <typename T>
using GObjectPtr = std::unique_ptr<T, GObjectUnref>;

// ---- Options -------------------------------------------------------------------

gboolean validate_set_on(SidebusContext*, const char*, GVariant* value, GError** error) {
  const char* target = g_variant_get_string(value, nullptr);
  for (const char* known : kTargets)
    if (strcmp(target, known) == 0) return TRUE;
  g_set_error(error, SIDEBUS_ERROR, SIDEBUS_ERROR_INVALID_ARGUMENT, "must be one of background, lockscreen, both");
  return FALSE;
}

const SidebusOption kOptions[] = {
    {"show-preview", "b", nullptr, {}},
    {"set-on", "s", validate_set_on, {}},
};

// ---- Configuration -------------------------------------------------------------

const SidebusConfigKey kConfigKeys[] = {
    {"always_show_preview", SIDEBUS_CONFIG_BOOLEAN, 0, 0, nullptr, {}},
    {"copy_outside_documents", SIDEBUS_CONFIG_BOOLEAN, 0, 0, nullptr, {}},
    {"max_copy_size", SIDEBUS_CONFIG_INTEGER, 1, G_GINT64_CONSTANT(1) << 40, nullptr, {}},
};

// portals.wallpaper, checked against kConfigKeys when the broker started.
struct Settings {
  bool always_show_preview = true;
  bool copy_outside_documents = false;
  CopyStore::Limits copy_limits{.max_file = 64 * 1024 * 1024, .max_total = 0, .max_in_flight = 2};

  static Settings from_config(JsonObject* config) {
    Settings settings;
    settings.always_show_preview =
        json_object_get_boolean_member_with_default(config, "always_show_preview", settings.always_show_preview);
    settings.copy_outside_documents =
        json_object_get_boolean_member_with_default(config, "copy_outside_documents", settings.copy_outside_documents);
    settings.copy_limits.max_file =
        json_object_get_int_member_with_default(config, "max_copy_size", settings.copy_limits.max_file);
    // Copies in flight at once; what is kept is bounded by the pruning.
    settings.copy_limits.max_total = settings.copy_limits.max_file * settings.copy_limits.max_in_flight;
    return settings;
  }
};

// Which kept copies a new wallpaper for @target replaces.
bool covers(const std::string& target, const std::string& other) { return target == "both" || target == other; }

// "<target>-<time>" → target, "" for anything else.
std::string target_of(const std::string& dir_name) {
  for (const char* target : kTargets) {
    size_t length = strlen(target);
    if (dir_name.size() > length + 1 && dir_name.compare(0, length, target) == 0 && dir_name[length] == '-')
      return target;
  }
  return {};
}

// ---- The portal ------------------------------------------------------------------

class Wallpaper {
 public:
  static std::unique_ptr<Wallpaper> start(SidebusContext* context, GError** error);
  ~Wallpaper();
  Wallpaper(const Wallpaper&) = delete;
  Wallpaper& operator=(const Wallpaper&) = delete;

 private:
  Wallpaper(SidebusContext* context, Settings settings, guint32 version);

  static gboolean on_set_wallpaper_uri(WallpaperGenWallpaper*, GDBusMethodInvocation* invocation,
                                       const char* parent_window, const char* uri, GVariant* options,
                                       gpointer user_data);
  static gboolean on_set_wallpaper_file(WallpaperGenWallpaper*, GDBusMethodInvocation* invocation,
                                        GUnixFDList* fd_list, const char* parent_window, GVariant* fd,
                                        GVariant* options, gpointer user_data);
  static void on_set(SidebusRequest* request, guint32 response, GVariant* results, gpointer user_data);

  // The options for the host (a new reference), or nullptr with @error.
  GVariant* host_options_for(GVariant* options, GError** error);
  static std::string target_in(GVariant* host_options);
  // SetWallpaperFile on the host with @fd; @copy (may be null) is the host
  // copy it shows.
  void set_on_host(GDBusMethodInvocation* invocation, GVariant* options, GVariant* host_options, Fd fd,
                   std::shared_ptr<HostCopy> copy);
  // After @kept became the wallpaper for @target: the VM's earlier copies for it go.
  void prune(const std::string& target, const std::string& kept);
  void reject(GDBusMethodInvocation* invocation, GError* error) { sidebus_context_reject(context_, invocation, error); }

  struct Pending {
    std::shared_ptr<HostCopy> copy;
    std::string target;
  };

  SidebusContext* context_;
  Settings settings_;
  GObjectPtr<WallpaperGenWallpaper> skeleton_;
  std::string copies_dir_;             // $XDG_DATA_HOME/sidebus/wallpapers/<vm>
  std::shared_ptr<CopyStore> copies_;  // copy_outside_documents only
  std::map<std::string, Pending> pending_;  // copies the host has not answered for, by guest request path
};

std::unique_ptr<Wallpaper> Wallpaper::start(SidebusContext* context, GError** error) {
  guint32 host_version = sidebus_context_get_host_version(context, kInterface);
  if (host_version == 0) {
    g_set_error(error, SIDEBUS_ERROR, SIDEBUS_ERROR_NOT_SUPPORTED, "the host portal has no Wallpaper");
    return nullptr;
  }
  Settings settings = Settings::from_config(sidebus_context_get_config(context));
  std::unique_ptr<Wallpaper> self(new Wallpaper(context, settings, MIN(host_version, kImplementedVersion)));
  if (!sidebus_context_export(context, G_DBUS_INTERFACE_SKELETON(self->skeleton_.get()), error)) return nullptr;
  sidebus_context_log(context, G_LOG_LEVEL_DEBUG,
                      "Wallpaper version %u (host %u); preview always: %s; copies outside the documents: %s (%s)",
                      wallpaper_gen_wallpaper_get_version(WALLPAPER_GEN_WALLPAPER(self->skeleton_.get())),
                      host_version, settings.always_show_preview ? "yes" : "no",
                      settings.copy_outside_documents ? "yes" : "no", self->copies_dir_.c_str());
  return self;
}

Wallpaper::Wallpaper(SidebusContext* context, Settings settings, guint32 version)
    : context_(context), settings_(settings), skeleton_(wallpaper_gen_wallpaper_skeleton_new()) {
  g_autofree char* dir = g_build_filename(g_get_user_data_dir(), "sidebus", "wallpapers",
                                          safe_vm_name(sidebus_context_get_vm_name(context)).c_str(), nullptr);
  copies_dir_ = dir;
  if (settings_.copy_outside_documents)
    copies_ = CopyStore::create({.portal = "wallpaper",
                                 .vm_name = sidebus_context_get_vm_name(context),
                                 .limits = settings_.copy_limits,
                                 .root = copies_dir_});
  wallpaper_gen_wallpaper_set_version(skeleton_.get(), version);
  g_signal_connect(skeleton_.get(), "handle-set-wallpaper-uri", G_CALLBACK(on_set_wallpaper_uri), this);
  g_signal_connect(skeleton_.get(), "handle-set-wallpaper-file", G_CALLBACK(on_set_wallpaper_file), this);
}

Wallpaper::~Wallpaper() {
  g_signal_handlers_disconnect_by_data(skeleton_.get(), this);
  pending_.clear();  // copies the host never took are deleted
  copies_.reset();   // kept copies stay: they are the host's wallpaper
}

GVariant* Wallpaper::host_options_for(GVariant* options, GError** error) {
  g_autoptr(GVariant) filtered = sidebus_filter_options(context_, options, kOptions, G_N_ELEMENTS(kOptions), error);
  if (filtered == nullptr || !settings_.always_show_preview) return g_steal_pointer(&filtered);
  // The host user sees the picture and confirms it, whatever the guest asked.
  g_auto(GVariantBuilder) builder = G_VARIANT_BUILDER_INIT(G_VARIANT_TYPE_VARDICT);
  GVariantIter iter;
  const char* key;
  GVariant* value;
  g_variant_iter_init(&iter, filtered);
  while (g_variant_iter_loop(&iter, "{&sv}", &key, &value))
    if (strcmp(key, "show-preview") != 0) g_variant_builder_add(&builder, "{sv}", key, value);
  g_variant_builder_add(&builder, "{sv}", "show-preview", g_variant_new_boolean(TRUE));
  return g_variant_ref_sink(g_variant_builder_end(&builder));
}

std::string Wallpaper::target_in(GVariant* host_options) {
  const char* target = "both";  // what the backends assume without set-on
  g_variant_lookup(host_options, "set-on", "&s", &target);
  return target;
}

// ---- SetWallpaperURI -------------------------------------------------------------------

gboolean Wallpaper::on_set_wallpaper_uri(WallpaperGenWallpaper*, GDBusMethodInvocation* invocation, const char*,
                                         const char* uri, GVariant* options, gpointer user_data) {
  auto* self = static_cast<Wallpaper*>(user_data);
  g_autoptr(GError) error = nullptr;
  g_autoptr(GVariant) host_options = self->host_options_for(options, &error);
  if (host_options == nullptr) {
    self->reject(invocation, g_steal_pointer(&error));
    return G_DBUS_METHOD_INVOCATION_HANDLED;
  }
  g_autofree char* scheme = g_uri_parse_scheme(uri);
  if (scheme == nullptr) {
    self->reject(invocation, g_error_new(SIDEBUS_ERROR, SIDEBUS_ERROR_INVALID_ARGUMENT,
                                         "“%s” is not an absolute URI", quote_for_message(uri).c_str()));
    return G_DBUS_METHOD_INVOCATION_HANDLED;
  }
  if (g_ascii_strcasecmp(scheme, "file") != 0) {
    self->reject(invocation,
                 g_error_new(SIDEBUS_ERROR, SIDEBUS_ERROR_NOT_ALLOWED,
                             "cannot set “%s” as the wallpaper: only the VM's documents (file:// URIs) can be; the "
                             "host would fetch a %s URI itself, for the VM. Download the picture in the VM and pass "
                             "it with SetWallpaperFile",
                             quote_for_message(uri).c_str(), quote_for_message(scheme).c_str()));
    return G_DBUS_METHOD_INVOCATION_HANDLED;
  }
  auto checked = check_guest_uri(uri, {}, sidebus_context_get_guest_documents_path(self->context_), &error);
  std::optional<HostFile> file;
  if (checked) file = open_document(self->context_, checked->guest_path, &error);
  if (!file || file->is_directory) {
    if (file) error = g_error_new(SIDEBUS_ERROR, SIDEBUS_ERROR_NOT_ALLOWED, "it is a folder");
    g_prefix_error(&error, "cannot set “%s” as the wallpaper: ", quote_for_message(uri).c_str());
    self->reject(invocation, g_steal_pointer(&error));
    return G_DBUS_METHOD_INVOCATION_HANDLED;
  }
  sidebus_context_log(self->context_, G_LOG_LEVEL_DEBUG, "SetWallpaperURI: document %s is host file %s",
                      checked->guest_path.c_str(), file->path.c_str());
  self->set_on_host(invocation, options, host_options, std::move(file->fd), nullptr);
  return G_DBUS_METHOD_INVOCATION_HANDLED;
}

// ---- SetWallpaperFile ------------------------------------------------------------------

gboolean Wallpaper::on_set_wallpaper_file(WallpaperGenWallpaper*, GDBusMethodInvocation* invocation,
                                          GUnixFDList* fd_list, const char*, GVariant* fd, GVariant* options,
                                          gpointer user_data) {
  auto* self = static_cast<Wallpaper*>(user_data);
  g_autoptr(GError) error = nullptr;
  if (!sidebus_context_require_fds(self->context_, &error)) {
    g_prefix_error(&error, "SetWallpaperFile needs the file descriptor of the picture: ");
    self->reject(invocation, g_steal_pointer(&error));
    return G_DBUS_METHOD_INVOCATION_HANDLED;
  }
  g_autoptr(GVariant) host_options = self->host_options_for(options, &error);
  if (host_options == nullptr) {
    self->reject(invocation, g_steal_pointer(&error));
    return G_DBUS_METHOD_INVOCATION_HANDLED;
  }
  auto prepared = prepare_host_inputs(self->context_, fd_list, {g_variant_get_handle(fd)},
                                      {.portal = "wallpaper",
                                       .copy_outside_documents = self->settings_.copy_outside_documents,
                                       .purpose = "set as the wallpaper"},
                                      &error);
  if (!prepared) {
    self->reject(invocation, g_steal_pointer(&error));
    return G_DBUS_METHOD_INVOCATION_HANDLED;
  }
  g_autofree char* dir_name =
      g_strdup_printf("%s-%" G_GINT64_FORMAT, target_in(host_options).c_str(), g_get_real_time());
  // Held across the copy; the store never calls back after ~Wallpaper.
  auto held = std::make_shared<HeldCall>(invocation, options, host_options);
  make_host_inputs(self->copies_, std::move(*prepared), {.fallback_name = "wallpaper", .dir_name = dir_name},
                   [self, held](std::vector<HostInput> inputs, GError* copy_error) {
                     if (copy_error != nullptr) {
                       self->reject(held->invocation, g_error_copy(copy_error));
                       return;
                     }
                     HostInput& input = inputs.at(0);
                     if (input.copy != nullptr)
                       sidebus_context_log(self->context_, G_LOG_LEVEL_MESSAGE,
                                           "the VM asks to set a host copy of its %s as the wallpaper: %s",
                                           input.shown.c_str(), input.path.c_str());
                     self->set_on_host(held->invocation, held->options, held->host_options, std::move(input.fd),
                                       std::move(input.copy));
                   });
  return G_DBUS_METHOD_INVOCATION_HANDLED;
}

void Wallpaper::set_on_host(GDBusMethodInvocation* invocation, GVariant* options, GVariant* host_options, Fd fd,
                            std::shared_ptr<HostCopy> copy) {
  g_autoptr(GError) error = nullptr;
  SidebusRequest* request = sidebus_request_new(context_, invocation, options, &error);
  if (request == nullptr) {
    reject(invocation, g_steal_pointer(&error));
    return;  // @copy goes with it
  }
  if (copy != nullptr) pending_[sidebus_request_get_guest_path(request)] = {std::move(copy), target_in(host_options)};
  int raw_fd = fd.release();
  g_autoptr(GUnixFDList) fds = g_unix_fd_list_new_from_array(&raw_fd, 1);  // owns it now
  sidebus_request_call_host_full(request, kInterface, "SetWallpaperFile",
                                 g_variant_new("(sh@a{sv})", "", 0, host_options), fds, on_set, this, nullptr);
}

// Runs only while the link (and so this object) lives.
void Wallpaper::on_set(SidebusRequest* request, guint32 response, GVariant*, gpointer user_data) {
  auto* self = static_cast<Wallpaper*>(user_data);
  auto found = self->pending_.find(sidebus_request_get_guest_path(request));
  if (found != self->pending_.end()) {
    Pending pending = std::move(found->second);
    self->pending_.erase(found);
    if (response == SIDEBUS_RESPONSE_SUCCESS) {
      pending.copy->keep();
      g_autofree char* kept = g_path_get_basename(pending.copy->dir().c_str());
      self->prune(pending.target, kept);
    }
    // otherwise the host did not take it: deleted here
  }
  sidebus_request_respond(request, response, nullptr);
}

void Wallpaper::prune(const std::string& target, const std::string& kept) {
  std::set<std::string> in_flight;
  for (const auto& [path, pending] : pending_) {
    g_autofree char* name = g_path_get_basename(pending.copy->dir().c_str());
    in_flight.insert(name);
  }
  std::vector<std::string> old;
  g_autoptr(GDir) dir = g_dir_open(copies_dir_.c_str(), 0, nullptr);
  while (const char* name = dir != nullptr ? g_dir_read_name(dir) : nullptr) {
    std::string other = target_of(name);
    if (other.empty() || name == kept || in_flight.count(name) != 0 || !covers(target, other)) continue;
    old.emplace_back(name);
  }
  for (const std::string& name : old) {
    sidebus_context_log(context_, G_LOG_LEVEL_DEBUG, "wallpaper %s replaces the earlier copy %s", kept.c_str(),
                        name.c_str());
    remove_tree(copies_dir_ + "/" + name);
  }
}

}  // namespace
}  // namespace sidebus::wallpaper

// ---- The libpeas extension -------------------------------------------------

SIDEBUS_PORTAL_MODULE(WallpaperPortal, wallpaper_portal, sidebus::wallpaper::Wallpaper,
                      std::span<const SidebusConfigKey>(sidebus::wallpaper::kConfigKeys))
