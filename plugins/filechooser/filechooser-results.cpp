// SPDX-License-Identifier: LGPL-2.1-or-later
// filechooser-results.cpp — the host's Response, made true inside the guest.
//
// The broker is an unsandboxed client of the host portal, so the host answers
// with plain host URIs. Those mean nothing in the guest and must not reach it:
// each one is exported through this VM's private document portal and the
// guest gets file://<guest-documents-path>/<doc-id>/<name> instead. The
// other documented results (choices, current_filter, writable) are passed on
// type-checked; anything else the host adds is dropped.
//
// Grants: a save dialog grants write by definition; an open dialog only when
// the host says so (writable=true). Saves are exported by name in the chosen
// folder (FOR_SAVE, the document portal's AddNamedFull), as the host portal
// itself does for sandboxed apps: the file need not exist yet, and a guest
// that saves by writing a temporary file and renaming it still replaces the
// file the user chose.
#include <cstring>

#include "filechooser.hpp"

namespace filechooser {

namespace {

// Results passed through as they are, with the type the XML documents.
struct PassThrough {
  const char* key;
  const char* type;
};
constexpr PassThrough kPassThroughResults[] = {
    {"choices", "a(ss)"},
    {"current_filter", "(sa(us))"},
    {"writable", "b"},
};

void add_pass_through(GVariantBuilder* results, GVariant* host_results) {
  for (const PassThrough& entry : kPassThroughResults) {
    g_autoptr(GVariant) value = g_variant_lookup_value(host_results, entry.key, G_VARIANT_TYPE(entry.type));
    if (value != nullptr) g_variant_builder_add(results, "{sv}", entry.key, value);
  }
}

void respond_without_files(SidebusRequest* request, guint32 response) {
  g_auto(GVariantBuilder) results = G_VARIANT_BUILDER_INIT(G_VARIANT_TYPE_VARDICT);
  g_variant_builder_add(&results, "{sv}", "uris", g_variant_new_strv(nullptr, 0));
  sidebus_request_respond(request, response, g_variant_builder_end(&results));
}

SidebusExportFlags export_flags(const CallInfo& call, GVariant* host_results) {
  int flags = SIDEBUS_EXPORT_FLAGS_NONE;
  gboolean writable = FALSE;
  if (call.method == Method::OpenFile) {
    if (g_variant_lookup(host_results, "writable", "b", &writable) && writable) flags |= SIDEBUS_EXPORT_FLAGS_WRITABLE;
    if (call.directory) flags |= SIDEBUS_EXPORT_FLAGS_DIRECTORY;
  } else {
    flags |= SIDEBUS_EXPORT_FLAGS_WRITABLE | SIDEBUS_EXPORT_FLAGS_FOR_SAVE;
  }
  return static_cast<SidebusExportFlags>(flags);
}

// What the guest's Response waits for while the chosen files are exported.
struct Exporting {
  SidebusRequest* request;  // a reference
  Method method;
  guint32 response;
  GVariant* pass_through;  // a{sv}: the results besides "uris"
  static void destroy(gpointer data) {
    auto* self = static_cast<Exporting*>(data);
    sidebus_request_unref(self->request);
    g_variant_unref(self->pass_through);
    delete self;
  }
};

void on_exported(SidebusContext* context, char** guest_uris, const GError* error, gpointer user_data) {
  auto* exporting = static_cast<Exporting*>(user_data);
  if (guest_uris == nullptr) {
    sidebus_context_log(context, G_LOG_LEVEL_WARNING, "%s: could not share the chosen files with the VM: %s",
                        method_name(exporting->method), error->message);
    respond_without_files(exporting->request, SIDEBUS_RESPONSE_OTHER);
    return;
  }
  sidebus_context_log(context, G_LOG_LEVEL_DEBUG, "%s: %u file(s) exported to the guest",
                      method_name(exporting->method), g_strv_length(guest_uris));
  g_auto(GVariantBuilder) results = G_VARIANT_BUILDER_INIT(G_VARIANT_TYPE_VARDICT);
  add_pass_through(&results, exporting->pass_through);
  g_variant_builder_add(&results, "{sv}", "uris", g_variant_new_strv(guest_uris, -1));
  sidebus_request_respond(exporting->request, exporting->response, g_variant_builder_end(&results));
}

}  // namespace

void on_host_results(SidebusRequest* request, guint32 response, GVariant* host_results, gpointer user_data) {
  SidebusContext* context = sidebus_request_get_context(request);
  const CallInfo& call = *static_cast<CallInfo*>(user_data);

  g_auto(GVariantBuilder) results = G_VARIANT_BUILDER_INIT(G_VARIANT_TYPE_VARDICT);
  add_pass_through(&results, host_results);
  if (response != SIDEBUS_RESPONSE_SUCCESS) {
    // Cancelled or failed: nothing was chosen, whatever the host says.
    g_variant_builder_add(&results, "{sv}", "uris", g_variant_new_strv(nullptr, 0));
    sidebus_request_respond(request, response, g_variant_builder_end(&results));
    return;
  }

  g_autofree const char** host_uris = nullptr;
  if (!g_variant_lookup(host_results, "uris", "^a&s", &host_uris)) host_uris = g_new0(const char*, 1);
  for (const char** uri = host_uris; *uri != nullptr; uri++) {
    const char* scheme = g_uri_peek_scheme(*uri);
    if (scheme == nullptr || strcmp(scheme, "file") != 0) {
      // Only local files can be exported; anything else would hand the guest
      // a host location it cannot use (and should not learn).
      sidebus_context_log(context, G_LOG_LEVEL_WARNING,
                          "%s: the host chose %s, which is not a file:// URI; only local files can be shared with "
                          "the VM, answering 'other' (2)",
                          method_name(call.method), scheme != nullptr ? scheme : "a URI without a scheme");
      respond_without_files(request, SIDEBUS_RESPONSE_OTHER);
      return;
    }
  }

  auto* exporting = new Exporting{sidebus_request_ref(request), call.method, response, g_variant_ref(host_results)};
  sidebus_context_export_uris_async(context, host_uris, export_flags(call, host_results), on_exported, exporting,
                                    Exporting::destroy);
}

}  // namespace filechooser
