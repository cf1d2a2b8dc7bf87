// SPDX-License-Identifier: LGPL-2.1-or-later
// backend.cpp — scripted replies, the call log, the Request objects of
// pending calls, the Session objects, and the dev.sidebus.test.Backend
// control interface of the test backend (see backend.hpp for how the pieces
// fit).
#include "backend.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "test-backend-control.h"
#include "test-impl-portal.h"

namespace sidebus::test_backend {

// A call the backend has not answered yet (or, request_outlives_answer, whose
// Request is not closed yet): its invocation and the
// org.freedesktop.impl.portal.Request exported at its handle.
struct Backend::Pending {
  Backend* backend = nullptr;
  std::string handle;
  size_t call_index = 0;
  CallOptions options;
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

// An org.freedesktop.impl.portal.Session the backend exported.
struct Backend::Session {
  Backend* backend = nullptr;
  std::string handle;
  GObjectPtr<GDBusInterfaceSkeleton> skeleton;
  std::function<void()> on_closed;

  ~Session() {
    g_signal_handlers_disconnect_by_data(skeleton.get(), this);
    if (g_dbus_interface_skeleton_get_connection(skeleton.get())) g_dbus_interface_skeleton_unexport(skeleton.get());
  }
};

Backend::Backend(GDBusConnection* connection)
    : connection_(G_DBUS_CONNECTION(g_object_ref(connection))),
      control_(G_DBUS_INTERFACE_SKELETON(test_control_backend_skeleton_new())) {
  g_signal_connect(control_.get(), "handle-set-reply", G_CALLBACK(on_set_reply), this);
  g_signal_connect(control_.get(), "handle-get-calls", G_CALLBACK(on_get_calls), this);
  g_signal_connect(control_.get(), "handle-reset", G_CALLBACK(on_reset), this);
  g_signal_connect(control_.get(), "handle-close-session", G_CALLBACK(on_close_session), this);
  g_autoptr(GError) error = nullptr;
  if (!g_dbus_interface_skeleton_export(control_.get(), connection, kControlPath, &error))
    g_error("cannot export %s: %s", kControlPath, error->message);
}

Backend::~Backend() {
  pending_.clear();
  sessions_.clear();
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

guint32 Backend::scripted_response(const char* method) const {
  auto found = replies_.find(method);
  return found != replies_.end() ? found->second.response : Reply{}.response;
}

void Backend::handle_call(GDBusMethodInvocation* invocation, const char* method, const char* handle,
                          GVariant* arguments, CallOptions options) {
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
  pending->options = std::move(options);
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

// Answers the pending call at @handle and retires its Request object
// (unless it outlives the answer: then only a Close retires it).
void Backend::answer(const std::string& handle, guint32 response, GVariant* results) {
  auto found = pending_.find(handle);
  if (found == pending_.end()) return;
  Pending* pending = found->second.get();
  if (pending->invocation) {
    const size_t index = pending->call_index;
    if (response == kResponseDBusError) {
      g_dbus_method_invocation_return_dbus_error(pending->invocation.release(), "org.freedesktop.DBus.Error.Failed",
                                                 "failure scripted by the test");
    } else {
      VariantPtr sent(results ? g_variant_ref(results)
                              : g_variant_ref_sink(g_variant_new_array(G_VARIANT_TYPE("{sv}"), nullptr, 0)));
      if (pending->options.results) sent = pending->options.results(response, sent.get());
      GVariant* reply = nullptr;
      switch (pending->options.shape) {
        case ReplyShape::kResponseAndResults:
          reply = g_variant_new("(u@a{sv})", response, sent.get());
          calls_[index].extra.emplace_back("results", VariantPtr(g_variant_ref(sent.get())));
          break;
        case ReplyShape::kResponse:
          reply = g_variant_new("(u)", response);
          break;
        case ReplyShape::kNothing:
          break;
      }
      g_dbus_method_invocation_return_value(pending->invocation.release(), reply);
    }
    calls_[index].answered = true;
    calls_[index].response = response;
    if (pending->options.request_outlives_answer && !calls_[index].closed) return;
  }
  pending_.erase(found);
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

bool Backend::export_session(const char* session_handle, std::function<void()> on_closed, GError** error) {
  if (sessions_.contains(session_handle)) {
    g_set_error(error, G_DBUS_ERROR, G_DBUS_ERROR_INVALID_ARGS, "session %s exists already", session_handle);
    return false;
  }
  auto session = std::make_unique<Session>();
  session->backend = this;
  session->handle = session_handle;
  session->on_closed = std::move(on_closed);
  session->skeleton.reset(G_DBUS_INTERFACE_SKELETON(test_impl_session_skeleton_new()));
  test_impl_session_set_version(TEST_IMPL_SESSION(session->skeleton.get()), 1);
  g_signal_connect(session->skeleton.get(), "handle-close", G_CALLBACK(on_session_close), session.get());
  if (!g_dbus_interface_skeleton_export(session->skeleton.get(), connection_.get(), session_handle, error))
    return false;
  sessions_.emplace(session_handle, std::move(session));
  return true;
}

// Ends the session at @session_handle: Closed first if a test asked, then
// the portal's own clean-up, then the object goes.
void Backend::end_session(const std::string& session_handle, bool emit_closed) {
  auto found = sessions_.find(session_handle);
  if (found == sessions_.end()) return;
  std::unique_ptr<Session> session = std::move(found->second);
  sessions_.erase(found);
  if (emit_closed) test_impl_session_emit_closed(TEST_IMPL_SESSION(session->skeleton.get()));
  g_message("session %s ended", session_handle.c_str());
  if (session->on_closed) session->on_closed();
}

gboolean Backend::on_session_close(GDBusInterfaceSkeleton* skeleton, GDBusMethodInvocation* invocation,
                                   gpointer user_data) {
  auto* session = static_cast<Session*>(user_data);
  Backend* backend = session->backend;
  const std::string handle = session->handle;
  backend->record_call("Session.Close", g_variant_new_parsed("{'session_handle': <%o>}", handle.c_str()));
  test_impl_session_complete_close(TEST_IMPL_SESSION(skeleton), invocation);
  backend->end_session(handle, false);  // frees session
  return G_DBUS_METHOD_INVOCATION_HANDLED;
}

gboolean Backend::on_close_session(GDBusInterfaceSkeleton* control, GDBusMethodInvocation* invocation,
                                   const char* session_handle, gpointer user_data) {
  auto* backend = static_cast<Backend*>(user_data);
  if (!backend->sessions_.contains(session_handle)) {
    g_dbus_method_invocation_return_dbus_error(invocation, "org.freedesktop.DBus.Error.UnknownObject",
                                               "no such session");
    return G_DBUS_METHOD_INVOCATION_HANDLED;
  }
  backend->end_session(session_handle, true);
  test_control_backend_complete_close_session(TEST_CONTROL_BACKEND(control), invocation);
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
    for (const auto& [key, value] : record.extra) g_variant_builder_add(&calls, "{sv}", key.c_str(), value.get());
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
  std::vector<std::string> handles;
  for (const auto& [handle, pending] : backend->pending_) handles.push_back(handle);
  for (const std::string& handle : handles) backend->answer(handle, kResponseOther, nullptr);
  backend->pending_.clear();  // and the Requests kept after their answer (Inhibit)
  backend->replies_.clear();
  backend->calls_.clear();
  for (const auto& [owner, hook] : backend->reset_hooks_) hook();
  test_control_backend_complete_reset(TEST_CONTROL_BACKEND(control), invocation);
  return G_DBUS_METHOD_INVOCATION_HANDLED;
}

bool has_key(GVariant* dict, const char* key) {
  g_autoptr(GVariant) value = g_variant_lookup_value(dict, key, nullptr);
  return value != nullptr;
}

VariantPtr with_default(GVariant* dict, const char* key, GVariant* value) {
  g_autoptr(GVariant) owned = g_variant_ref_sink(value);
  GVariantDict builder;
  g_variant_dict_init(&builder, dict);
  if (!g_variant_dict_contains(&builder, key)) g_variant_dict_insert_value(&builder, key, owned);
  return VariantPtr(g_variant_ref_sink(g_variant_dict_end(&builder)));
}

VariantPtr read_fd_bytes(int fd) {
  std::string data;
  struct stat info {};
  char buffer[65536];
  if (fstat(fd, &info) == 0 && S_ISREG(info.st_mode)) {
    off_t offset = 0;
    while (data.size() < kMaxRecordedBytes) {
      const ssize_t n = pread(fd, buffer, std::min(sizeof(buffer), kMaxRecordedBytes - data.size()), offset);
      if (n <= 0) break;
      data.append(buffer, static_cast<size_t>(n));
      offset += n;
    }
  } else {
    const int flags = fcntl(fd, F_GETFL);
    if (flags >= 0) fcntl(fd, F_SETFL, flags | O_NONBLOCK);
    while (data.size() < kMaxRecordedBytes) {
      const ssize_t n = read(fd, buffer, std::min(sizeof(buffer), kMaxRecordedBytes - data.size()));
      if (n <= 0) break;
      data.append(buffer, static_cast<size_t>(n));
    }
  }
  return VariantPtr(
      g_variant_ref_sink(g_variant_new_fixed_array(G_VARIANT_TYPE_BYTE, data.data(), data.size(), sizeof(char))));
}

VariantPtr read_file_bytes(const char* path) {
  const int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
  if (fd < 0) return VariantPtr(g_variant_ref_sink(g_variant_new_fixed_array(G_VARIANT_TYPE_BYTE, "", 0, 1)));
  VariantPtr bytes = read_fd_bytes(fd);
  close(fd);
  return bytes;
}

}  // namespace sidebus::test_backend
