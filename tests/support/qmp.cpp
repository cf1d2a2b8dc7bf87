// SPDX-License-Identifier: LGPL-2.1-or-later
// qmp.cpp — Qmp (qmp.hpp): newline-delimited JSON over a unix socket,
// read with a deadline (the socket's timeout), parsed with json-glib.
#include "support/qmp.hpp"

#include <gio/gunixsocketaddress.h>

#include <algorithm>

namespace sidebus::test {
namespace {

std::string to_json(JsonNode* node) {
  if (node == nullptr) return "null";
  g_autofree char* text = json_to_string(node, FALSE);
  return text;
}

}  // namespace

Qmp::Qmp(const std::string& socket_path, Timeout timeout) : path_(socket_path) {
  g_autoptr(GSocketClient) client = g_socket_client_new();
  g_autoptr(GSocketAddress) address = g_unix_socket_address_new(socket_path.c_str());
  g_autoptr(GError) error = nullptr;
  wait_until(
      [&] {
        g_clear_error(&error);
        connection_ = adopt(g_socket_client_connect(client, G_SOCKET_CONNECTABLE(address), nullptr, &error));
        return connection_ != nullptr;
      },
      timeout);
  if (!connection_) throw FixtureError("cannot connect to QMP at " + socket_path + ": " + error->message);
  input_ = adopt(g_data_input_stream_new(g_io_stream_get_input_stream(G_IO_STREAM(connection_.get()))));
  gint64 deadline = g_get_monotonic_time() + std::chrono::microseconds(timeout).count();
  JsonNode* greeting = read_message(deadline);
  if (greeting == nullptr) throw FixtureError("QMP at " + socket_path + " sent no greeting");
  json_node_unref(greeting);
  execute("qmp_capabilities");
}

Qmp::~Qmp() = default;

JsonNode* Qmp::read_message(gint64 deadline_us) {
  GSocket* socket = g_socket_connection_get_socket(connection_.get());
  while (true) {
    gint64 left = deadline_us - g_get_monotonic_time();
    if (left <= 0) return nullptr;
    g_socket_set_timeout(socket, guint(std::max<gint64>(1, left / G_USEC_PER_SEC)));
    g_autoptr(GError) error = nullptr;
    gsize length = 0;
    g_autofree char* line = g_data_input_stream_read_line(input_.get(), &length, nullptr, &error);
    if (line == nullptr) {
      if (error != nullptr && g_error_matches(error, G_IO_ERROR, G_IO_ERROR_TIMED_OUT)) continue;
      throw FixtureError("QMP at " + path_ + " closed" + (error ? std::string(": ") + error->message : ""));
    }
    g_autoptr(JsonParser) parser = json_parser_new();
    if (!json_parser_load_from_data(parser, line, gssize(length), &error))
      throw FixtureError("QMP sent something that is not JSON: " + std::string(line));
    JsonNode* root = json_parser_get_root(parser);
    if (!JSON_NODE_HOLDS_OBJECT(root)) continue;
    JsonObject* object = json_node_get_object(root);
    if (json_object_has_member(object, "event")) {
      events_.emplace_back(json_object_get_string_member(object, "event"));
      continue;
    }
    return json_node_copy(root);
  }
}

std::string Qmp::execute(const std::string& command, const std::string& arguments, Timeout timeout) {
  std::string request = "{\"execute\": \"" + command + "\"" +
                        (arguments.empty() ? std::string() : ", \"arguments\": " + arguments) + "}\r\n";
  g_autoptr(GError) error = nullptr;
  GOutputStream* output = g_io_stream_get_output_stream(G_IO_STREAM(connection_.get()));
  if (!g_output_stream_write_all(output, request.data(), request.size(), nullptr, nullptr, &error))
    throw FixtureError("cannot send " + command + " to QMP: " + error->message);
  gint64 deadline = g_get_monotonic_time() + std::chrono::microseconds(timeout).count();
  JsonNode* answer = read_message(deadline);
  if (answer == nullptr) throw FixtureError("QMP did not answer " + command);
  std::unique_ptr<JsonNode, decltype(&json_node_unref)> hold(answer, json_node_unref);
  JsonObject* object = json_node_get_object(answer);
  if (json_object_has_member(object, "error")) {
    JsonObject* failure = json_object_get_object_member(object, "error");
    throw FixtureError("QMP " + command + " failed: " + json_object_get_string_member(failure, "class") + ": " +
                       json_object_get_string_member(failure, "desc"));
  }
  return to_json(json_object_get_member(object, "return"));
}

std::string Qmp::migration_status(std::string* error_description) {
  std::string answer = execute("query-migrate");
  g_autoptr(JsonParser) parser = json_parser_new();
  json_parser_load_from_data(parser, answer.c_str(), -1, nullptr);
  JsonNode* root = json_parser_get_root(parser);
  if (root == nullptr || !JSON_NODE_HOLDS_OBJECT(root)) return "";
  JsonObject* object = json_node_get_object(root);
  if (error_description != nullptr)
    *error_description = json_object_get_string_member_with_default(object, "error-desc", "");
  return json_object_get_string_member_with_default(object, "status", "");
}

bool Qmp::wait_for_migration(Timeout timeout, std::string* why_not) {
  std::string status, description;
  wait_until(
      [&] {
        status = migration_status(&description);
        return status == "completed" || status == "failed" || status == "cancelled";
      },
      timeout);
  if (status == "completed") return true;
  *why_not = "migration " + (status.empty() ? std::string("status unknown") : status) +
             (description.empty() ? "" : ": " + description);
  return false;
}

bool Qmp::wait_for_event(const std::string& name, Timeout timeout) {
  auto seen = [&] { return std::find(events_.begin(), events_.end(), name) != events_.end(); };
  gint64 deadline = g_get_monotonic_time() + std::chrono::microseconds(timeout).count();
  while (!seen() && g_get_monotonic_time() < deadline) {
    // query-status is cheap and makes QMP flush the events before its answer.
    execute("query-status");
    if (!seen()) wait_until([] { return false; }, 100ms);
  }
  return seen();
}

}  // namespace sidebus::test
