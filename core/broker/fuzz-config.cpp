// SPDX-License-Identifier: LGPL-2.1-or-later
// fuzz-config.cpp — libFuzzer target for Config (config.hpp; corpus:
// tests/fuzz/config/; docs/testing.md, "Fuzzing").
//
// Each input is the content of one drop-in, 50-input.json, in a directory of
// this process's own (made once, reused). A fixed, valid 10-base.json sits
// before it, setting every broker limit to a value that is not the default
// and sections of a few portals, so that the input merges into something
// (null deletes, objects merge, anything else replaces). The directory is
// loaded with Config::load({dir}, "vm"), as the broker loads its own, and
// every configured portal is checked against a schema with a key of each
// SidebusConfigType (kSchema; the arrays have a validator). Whatever the
// input:
//  - a refused file: an error, G_IO_ERROR or G_FILE_ERROR, whose message
//    starts with the input's path and ':';
//  - an accepted file nests at most 64 arrays and objects (json-glib
//    recurses: some 60000 levels overflow the stack);
//  - an accepted file: files() are the two files in order; limits() lie in
//    the ranges of config.cpp's kBrokerKeys (kLimits) and are exactly what
//    the merge says: the base's value, the input's, or the default where
//    the input's "broker" or the key is null;
//  - the merged configuration holds no null as an object member (null only
//    deletes), every portal section's "enabled" is a boolean, and
//    enabled_portals() is the sorted configured portals whose
//    portal_enabled() is true;
//  - check_portal(): an error is a G_IO_ERROR starting with the input's path
//    and ':', naming the key "portals.<name>."; success means the merged
//    section holds only "enabled" and schema keys, each of its type, in its
//    range and passing its validator (what the plugin then reads);
//  - loading the same directory again gives the same result, error message
//    for error message.
#include <fcntl.h>
#include <gio/gio.h>
#include <glib/gstdio.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "broker/config.hpp"

using sidebus::Config;

namespace {

// ---- The broker keys ---------------------------------------------------------

// config.cpp's kBrokerKeys (and docs/configuration.md): every key, its range,
// the base file's value (never the default), and where load() puts it.
struct Limit {
  const char* key;
  gint64 min, max;
  gint64 base;
  guint64 (*get)(const Config::BrokerLimits& limits);
};
constexpr gint64 kKiB = 1024, kMiB = 1024 * 1024;
const Limit kLimits[] = {
    {"max_pending_requests", 1, 10000, 7,
     [](const Config::BrokerLimits& l) -> guint64 { return l.max_pending_requests; }},
    {"max_sessions", 1, 1000, 3, [](const Config::BrokerLimits& l) -> guint64 { return l.max_sessions; }},
    {"max_message_size", 4 * kKiB, 128 * kMiB, 65536,
     [](const Config::BrokerLimits& l) -> guint64 { return l.link.traffic.max_message_size; }},
    {"max_message_values", 256, 10000000, 1000,
     [](const Config::BrokerLimits& l) -> guint64 { return l.link.traffic.max_message_values; }},
    {"max_pending_calls", 1, 100000, 99,
     [](const Config::BrokerLimits& l) -> guint64 { return l.link.traffic.max_calls; }},
    {"max_pending_calls_per_client", 1, 100000, 9,
     [](const Config::BrokerLimits& l) -> guint64 { return l.link.traffic.max_calls_per_client; }},
    {"max_pending_bytes", 64 * kKiB, 1024 * kMiB, 1048576,
     [](const Config::BrokerLimits& l) -> guint64 { return l.link.traffic.max_bytes; }},
    {"max_pending_bytes_per_client", 64 * kKiB, 1024 * kMiB, 131072,
     [](const Config::BrokerLimits& l) -> guint64 { return l.link.traffic.max_bytes_per_client; }},
    {"max_signals_per_second", 1, 1000000, 5,
     [](const Config::BrokerLimits& l) -> guint64 { return l.link.traffic.signals_per_second; }},
    {"max_messages_per_second", 10, 1000000, 100,
     [](const Config::BrokerLimits& l) -> guint64 { return l.link.max_messages_per_second; }},
};

// ---- The plugin schema ---------------------------------------------------------

// Refuses an empty item, or one with a space (as a plugin refuses a risky value).
gboolean validate_items(const char*, JsonNode* value, GError** error) {
  JsonArray* array = json_node_get_array(value);
  for (guint i = 0; i < json_array_get_length(array); i++) {
    const char* item = json_array_get_string_element(array, i);
    if (item[0] == '\0' || strchr(item, ' ') != nullptr) {
      g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT, "[%u] is empty or has a space", i);
      return FALSE;
    }
  }
  return TRUE;
}

const SidebusConfigKey kSchema[] = {
    {"flag", SIDEBUS_CONFIG_BOOLEAN, 0, 0, nullptr, {}},
    {"count", SIDEBUS_CONFIG_INTEGER, -5, 100, nullptr, {}},
    {"any", SIDEBUS_CONFIG_INTEGER, 0, 0, nullptr, {}},  // 0, 0: any integer
    {"label", SIDEBUS_CONFIG_STRING, 0, 0, nullptr, {}},
    {"items", SIDEBUS_CONFIG_STRING_ARRAY, 0, 0, validate_items, {}},
    // As openuri's, so that real drop-ins pass too.
    {"schemes", SIDEBUS_CONFIG_STRING_ARRAY, 0, 0, validate_items, {}},
    {"copy_outside_documents", SIDEBUS_CONFIG_BOOLEAN, 0, 0, nullptr, {}},
};

// Valid under kSchema and the core's rules; every limit at its base value.
std::string base_file() {
  std::string broker;
  for (const Limit& limit : kLimits)
    broker += std::string(broker.empty() ? "" : ",\n    ") + "\"" + limit.key + "\": " + std::to_string(limit.base);
  return "{\n  \"broker\": {\n    " + broker +
         "\n  },\n"
         "  \"portals\": {\n"
         "    \"fuzz\": {\"enabled\": true, \"flag\": false, \"count\": 5, \"any\": -9, \"label\": \"base\",\n"
         "             \"items\": [\"a\", \"b\"]},\n"
         "    \"openuri\": {\"enabled\": false, \"items\": [\"http\"]},\n"
         "    \"filechooser\": {\"enabled\": true}\n"
         "  }\n"
         "}\n";
}

// ---- Checks ----------------------------------------------------------------------

std::string current_input;

[[noreturn]] void fail(const std::string& what) {
  g_autofree char* escaped = g_strescape(current_input.substr(0, 4096).c_str(), nullptr);
  fprintf(stderr, "fuzz-config: %s, for the drop-in \"%s\"\n", what.c_str(), escaped);
  abort();
}

void check(bool condition, const std::string& what) {
  if (!condition) fail(what);
}

bool starts_with(const std::string& text, const std::string& prefix) {
  return text.compare(0, prefix.size(), prefix) == 0;
}

// Criticals (a g_return_if_fail() somewhere) are bugs; warnings (unknown
// keys) and the rest are expected and silenced.
GLogWriterOutput log_writer(GLogLevelFlags level, const GLogField* fields, gsize n_fields, gpointer) {
  if (level & (G_LOG_LEVEL_CRITICAL | G_LOG_LEVEL_ERROR)) {
    g_log_writer_standard_streams(level, fields, n_fields, nullptr);
    fail("a critical was logged");
  }
  return G_LOG_WRITER_HANDLED;
}

struct Directory {
  std::string path, base, input;
  Directory() {
    g_autoptr(GError) error = nullptr;
    g_autofree char* made = g_dir_make_tmp("sidebus-fuzz-config-XXXXXX", &error);
    if (made == nullptr) {
      fprintf(stderr, "fuzz-config: %s\n", error->message);
      abort();
    }
    path = made;
    base = path + "/10-base.json";
    input = path + "/50-input.json";
    std::string text = base_file();
    if (!g_file_set_contents(base.c_str(), text.c_str(), gssize(text.size()), &error)) {
      fprintf(stderr, "fuzz-config: %s\n", error->message);
      abort();
    }
  }
  ~Directory() {
    g_unlink(input.c_str());
    g_unlink(base.c_str());
    g_rmdir(path.c_str());
  }
  void write_input(const uint8_t* data, size_t size) const {
    int fd = open(input.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0 || (size > 0 && write(fd, data, size) != ssize_t(size)) || close(fd) != 0) {
      perror("fuzz-config: writing the input");
      abort();
    }
  }
};

// A value of a schema key as check_portal() promised it.
bool holds_as_declared(const SidebusConfigKey& key, JsonNode* value) {
  auto holds = [](JsonNode* node, GType type) {
    return JSON_NODE_HOLDS_VALUE(node) && json_node_get_value_type(node) == type;
  };
  switch (key.type) {
    case SIDEBUS_CONFIG_BOOLEAN:
      return holds(value, G_TYPE_BOOLEAN);
    case SIDEBUS_CONFIG_INTEGER: {
      if (!holds(value, G_TYPE_INT64)) return false;
      gint64 number = json_node_get_int(value);
      return (key.min == 0 && key.max == 0) || (number >= key.min && number <= key.max);
    }
    case SIDEBUS_CONFIG_STRING:
      return holds(value, G_TYPE_STRING);
    case SIDEBUS_CONFIG_STRING_ARRAY: {
      if (!JSON_NODE_HOLDS_ARRAY(value)) return false;
      JsonArray* array = json_node_get_array(value);
      for (guint i = 0; i < json_array_get_length(array); i++)
        if (!holds(json_array_get_element(array, i), G_TYPE_STRING)) return false;
      return key.validate == nullptr || key.validate(key.key, value, nullptr);
    }
  }
  return false;
}

// No null as an object member anywhere in object (arrays are values, kept whole).
void check_no_null_member(JsonObject* object, const std::string& where) {
  JsonObjectIter iter;
  const char* key;
  JsonNode* value;
  json_object_iter_init_ordered(&iter, object);
  while (json_object_iter_next_ordered(&iter, &key, &value)) {
    check(!JSON_NODE_HOLDS_NULL(value), "the merged configuration holds a null at " + where + "." + key);
    if (JSON_NODE_HOLDS_OBJECT(value)) check_no_null_member(json_node_get_object(value), where + "." + key);
  }
}

std::string to_json(JsonObject* object) {
  g_autoptr(JsonNode) node = json_node_new(JSON_NODE_OBJECT);
  json_node_set_object(node, object);
  g_autofree char* text = json_to_string(node, FALSE);
  return text;
}

// Arrays and objects nested in node, node included.
int depth(JsonNode* node) {
  int deepest = 0;
  if (JSON_NODE_HOLDS_ARRAY(node)) {
    JsonArray* array = json_node_get_array(node);
    for (guint i = 0; i < json_array_get_length(array); i++)
      deepest = std::max(deepest, depth(json_array_get_element(array, i)));
  } else if (JSON_NODE_HOLDS_OBJECT(node)) {
    JsonObjectIter iter;
    JsonNode* member;
    json_object_iter_init(&iter, json_node_get_object(node));
    while (json_object_iter_next(&iter, nullptr, &member)) deepest = std::max(deepest, depth(member));
  } else {
    return 0;
  }
  return deepest + 1;
}

// The limits the merge must give: the base's, overridden or deleted by the
// input's "broker" (already accepted by load(), so its keys are in range).
std::vector<guint64> expected_limits(JsonObject* root) {
  Config::BrokerLimits defaults;
  std::vector<guint64> expected;
  for (const Limit& limit : kLimits) expected.push_back(guint64(limit.base));
  JsonNode* broker = json_object_get_member(root, "broker");
  if (broker == nullptr) return expected;
  for (size_t i = 0; i < G_N_ELEMENTS(kLimits); i++) {
    if (JSON_NODE_HOLDS_NULL(broker)) {
      expected[i] = kLimits[i].get(defaults);
      continue;
    }
    JsonNode* value = json_object_get_member(json_node_get_object(broker), kLimits[i].key);
    if (value == nullptr) continue;
    expected[i] = JSON_NODE_HOLDS_NULL(value) ? kLimits[i].get(defaults) : guint64(json_node_get_int(value));
  }
  return expected;
}

// Everything a load gave, to compare two loads.
struct Outcome {
  bool loaded = false;
  std::string error;
  std::vector<std::string> files, enabled, configured;
  std::vector<guint64> limits;
  std::vector<std::string> sections;  // per configured portal: enabled?, JSON, check_portal's verdict
};

Outcome load_and_check(const Directory& dir) {
  Outcome outcome;
  GError* error = nullptr;
  std::unique_ptr<Config> config = Config::load({dir.path}, "vm", &error);
  check((config != nullptr) == (error == nullptr), "an error is set exactly when loading fails");
  if (config == nullptr) {
    outcome.error = error->message;
    check(error->domain == G_IO_ERROR || error->domain == G_FILE_ERROR, "load errors are G_IO_ERROR or G_FILE_ERROR");
    check(starts_with(outcome.error, dir.input + ":"), "a load error starts with the file's path: " + outcome.error);
    g_error_free(error);
    return outcome;
  }
  outcome.loaded = true;
  outcome.files = config->files();
  check(outcome.files == std::vector<std::string>{dir.base, dir.input}, "files() are the base and the input, in order");

  const Config::BrokerLimits& limits = config->limits();
  for (const Limit& limit : kLimits) {
    guint64 value = limit.get(limits);
    check(value >= guint64(limit.min) && value <= guint64(limit.max),
          std::string("broker.") + limit.key + " = " + std::to_string(value) + " is outside its range");
    outcome.limits.push_back(value);
  }
  g_autoptr(JsonParser) parser = json_parser_new();
  check(json_parser_load_from_data(parser, current_input.data(), gssize(current_input.size()), nullptr),
        "json-glib parses an accepted file");
  // Deeper, json-glib's recursion overflows the stack (tests/fuzz/config/nested-65-deep.json).
  check(depth(json_parser_get_root(parser)) <= 64, "an accepted file nests more than 64 arrays and objects");
  std::vector<guint64> expected = expected_limits(json_node_get_object(json_parser_get_root(parser)));
  for (size_t i = 0; i < G_N_ELEMENTS(kLimits); i++)
    check(outcome.limits[i] == expected[i], std::string("broker.") + kLimits[i].key + " is " +
                                                std::to_string(outcome.limits[i]) + ", the merge gives " +
                                                std::to_string(expected[i]));

  outcome.enabled = config->enabled_portals();
  outcome.configured = config->configured_portals();
  check(std::is_sorted(outcome.enabled.begin(), outcome.enabled.end()), "enabled_portals() is sorted");
  check(std::is_sorted(outcome.configured.begin(), outcome.configured.end()), "configured_portals() is sorted");
  std::vector<std::string> enabled;
  for (const std::string& name : outcome.configured) {
    JsonObject* section = config->portal_section(name);
    check(section != nullptr, "portal_section() is never null");
    check_no_null_member(section, "portals." + name);
    JsonNode* flag = json_object_get_member(section, "enabled");
    check(flag == nullptr || (JSON_NODE_HOLDS_VALUE(flag) && json_node_get_value_type(flag) == G_TYPE_BOOLEAN),
          "portals." + name + ".enabled is a boolean");
    bool is_enabled = config->portal_enabled(name);
    check(is_enabled == (flag != nullptr && json_node_get_boolean(flag)), "portal_enabled() reads \"enabled\"");
    if (is_enabled) enabled.push_back(name);

    GError* refused = nullptr;
    bool ok = config->check_portal(name, kSchema, G_N_ELEMENTS(kSchema), &refused);
    check(ok == (refused == nullptr), "check_portal() sets an error exactly when it fails");
    std::string verdict = "ok";
    if (!ok) {
      verdict = refused->message;
      check(refused->domain == G_IO_ERROR, "check_portal() errors are G_IO_ERRORs");
      check(starts_with(verdict, dir.input + ":"), "a check_portal() error starts with the file's path: " + verdict);
      check(verdict.find(": portals." + name + ".") != std::string::npos,
            "a check_portal() error names a portals." + name + ". key: " + verdict);
      g_error_free(refused);
    } else {
      JsonObjectIter iter;
      const char* member;
      JsonNode* value;
      json_object_iter_init_ordered(&iter, section);
      while (json_object_iter_next_ordered(&iter, &member, &value)) {
        if (strcmp(member, "enabled") == 0) continue;
        auto key = std::find_if(std::begin(kSchema), std::end(kSchema),
                                [member](const SidebusConfigKey& k) { return strcmp(k.key, member) == 0; });
        check(key != std::end(kSchema), "check_portal() passed portals." + name + " with the unknown key " + member);
        check(holds_as_declared(*key, value),
              "check_portal() passed portals." + name + "." + member + ", which is not as declared");
      }
    }
    outcome.sections.push_back(name + (is_enabled ? " on " : " off ") + to_json(section) + " " + verdict);
  }
  for (const std::string& name : outcome.enabled)
    check(std::binary_search(outcome.configured.begin(), outcome.configured.end(), name),
          "an enabled portal is configured: " + name);
  check(enabled == outcome.enabled, "enabled_portals() are the configured portals whose portal_enabled() is true");
  return outcome;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const bool writer_set = (g_log_set_writer_func(log_writer, nullptr, nullptr), true);
  (void)writer_set;
  static const Directory dir;  // removed at exit
  current_input.assign(reinterpret_cast<const char*>(data), size);
  dir.write_input(data, size);

  Outcome first = load_and_check(dir);
  Outcome second = load_and_check(dir);
  check(first.loaded == second.loaded && first.error == second.error && first.files == second.files &&
            first.limits == second.limits && first.enabled == second.enabled &&
            first.configured == second.configured && first.sections == second.sections,
        "loading twice gives the same result");
  return 0;
}
