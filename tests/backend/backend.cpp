// backend.cpp — scripted replies, the call log, the Request objects of
// pending calls and the dev.sidebus.test.Backend control interface of the
// test backend (see backend.hpp for how the pieces fit).
#include "backend.hpp"

#include "test-backend-control.h"
#include "test-impl-portal.h"

namespace sidebus::test_backend {

// A call the backend has not answered yet: its invocation and the
// org.freedesktop.impl.portal.Request exported at its handle.
struct Backend::Pending {
  Backend* backend = nullptr;
  std::string handle;
  size_t call_index = 0;
  GObjectPtr<GDBusMethodInvocation> invocation;  // owned until answered
  GObjectPtr<GDBusInterfaceSkeleton> request;
  guint delay_source = 0;
  guint32 response = kResponseOther;
  VariantPtr results;

  ~Pending() {
    if (delay_source != 0) g_source_remove(delay_source);
    if (request) {
      g_signal_handlers_disconnect_by_data(request.get(), this);
      if (g_dbus_interface_skeleton_get_connection(request.get())) g_dbus_interface_skeleton_unexport(request.get());
    }
  }
};

Backend::Backend(GDBusConnection* connection)
    : connection_(G_DBUS_CONNECTION(g_object_ref(connection))),
      control_(G_DBUS_INTERFACE_SKELETON(test_control_backend_skeleton_new())) {
  g_signal_connect(control_.get(), "handle-set-reply", G_CALLBACK(on_set_reply), this);
  g_signal_connect(control_.get(), "handle-get-calls", G_CALLBACK(on_get_calls), this);
  g_signal_connect(control_.get(), "handle-reset", G_CALLBACK(on_reset), this);
  g_autoptr(GError) error = nullptr;
  if (!g_dbus_interface_skeleton_export(control_.get(), connection, kControlPath, &error))
    g_error("cannot export %s: %s", kControlPath, error->message);
}

Backend::~Backend() {
  pending_.clear();
  g_signal_handlers_disconnect_by_data(control_.get(), this);
  g_dbus_interface_skeleton_unexport(control_.get());
}

void Backend::record_call(const char* method, GVariant* arguments) {
  g_autoptr(GVariant) owned = g_variant_ref_sink(arguments);
  g_auto(GVariantBuilder) builder = G_VARIANT_BUILDER_INIT(G_VARIANT_TYPE_VARDICT);
  g_variant_builder_add(&builder, "{sv}", "method", g_variant_new_string(method));
  GVariantIter iter;
  const char* key;
  GVariant* value;
  g_variant_iter_init(&iter, owned);
  while (g_variant_iter_next(&iter, "{&sv}", &key, &value)) {
    g_variant_builder_add(&builder, "{sv}", key, value);
    g_variant_unref(value);
  }
  calls_.push_back(CallRecord{VariantPtr(g_variant_ref_sink(g_variant_builder_end(&builder)))});
  g_message("%s call recorded", method);
}

void Backend::handle_call(GDBusMethodInvocation* invocation, const char* method, const char* handle,
                          GVariant* arguments) {
  record_call(method, arguments);
  if (pending_.contains(handle)) {
    g_dbus_method_invocation_return_dbus_error(invocation, "org.freedesktop.DBus.Error.InvalidArgs",
                                               "a request with this handle is already pending");
    return;
  }

  auto pending = std::make_unique<Pending>();
  pending->backend = this;
  pending->handle = handle;
  pending->call_index = calls_.size() - 1;
  pending->request.reset(G_DBUS_INTERFACE_SKELETON(test_impl_request_skeleton_new()));
  g_signal_connect(pending->request.get(), "handle-close", G_CALLBACK(on_close), pending.get());
  g_autoptr(GError) error = nullptr;
  if (!g_dbus_interface_skeleton_export(pending->request.get(), connection_.get(), handle, &error)) {
    g_dbus_method_invocation_return_gerror(invocation, error);
    return;
  }
  // The reference handed to the method handler, given back by return_*().
  pending->invocation.reset(invocation);

  const Reply scripted;
  auto found = replies_.find(method);
  const Reply& reply = found != replies_.end() ? found->second : scripted;
  pending->response = reply.response;
  if (reply.results) pending->results.reset(g_variant_ref(reply.results.get()));
  Pending* raw = pending.get();
  pending_.emplace(handle, std::move(pending));

  if (reply.response == kResponseWaitForClose) return;
  if (reply.delay_ms > 0) {
    raw->delay_source = g_timeout_add(reply.delay_ms, on_delay_elapsed, raw);
    return;
  }
  answer(handle, raw->response, raw->results.get());
}

// Answers the pending call at @handle and retires its Request object.
void Backend::answer(const std::string& handle, guint32 response, GVariant* results) {
  auto found = pending_.find(handle);
  if (found == pending_.end()) return;
  std::unique_ptr<Pending> pending = std::move(found->second);
  pending_.erase(found);

  CallRecord& record = calls_[pending->call_index];
  if (response == kResponseDBusError) {
    g_dbus_method_invocation_return_dbus_error(pending->invocation.release(), "org.freedesktop.DBus.Error.Failed",
                                               "failure scripted by the test");
  } else {
    g_autoptr(GVariant) empty = g_variant_ref_sink(g_variant_new_array(G_VARIANT_TYPE("{sv}"), nullptr, 0));
    g_dbus_method_invocation_return_value(pending->invocation.release(),
                                          g_variant_new("(u@a{sv})", response, results ? results : empty));
  }
  record.answered = true;
  record.response = response;
}

gboolean Backend::on_delay_elapsed(gpointer user_data) {
  auto* pending = static_cast<Pending*>(user_data);
  pending->delay_source = 0;
  pending->backend->answer(pending->handle, pending->response, pending->results.get());
  return G_SOURCE_REMOVE;
}

// org.freedesktop.impl.portal.Request.Close: like real backends, the dialog
// goes away and the call answers 2 (other).
gboolean Backend::on_close(GDBusInterfaceSkeleton* request, GDBusMethodInvocation* invocation, gpointer user_data) {
  auto* pending = static_cast<Pending*>(user_data);
  Backend* backend = pending->backend;
  backend->calls_[pending->call_index].closed = true;
  g_message("request %s closed", pending->handle.c_str());
  test_impl_request_complete_close(TEST_IMPL_REQUEST(request), invocation);
  std::string handle = pending->handle;
  backend->answer(handle, kResponseOther, nullptr);  // frees pending
  return G_DBUS_METHOD_INVOCATION_HANDLED;
}

gboolean Backend::on_set_reply(GDBusInterfaceSkeleton* control, GDBusMethodInvocation* invocation,
                               const char* method, guint32 response, GVariant* results, guint32 delay_ms,
                               gpointer user_data) {
  auto* backend = static_cast<Backend*>(user_data);
  Reply& reply = backend->replies_[method];
  reply.response = response;
  reply.results.reset(g_variant_ref(results));
  reply.delay_ms = delay_ms;
  test_control_backend_complete_set_reply(TEST_CONTROL_BACKEND(control), invocation);
  return G_DBUS_METHOD_INVOCATION_HANDLED;
}

gboolean Backend::on_get_calls(GDBusInterfaceSkeleton* control, GDBusMethodInvocation* invocation,
                               gpointer user_data) {
  auto* backend = static_cast<Backend*>(user_data);
  g_auto(GVariantBuilder) calls = G_VARIANT_BUILDER_INIT(G_VARIANT_TYPE("aa{sv}"));
  for (const CallRecord& record : backend->calls_) {
    g_variant_builder_open(&calls, G_VARIANT_TYPE_VARDICT);
    GVariantIter iter;
    const char* key;
    GVariant* value;
    g_variant_iter_init(&iter, record.arguments.get());
    while (g_variant_iter_next(&iter, "{&sv}", &key, &value)) {
      g_variant_builder_add(&calls, "{sv}", key, value);
      g_variant_unref(value);
    }
    g_variant_builder_add(&calls, "{sv}", "closed", g_variant_new_boolean(record.closed));
    g_variant_builder_add(&calls, "{sv}", "answered", g_variant_new_boolean(record.answered));
    if (record.answered) g_variant_builder_add(&calls, "{sv}", "response", g_variant_new_uint32(record.response));
    g_variant_builder_close(&calls);
  }
  test_control_backend_complete_get_calls(TEST_CONTROL_BACKEND(control), invocation,
                                          g_variant_builder_end(&calls));
  return G_DBUS_METHOD_INVOCATION_HANDLED;
}

gboolean Backend::on_reset(GDBusInterfaceSkeleton* control, GDBusMethodInvocation* invocation, gpointer user_data) {
  auto* backend = static_cast<Backend*>(user_data);
  while (!backend->pending_.empty()) backend->answer(backend->pending_.begin()->first, kResponseOther, nullptr);
  backend->replies_.clear();
  backend->calls_.clear();
  test_control_backend_complete_reset(TEST_CONTROL_BACKEND(control), invocation);
  return G_DBUS_METHOD_INVOCATION_HANDLED;
}

}  // namespace sidebus::test_backend
