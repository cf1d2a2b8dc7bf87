// SPDX-License-Identifier: LGPL-2.1-or-later
// host-transfers.cpp — async calls to the host's FileTransfer (see
// host-transfers.hpp).
#include "host-transfers.hpp"

#include <sidebus-plugin.h>

#include <memory>

namespace sidebus::clipboard {

struct HostTransfers::Call {
  std::function<void(GVariant*, GError*)> done;
};

HostTransfers::HostTransfers(GDBusConnection* host, Closed on_closed)
    : host_(G_DBUS_CONNECTION(g_object_ref(host))),
      cancellable_(g_cancellable_new()),
      on_closed_(std::move(on_closed)) {
  // TransferClosed is sent to the owner only (unicast): every one that
  // reaches us is about a transfer the broker started.
  closed_subscription_ = g_dbus_connection_signal_subscribe(
      host_, kDocumentsBusName, kFileTransferInterface, "TransferClosed", kDocumentsPath, nullptr,
      G_DBUS_SIGNAL_FLAGS_NONE,
      [](GDBusConnection*, const char*, const char*, const char*, const char*, GVariant* parameters, gpointer data) {
        if (!g_variant_is_of_type(parameters, G_VARIANT_TYPE("(s)"))) return;
        const char* key = nullptr;
        g_variant_get(parameters, "(&s)", &key);
        static_cast<HostTransfers*>(data)->on_closed_(key);
      },
      this, nullptr);
}

HostTransfers::~HostTransfers() {
  g_dbus_connection_signal_unsubscribe(host_, closed_subscription_);
  g_cancellable_cancel(cancellable_);
  g_object_unref(cancellable_);
  g_object_unref(host_);
}

void HostTransfers::call(const char* method, GVariant* parameters, GUnixFDList* fds, const GVariantType* reply_type,
                         std::function<void(GVariant*, GError*)> done) {
  auto* call = new Call{std::move(done)};
  g_dbus_connection_call_with_unix_fd_list(
      host_, kDocumentsBusName, kDocumentsPath, kFileTransferInterface, method, parameters, reply_type,
      G_DBUS_CALL_FLAGS_NONE, kCallTimeoutMs, fds, cancellable_,
      [](GObject* source, GAsyncResult* result, gpointer data) {
        std::unique_ptr<Call> call(static_cast<Call*>(data));
        g_autoptr(GError) error = nullptr;
        g_autoptr(GUnixFDList) reply_fds = nullptr;
        g_autoptr(GVariant) reply =
            g_dbus_connection_call_with_unix_fd_list_finish(G_DBUS_CONNECTION(source), &reply_fds, result, &error);
        if (g_error_matches(error, G_IO_ERROR, G_IO_ERROR_CANCELLED)) return;  // we are gone
        if (error != nullptr) g_debug("the host's FileTransfer failed: %s", error->message);
        call->done(reply, error);
      },
      call);
}

void HostTransfers::start(bool writable, bool autostop, KeyDone done) {
  g_auto(GVariantBuilder) options = G_VARIANT_BUILDER_INIT(G_VARIANT_TYPE_VARDICT);
  g_variant_builder_add(&options, "{sv}", "writable", g_variant_new_boolean(writable));
  g_variant_builder_add(&options, "{sv}", "autostop", g_variant_new_boolean(autostop));
  call("StartTransfer", g_variant_new("(a{sv})", &options), nullptr, G_VARIANT_TYPE("(s)"),
       [done](GVariant* reply, GError* error) {
         if (reply == nullptr) {
           g_autoptr(GError) guest = guest_error_for_host(error, "StartTransfer");
           return done("", guest);
         }
         const char* key = nullptr;
         g_variant_get(reply, "(&s)", &key);
         done(key, nullptr);
       });
}

void HostTransfers::add(const std::string& key, std::vector<common::Fd> fds, Done done) {
  add_chunk(key, std::make_shared<std::vector<common::Fd>>(std::move(fds)), 0, std::move(done));
}

void HostTransfers::add_chunk(std::string key, std::shared_ptr<std::vector<common::Fd>> fds, size_t from, Done done) {
  if (from >= fds->size()) return done(nullptr);  // nothing (left) to add
  g_autoptr(GUnixFDList) list = g_unix_fd_list_new();
  g_auto(GVariantBuilder) handles = G_VARIANT_BUILDER_INIT(G_VARIANT_TYPE("ah"));
  size_t end = MIN(fds->size(), from + kFdsPerCall);
  for (size_t i = from; i < end; i++) {
    g_autoptr(GError) error = nullptr;
    gint index = g_unix_fd_list_append(list, (*fds)[i].get(), &error);
    if (index < 0) {
      g_autoptr(GError) guest =
          g_error_new(SIDEBUS_ERROR, SIDEBUS_ERROR_FAILED, "the broker cannot pass a file on: %s", error->message);
      return done(guest);
    }
    g_variant_builder_add(&handles, "h", index);
  }
  g_auto(GVariantBuilder) options = G_VARIANT_BUILDER_INIT(G_VARIANT_TYPE_VARDICT);
  call("AddFiles", g_variant_new("(sah@a{sv})", key.c_str(), &handles, g_variant_builder_end(&options)), list, nullptr,
       [this, key, fds, end, done](GVariant* reply, GError* error) {
         if (reply == nullptr) {
           g_autoptr(GError) guest = guest_error_for_host(error, "AddFiles");
           return done(guest);
         }
         if (end >= fds->size()) return done(nullptr);
         add_chunk(key, fds, end, done);
       });
}

void HostTransfers::retrieve(const std::string& key, FilesDone done) {
  g_auto(GVariantBuilder) options = G_VARIANT_BUILDER_INIT(G_VARIANT_TYPE_VARDICT);
  call("RetrieveFiles", g_variant_new("(s@a{sv})", key.c_str(), g_variant_builder_end(&options)), nullptr,
       G_VARIANT_TYPE("(as)"), [done](GVariant* reply, GError* error) {
         if (reply == nullptr) {
           g_autoptr(GError) guest = guest_error_for_host(error, "RetrieveFiles");
           return done({}, guest);
         }
         std::vector<std::string> paths;
         g_autoptr(GVariantIter) iter = nullptr;
         const char* path = nullptr;
         g_variant_get(reply, "(as)", &iter);
         while (g_variant_iter_next(iter, "&s", &path)) paths.emplace_back(path);
         done(std::move(paths), nullptr);
       });
}

void HostTransfers::stop(const std::string& key) {
  // Not cancelled with us: a transfer the link leaves behind is stopped on
  // the host even while the broker tears the link down.
  g_dbus_connection_call(host_, kDocumentsBusName, kDocumentsPath, kFileTransferInterface, "StopTransfer",
                         g_variant_new("(s)", key.c_str()), nullptr, G_DBUS_CALL_FLAGS_NONE, kCallTimeoutMs, nullptr,
                         nullptr, nullptr);
}

GError* guest_error_for_host(const GError* host_error, const char* what) {
  g_autofree char* remote = g_dbus_error_get_remote_error(host_error);
  g_autofree char* message = g_strdup(host_error->message);
  if (remote != nullptr) {
    g_autoptr(GError) stripped = g_error_copy(host_error);
    g_dbus_error_strip_remote_error(stripped);
    g_free(message);
    message = g_strdup(stripped->message);
  }
  if (g_strcmp0(remote, "org.freedesktop.DBus.Error.AccessDenied") == 0)
    return g_error_new(SIDEBUS_ERROR, SIDEBUS_ERROR_NOT_FOUND,
                       "no file transfer with this key: it ended (a transfer with autostop ends at its first "
                       "RetrieveFiles) or never existed");
  if (g_strcmp0(remote, "org.freedesktop.DBus.Error.ServiceUnknown") == 0 ||
      g_strcmp0(remote, "org.freedesktop.DBus.Error.NameHasNoOwner") == 0 ||
      g_strcmp0(remote, "org.freedesktop.DBus.Error.UnknownMethod") == 0 ||
      g_strcmp0(remote, "org.freedesktop.DBus.Error.UnknownInterface") == 0)
    return g_error_new(G_DBUS_ERROR, G_DBUS_ERROR_NOT_SUPPORTED,
                       "the host has no file transfer portal (org.freedesktop.portal.Documents)");
  if (g_strcmp0(remote, "org.freedesktop.portal.Error.NotAllowed") == 0)
    return g_error_new(SIDEBUS_ERROR, SIDEBUS_ERROR_NOT_ALLOWED, "the host's file transfer portal refused %s: %s", what,
                       message);
  if (g_error_matches(host_error, G_IO_ERROR, G_IO_ERROR_TIMED_OUT) ||
      g_strcmp0(remote, "org.freedesktop.DBus.Error.NoReply") == 0)
    return g_error_new(SIDEBUS_ERROR, SIDEBUS_ERROR_FAILED, "the host's file transfer portal did not answer %s", what);
  return g_error_new(SIDEBUS_ERROR, SIDEBUS_ERROR_FAILED, "the host's file transfer portal failed %s: %s", what,
                     message);
}

}  // namespace sidebus::clipboard
