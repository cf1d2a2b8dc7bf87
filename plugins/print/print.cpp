// SPDX-License-Identifier: LGPL-2.1-or-later
// print.cpp — org.freedesktop.portal.Print for the guest: the VM's
// applications print with the host's print dialog on the host's printers.
//
// Both methods are forwarded to the host's xdg-desktop-portal through the
// core's Request helper (Response, Close and a vanished caller behave as in
// every sidebus portal). What this file adds is the VM boundary:
//  - titles reach the host dialog with the VM's name in front
//    (sidebus_context_dialog_title), so a guest cannot pose as a host
//    application; parent_window means nothing on the host and is dropped;
//  - PreparePrint's options, settings and page setup go through the tables
//    of print-options.cpp; the host's answer reaches the guest without the
//    host's print-to-file path;
//  - tokens: a PreparePrint token lets Print skip the dialog, and tokens are
//    the host backend's, shared by every unsandboxed host client (the broker
//    is one). So the broker remembers which guest client was given which
//    token and lets Print use a token only for that client, once; any other
//    token is refused (NotAllowed), not passed on;
//  - the document: Print's fd is read by the host's print backend, so it
//    must be a host file (plugins/common/host-input.hpp): a document of the
//    VM is printed from the host file behind it; other content — the file a
//    guest application wrote to print, a pipe — from a host copy when
//    portals.print.copy_outside_documents allows it (the default: the host's
//    print dialog is where the user decides what is printed). The copy's
//    file is deleted as soon as the host call carries its fd: the host
//    backend reads only that fd, which keeps the content until it is done.
//    The copy stays charged to portals.print.max_copied_total until the
//    request ends.
//  - version: min(host portal's version, kImplementedVersion).
#include <libpeas/peas.h>
#include <sidebus-plugin.h>

#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <string>

#include "guest-text.hpp"
#include "host-input.hpp"
#include "print-dbus.h"
#include "print.hpp"
#include "portal-module.hpp"

namespace sidebus::print {
using namespace sidebus::common;
namespace {

// Tokens one guest client may hold at once; older ones are forgotten.
constexpr gsize kMaxTokensPerClient = 16;

struct GObjectUnref {
  void operator()(gpointer object) const { g_object_unref(object); }
};
template <typename T>
using GObjectPtr = std::unique_ptr<T, GObjectUnref>;

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

// ---- Configuration -------------------------------------------------------------

const SidebusConfigKey kConfigKeys[] = {
    {"copy_outside_documents", SIDEBUS_CONFIG_BOOLEAN, 0, 0, nullptr, {}},
    {"max_copy_size", SIDEBUS_CONFIG_INTEGER, 1, G_GINT64_CONSTANT(1) << 40, nullptr, {}},
    {"max_copied_total", SIDEBUS_CONFIG_INTEGER, 1, G_GINT64_CONSTANT(1) << 40, nullptr, {}},
};

// portals.print, checked against kConfigKeys when the broker started.
struct Settings {
  bool copy_outside_documents = true;
  CopyStore::Limits copy_limits;

  static Settings from_config(JsonObject* config) {
    Settings settings;
    settings.copy_outside_documents =
        json_object_get_boolean_member_with_default(config, "copy_outside_documents", settings.copy_outside_documents);
    settings.copy_limits.max_file =
        json_object_get_int_member_with_default(config, "max_copy_size", settings.copy_limits.max_file);
    settings.copy_limits.max_total =
        json_object_get_int_member_with_default(config, "max_copied_total", settings.copy_limits.max_total);
    return settings;
  }
};

// What a Print request holds until it ends: the host copy it prints, if any
// (its bytes count against max_copied_total until then).
struct PrintCall {
  std::shared_ptr<HostCopy> copy;
  static void destroy(gpointer data) { delete static_cast<PrintCall*>(data); }
};

// ---- The portal ------------------------------------------------------------------

class Print {
 public:
  static std::unique_ptr<Print> start(SidebusContext* context, GError** error);
  ~Print();
  Print(const Print&) = delete;
  Print& operator=(const Print&) = delete;

 private:
  Print(SidebusContext* context, Settings settings, guint32 version);

  static gboolean on_prepare_print(PrintGenPrint*, GDBusMethodInvocation* invocation, const char* parent_window,
                                   const char* title, GVariant* settings, GVariant* page_setup, GVariant* options,
                                   gpointer user_data);
  static gboolean on_print(PrintGenPrint*, GDBusMethodInvocation* invocation, GUnixFDList* fd_list,
                           const char* parent_window, const char* title, GVariant* fd, GVariant* options,
                           gpointer user_data);
  static void on_prepared(SidebusRequest* request, guint32 response, GVariant* results, gpointer user_data);
  static void on_printed(SidebusRequest* request, guint32 response, GVariant* results, gpointer user_data);

  bool check_title(GDBusMethodInvocation* invocation, const char* title);
  void print_inputs(const HeldCall& call, std::vector<HostInput> inputs);
  void remember_token(const std::string& sender, guint32 token);
  // Takes @token from @sender's tokens; false if it has no such token.
  bool take_token(const std::string& sender, guint32 token);
  void reject(GDBusMethodInvocation* invocation, GError* error) { sidebus_context_reject(context_, invocation, error); }

  struct ClientTokens {
    std::deque<guint32> tokens;
    guint watch = 0;
  };

  SidebusContext* context_;
  Settings settings_;
  GObjectPtr<PrintGenPrint> skeleton_;
  std::shared_ptr<CopyStore> copies_;  // copy_outside_documents only
  std::map<std::string, ClientTokens> tokens_;  // by guest client (unique name)
};

std::unique_ptr<Print> Print::start(SidebusContext* context, GError** error) {
  guint32 host_version = sidebus_context_get_host_version(context, kInterface);
  if (host_version == 0) {
    g_set_error(error, SIDEBUS_ERROR, SIDEBUS_ERROR_NOT_SUPPORTED, "the host portal has no Print");
    return nullptr;
  }
  Settings settings = Settings::from_config(sidebus_context_get_config(context));
  std::unique_ptr<Print> self(new Print(context, settings, MIN(host_version, kImplementedVersion)));
  if (!sidebus_context_export(context, G_DBUS_INTERFACE_SKELETON(self->skeleton_.get()), error)) return nullptr;
  sidebus_context_log(context, G_LOG_LEVEL_DEBUG, "Print version %u (host %u); copies outside the documents: %s",
                      print_gen_print_get_version(PRINT_GEN_PRINT(self->skeleton_.get())), host_version,
                      settings.copy_outside_documents ? "yes" : "no");
  return self;
}

Print::Print(SidebusContext* context, Settings settings, guint32 version)
    : context_(context), settings_(settings), skeleton_(print_gen_print_skeleton_new()) {
  if (settings_.copy_outside_documents)
    copies_ = CopyStore::create({.portal = "print",
                                 .vm_name = sidebus_context_get_vm_name(context),
                                 .limits = settings_.copy_limits,
                                 .root = {}});
  print_gen_print_set_version(skeleton_.get(), version);
  g_signal_connect(skeleton_.get(), "handle-prepare-print", G_CALLBACK(on_prepare_print), this);
  g_signal_connect(skeleton_.get(), "handle-print", G_CALLBACK(on_print), this);
}

Print::~Print() {
  g_signal_handlers_disconnect_by_data(skeleton_.get(), this);
  for (auto& [sender, client] : tokens_)
    if (client.watch != 0) sidebus_context_unwatch_guest_client(context_, client.watch);
  copies_.reset();  // its directory, with any copy still there
}

bool Print::check_title(GDBusMethodInvocation* invocation, const char* title) {
  g_autoptr(GError) error = nullptr;
  if (check_guest_text(title, SIDEBUS_MAX_TITLE_LENGTH, TextLines::kOne, "the title", &error)) return true;
  reject(invocation, g_steal_pointer(&error));
  return false;
}

// ---- tokens ------------------------------------------------------------------------

void Print::remember_token(const std::string& sender, guint32 token) {
  ClientTokens& client = tokens_[sender];
  if (client.watch == 0) {
    client.watch = sidebus_context_watch_guest_client(
        context_, sender.c_str(),
        [](SidebusContext*, const char* gone, gpointer user_data) {
          static_cast<Print*>(user_data)->tokens_.erase(gone);  // its watch is over
        },
        this, nullptr);
  }
  client.tokens.push_back(token);
  while (client.tokens.size() > kMaxTokensPerClient) client.tokens.pop_front();
}

bool Print::take_token(const std::string& sender, guint32 token) {
  auto found = tokens_.find(sender);
  if (found == tokens_.end()) return false;
  auto& tokens = found->second.tokens;
  for (auto it = tokens.begin(); it != tokens.end(); ++it) {
    if (*it == token) {
      tokens.erase(it);
      return true;
    }
  }
  return false;
}

// ---- PreparePrint --------------------------------------------------------------------

gboolean Print::on_prepare_print(PrintGenPrint*, GDBusMethodInvocation* invocation, const char*,
                                 const char* title, GVariant* settings, GVariant* page_setup_in, GVariant* options,
                                 gpointer user_data) {
  auto* self = static_cast<Print*>(user_data);
  if (!self->check_title(invocation, title)) return G_DBUS_METHOD_INVOCATION_HANDLED;
  g_autoptr(GError) error = nullptr;
  g_autoptr(GVariant) host_options = prepare_print_options(self->context_, options, &error);
  g_autoptr(GVariant) host_settings = host_options ? print_settings(self->context_, settings, &error) : nullptr;
  g_autoptr(GVariant) host_page_setup = host_settings ? page_setup(self->context_, page_setup_in, &error) : nullptr;
  if (host_page_setup == nullptr) {
    self->reject(invocation, g_steal_pointer(&error));
    return G_DBUS_METHOD_INVOCATION_HANDLED;
  }
  SidebusRequest* request = sidebus_request_new(self->context_, invocation, options, &error);
  if (request == nullptr) {
    self->reject(invocation, g_steal_pointer(&error));
    return G_DBUS_METHOD_INVOCATION_HANDLED;
  }
  g_autofree char* host_title = sidebus_context_dialog_title(self->context_, title);
  sidebus_request_call_host(request, kInterface, "PreparePrint",
                            g_variant_new("(ss@a{sv}@a{sv}@a{sv})", "", host_title, host_settings, host_page_setup,
                                          host_options),
                            on_prepared, self);
  return G_DBUS_METHOD_INVOCATION_HANDLED;
}

// Runs only while the link (and so this object) lives.
void Print::on_prepared(SidebusRequest* request, guint32 response, GVariant* results, gpointer user_data) {
  auto* self = static_cast<Print*>(user_data);
  if (response != SIDEBUS_RESPONSE_SUCCESS) {
    sidebus_request_respond(request, response, nullptr);
    return;
  }
  guint32 token = 0;
  if (g_variant_lookup(results, "token", "u", &token) && token != 0)
    self->remember_token(sidebus_request_get_sender(request), token);
  sidebus_request_respond(request, response, guest_prepare_results(results));
}

// ---- Print ---------------------------------------------------------------------------

gboolean Print::on_print(PrintGenPrint*, GDBusMethodInvocation* invocation, GUnixFDList* fd_list, const char*,
                         const char* title, GVariant* fd, GVariant* options, gpointer user_data) {
  auto* self = static_cast<Print*>(user_data);
  g_autoptr(GError) error = nullptr;
  if (!sidebus_context_require_fds(self->context_, &error)) {
    g_prefix_error(&error, "Print needs the file descriptor of the document: ");
    self->reject(invocation, g_steal_pointer(&error));
    return G_DBUS_METHOD_INVOCATION_HANDLED;
  }
  if (!self->check_title(invocation, title)) return G_DBUS_METHOD_INVOCATION_HANDLED;
  g_autoptr(GVariant) host_options = print_options(self->context_, options, &error);
  if (host_options == nullptr) {
    self->reject(invocation, g_steal_pointer(&error));
    return G_DBUS_METHOD_INVOCATION_HANDLED;
  }
  guint32 token = 0;
  if (g_variant_lookup(host_options, "token", "u", &token) && token == 0) {
    // libportal sends 0 for "no token": the dialog is shown.
    g_autoptr(GVariant) without = without_option(host_options, "token");
    std::swap(host_options, without);
  } else if (token != 0 && !self->take_token(g_dbus_method_invocation_get_sender(invocation), token)) {
    self->reject(invocation, g_error_new(SIDEBUS_ERROR, SIDEBUS_ERROR_NOT_ALLOWED,
                                         "token %u was not given to this client by PreparePrint (a token is good "
                                         "for one Print of the client that prepared it)",
                                         token));
    return G_DBUS_METHOD_INVOCATION_HANDLED;
  }
  auto prepared = prepare_host_inputs(
      self->context_, fd_list, {g_variant_get_handle(fd)},
      {.portal = "print", .copy_outside_documents = self->settings_.copy_outside_documents, .purpose = "printed"},
      &error);
  if (!prepared) {
    g_prefix_error(&error, "cannot print: ");
    self->reject(invocation, g_steal_pointer(&error));
    return G_DBUS_METHOD_INVOCATION_HANDLED;
  }
  // Held across the copy; the store never calls back after ~Print.
  auto held = std::make_shared<HeldCall>(invocation, options, host_options, title);
  make_host_inputs(self->copies_, std::move(*prepared), {.fallback_name = "document", .dir_name = {}},
                   [self, held](std::vector<HostInput> inputs, GError* copy_error) {
                     if (copy_error != nullptr) {
                       GError* named = g_error_copy(copy_error);
                       g_prefix_error(&named, "cannot print: ");
                       self->reject(held->invocation, named);
                       return;
                     }
                     self->print_inputs(*held, std::move(inputs));
                   });
  return G_DBUS_METHOD_INVOCATION_HANDLED;
}

void Print::print_inputs(const HeldCall& call, std::vector<HostInput> inputs) {
  GDBusMethodInvocation* invocation = call.invocation;
  g_autoptr(GError) error = nullptr;
  HostInput& input = inputs.at(0);
  if (input.copy != nullptr)
    sidebus_context_log(context_, G_LOG_LEVEL_MESSAGE,
                        "printing a host copy of the guest's %s (not a shared document), %" G_GOFFSET_FORMAT
                        " bytes; only the host's fd keeps it",
                        input.shown.c_str(), input.copy->size());
  SidebusRequest* request = sidebus_request_new(context_, invocation, call.options, &error);
  if (request == nullptr) {
    reject(invocation, g_steal_pointer(&error));
    return;  // the copy goes with @inputs
  }
  int raw_fd = input.fd.release();
  g_autoptr(GUnixFDList) fds = g_unix_fd_list_new_from_array(&raw_fd, 1);  // owns it now
  g_autofree char* host_title = sidebus_context_dialog_title(context_, call.title.c_str());
  std::shared_ptr<HostCopy> copy = input.copy;
  sidebus_request_call_host_full(request, kInterface, "Print",
                                 g_variant_new("(ssh@a{sv})", "", host_title, 0, call.host_options), fds, on_printed,
                                 new PrintCall{std::move(input.copy)}, PrintCall::destroy);
  // The host portal passes the fd on to its backend, which reads only that:
  // the copy's name can go now, its content goes when the last fd of it is
  // closed — nothing is left behind however the request ends.
  if (copy != nullptr) copy->unlink();
}

void Print::on_printed(SidebusRequest* request, guint32 response, GVariant*, gpointer user_data) {
  static_cast<PrintCall*>(user_data)->copy.reset();  // the request is over: its bytes are free again
  sidebus_request_respond(request, response, nullptr);
}

}  // namespace
}  // namespace sidebus::print

// ---- The libpeas extension -------------------------------------------------

SIDEBUS_PORTAL_MODULE(PrintPortal, print_portal, sidebus::print::Print,
                      std::span<const SidebusConfigKey>(sidebus::print::kConfigKeys))
