// SPDX-License-Identifier: LGPL-2.1-or-later
// vmstate-service.cpp — see vmstate-service.hpp. Every step that asks
// another process (the permission store, the bus driver for the caller's
// uid) is an asynchronous call; the method invocation is answered from its
// callback.
#include "broker/vmstate-service.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include "documents/document-table.hpp"
#include "documents/private-bus.hpp"

namespace sidebus {
namespace {

constexpr char kName[] = "org.qemu.VMState1";
constexpr char kPath[] = "/org/qemu/VMState1";
constexpr char kIntrospection[] =
    "<node>"
    "  <interface name='org.qemu.VMState1'>"
    "    <property name='Id' type='s' access='read'/>"
    "    <method name='Load'><arg type='ay' name='data' direction='in'/></method>"
    "    <method name='Save'><arg type='ay' name='data' direction='out'/></method>"
    "  </interface>"
    "</node>";

GDBusInterfaceInfo* interface_info() {
  static GDBusNodeInfo* node = g_dbus_node_info_new_for_xml(kIntrospection, nullptr);
  return node->interfaces[0];
}

// The device and inode the document portal checks a document's directory
// against (the parent of a file, the directory itself) are this host's:
// they differ between hosts even for the same files on shared storage. A
// directory that is not there keeps the source's numbers (the document is
// as unreachable here as it was there).
void take_directory_ids_here(DocumentEntry& entry) {
  std::string directory = entry.host_path;
  if ((entry.flags & kDocumentFlagDirectory) == 0) {
    g_autofree char* parent = g_path_get_dirname(entry.host_path.c_str());
    directory = parent;
  }
  struct stat st;
  if (stat(directory.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) return;
  entry.directory_device = st.st_dev;
  entry.directory_inode = st.st_ino;
}

}  // namespace

bool VmStateService::is_valid_id(const std::string& id) {
  if (id.empty() || id.size() > 255) return false;
  for (char c : id)
    if (c <= ' ' || c > '~' || c == ',') return false;
  return true;
}

VmStateService::VmStateService(PrivateBus& private_bus, Options options, PendingGuestObjects pending, Loaded on_loaded)
    : private_bus_(private_bus),
      options_(std::move(options)),
      pending_(std::move(pending)),
      on_loaded_(std::move(on_loaded)),
      cancellable_(adopt(g_cancellable_new())),
      alive_(std::make_shared<VmStateService*>(this)) {
  export_on(private_bus_.connection());
}

VmStateService::~VmStateService() {
  *alive_ = nullptr;
  g_cancellable_cancel(cancellable_.get());
  unexport();
}

void VmStateService::on_private_bus_restarted() {
  if (private_bus_.connection() == exported_on_) return;
  unexport();
  export_on(private_bus_.connection());
}

void VmStateService::export_on(GDBusConnection* connection) {
  if (connection == nullptr) return;
  static const GDBusInterfaceVTable vtable = {on_method_call, on_get_property, nullptr, {}};
  g_autoptr(GError) error = nullptr;
  registration_ =
      g_dbus_connection_register_object(connection, kPath, interface_info(), &vtable, this, nullptr, &error);
  if (registration_ == 0) {
    g_warning("cannot serve %s at %s on the private bus: %s; this VM's documents will not migrate", kName, kPath,
              error->message);
    return;
  }
  exported_on_ = connection;
  // Queued behind other helpers if need be: QEMU asks every queued owner.
  name_owner_ = g_bus_own_name_on_connection(
      connection, kName, G_BUS_NAME_OWNER_FLAGS_NONE, nullptr,
      [](GDBusConnection* connection, const char* name, gpointer) {
        if (!g_dbus_connection_is_closed(connection))
          g_warning("lost %s on the private bus: QEMU's dbus-vmstate cannot reach this broker", name);
      },
      nullptr, nullptr);
  g_message("serving %s (Id “%s”) on the private bus%s", kName, options_.id.c_str(),
            options_.incoming ? "; waiting for Load (--incoming): the guest is not served before it" : "");
}

void VmStateService::unexport() {
  if (name_owner_ != 0) g_bus_unown_name(name_owner_);
  name_owner_ = 0;
  if (registration_ != 0 && exported_on_ != nullptr) g_dbus_connection_unregister_object(exported_on_, registration_);
  registration_ = 0;
  exported_on_ = nullptr;
}

GVariant* VmStateService::on_get_property(GDBusConnection*, const char*, const char*, const char*, const char* property,
                                          GError** error, gpointer data) {
  auto* self = static_cast<VmStateService*>(data);
  if (g_str_equal(property, "Id")) return g_variant_new_string(self->options_.id.c_str());
  g_set_error(error, G_DBUS_ERROR, G_DBUS_ERROR_UNKNOWN_PROPERTY, "no property %s", property);
  return nullptr;
}

void VmStateService::on_method_call(GDBusConnection*, const char*, const char*, const char*, const char* method,
                                    GVariant* parameters, GDBusMethodInvocation* invocation, gpointer data) {
  auto* self = static_cast<VmStateService*>(data);
  if (g_str_equal(method, "Save")) return self->save(invocation);
  if (g_str_equal(method, "Load")) return self->load(invocation, parameters);
  g_dbus_method_invocation_return_error(invocation, G_DBUS_ERROR, G_DBUS_ERROR_UNKNOWN_METHOD, "no method %s", method);
}

void VmStateService::save(GDBusMethodInvocation* invocation) {
  if (waiting_for_load()) {
    g_dbus_method_invocation_return_error(invocation, G_DBUS_ERROR, G_DBUS_ERROR_FAILED,
                                          "this broker is a migration's destination (--incoming) and has not been "
                                          "given its state (Load) yet: it has nothing to save");
    return;
  }
  GDBusConnection* bus = private_bus_.connection();
  if (bus == nullptr || g_dbus_connection_is_closed(bus)) {
    g_dbus_method_invocation_return_error(invocation, G_DBUS_ERROR, G_DBUS_ERROR_FAILED,
                                          "the VM's private bus is restarting; its documents cannot be saved now");
    return;
  }
  gint64 started = g_get_monotonic_time();
  VmState state;
  state.app_id = options_.app_id;
  if (pending_) pending_(state);
  read_document_table(
      bus, cancellable_.get(),
      [this, invocation, started, state = std::move(state)](std::optional<std::vector<DocumentEntry>> entries,
                                                            const GError* error) mutable {
        if (!entries) {
          g_warning("Save: %s", error->message);
          g_dbus_method_invocation_return_error(invocation, G_DBUS_ERROR, G_DBUS_ERROR_FAILED, "%s", error->message);
          return;
        }
        for (DocumentEntry& entry : *entries) {
          // Only this VM's grants migrate (there should be no others).
          std::erase_if(entry.permissions, [this](const auto& grant) { return grant.first != options_.app_id; });
          state.documents.push_back(std::move(entry));
        }
        g_autoptr(GError) encode_error = nullptr;
        std::optional<std::string> blob = encode_vmstate(state, options_.key, &encode_error);
        if (!blob) {
          g_warning("Save: %s", encode_error->message);
          g_dbus_method_invocation_return_error(invocation, G_DBUS_ERROR, G_DBUS_ERROR_LIMITS_EXCEEDED, "%s",
                                                encode_error->message);
          return;
        }
        g_message("Save: %zu documents, %zu pending requests, %zu sessions: %zu bytes in %.1f ms%s",
                  state.documents.size(), state.pending_requests.size(), state.sessions.size(), blob->size(),
                  (g_get_monotonic_time() - started) / 1000.0, options_.key.empty() ? "" : " (authenticated)");
        g_dbus_method_invocation_return_value(
            invocation,
            g_variant_new("(@ay)", g_variant_new_fixed_array(G_VARIANT_TYPE_BYTE, blob->data(), blob->size(), 1)));
      });
}

void VmStateService::load(GDBusMethodInvocation* invocation, GVariant* parameters) {
  if (!options_.incoming) {
    g_dbus_method_invocation_return_error(invocation, G_DBUS_ERROR, G_DBUS_ERROR_NOT_SUPPORTED,
                                          "this broker was not started with --incoming: it serves its own VM and "
                                          "takes no migrated state");
    return;
  }
  if (loading_ || loaded_ || cannot_serve_) {
    g_dbus_method_invocation_return_error(invocation, G_DBUS_ERROR, G_DBUS_ERROR_FAILED, "%s",
                                          loaded_         ? "this broker has loaded its migrated state already"
                                          : cannot_serve_ ? "this broker loaded a state but could not serve it; "
                                                            "restart it"
                                                          : "a Load is in progress");
    return;
  }
  loading_ = true;
  // Who is asking decides whether an unauthenticated blob may be taken.
  GDBusConnection* bus = g_dbus_method_invocation_get_connection(invocation);
  g_object_ref(invocation);
  g_variant_ref(parameters);
  struct Pending {
    std::shared_ptr<VmStateService*> alive;
    GDBusMethodInvocation* invocation;
    GVariant* parameters;
  };
  g_dbus_connection_call(
      bus, "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus", "GetConnectionUnixUser",
      g_variant_new("(s)", g_dbus_method_invocation_get_sender(invocation)), G_VARIANT_TYPE("(u)"),
      G_DBUS_CALL_FLAGS_NONE, -1, cancellable_.get(),
      [](GObject* source, GAsyncResult* result, gpointer data) {
        std::unique_ptr<Pending> pending(static_cast<Pending*>(data));
        GObjectPtr<GDBusMethodInvocation> invocation = adopt(pending->invocation);
        VariantPtr parameters(pending->parameters);
        g_autoptr(GError) error = nullptr;
        g_autoptr(GVariant) reply = g_dbus_connection_call_finish(G_DBUS_CONNECTION(source), result, &error);
        VmStateService* self = *pending->alive;
        if (self == nullptr) return;
        auto refuse = [&](GDBusError code, const std::string& message) {
          g_warning("Load refused: %s", message.c_str());
          self->loading_ = false;
          g_dbus_method_invocation_return_error(invocation.release(), G_DBUS_ERROR, code, "%s", message.c_str());
        };
        if (reply == nullptr)
          return refuse(G_DBUS_ERROR_FAILED, std::string("cannot tell who called Load: ") + error->message);
        guint32 caller_uid;
        g_variant_get(reply, "(u)", &caller_uid);
        if (caller_uid != getuid() && self->options_.key.empty())
          return refuse(G_DBUS_ERROR_ACCESS_DENIED,
                        "Load from uid " + std::to_string(caller_uid) + ", not the broker's uid " +
                            std::to_string(getuid()) +
                            ": migrated state from a process of another user is only taken when it is "
                            "authenticated; give the source and destination brokers the same --vmstate-key");
        g_autoptr(GVariant) bytes = g_variant_get_child_value(parameters.get(), 0);
        gsize size = 0;
        const void* blob = g_variant_get_fixed_array(bytes, &size, 1);
        g_autoptr(GError) decode_error = nullptr;
        std::optional<VmState> state =
            decode_vmstate(blob, size, self->options_.key, self->options_.app_id, &decode_error);
        if (!state) return refuse(G_DBUS_ERROR_INVALID_ARGS, decode_error->message);
        self->apply(invocation.release(), std::move(*state));
      },
      new Pending{alive_, invocation, parameters});
}

void VmStateService::apply(GDBusMethodInvocation* invocation, VmState state) {
  gint64 started = g_get_monotonic_time();
  for (DocumentEntry& entry : state.documents) take_directory_ids_here(entry);
  GDBusConnection* bus = private_bus_.connection();
  if (bus == nullptr || g_dbus_connection_is_closed(bus)) {
    loading_ = false;
    g_dbus_method_invocation_return_error(invocation, G_DBUS_ERROR, G_DBUS_ERROR_FAILED,
                                          "the VM's private bus is restarting; try Load again");
    return;
  }
  std::vector<DocumentEntry> entries = state.documents;
  replace_document_table(
      bus, private_bus_.database_dir(), std::move(entries), cancellable_.get(),
      [this, invocation, started, state = std::move(state)](const GError* error) mutable {
        if (error != nullptr) {
          g_warning("Load failed: %s", error->message);
          loading_ = false;
          g_dbus_method_invocation_return_error(invocation, G_DBUS_ERROR, G_DBUS_ERROR_FAILED, "%s", error->message);
          return;
        }
        g_message("Load: %zu documents in place in %.1f ms; starting to serve the guest", state.documents.size(),
                  (g_get_monotonic_time() - started) / 1000.0);
        auto alive = alive_;
        on_loaded_(std::move(state), [alive, invocation, started](GError* error) {
          VmStateService* self = *alive;
          if (self == nullptr) {
            g_dbus_method_invocation_return_error(invocation, G_DBUS_ERROR, G_DBUS_ERROR_FAILED, "the broker stopped");
            return;
          }
          self->loading_ = false;
          if (error != nullptr) {
            self->cannot_serve_ = true;  // the document portal may have read the table: no second Load
            g_dbus_method_invocation_return_error(invocation, G_DBUS_ERROR, G_DBUS_ERROR_FAILED,
                                                  "the state is loaded, but the broker cannot serve the guest: %s",
                                                  error->message);
            return;
          }
          self->loaded_ = true;
          g_message("Load done in %.1f ms", (g_get_monotonic_time() - started) / 1000.0);
          g_dbus_method_invocation_return_value(invocation, nullptr);
        });
      });
}

}  // namespace sidebus
