// SPDX-License-Identifier: LGPL-2.1-or-later
// document-table.cpp — see document-table.hpp. Both operations are a queue
// of calls to org.freedesktop.impl.portal.PermissionStore, at most
// kDocumentTableCallsInFlight at a time, shared by a small state object
// that the replies hold.
#include "documents/document-table.hpp"

#include <errno.h>
#include <glib/gstdio.h>

#include <algorithm>
#include <deque>
#include <memory>

#include "util/gobject-ptr.hpp"
#include "util/main-context.hpp"

namespace sidebus {
namespace {

constexpr const char* kStoreName = "org.freedesktop.impl.portal.PermissionStore";
constexpr const char* kStorePath = "/org/freedesktop/impl/portal/PermissionStore";
constexpr const char* kStoreInterface = "org.freedesktop.impl.portal.PermissionStore";
constexpr const char* kTable = "documents";
constexpr int kCallTimeoutMs = 20 * 1000;

// The store's error, prefixed with what was being done.
GError* store_error(GError* call_error, const std::string& what) {
  g_dbus_error_strip_remote_error(call_error);
  return g_error_new(G_IO_ERROR, G_IO_ERROR_FAILED, "%s: the permission store answered: %s", what.c_str(),
                     call_error->message);
}

// Calls sent from a queue, kDocumentTableCallsInFlight at a time; finish()
// once the queue is empty and every reply is in, or at the first failure.
struct CallQueue : std::enable_shared_from_this<CallQueue> {
  GObjectPtr<GDBusConnection> bus;
  GObjectPtr<GCancellable> cancellable;
  std::deque<std::function<void()>> to_send;
  size_t in_flight = 0;
  GError* failure = nullptr;
  bool finished = false;
  std::function<void(GError*)> on_finished;  // failure borrowed

  ~CallQueue() { g_clear_error(&failure); }

  void call(const char* method, GVariant* parameters, const GVariantType* reply_type,
            std::function<void(GVariant* reply, GError* error)> on_reply) {
    auto self = shared_from_this();
    std::shared_ptr<GVariant> sunk(g_variant_ref_sink(parameters), g_variant_unref);
    to_send.push_back([self, method, parameters = std::move(sunk), reply_type,
                       on_reply = std::move(on_reply)]() mutable {
      self->in_flight++;
      auto* data =
          new std::pair<std::shared_ptr<CallQueue>, std::function<void(GVariant*, GError*)>>(self, std::move(on_reply));
      g_dbus_connection_call(
          self->bus.get(), kStoreName, kStorePath, kStoreInterface, method, parameters.get(), reply_type,
          G_DBUS_CALL_FLAGS_NO_AUTO_START, kCallTimeoutMs, self->cancellable.get(),
          [](GObject* source, GAsyncResult* result, gpointer data) {
            std::unique_ptr<std::pair<std::shared_ptr<CallQueue>, std::function<void(GVariant*, GError*)>>> call(
                static_cast<std::pair<std::shared_ptr<CallQueue>, std::function<void(GVariant*, GError*)>>*>(data));
            g_autoptr(GError) error = nullptr;
            g_autoptr(GVariant) reply = g_dbus_connection_call_finish(G_DBUS_CONNECTION(source), result, &error);
            CallQueue& queue = *call->first;
            queue.in_flight--;
            if (g_cancellable_is_cancelled(queue.cancellable.get())) return queue.to_send.clear();
            if (!queue.finished) call->second(reply, error);
            queue.pump();
          },
          data);
    });
  }

  void fail(GError* error) {  // takes error
    if (failure == nullptr)
      failure = error;
    else
      g_error_free(error);
  }

  void pump() {
    while (failure == nullptr && in_flight < kDocumentTableCallsInFlight && !to_send.empty()) {
      auto send = std::move(to_send.front());
      to_send.pop_front();
      send();
    }
    if (finished || in_flight != 0 || (failure == nullptr && !to_send.empty())) return;
    finished = true;
    to_send.clear();
    on_finished(failure);
  }

  // pump() from the main context, so that @done never runs inside the call.
  void start() {
    auto self = shared_from_this();
    post_to_context(g_main_context_get_thread_default(), [self] {
      if (!g_cancellable_is_cancelled(self->cancellable.get())) self->pump();
    });
  }
};

std::shared_ptr<CallQueue> new_queue(GDBusConnection* bus, GCancellable* cancellable) {
  auto queue = std::make_shared<CallQueue>();
  queue->bus = retain(bus);
  queue->cancellable = cancellable != nullptr ? retain(cancellable) : adopt(g_cancellable_new());
  return queue;
}

}  // namespace

void read_document_table(GDBusConnection* private_bus, GCancellable* cancellable, DocumentTableRead done) {
  auto queue = new_queue(private_bus, cancellable);
  auto entries = std::make_shared<std::vector<DocumentEntry>>();
  std::weak_ptr<CallQueue> weak = queue;
  queue->on_finished = [entries, done = std::move(done)](GError* failure) {
    if (failure != nullptr) return done(std::nullopt, failure);
    std::sort(entries->begin(), entries->end(),
              [](const DocumentEntry& a, const DocumentEntry& b) { return a.id < b.id; });
    done(std::move(*entries), nullptr);
  };
  queue->call(
      "List", g_variant_new("(s)", kTable), G_VARIANT_TYPE("(as)"), [weak, entries](GVariant* reply, GError* error) {
        auto queue = weak.lock();
        if (reply == nullptr) return queue->fail(store_error(error, "cannot list the VM's documents"));
        g_autofree const char** ids = nullptr;
        g_variant_get(reply, "(^a&s)", &ids);
        for (const char** id = ids; *id != nullptr; id++) {
          std::string doc_id = *id;
          queue->call("Lookup", g_variant_new("(ss)", kTable, *id), G_VARIANT_TYPE("(a{sas}v)"),
                      [weak, entries, doc_id](GVariant* reply, GError* error) {
                        auto queue = weak.lock();
                        if (reply == nullptr) {
                          // Deleted since List: it is not part of the state any more.
                          if (g_dbus_error_is_remote_error(error)) {
                            g_autofree char* name = g_dbus_error_get_remote_error(error);
                            if (g_str_equal(name, "org.freedesktop.portal.Error.NotFound")) return;
                          }
                          return queue->fail(store_error(error, "cannot read document " + doc_id));
                        }
                        g_autoptr(GVariant) permissions = nullptr;
                        g_autoptr(GVariant) boxed = nullptr;
                        g_variant_get(reply, "(@a{sas}v)", &permissions, &boxed);
                        if (!g_variant_is_of_type(boxed, G_VARIANT_TYPE("(ayttu)"))) {
                          return queue->fail(
                              g_error_new(G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED,
                                          "document %s is stored as %s, not as the (ayttu) of xdg-document-portal "
                                          "1.16: this sidebus cannot migrate it",
                                          doc_id.c_str(), g_variant_get_type_string(boxed)));
                        }
                        DocumentEntry entry;
                        entry.id = doc_id;
                        const char* path = nullptr;
                        guint64 device, inode;
                        guint32 flags;
                        g_variant_get(boxed, "(^&ayttu)", &path, &device, &inode, &flags);
                        entry.host_path = path;
                        entry.directory_device = device;
                        entry.directory_inode = inode;
                        entry.flags = flags;
                        GVariantIter iter;
                        const char* app_id;
                        g_autofree const char** granted = nullptr;
                        g_variant_iter_init(&iter, permissions);
                        while (g_variant_iter_next(&iter, "{&s^a&s}", &app_id, &granted)) {
                          g_autofree const char** list = g_steal_pointer(&granted);
                          std::vector<std::string> kept;
                          for (const char** p = list; *p != nullptr; p++) kept.emplace_back(*p);
                          entry.permissions.emplace_back(app_id, std::move(kept));
                        }
                        entries->push_back(std::move(entry));
                      });
        }
      });
  queue->start();
}

void replace_document_table(GDBusConnection* private_bus, const std::string& db_dir, std::vector<DocumentEntry> entries,
                            GCancellable* cancellable, DocumentTableReplaced done) {
  auto queue = new_queue(private_bus, cancellable);
  // A fresh name each time: the store keeps every table it opened in memory.
  g_autofree char* staging = g_strdup_printf("sidebus-incoming-%08x", g_random_int());
  const std::string staging_path = db_dir + "/" + staging;
  const std::string table_path = db_dir + "/" + kTable;
  const size_t count = entries.size();
  queue->on_finished = [staging_path, table_path, count, done = std::move(done)](GError* failure) {
    if (failure != nullptr) {
      g_unlink(staging_path.c_str());
      return done(failure);
    }
    // No entries: no staging table was made, and the result is an empty table.
    int result = count == 0 ? g_unlink(table_path.c_str()) : g_rename(staging_path.c_str(), table_path.c_str());
    if (result != 0 && !(count == 0 && errno == ENOENT)) {
      int saved_errno = errno;
      g_unlink(staging_path.c_str());
      g_autoptr(GError) error = g_error_new(G_IO_ERROR, g_io_error_from_errno(saved_errno),
                                            "cannot put the migrated document table in place at %s: %s",
                                            table_path.c_str(), g_strerror(saved_errno));
      return done(error);
    }
    done(nullptr);
  };
  std::weak_ptr<CallQueue> weak = queue;
  for (DocumentEntry& entry : entries) {
    g_auto(GVariantBuilder) permissions = G_VARIANT_BUILDER_INIT(G_VARIANT_TYPE("a{sas}"));
    for (const auto& [app_id, granted] : entry.permissions) {
      std::vector<const char*> strv;
      for (const std::string& permission : granted) strv.push_back(permission.c_str());
      strv.push_back(nullptr);
      g_variant_builder_add(&permissions, "{s^as}", app_id.c_str(), strv.data());
    }
    GVariant* data = g_variant_new("(^ayttu)", entry.host_path.c_str(), guint64(entry.directory_device),
                                   guint64(entry.directory_inode), guint32(entry.flags));
    std::string id = entry.id;
    queue->call(
        "Set",
        g_variant_new("(sbs@a{sas}v)", staging, TRUE, entry.id.c_str(), g_variant_builder_end(&permissions), data),
        nullptr, [weak, id](GVariant* reply, GError* error) {
          if (reply == nullptr) weak.lock()->fail(store_error(error, "cannot write document " + id));
        });
  }
  queue->start();
}

}  // namespace sidebus
