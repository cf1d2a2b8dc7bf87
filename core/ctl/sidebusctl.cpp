// SPDX-License-Identifier: LGPL-2.1-or-later
// sidebusctl.cpp — asks a running sidebus-broker over its control socket
// (<runtime-dir>/control.sock, core/broker/control-socket.hpp): one JSON
// request line out, one JSON reply line back. sidebusctl(1) and
// docs/operations.md describe the commands and every field.
//
// Exit status: 0 done, 1 the broker refused (its reason is printed), 2 a
// usage error, 3 no broker answers at that socket.
#include <gio/gio.h>
#include <gio/gunixsocketaddress.h>
#include <json-glib/json-glib.h>

#include <clocale>
#include <cstdio>
#include <cstring>
#include <string>

#include "sidebus-config.h"

namespace {

constexpr gsize kMaxReplyBytes = 64 * 1024 * 1024;

int fail(int code, const char* format, const char* detail) {
  g_printerr("sidebusctl: ");
  g_printerr(format, detail);
  g_printerr("\n");
  return code;
}

// The reply, or nullptr after printing why (*code set).
JsonNode* ask(const std::string& socket_path, const std::string& request, guint timeout_s, int* code) {
  g_autoptr(GError) error = nullptr;
  g_autoptr(GSocketClient) client = g_socket_client_new();
  g_socket_client_set_timeout(client, timeout_s);
  g_autoptr(GSocketAddress) address = g_unix_socket_address_new(socket_path.c_str());
  g_autoptr(GSocketConnection) connection =
      g_socket_client_connect(client, G_SOCKET_CONNECTABLE(address), nullptr, &error);
  if (connection == nullptr) {
    *code = 3;
    g_printerr(
        "sidebusctl: no broker answers at %s: %s (is it running? give --vm NAME, --system or --runtime-dir "
        "DIR)\n",
        socket_path.c_str(), error->message);
    return nullptr;
  }
  GOutputStream* out = g_io_stream_get_output_stream(G_IO_STREAM(connection));
  std::string line = request + "\n";
  if (!g_output_stream_write_all(out, line.data(), line.size(), nullptr, nullptr, &error)) {
    *code = 3;
    g_printerr("sidebusctl: sending to %s: %s\n", socket_path.c_str(), error->message);
    return nullptr;
  }
  GInputStream* in = g_io_stream_get_input_stream(G_IO_STREAM(connection));
  std::string reply;
  char buffer[65536];
  for (;;) {
    gssize n = g_input_stream_read(in, buffer, sizeof buffer, nullptr, &error);
    if (n < 0) {
      *code = 3;
      g_printerr("sidebusctl: reading from %s: %s\n", socket_path.c_str(), error->message);
      return nullptr;
    }
    if (n == 0 || reply.size() > kMaxReplyBytes) break;
    reply.append(buffer, size_t(n));
  }
  g_autoptr(JsonParser) parser = json_parser_new();
  if (reply.empty() || !json_parser_load_from_data(parser, reply.data(), gssize(reply.size()), &error) ||
      !JSON_NODE_HOLDS_OBJECT(json_parser_get_root(parser))) {
    *code = 3;
    g_printerr("sidebusctl: %s did not answer with a JSON object%s%s\n", socket_path.c_str(),
               error != nullptr ? ": " : "", error != nullptr ? error->message : "");
    return nullptr;
  }
  return json_parser_steal_root(parser);
}

void print_pretty(JsonObject* reply) {
  g_autoptr(JsonNode) copy = json_node_copy(json_node_init_object(json_node_alloc(), reply));
  json_object_remove_member(json_node_get_object(copy), "ok");
  g_autoptr(JsonGenerator) generator = json_generator_new();
  json_generator_set_pretty(generator, TRUE);
  json_generator_set_root(generator, copy);
  g_autofree char* text = json_generator_to_data(generator, nullptr);
  printf("%s\n", text);
}

}  // namespace

int main(int argc, char** argv) {
  setlocale(LC_ALL, "");
  g_autofree char* vm = nullptr;
  g_autofree char* runtime_dir = nullptr;
  gboolean system = FALSE;
  gboolean version = FALSE;
  gint size_kib = 0;
  gint timeout_s = 10;
  const GOptionEntry entries[] = {
      {"vm", 0, 0, G_OPTION_ARG_STRING, &vm, "The broker of this VM (its --vm-name)", "NAME"},
      {"system", 0, 0, G_OPTION_ARG_NONE, &system,
       "A broker of the system unit sidebus-broker@NAME.service (/run/sidebus/NAME), not of this user", nullptr},
      {"runtime-dir", 0, 0, G_OPTION_ARG_FILENAME, &runtime_dir,
       "The broker whose --runtime-dir is DIR (default: $XDG_RUNTIME_DIR/sidebus/NAME)", "DIR"},
      {"size", 0, 0, G_OPTION_ARG_INT, &size_kib, "dump-log: at most the last KIB KiB (default: all the broker keeps)",
       "KIB"},
      {"timeout", 0, 0, G_OPTION_ARG_INT, &timeout_s, "Give up after SECONDS (default 10)", "SECONDS"},
      {"version", 0, 0, G_OPTION_ARG_NONE, &version, "Print the version and exit", nullptr},
      {},
  };
  g_autoptr(GOptionContext) context = g_option_context_new("COMMAND - ask a running sidebus-broker");
  g_option_context_add_main_entries(context, entries, nullptr);
  g_option_context_set_summary(context,
                               "Commands:\n"
                               "  status     the broker's state as JSON: link, portals, requests, documents, helpers\n"
                               "  dump-log   the last lines the broker logged (debug lines too)\n"
                               "  reload     read the configuration again (as SIGHUP does)");
  g_option_context_set_description(context, "See sidebusctl(1).\n");
  g_autoptr(GError) error = nullptr;
  if (!g_option_context_parse(context, &argc, &argv, &error)) return fail(2, "%s (see --help)", error->message);
  if (version) {
    printf("sidebusctl %s\n", SIDEBUS_VERSION);
    return 0;
  }
  if (argc != 2) return fail(2, "%s", "give one command: status, dump-log or reload (see --help)");
  std::string command = argv[1];
  if (command != "status" && command != "dump-log" && command != "reload")
    return fail(2, "unknown command \"%s\": use status, dump-log or reload", command.c_str());
  if (size_kib < 0 || timeout_s <= 0) return fail(2, "%s", "--size and --timeout must be positive");

  std::string dir;
  if (runtime_dir != nullptr) {
    dir = runtime_dir;
  } else if (vm != nullptr) {
    dir = std::string(system ? "/run" : g_get_user_runtime_dir()) + "/sidebus/" + vm;
  } else {
    return fail(2, "%s", "which broker? give --vm NAME (with --system for a system unit) or --runtime-dir DIR");
  }

  g_autoptr(JsonBuilder) builder = json_builder_new();
  json_builder_begin_object(builder);
  json_builder_set_member_name(builder, "command");
  json_builder_add_string_value(builder, command.c_str());
  if (command == "dump-log" && size_kib > 0) {
    json_builder_set_member_name(builder, "max_bytes");
    json_builder_add_int_value(builder, gint64(size_kib) * 1024);
  }
  json_builder_end_object(builder);
  g_autoptr(JsonNode) request_node = json_builder_get_root(builder);
  g_autofree char* request = json_to_string(request_node, FALSE);

  int code = 0;
  g_autoptr(JsonNode) reply_node = ask(dir + "/control.sock", request, guint(timeout_s), &code);
  if (reply_node == nullptr) return code;
  JsonObject* reply = json_node_get_object(reply_node);
  if (!json_object_get_boolean_member_with_default(reply, "ok", FALSE))
    return fail(1, "%s", json_object_get_string_member_with_default(reply, "error", "the broker refused"));
  if (command == "dump-log") {
    fputs(json_object_get_string_member_with_default(reply, "log", ""), stdout);
    return 0;
  }
  print_pretty(reply);
  return 0;
}
