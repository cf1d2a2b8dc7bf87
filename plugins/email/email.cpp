// SPDX-License-Identifier: LGPL-2.1-or-later
// email.cpp — org.freedesktop.portal.Email for the guest: "send by e-mail"
// in a VM opens the host's mail composer, filled in, with the attachments.
//
// ComposeEmail is forwarded to the host's xdg-desktop-portal through the
// core's Request helper. What this file adds is the VM boundary:
//  - options by table (kOptions): addresses by email-address.cpp (a
//    stricter syntax than the host's, because host backends put addresses
//    into a mailto: URI unescaped), at most kMaxRecipients per list; the
//    subject one line of at most 200 characters (as xdg-desktop-portal
//    wants), the body at most kMaxBodyLength bytes, neither with control
//    characters but the body's line breaks and tabs;
//  - attachment_fds: at most portals.email.max_attachments; each fd is
//    treated by what it is (plugins/common/host-input.hpp): a document of
//    the VM is attached as the host file behind it, other content (the
//    guest's own file, a memfd, a pipe) as a host copy when
//    portals.email.copy_outside_documents allows it (the default), each
//    copy at most max_copy_size, all of a link's at most max_copied_total;
//  - copies outlive the request, because the composer reads them later: the
//    host portal answers once the composer is started (xdg-desktop-portal-
//    gtk launches it and answers at once), and the user may take a while to
//    press Send. So a copy is deleted when the request ends without success
//    (cancelled, failed), portals.email.keep_copies_for seconds after a
//    success (0: at once), and in any case when the link goes away;
//  - which VM asks: ComposeEmail has no title or other field the composer
//    shows, so nothing names the VM there; the broker logs each call with
//    its VM (docs/email.md);
//  - parent_window means nothing on the host and is dropped; version:
//    min(host portal's version, kImplementedVersion).
#include <libpeas/peas.h>
#include <sidebus-plugin.h>

#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "email-address.hpp"
#include "email-dbus.h"
#include "guest-text.hpp"
#include "host-input.hpp"
#include "uri-policy.hpp"
#include "portal-module.hpp"

namespace sidebus::email {
using namespace sidebus::common;
namespace {

constexpr const char* kInterface = "org.freedesktop.portal.Email";
// Version 3 added addresses, cc and bcc; 4 activation_token.
constexpr guint32 kImplementedVersion = 4;
constexpr gsize kMaxRecipients = 100;   // per list
constexpr glong kMaxSubjectCharacters = 200;  // xdg-desktop-portal's own limit
constexpr gsize kMaxSubjectLength = 1024;
constexpr gsize kMaxBodyLength = 64 * 1024;  // it travels in a mailto: URI, i.e. one argv string
constexpr gint64 kDefaultMaxAttachments = 16;
constexpr gint64 kDefaultKeepCopiesFor = 3600;

struct GObjectUnref {
  void operator()(gpointer object) const { g_object_unref(object); }
};
template <typename T>
using GObjectPtr = std::unique_ptr<T, GObjectUnref>;

// ---- Options -------------------------------------------------------------------

bool check_address(const char* address, GError** error) {
  if (is_valid_address(address)) return true;
  g_set_error(error, SIDEBUS_ERROR, SIDEBUS_ERROR_INVALID_ARGUMENT,
              "“%s” is not an e-mail address a VM may use: ASCII letters, digits and _ joined by - + or . before the "
              "@, a domain name after it, at most 254 bytes",
              quote_for_message(address).c_str());
  return false;
}

gboolean validate_address(SidebusContext*, const char*, GVariant* value, GError** error) {
  return check_address(g_variant_get_string(value, nullptr), error);
}

gboolean validate_addresses(SidebusContext*, const char*, GVariant* value, GError** error) {
  gsize n = 0;
  g_autofree const char** addresses = g_variant_get_strv(value, &n);
  if (n > kMaxRecipients) {
    g_set_error(error, SIDEBUS_ERROR, SIDEBUS_ERROR_INVALID_ARGUMENT, "%zu addresses, at most %zu", n, kMaxRecipients);
    return FALSE;
  }
  for (gsize i = 0; i < n; i++) {
    if (!check_address(addresses[i], error)) {
      g_prefix_error(error, "[%zu] ", i);
      return FALSE;
    }
  }
  return TRUE;
}

gboolean validate_subject(SidebusContext*, const char*, GVariant* value, GError** error) {
  const char* subject = g_variant_get_string(value, nullptr);
  if (!check_guest_text(subject, kMaxSubjectLength, TextLines::kOne, "the subject", error)) return FALSE;
  if (g_utf8_strlen(subject, -1) > kMaxSubjectCharacters) {
    g_set_error(error, SIDEBUS_ERROR, SIDEBUS_ERROR_INVALID_ARGUMENT, "the subject is longer than %ld characters",
                kMaxSubjectCharacters);
    return FALSE;
  }
  return TRUE;
}

gboolean validate_body(SidebusContext*, const char*, GVariant* value, GError** error) {
  return check_guest_text(g_variant_get_string(value, nullptr), kMaxBodyLength, TextLines::kMany, "the body", error);
}

// "attachment_fds" is not in the table: the fds are resolved by
// attachments(), and the host gets its own.
const SidebusOption kOptions[] = {
    {"address", "s", validate_address, {}},
    {"addresses", "as", validate_addresses, {}},  // version 3
    {"cc", "as", validate_addresses, {}},         // version 3
    {"bcc", "as", validate_addresses, {}},        // version 3
    {"subject", "s", validate_subject, {}},
    {"body", "s", validate_body, {}},
    {"activation_token", "s", validate_activation_token, {}},  // version 4
};

// ---- Configuration -------------------------------------------------------------

const SidebusConfigKey kConfigKeys[] = {
    {"copy_outside_documents", SIDEBUS_CONFIG_BOOLEAN, 0, 0, nullptr, {}},
    {"max_attachments", SIDEBUS_CONFIG_INTEGER, 1, 256, nullptr, {}},
    {"max_copy_size", SIDEBUS_CONFIG_INTEGER, 1, G_GINT64_CONSTANT(1) << 40, nullptr, {}},
    {"max_copied_total", SIDEBUS_CONFIG_INTEGER, 1, G_GINT64_CONSTANT(1) << 40, nullptr, {}},
    {"keep_copies_for", SIDEBUS_CONFIG_INTEGER, 0, 7 * 24 * 3600, nullptr, {}},
};

// portals.email, checked against kConfigKeys when the broker started.
struct Settings {
  bool copy_outside_documents = true;
  gint64 max_attachments = kDefaultMaxAttachments;
  guint keep_copies_for = kDefaultKeepCopiesFor;  // seconds
  CopyStore::Limits copy_limits{.max_file = 64 * 1024 * 1024, .max_total = 512 * 1024 * 1024};

  static Settings from_config(JsonObject* config) {
    Settings settings;
    settings.copy_outside_documents =
        json_object_get_boolean_member_with_default(config, "copy_outside_documents", settings.copy_outside_documents);
    settings.max_attachments =
        json_object_get_int_member_with_default(config, "max_attachments", settings.max_attachments);
    settings.keep_copies_for =
        guint(json_object_get_int_member_with_default(config, "keep_copies_for", settings.keep_copies_for));
    settings.copy_limits.max_file =
        json_object_get_int_member_with_default(config, "max_copy_size", settings.copy_limits.max_file);
    settings.copy_limits.max_total =
        json_object_get_int_member_with_default(config, "max_copied_total", settings.copy_limits.max_total);
    return settings;
  }
};

using Copies = std::vector<std::shared_ptr<HostCopy>>;

// ---- The portal ------------------------------------------------------------------

class Email {
 public:
  static std::unique_ptr<Email> start(SidebusContext* context, GError** error);
  ~Email();
  Email(const Email&) = delete;
  Email& operator=(const Email&) = delete;

 private:
  Email(SidebusContext* context, Settings settings, guint32 version);

  static gboolean on_compose_email(EmailGenEmail*, GDBusMethodInvocation* invocation, GUnixFDList* fd_list,
                                   const char* parent_window, GVariant* options, gpointer user_data);
  static void on_composed(SidebusRequest* request, guint32 response, GVariant* results, gpointer user_data);
  // The handles of "attachment_fds", checked; nullopt with @error if wrong.
  std::optional<std::vector<gint32>> attachment_handles(GVariant* options, GError** error);
  void compose(const HeldCall& call, std::vector<HostInput> inputs);
  // Keeps @copies for keep_copies_for seconds (a composer reads them after the host answered).
  void keep_for_a_while(Copies copies);
  void reject(GDBusMethodInvocation* invocation, GError* error) { sidebus_context_reject(context_, invocation, error); }

  SidebusContext* context_;
  Settings settings_;
  GObjectPtr<EmailGenEmail> skeleton_;
  std::shared_ptr<CopyStore> copies_;  // copy_outside_documents only
  // Copies of requests the host has not answered, by guest request path.
  std::map<std::string, Copies> pending_;
  // Copies of answered requests, by the timeout that deletes them.
  std::map<guint, Copies> kept_;
};

std::unique_ptr<Email> Email::start(SidebusContext* context, GError** error) {
  guint32 host_version = sidebus_context_get_host_version(context, kInterface);
  if (host_version == 0) {
    g_set_error(error, SIDEBUS_ERROR, SIDEBUS_ERROR_NOT_SUPPORTED, "the host portal has no Email");
    return nullptr;
  }
  Settings settings = Settings::from_config(sidebus_context_get_config(context));
  std::unique_ptr<Email> self(new Email(context, settings, MIN(host_version, kImplementedVersion)));
  if (!sidebus_context_export(context, G_DBUS_INTERFACE_SKELETON(self->skeleton_.get()), error)) return nullptr;
  sidebus_context_log(context, G_LOG_LEVEL_DEBUG,
                      "Email version %u (host %u); at most %" G_GINT64_FORMAT
                      " attachments; copies outside the documents: %s, kept %u s after the composer opened",
                      email_gen_email_get_version(EMAIL_GEN_EMAIL(self->skeleton_.get())), host_version,
                      settings.max_attachments, settings.copy_outside_documents ? "yes" : "no",
                      settings.keep_copies_for);
  return self;
}

Email::Email(SidebusContext* context, Settings settings, guint32 version)
    : context_(context), settings_(settings), skeleton_(email_gen_email_skeleton_new()) {
  if (settings_.copy_outside_documents)
    copies_ = CopyStore::create({.portal = "email",
                                 .vm_name = sidebus_context_get_vm_name(context),
                                 .limits = settings_.copy_limits,
                                 .root = {}});
  email_gen_email_set_version(skeleton_.get(), version);
  g_signal_connect(skeleton_.get(), "handle-compose-email", G_CALLBACK(on_compose_email), this);
}

Email::~Email() {
  g_signal_handlers_disconnect_by_data(skeleton_.get(), this);
  for (auto& [source, copies] : kept_) g_source_remove(source);
  kept_.clear();
  pending_.clear();
  copies_.reset();  // its directory, with every copy
}

std::optional<std::vector<gint32>> Email::attachment_handles(GVariant* options, GError** error) {
  g_autoptr(GVariant) value = g_variant_lookup_value(options, "attachment_fds", nullptr);
  std::vector<gint32> handles;
  if (value == nullptr) return handles;
  if (!g_variant_is_of_type(value, G_VARIANT_TYPE("ah"))) {
    g_set_error(error, SIDEBUS_ERROR, SIDEBUS_ERROR_INVALID_ARGUMENT,
                "option 'attachment_fds' must be of type 'ah', not '%s'", g_variant_get_type_string(value));
    return std::nullopt;
  }
  gsize n = g_variant_n_children(value);
  if (n > gsize(settings_.max_attachments)) {
    g_set_error(error, G_DBUS_ERROR, G_DBUS_ERROR_LIMITS_EXCEEDED,
                "%zu attachments, at most %" G_GINT64_FORMAT " (portals.email.max_attachments)", n,
                settings_.max_attachments);
    return std::nullopt;
  }
  for (gsize i = 0; i < n; i++) {
    gint32 handle = 0;
    g_variant_get_child(value, i, "h", &handle);
    handles.push_back(handle);
  }
  return handles;
}

gboolean Email::on_compose_email(EmailGenEmail*, GDBusMethodInvocation* invocation, GUnixFDList* fd_list,
                                 const char*, GVariant* options, gpointer user_data) {
  auto* self = static_cast<Email*>(user_data);
  g_autoptr(GError) error = nullptr;
  g_autoptr(GVariant) host_options =
      sidebus_filter_options(self->context_, options, kOptions, G_N_ELEMENTS(kOptions), &error);
  if (host_options == nullptr) {
    self->reject(invocation, g_steal_pointer(&error));
    return G_DBUS_METHOD_INVOCATION_HANDLED;
  }
  auto handles = self->attachment_handles(options, &error);
  if (!handles) {
    self->reject(invocation, g_steal_pointer(&error));
    return G_DBUS_METHOD_INVOCATION_HANDLED;
  }
  if (!handles->empty() && !sidebus_context_require_fds(self->context_, &error)) {
    g_prefix_error(&error, "attachment_fds needs the attachments' file descriptors: ");
    self->reject(invocation, g_steal_pointer(&error));
    return G_DBUS_METHOD_INVOCATION_HANDLED;
  }
  auto prepared = prepare_host_inputs(
      self->context_, fd_list, *handles,
      {.portal = "email", .copy_outside_documents = self->settings_.copy_outside_documents, .purpose = "attached"},
      &error);
  if (!prepared) {
    g_prefix_error(&error, "cannot attach: ");
    self->reject(invocation, g_steal_pointer(&error));
    return G_DBUS_METHOD_INVOCATION_HANDLED;
  }
  // Held across the copies; the store never calls back after ~Email.
  auto held = std::make_shared<HeldCall>(invocation, options, host_options);
  make_host_inputs(self->copies_, std::move(*prepared), {.fallback_name = "attachment", .dir_name = {}},
                   [self, held](std::vector<HostInput> inputs, GError* copy_error) {
                     if (copy_error != nullptr) {
                       GError* named = g_error_copy(copy_error);
                       g_prefix_error(&named, "cannot attach: ");
                       self->reject(held->invocation, named);
                       return;
                     }
                     self->compose(*held, std::move(inputs));
                   });
  return G_DBUS_METHOD_INVOCATION_HANDLED;
}

void Email::compose(const HeldCall& call, std::vector<HostInput> inputs) {
  g_autoptr(GError) error = nullptr;
  SidebusRequest* request = sidebus_request_new(context_, call.invocation, call.options, &error);
  if (request == nullptr) {
    reject(call.invocation, g_steal_pointer(&error));
    return;  // the copies go with @inputs
  }
  g_auto(GVariantBuilder) options = G_VARIANT_BUILDER_INIT(G_VARIANT_TYPE_VARDICT);
  GVariantIter iter;
  const char* key;
  GVariant* value;
  g_variant_iter_init(&iter, call.host_options);
  while (g_variant_iter_loop(&iter, "{&sv}", &key, &value)) g_variant_builder_add(&options, "{sv}", key, value);
  g_autoptr(GUnixFDList) fds = nullptr;
  Copies copies;
  if (!inputs.empty()) {
    fds = g_unix_fd_list_new();
    g_auto(GVariantBuilder) handles = G_VARIANT_BUILDER_INIT(G_VARIANT_TYPE("ah"));
    for (HostInput& input : inputs) {
      gint index = g_unix_fd_list_append(fds, input.fd.get(), &error);  // dups it
      if (index < 0) {
        sidebus_request_respond(request, SIDEBUS_RESPONSE_OTHER, nullptr);
        return;
      }
      g_variant_builder_add(&handles, "h", index);
      sidebus_context_log(context_, G_LOG_LEVEL_DEBUG, "attaching %s as %s%s", input.shown.c_str(),
                          input.path.c_str(), input.copy != nullptr ? " (a host copy)" : "");
      if (input.copy != nullptr) copies.push_back(std::move(input.copy));
    }
    g_variant_builder_add(&options, "{sv}", "attachment_fds", g_variant_builder_end(&handles));
  }
  sidebus_context_log(context_, G_LOG_LEVEL_MESSAGE, "the VM asks the host's mail composer for a message with %zu "
                      "attachment%s (%zu copied to the host)",
                      inputs.size(), inputs.size() == 1 ? "" : "s", copies.size());
  if (!copies.empty()) pending_[sidebus_request_get_guest_path(request)] = std::move(copies);
  sidebus_request_call_host_full(request, kInterface, "ComposeEmail",
                                 g_variant_new("(s@a{sv})", "", g_variant_builder_end(&options)), fds, on_composed,
                                 this, nullptr);
}

// Runs only while the link (and so this object) lives.
void Email::on_composed(SidebusRequest* request, guint32 response, GVariant*, gpointer user_data) {
  auto* self = static_cast<Email*>(user_data);
  auto found = self->pending_.find(sidebus_request_get_guest_path(request));
  if (found != self->pending_.end()) {
    Copies copies = std::move(found->second);
    self->pending_.erase(found);
    if (response == SIDEBUS_RESPONSE_SUCCESS) self->keep_for_a_while(std::move(copies));
    // otherwise nobody reads them: deleted here
  }
  sidebus_request_respond(request, response, nullptr);
}

void Email::keep_for_a_while(Copies copies) {
  if (settings_.keep_copies_for == 0) return;  // deleted at once
  struct Expiry {
    Email* self;
    guint source = 0;
  };
  auto* expiry = new Expiry{this};
  expiry->source = g_timeout_add_seconds_full(
      G_PRIORITY_DEFAULT, settings_.keep_copies_for,
      [](gpointer data) -> gboolean {
        auto* expiry = static_cast<Expiry*>(data);
        expiry->self->kept_.erase(expiry->source);  // deletes the copies
        return G_SOURCE_REMOVE;
      },
      expiry, [](gpointer data) { delete static_cast<Expiry*>(data); });
  kept_[expiry->source] = std::move(copies);
}

}  // namespace
}  // namespace sidebus::email

// ---- The libpeas extension -------------------------------------------------

SIDEBUS_PORTAL_MODULE(EmailPortal, email_portal, sidebus::email::Email,
                      std::span<const SidebusConfigKey>(sidebus::email::kConfigKeys))
