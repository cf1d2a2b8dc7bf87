// SPDX-License-Identifier: LGPL-2.1-or-later
// control-commands.cpp — see control-commands.hpp.
#include "broker/control-commands.hpp"

#include <cstring>

#include "util/log-ring.hpp"
#include "util/service-notify.hpp"

namespace sidebus {

namespace {

// Bytes of log a dump-log answers with at most (the whole ring).
int64_t requested_bytes(JsonObject* request, GError** error) {
  JsonNode* value = json_object_get_member(request, "max_bytes");
  if (value == nullptr) return 0;
  if (!JSON_NODE_HOLDS_VALUE(value) || json_node_get_value_type(value) != G_TYPE_INT64 ||
      json_node_get_int(value) < 0) {
    g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT, "\"max_bytes\" must be a non-negative integer");
    return -1;
  }
  return json_node_get_int(value);
}

JsonNode* dump_log(JsonObject* request, GError** error) {
  int64_t max_bytes = requested_bytes(request, error);
  if (max_bytes < 0) return nullptr;
  // Guest input in log lines may be any bytes; JSON strings must be UTF-8.
  std::string tail = log_ring::tail(size_t(max_bytes));
  g_autofree char* text = g_utf8_make_valid(tail.data(), gssize(tail.size()));
  g_autoptr(JsonBuilder) builder = json_builder_new();
  json_builder_begin_object(builder);
  json_builder_set_member_name(builder, "capacity");
  json_builder_add_int_value(builder, int64_t(log_ring::capacity()));
  json_builder_set_member_name(builder, "log");
  json_builder_add_string_value(builder, text);
  json_builder_end_object(builder);
  return json_builder_get_root(builder);
}

}  // namespace

ControlSocket::Handler control_commands(std::function<Broker*()> broker) {
  return [broker](JsonObject* request, GError** error) -> JsonNode* {
    const char* command = json_object_get_string_member(request, "command");
    if (strcmp(command, "dump-log") == 0) return dump_log(request, error);
    if (strcmp(command, "status") != 0 && strcmp(command, "reload") != 0) {
      g_set_error(error, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED,
                  "unknown command \"%s\": the broker answers status, dump-log and reload", command);
      return nullptr;
    }
    Broker* running = broker();
    if (running == nullptr) {
      g_set_error(error, G_IO_ERROR, G_IO_ERROR_PENDING, "the broker is still starting; ask again in a moment");
      return nullptr;
    }
    if (strcmp(command, "status") == 0) return to_json(running->status());
    g_message("reloading the configuration (asked on the control socket)");
    service_notify::reloading();
    ReloadReport report;
    bool reloaded = running->reload(&report, error);
    service_notify::ready(summary_line(running->status()));
    if (!reloaded) {
      g_warning("%s", (*error)->message);
      return nullptr;
    }
    return to_json(report);
  };
}

void reload_on_signal(Broker* broker) {
  if (broker == nullptr) {
    g_message("SIGHUP while starting: the configuration is being read anyway");
    return;
  }
  g_message("reloading the configuration (SIGHUP)");
  service_notify::reloading();
  g_autoptr(GError) error = nullptr;
  if (!broker->reload(nullptr, &error)) g_warning("%s", error->message);
  service_notify::ready(summary_line(broker->status()));
}

}  // namespace sidebus
