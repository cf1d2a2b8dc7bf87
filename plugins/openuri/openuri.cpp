// SPDX-License-Identifier: LGPL-2.1-or-later
// openuri.cpp — org.freedesktop.portal.OpenURI for the guest: a link
// clicked in the VM opens in the host's browser, a document the VM was given
// opens in the host's application for it.
//
// Every method is forwarded to the host's xdg-desktop-portal, which picks
// the application (asking the user through its AppChooser when it must);
// what this file adds is the VM boundary:
//  - OpenURI: the URI passes uri-policy.cpp (scheme allow-list
//    portals.openuri.schemes, file:// only for the VM's documents). A
//    file:// document becomes a host OpenFile with an fd of the host file,
//    because the host portal refuses file:// in OpenURI and because only the
//    host file means anything there.
//  - OpenFile / OpenDirectory: the guest's fd is resolved
//    (plugins/common/guest-file.cpp); a document is opened as its host file,
//    anything else is refused unless portals.openuri.copy_outside_documents
//    allows opening a host copy (plugins/common/copy-store.cpp).
//  - SchemeSupported: schemes outside the allow-list are "unsupported"
//    without asking the host; the others are the host's answer.
//  - version: min(host portal's version, kImplementedVersion).
// Options go through a table (sidebus_filter_options); the guest's
// parent_window means nothing on the host and is dropped; requests map onto
// host requests through the core's Request helper, so Response, Close and a
// vanished caller behave as in every sidebus portal.
#include <fcntl.h>
#include <libpeas/peas.h>
#include <sidebus-plugin.h>
#include <stdlib.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>
#include <memory>
#include <optional>

#include "copy-store.hpp"
#include "guest-file.hpp"
#include "guest-text.hpp"
#include "openuri-dbus.h"
#include "uri-policy.hpp"
#include "portal-module.hpp"

namespace sidebus::openuri {
// Guest files, host copies and the URI policy: plugins/common/.
using namespace sidebus::common;
namespace {

constexpr const char* kInterface = "org.freedesktop.portal.OpenURI";
// Version 5 added SchemeSupported.
constexpr guint32 kImplementedVersion = 5;

struct GObjectUnref {
  void operator()(gpointer object) const { g_object_unref(object); }
};
template <typename T>
using GObjectPtr = std::unique_ptr<T, GObjectUnref>;

// ---- Options -----------------------------------------------------------------

const SidebusOption kOpenOptions[] = {
    {"writable", "b", nullptr},
    {"ask", "b", nullptr},
    {"activation_token", "s", validate_activation_token},
};
const SidebusOption kOpenDirectoryOptions[] = {
    {"activation_token", "s", validate_activation_token},
};

// @options without @key (a new reference).
GVariant* without_option(GVariant* options, const char* key) {
  g_auto(GVariantBuilder) builder = G_VARIANT_BUILDER_INIT(G_VARIANT_TYPE_VARDICT);
  GVariantIter iter;
  const char* name;
  GVariant* value;
  g_variant_iter_init(&iter, options);
  while (g_variant_iter_loop(&iter, "{&sv}", &name, &value))
    if (strcmp(name, key) != 0) g_variant_builder_add(&builder, "{sv}", name, value);
  return g_variant_ref_sink(g_variant_builder_end(&builder));
}

// Drops @old, returns @replacement: for reassigning a g_autoptr(GVariant).
GVariant* replace_variant(GVariant* old, GVariant* replacement) {
  g_variant_unref(old);
  return replacement;
}

bool option_is_true(GVariant* options, const char* key) {
  gboolean value = FALSE;
  return g_variant_lookup(options, key, "b", &value) && value;
}

// ---- Configuration -----------------------------------------------------------

// Schemes an administrator may not list: they are not links to another
// application but code or content the host would run or show as if it were
// its own (javascript:, vbscript:, data:, blob:), or host files (file:,
// which is only ever opened for the VM's own documents, listed or not).
constexpr const char* kRefusedSchemes[][2] = {
    {"file", "file:// URIs are opened only for the VM's shared documents, whatever the list says; remove it"},
    {"javascript", "it runs script code in the host's browser, not a link to open"},
    {"vbscript", "it runs script code on the host, not a link to open"},
    {"data", "it carries content for the host to show as its own, not a link to open"},
    {"blob", "it names a browser's in-memory content, not a link to open"},
};

gboolean validate_schemes(const char*, JsonNode* value, GError** error) {
  JsonArray* array = json_node_get_array(value);
  for (guint i = 0; i < json_array_get_length(array); i++) {
    const char* scheme = json_array_get_string_element(array, i);
    g_autofree char* lower = g_ascii_strdown(scheme, -1);
    if (!is_uri_scheme(scheme) || strcmp(lower, scheme) != 0) {
      g_set_error(error, SIDEBUS_ERROR, SIDEBUS_ERROR_INVALID_ARGUMENT,
                  "[%u] \"%s\" is not a lower-case URI scheme (a-z, then a-z 0-9 + - .; without \":\"), e.g. \"https\"",
                  i, quote_for_message(scheme).c_str());
      return FALSE;
    }
    for (const auto& refused : kRefusedSchemes) {
      if (strcmp(scheme, refused[0]) == 0) {
        g_set_error(error, SIDEBUS_ERROR, SIDEBUS_ERROR_NOT_ALLOWED, "[%u] \"%s\" cannot be allowed: %s", i, scheme,
                    refused[1]);
        return FALSE;
      }
    }
  }
  return TRUE;
}

const SidebusConfigKey kConfigKeys[] = {
    {"schemes", SIDEBUS_CONFIG_STRING_ARRAY, 0, 0, validate_schemes, {}},
    {"copy_outside_documents", SIDEBUS_CONFIG_BOOLEAN, 0, 0, nullptr, {}},
    {"max_copy_size", SIDEBUS_CONFIG_INTEGER, 1, G_GINT64_CONSTANT(1) << 40, nullptr, {}},
    {"max_copied_total", SIDEBUS_CONFIG_INTEGER, 1, G_GINT64_CONSTANT(1) << 40, nullptr, {}},
};

// portals.openuri, checked against kConfigKeys when the broker started.
struct Settings {
  std::vector<std::string> schemes = kDefaultSchemes;
  bool copy_outside_documents = false;
  CopyStore::Limits copy_limits;

  static Settings from_config(JsonObject* config) {
    Settings settings;
    JsonNode* node = json_object_get_member(config, "schemes");
    if (node != nullptr && JSON_NODE_HOLDS_ARRAY(node)) {
      JsonArray* schemes = json_node_get_array(node);
      settings.schemes.clear();
      for (guint i = 0; i < json_array_get_length(schemes); i++)
        settings.schemes.emplace_back(json_array_get_string_element(schemes, i));
    }
    settings.copy_outside_documents = json_object_get_boolean_member_with_default(config, "copy_outside_documents", FALSE);
    settings.copy_limits.max_file =
        json_object_get_int_member_with_default(config, "max_copy_size", settings.copy_limits.max_file);
    settings.copy_limits.max_total =
        json_object_get_int_member_with_default(config, "max_copied_total", settings.copy_limits.max_total);
    return settings;
  }
};

// ---- The portal --------------------------------------------------------------

class OpenUri {
 public:
  static std::unique_ptr<OpenUri> start(SidebusContext* context, GError** error);
  ~OpenUri();
  OpenUri(const OpenUri&) = delete;
  OpenUri& operator=(const OpenUri&) = delete;

 private:
  OpenUri(SidebusContext* context, Settings settings, guint32 host_version);

  static gboolean on_open_uri(OpenUriGenOpenURI*, GDBusMethodInvocation* invocation, const char* parent_window,
                              const char* uri, GVariant* options, gpointer user_data);
  static gboolean on_open_file(OpenUriGenOpenURI*, GDBusMethodInvocation* invocation, GUnixFDList* fd_list,
                               const char* parent_window, GVariant* fd, GVariant* options, gpointer user_data);
  static gboolean on_open_directory(OpenUriGenOpenURI*, GDBusMethodInvocation* invocation, GUnixFDList* fd_list,
                                    const char* parent_window, GVariant* fd, GVariant* options, gpointer user_data);
  static gboolean on_scheme_supported(OpenUriGenOpenURI*, GDBusMethodInvocation* invocation, const char* scheme,
                                      GVariant* options, gpointer user_data);
  static void on_copy_results(SidebusRequest* request, guint32 response, GVariant* results, gpointer user_data);

  void open_fd(GDBusMethodInvocation* invocation, const char* method, GUnixFDList* fd_list, GVariant* fd,
               GVariant* options, const SidebusOption* table, gsize n_options);
  void open_copy(GDBusMethodInvocation* invocation, GuestFd guest, GVariant* options, GVariant* host_options);
  // Makes the guest's request and the host @method call with @fd; NULL if
  // the request could not be made (the guest has its error then).
  SidebusRequest* forward_fd(GDBusMethodInvocation* invocation, GVariant* guest_options, const char* method, Fd fd,
                             GVariant* host_options, SidebusResultsFunc on_results);
  void reject(GDBusMethodInvocation* invocation, GError* error) {
    sidebus_context_reject(context_, invocation, error);
  }
  void drop_parent_window(const char* parent_window);

  SidebusContext* context_;
  Settings settings_;
  guint32 host_version_;
  GObjectPtr<OpenUriGenOpenURI> skeleton_;
  std::shared_ptr<CopyStore> copies_;  // copy_outside_documents only
  // Copies for requests the host has not answered yet, by guest request path.
  std::map<std::string, std::shared_ptr<HostCopy>> copy_by_request_;
  // Copies the host opened: they stay until the link goes away.
  std::vector<std::shared_ptr<HostCopy>> opened_copies_;
};

std::unique_ptr<OpenUri> OpenUri::start(SidebusContext* context, GError** error) {
  Settings settings = Settings::from_config(sidebus_context_get_config(context));
  // xdg-desktop-portal offers OpenURI only with an AppChooser backend; without
  // it the guest lacks it too, as applications expect.
  guint32 host_version = sidebus_context_get_host_version(context, kInterface);
  if (host_version == 0) {
    g_set_error(error, SIDEBUS_ERROR, SIDEBUS_ERROR_NOT_SUPPORTED,
                "the host portal has no OpenURI (xdg-desktop-portal offers it only with an AppChooser backend)");
    return nullptr;
  }
  std::unique_ptr<OpenUri> self(new OpenUri(context, std::move(settings), host_version));
  if (!sidebus_context_export(context, G_DBUS_INTERFACE_SKELETON(self->skeleton_.get()), error)) return nullptr;
  sidebus_context_log(
      context, G_LOG_LEVEL_DEBUG, "OpenURI version %u (host %u); schemes: %s; documents: %s; copies outside them: %s",
      open_uri_gen_open_uri_get_version(OPEN_URI_GEN_OPEN_URI(self->skeleton_.get())), host_version,
      self->settings_.schemes.empty() ? "none" : join_schemes(self->settings_.schemes).c_str(),
      *sidebus_context_get_guest_documents_path(context) != '\0' ? sidebus_context_get_guest_documents_path(context)
                                                                 : "(none)",
      self->settings_.copy_outside_documents ? "yes" : "no");
  return self;
}

OpenUri::OpenUri(SidebusContext* context, Settings settings, guint32 host_version)
    : context_(context),
      settings_(std::move(settings)),
      host_version_(host_version),
      skeleton_(open_uri_gen_open_uri_skeleton_new()) {
  if (settings_.copy_outside_documents)
    copies_ = CopyStore::create({.portal = "openuri",
                                 .vm_name = sidebus_context_get_vm_name(context),
                                 .limits = settings_.copy_limits,
                                 .root = {}});
  open_uri_gen_open_uri_set_version(skeleton_.get(), MIN(host_version_, kImplementedVersion));
  g_signal_connect(skeleton_.get(), "handle-open-uri", G_CALLBACK(on_open_uri), this);
  g_signal_connect(skeleton_.get(), "handle-open-file", G_CALLBACK(on_open_file), this);
  g_signal_connect(skeleton_.get(), "handle-open-directory", G_CALLBACK(on_open_directory), this);
  g_signal_connect(skeleton_.get(), "handle-scheme-supported", G_CALLBACK(on_scheme_supported), this);
}

OpenUri::~OpenUri() {
  g_signal_handlers_disconnect_by_data(skeleton_.get(), this);
  if (copies_ && !copies_->dir().empty())
    sidebus_context_log(context_, G_LOG_LEVEL_DEBUG, "deleting the copies in %s", copies_->dir().c_str());
  copy_by_request_.clear();
  opened_copies_.clear();
  copies_.reset();
}

void OpenUri::drop_parent_window(const char* parent_window) {
  if (*parent_window != '\0')
    sidebus_context_log(context_, G_LOG_LEVEL_DEBUG,
                        "dropping the guest's parent_window “%s”: it means nothing "
                        "on the host",
                        quote_for_message(parent_window).c_str());
}

SidebusRequest* OpenUri::forward_fd(GDBusMethodInvocation* invocation, GVariant* guest_options, const char* method,
                                    Fd fd, GVariant* host_options, SidebusResultsFunc on_results) {
  int raw_fd = fd.release();
  g_autoptr(GUnixFDList) fds = g_unix_fd_list_new_from_array(&raw_fd, 1);  // owns it now
  g_autoptr(GError) error = nullptr;
  SidebusRequest* request = sidebus_request_new(context_, invocation, guest_options, &error);
  if (request == nullptr) {
    reject(invocation, g_steal_pointer(&error));
    return nullptr;
  }
  sidebus_request_call_host_full(request, kInterface, method, g_variant_new("(sh@a{sv})", "", 0, host_options), fds,
                                 on_results, this, nullptr);
  return request;
}

gboolean OpenUri::on_open_uri(OpenUriGenOpenURI*, GDBusMethodInvocation* invocation, const char* parent_window,
                              const char* uri, GVariant* options, gpointer user_data) {
  auto* self = static_cast<OpenUri*>(user_data);
  g_autoptr(GError) error = nullptr;
  g_autoptr(GVariant) host_options =
      sidebus_filter_options(self->context_, options, kOpenOptions, G_N_ELEMENTS(kOpenOptions), &error);
  if (host_options == nullptr) {
    self->reject(invocation, g_steal_pointer(&error));
    return G_DBUS_METHOD_INVOCATION_HANDLED;
  }
  auto checked =
      check_guest_uri(uri, self->settings_.schemes, sidebus_context_get_guest_documents_path(self->context_), &error);
  if (!checked) {
    g_prefix_error(&error, "cannot open “%s”: ", quote_for_message(uri).c_str());
    self->reject(invocation, g_steal_pointer(&error));
    return G_DBUS_METHOD_INVOCATION_HANDLED;
  }
  self->drop_parent_window(parent_window);

  if (checked->is_document()) {
    auto file = open_document(self->context_, checked->guest_path, &error);
    if (!file) {
      g_prefix_error(&error, "cannot open “%s”: ", quote_for_message(uri).c_str());
      self->reject(invocation, g_steal_pointer(&error));
      return G_DBUS_METHOD_INVOCATION_HANDLED;
    }
    // A path proves nothing about the VM's write access to the document (an
    // fd would, see open_fd), so the host handler gets read access only.
    if (option_is_true(host_options, "writable")) {
      sidebus_context_log(self->context_, G_LOG_LEVEL_DEBUG,
                          "OpenURI on a file:// document: not forwarding writable (use OpenFile with a writable fd)");
      host_options = replace_variant(host_options, without_option(host_options, "writable"));
    }
    sidebus_context_log(self->context_, G_LOG_LEVEL_DEBUG, "opening document %s as host file %s",
                        checked->guest_path.c_str(), file->path.c_str());
    self->forward_fd(invocation, options, "OpenFile", std::move(file->fd), host_options, nullptr);
    return G_DBUS_METHOD_INVOCATION_HANDLED;
  }

  SidebusRequest* request = sidebus_request_new(self->context_, invocation, options, &error);
  if (request == nullptr) {
    self->reject(invocation, g_steal_pointer(&error));
    return G_DBUS_METHOD_INVOCATION_HANDLED;
  }
  sidebus_request_call_host(request, kInterface, "OpenURI", g_variant_new("(ss@a{sv})", "", uri, host_options), nullptr,
                            nullptr);
  return G_DBUS_METHOD_INVOCATION_HANDLED;
}

gboolean OpenUri::on_open_file(OpenUriGenOpenURI*, GDBusMethodInvocation* invocation, GUnixFDList* fd_list,
                               const char* parent_window, GVariant* fd, GVariant* options, gpointer user_data) {
  auto* self = static_cast<OpenUri*>(user_data);
  self->drop_parent_window(parent_window);
  self->open_fd(invocation, "OpenFile", fd_list, fd, options, kOpenOptions, G_N_ELEMENTS(kOpenOptions));
  return G_DBUS_METHOD_INVOCATION_HANDLED;
}

gboolean OpenUri::on_open_directory(OpenUriGenOpenURI*, GDBusMethodInvocation* invocation, GUnixFDList* fd_list,
                                    const char* parent_window, GVariant* fd, GVariant* options, gpointer user_data) {
  auto* self = static_cast<OpenUri*>(user_data);
  self->drop_parent_window(parent_window);
  self->open_fd(invocation, "OpenDirectory", fd_list, fd, options, kOpenDirectoryOptions,
                G_N_ELEMENTS(kOpenDirectoryOptions));
  return G_DBUS_METHOD_INVOCATION_HANDLED;
}

// OpenFile / OpenDirectory. OpenDirectory shows the folder *containing* the
// file (or folder) the fd stands for, so both accept either.
void OpenUri::open_fd(GDBusMethodInvocation* invocation, const char* method, GUnixFDList* fd_list, GVariant* fd,
                      GVariant* options, const SidebusOption* table, gsize n_options) {
  g_autoptr(GError) error = nullptr;
  if (!sidebus_context_require_fds(context_, &error)) {
    g_prefix_error(&error, "%s needs the file descriptor of the file to open: ", method);
    reject(invocation, g_steal_pointer(&error));
    return;
  }
  g_autoptr(GVariant) host_options = sidebus_filter_options(context_, options, table, n_options, &error);
  if (host_options == nullptr) {
    reject(invocation, g_steal_pointer(&error));
    return;
  }
  auto guest = take_guest_fd(fd_list, g_variant_get_handle(fd), kRegularFiles | kDirectories, &error);
  if (!guest) {
    g_prefix_error(&error, "cannot open the file: ");
    reject(invocation, g_steal_pointer(&error));
    return;
  }
  const char* documents = sidebus_context_get_guest_documents_path(context_);
  std::string shown =
      guest->path.empty() ? std::string("(a file without a path)") : quote_for_message(guest->path.c_str());
  if (auto found = guest_document(context_, *guest)) {
    const std::string* document = &found->path;
    shown = found->shown;
    if (option_is_true(host_options, "writable") && !found->writable) {
      reject(invocation, g_error_new(SIDEBUS_ERROR, SIDEBUS_ERROR_NOT_ALLOWED,
                                     "cannot open “%s” writable: the file descriptor is read-only (open it O_RDWR)",
                                     shown.c_str()));
      return;
    }
    auto file = open_document(context_, *document, &error);
    if (!file) {
      g_prefix_error(&error, "cannot open “%s”: ", shown.c_str());
      reject(invocation, g_steal_pointer(&error));
      return;
    }
    sidebus_context_log(context_, G_LOG_LEVEL_DEBUG, "%s: document %s is host file %s", method, document->c_str(),
                        file->path.c_str());
    forward_fd(invocation, options, method, std::move(file->fd), host_options, nullptr);
    return;
  }

  if (!settings_.copy_outside_documents) {
    reject(invocation, g_error_new(SIDEBUS_ERROR, SIDEBUS_ERROR_NOT_ALLOWED,
                                   "cannot open “%s”: it is not in the VM's documents directory %s; only documents "
                                   "shared with the VM can be opened on the host (an administrator can allow opening "
                                   "a host copy of other files with portals.openuri.copy_outside_documents)",
                                   shown.c_str(), *documents != '\0' ? documents : "(none)"));
    return;
  }
  if (strcmp(method, "OpenDirectory") == 0) {
    reject(invocation, g_error_new(SIDEBUS_ERROR, SIDEBUS_ERROR_NOT_ALLOWED,
                                   "cannot show the folder of “%s”: it is not in the VM's documents directory %s, "
                                   "and the VM's own folders do not exist on the host",
                                   shown.c_str(), *documents != '\0' ? documents : "(none)"));
    return;
  }
  if (guest->is_directory()) {
    reject(invocation, g_error_new(SIDEBUS_ERROR, SIDEBUS_ERROR_NOT_ALLOWED,
                                   "cannot open “%s”: it is a folder outside the VM's documents directory, and only "
                                   "files are copied to the host",
                                   shown.c_str()));
    return;
  }
  if (guest->is_opath()) {
    reject(invocation, g_error_new(SIDEBUS_ERROR, SIDEBUS_ERROR_NOT_ALLOWED,
                                   "cannot open a copy of “%s”: the file descriptor is O_PATH; pass one opened for "
                                   "reading so the broker reads only what the caller may read",
                                   shown.c_str()));
    return;
  }
  // The copy is the host application's own; the guest's file is unaffected.
  if (option_is_true(host_options, "writable"))
    host_options = replace_variant(host_options, without_option(host_options, "writable"));
  open_copy(invocation, std::move(*guest), options, host_options);
}

void OpenUri::open_copy(GDBusMethodInvocation* invocation, GuestFd guest, GVariant* options, GVariant* host_options) {
  // Held across the copy; CopyStore never calls back after ~OpenUri.
  struct Held {
    Held(GDBusMethodInvocation* invocation, GVariant* options, GVariant* host_options, std::string guest_path)
        : invocation(G_DBUS_METHOD_INVOCATION(g_object_ref(invocation))),
          options(g_variant_ref(options)),
          host_options(g_variant_ref(host_options)),
          guest_path(std::move(guest_path)) {}
    ~Held() {
      g_object_unref(invocation);
      g_variant_unref(options);
      g_variant_unref(host_options);
    }
    Held(const Held&) = delete;
    Held& operator=(const Held&) = delete;
    GDBusMethodInvocation* invocation;
    GVariant* options;
    GVariant* host_options;
    std::string guest_path;
  };
  auto held = std::make_shared<Held>(invocation, options, host_options, guest.path);
  copies_->copy(std::move(guest), {}, [this, held](std::shared_ptr<HostCopy> copy, GError* error) {
    if (copy == nullptr) {
      GError* copy_error = g_error_copy(error);
      g_prefix_error(&copy_error, "cannot open a copy of “%s”: ", quote_for_message(held->guest_path.c_str()).c_str());
      reject(held->invocation, copy_error);
      return;
    }
    g_autoptr(GError) open_error = nullptr;
    Fd fd = copy->open(&open_error);
    if (!fd) {
      g_prefix_error(&open_error, "“%s”: ", quote_for_message(held->guest_path.c_str()).c_str());
      reject(held->invocation, g_steal_pointer(&open_error));
      return;  // @copy goes with it
    }
    sidebus_context_log(context_, G_LOG_LEVEL_MESSAGE,
                        "opening a host copy of the guest's %s (not a shared document) at %s; it is deleted when the "
                        "request fails or the VM's link goes away",
                        held->guest_path.empty() ? "file" : held->guest_path.c_str(), copy->path().c_str());
    SidebusRequest* request =
        forward_fd(held->invocation, held->options, "OpenFile", std::move(fd), held->host_options, on_copy_results);
    if (request != nullptr) copy_by_request_[sidebus_request_get_guest_path(request)] = std::move(copy);
  });
}

// A copy the host application will not open is deleted at once; an opened
// one stays until the link goes away: the application reads it after the
// portal answered, maybe much later (and editors reopen by path).
void OpenUri::on_copy_results(SidebusRequest* request, guint32 response, GVariant* results, gpointer user_data) {
  auto* self = static_cast<OpenUri*>(user_data);
  auto found = self->copy_by_request_.find(sidebus_request_get_guest_path(request));
  if (found != self->copy_by_request_.end()) {
    if (response == SIDEBUS_RESPONSE_SUCCESS) self->opened_copies_.push_back(std::move(found->second));
    self->copy_by_request_.erase(found);  // an unopened copy is deleted here
  }
  sidebus_request_respond(request, response, results);
}

// ---- SchemeSupported ---------------------------------------------------------

gboolean OpenUri::on_scheme_supported(OpenUriGenOpenURI* skeleton, GDBusMethodInvocation* invocation,
                                      const char* scheme, GVariant* options, gpointer user_data) {
  auto* self = static_cast<OpenUri*>(user_data);
  g_autoptr(GError) error = nullptr;
  if (!is_uri_scheme(scheme)) {
    self->reject(invocation, g_error_new(SIDEBUS_ERROR, SIDEBUS_ERROR_INVALID_ARGUMENT,
                                         "“%s” is not a URI scheme (a letter, then letters, digits, +, - or .; at "
                                         "most %zu)",
                                         quote_for_message(scheme).c_str(), kMaxSchemeLength));
    return G_DBUS_METHOD_INVOCATION_HANDLED;
  }
  // No options are defined for SchemeSupported: this drops them all.
  g_autoptr(GVariant) host_options = sidebus_filter_options(self->context_, options, nullptr, 0, &error);
  if (host_options == nullptr) {
    self->reject(invocation, g_steal_pointer(&error));
    return G_DBUS_METHOD_INVOCATION_HANDLED;
  }
  g_autofree char* lower = g_ascii_strdown(scheme, -1);
  const auto& schemes = self->settings_.schemes;
  bool allowed = strcmp(lower, "file") == 0 ? *sidebus_context_get_guest_documents_path(self->context_) != '\0'
                                            : std::find(schemes.begin(), schemes.end(), lower) != schemes.end();
  if (!allowed) {
    sidebus_context_log(self->context_, G_LOG_LEVEL_DEBUG,
                        "SchemeSupported(%s): not in portals.openuri.schemes, answering false", lower);
    open_uri_gen_open_uri_complete_scheme_supported(skeleton, invocation, FALSE);
    return G_DBUS_METHOD_INVOCATION_HANDLED;
  }
  if (self->host_version_ < 5) {
    // The host portal predates SchemeSupported (xdg-desktop-portal < 1.19.1).
    // Its implementation is this very GIO lookup, and the broker runs in the
    // same host session, so we answer as it would.
    g_autoptr(GAppInfo) handler = g_app_info_get_default_for_uri_scheme(lower);
    sidebus_context_log(self->context_, G_LOG_LEVEL_DEBUG, "SchemeSupported(%s): host portal version %u, GIO says %s",
                        lower, self->host_version_, handler != nullptr ? g_app_info_get_id(handler) : "no handler");
    open_uri_gen_open_uri_complete_scheme_supported(skeleton, invocation, handler != nullptr);
    return G_DBUS_METHOD_INVOCATION_HANDLED;
  }
  sidebus_context_forward_call(self->context_, invocation, kInterface, "SchemeSupported",
                               g_variant_new("(s@a{sv})", lower, host_options), nullptr, nullptr, nullptr, nullptr);
  return G_DBUS_METHOD_INVOCATION_HANDLED;
}

}  // namespace
}  // namespace sidebus::openuri

// ---- The libpeas extension -------------------------------------------------

SIDEBUS_PORTAL_MODULE(OpenUriPortal, openuri_portal, sidebus::openuri::OpenUri,
                      std::span<const SidebusConfigKey>(sidebus::openuri::kConfigKeys))
