// SPDX-License-Identifier: LGPL-2.1-or-later
// export.cpp — the file export entry points of the plugin API: the
// asynchronous export through the VM's document portal and the reverse
// mapping, both over the link's DocumentExporter.
#include <memory>
#include <string>
#include <vector>

#include "api/context.hpp"
#include "api/portal-link.hpp"
#include "documents/document-export.hpp"

namespace {

struct ExportWork : sidebus::PendingWork {
  SidebusExportFunc done = nullptr;
};

void set_no_export(GError** error) {
  g_set_error(error, G_DBUS_ERROR, G_DBUS_ERROR_NOT_SUPPORTED, "file export is not available for this VM");
}

}  // namespace

extern "C" {

void sidebus_context_export_uris_async(SidebusContext* context, const char* const* host_uris,
                                       SidebusExportFlags flags, SidebusExportFunc done, gpointer user_data,
                                       GDestroyNotify destroy_notify) {
  auto work = std::make_shared<ExportWork>();
  work->done = done;
  work->user_data = user_data;
  work->destroy_notify = destroy_notify;
  sidebus::DocumentExporter* exporter = context->link != nullptr ? context->link->exporter() : nullptr;
  if (context->link == nullptr) return;  // released: @work releases the user data
  context->add_pending(work);
  if (exporter == nullptr) {
    // Answered like every export, later and on the main context.
    g_idle_add_full(
        G_PRIORITY_DEFAULT,
        [](gpointer data) -> gboolean {
          auto& work = *static_cast<std::shared_ptr<ExportWork>*>(data);
          if (work->complete()) {
            g_autoptr(GError) error = nullptr;
            set_no_export(&error);
            work->done(work->context, nullptr, error, work->user_data);
          }
          return G_SOURCE_REMOVE;
        },
        new std::shared_ptr<ExportWork>(work),
        [](gpointer data) { delete static_cast<std::shared_ptr<ExportWork>*>(data); });
    return;
  }
  std::vector<std::string> uris;
  for (const char* const* uri = host_uris; *uri != nullptr; uri++) uris.emplace_back(*uri);
  exporter->export_uris(uris, flags, [work](std::optional<std::vector<std::string>> guest_uris, const GError* error) {
    if (!work->complete()) return;
    if (!guest_uris) return work->done(work->context, nullptr, error, work->user_data);
    std::vector<char*> strv;
    for (std::string& uri : *guest_uris) strv.push_back(uri.data());
    strv.push_back(nullptr);
    work->done(work->context, strv.data(), nullptr, work->user_data);
  });
}

char* sidebus_context_guest_path_to_host_path(SidebusContext* context, const char* guest_path, GError** error) {
  sidebus::DocumentExporter* exporter = context->link != nullptr ? context->link->exporter() : nullptr;
  if (exporter == nullptr) {
    set_no_export(error);
    return nullptr;
  }
  auto host_path = exporter->guest_path_to_host_path(guest_path, error);
  return host_path ? g_strdup(host_path->c_str()) : nullptr;
}

const char* sidebus_context_get_guest_documents_path(SidebusContext* context) {
  sidebus::DocumentExporter* exporter = context->link != nullptr ? context->link->exporter() : nullptr;
  return exporter != nullptr ? exporter->guest_documents_path().c_str() : "";
}

}  // extern "C"
