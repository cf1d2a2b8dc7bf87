// SPDX-License-Identifier: LGPL-2.1-or-later
// config.cpp — reads, checks and merges the JSON drop-ins (see config.hpp).
//
// Why this shape: what a VM may do on the host (which portals, which URI
// schemes, how many requests) is the administrator's policy, so a typo must
// fail loudly with a position to fix rather than silently change the policy.
// Every file therefore goes through all steps before anything of it is used:
//   read     — regular files only, bounded size;
//   parse    — json-glib; its errors are rewritten as path:line:column: reason
//              and two of its leniencies are closed (see parse_file());
//   validate — the rule table below types every key the core knows; keys it
//              does not know are kept for plugins, unknown top-level keys warn;
//   merge    — objects key by key, everything else replaced, null deletes.
// The merged tree is built from fresh objects only, so it never shares a
// mutable object with a parser and never contains a null.

#include "broker/config.hpp"

#include <gio/gio.h>
#include <glib/gstdio.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <cstring>
#include <map>
#include <utility>
#include <vector>

#include "documents/app-id.hpp"
#include "sidebus-config.h"

namespace sidebus {
namespace {

// Configuration files are a few hundred bytes; anything near this is a mistake.
constexpr gsize kMaxFileSize = 1024 * 1024;

struct JsonObjectUnref {
  void operator()(JsonObject* object) const { json_object_unref(object); }
};
using JsonObjectPtr = std::unique_ptr<JsonObject, JsonObjectUnref>;


// text with C escapes for control characters, quotes, non-ASCII and NUL,
// fit for quoting inside an error message.
std::string printable(std::string_view text) {
  std::string shown;
  for (std::size_t start = 0; start <= text.size();) {
    std::size_t nul = std::min(text.find('\0', start), text.size());
    std::string part(text.substr(start, nul - start));
    g_autofree char* escaped = g_strescape(part.c_str(), nullptr);
    shown += escaped;
    if (nul < text.size())
      shown += "\\000";
    start = nul + 1;
  }
  return shown;
}

// ---- Reading -------------------------------------------------------------

enum class ReadResult { kRead, kSkipped, kFailed };

// Drop-ins are regular files (symlinks are followed); anything else, such as
// a directory named x.json or a dangling symlink, is skipped.
ReadResult read_file(const std::string& path, std::string& contents, GError** error) {
  GStatBuf st;
  if (g_stat(path.c_str(), &st) != 0) {
    int saved_errno = errno;
    if (saved_errno == ENOENT) {
      g_debug("config: skipping %s: %s", path.c_str(), g_strerror(saved_errno));
      return ReadResult::kSkipped;
    }
    g_set_error(error, G_IO_ERROR, g_io_error_from_errno(saved_errno), "%s: %s", path.c_str(),
                g_strerror(saved_errno));
    return ReadResult::kFailed;
  }
  if (!S_ISREG(st.st_mode)) {
    g_debug("config: skipping %s: not a regular file", path.c_str());
    return ReadResult::kSkipped;
  }
  if (static_cast<guint64>(st.st_size) > kMaxFileSize) {
    g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA, "%s: file too large (%" G_GUINT64_FORMAT
                " bytes, at most %" G_GSIZE_FORMAT ")", path.c_str(), static_cast<guint64>(st.st_size),
                kMaxFileSize);
    return ReadResult::kFailed;
  }
  g_autofree char* data = nullptr;
  gsize length = 0;
  if (!g_file_get_contents(path.c_str(), &data, &length, error))  // the message names the path
    return ReadResult::kFailed;
  if (length > kMaxFileSize) {
    g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA, "%s: file too large (at most %" G_GSIZE_FORMAT
                " bytes)", path.c_str(), kMaxFileSize);
    return ReadResult::kFailed;
  }
  contents.assign(data, length);
  return ReadResult::kRead;
}

// The *.json names in dir, in byte order; hidden files (editor leftovers) are
// not drop-ins. A directory that does not exist has none.
bool list_drop_ins(const std::string& dir, std::vector<std::string>& names, GError** error) {
  g_autoptr(GError) local_error = nullptr;
  g_autoptr(GDir) handle = g_dir_open(dir.c_str(), 0, &local_error);
  if (handle == nullptr) {
    if (g_error_matches(local_error, G_FILE_ERROR, G_FILE_ERROR_NOENT)) {
      g_debug("config: no directory %s", dir.c_str());
      return true;
    }
    g_propagate_error(error, g_steal_pointer(&local_error));  // the message names the directory
    return false;
  }
  while (const char* name = g_dir_read_name(handle)) {
    if (name[0] != '.' && g_str_has_suffix(name, ".json"))
      names.emplace_back(name);
  }
  // std::string compares through char_traits<char>, i.e. as unsigned bytes.
  std::sort(names.begin(), names.end());
  return true;
}

// ---- Parsing -------------------------------------------------------------

struct Position {
  unsigned line;
  unsigned column;
};

// 1-based line and column (in bytes, as json-glib counts them) of offset.
Position position_at(std::string_view data, std::size_t offset) {
  Position position{1, 1};
  for (std::size_t i = 0; i < offset && i < data.size(); i++) {
    if (data[i] == '\n') {
      position.line++;
      position.column = 1;
    } else {
      position.column++;
    }
  }
  return position;
}

void set_parse_error(GError** error, const std::string& path, Position position, const char* reason) {
  g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA, "%s:%u:%u: Parse error: %s", path.c_str(),
              position.line, position.column, reason);
}

// json-glib 1.6 parses "{...} {...}" as the first object and drops the rest
// without an error; counting top-level containers while it parses catches
// that, with the position of the second one.
struct TopLevelWatch {
  int depth = 0;
  int values = 0;
  unsigned extra_line = 0;
  unsigned extra_column = 0;
};

void on_container_start(JsonParser* parser, gpointer user_data) {
  auto* watch = static_cast<TopLevelWatch*>(user_data);
  if (watch->depth == 0 && watch->values > 0 && watch->extra_line == 0) {
    watch->extra_line = json_parser_get_current_line(parser);
    watch->extra_column = json_parser_get_current_pos(parser);
  }
  watch->depth++;
}

void on_container_end(JsonParser*, gpointer, gpointer user_data) {
  auto* watch = static_cast<TopLevelWatch*>(user_data);
  if (--watch->depth == 0)
    watch->values++;
}

// json-glib parses, copies and frees nested arrays and objects recursively:
// some 60000 levels (120 KiB of brackets) overflow the stack. A configuration
// needs a handful.
constexpr int kMaxDepth = 64;

// The offset of the first bracket nested deeper than kMaxDepth, or npos.
// Brackets count outside strings and comments, as json-glib reads them:
// "..." with backslash escapes, '...' without, /* ... */.
std::size_t find_too_deep(std::string_view text) {
  int depth = 0;
  for (std::size_t i = 0; i < text.size(); i++) {
    char c = text[i];
    if (c == '"' || c == '\'') {
      for (i++; i < text.size() && text[i] != c; i++)
        if (c == '"' && text[i] == '\\') i++;
    } else if (c == '/' && i + 1 < text.size() && text[i + 1] == '*') {
      std::size_t end = text.find("*/", i + 2);
      i = end == std::string_view::npos ? text.size() : end + 1;
    } else if (c == '{' || c == '[') {
      if (++depth > kMaxDepth) return i;
    } else if ((c == '}' || c == ']') && depth > 0) {
      depth--;
    }
  }
  return std::string_view::npos;
}

// Parses one file's contents. Every error is "path:line:column: reason".
JsonNode* parse_file(const std::string& path, const std::string& contents, GError** error) {
  const char* invalid = nullptr;
  if (!g_utf8_validate_len(contents.data(), contents.size(), &invalid)) {
    std::size_t offset = invalid - contents.data();
    set_parse_error(error, path, position_at(contents, offset),
                    contents[offset] == '\0' ? "NUL byte" : "invalid UTF-8");
    return nullptr;
  }
  std::size_t too_deep = find_too_deep(contents);
  if (too_deep != std::string_view::npos) {
    g_autofree char* reason = g_strdup_printf("arrays and objects nested more than %d deep", kMaxDepth);
    set_parse_error(error, path, position_at(contents, too_deep), reason);
    return nullptr;
  }

  TopLevelWatch watch;
  g_autoptr(JsonParser) parser = json_parser_new();
  g_signal_connect(parser, "object-start", G_CALLBACK(on_container_start), &watch);
  g_signal_connect(parser, "array-start", G_CALLBACK(on_container_start), &watch);
  g_signal_connect(parser, "object-end", G_CALLBACK(on_container_end), &watch);
  g_signal_connect(parser, "array-end", G_CALLBACK(on_container_end), &watch);

  g_autoptr(GError) parse_error = nullptr;
  if (!json_parser_load_from_data(parser, contents.data(), contents.size(), &parse_error)) {
    // json-glib says "<data>:LINE:COLUMN: Parse error: REASON" for data it
    // was handed as a buffer; put the path where "<data>" is.
    static constexpr std::string_view kDataPrefix = "<data>:";
    std::string_view message = parse_error->message;
    if (message.substr(0, kDataPrefix.size()) == kDataPrefix)
      g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA, "%s:%s", path.c_str(),
                  parse_error->message + kDataPrefix.size());
    else
      g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA, "%s: %s", path.c_str(), parse_error->message);
    return nullptr;
  }

  if (json_parser_get_root(parser) == nullptr) {
    set_parse_error(error, path, position_at(contents, contents.size()), "no JSON value in the file");
    return nullptr;
  }
  // json-glib also accepts JSONP: "var name = {...};".
  if (json_parser_has_assignment(parser, nullptr)) {
    std::size_t var = contents.find_first_not_of(" \t\r\n");
    set_parse_error(error, path, position_at(contents, var), "\"var NAME =\" assignment is not JSON");
    return nullptr;
  }
  if (watch.extra_line != 0) {
    set_parse_error(error, path, Position{watch.extra_line, watch.extra_column},
                    "unexpected second top-level value, expected end of file");
    return nullptr;
  }
  return json_parser_steal_root(parser);
}

// ---- Validation ----------------------------------------------------------

const char* describe(JsonNode* node) {
  switch (JSON_NODE_TYPE(node)) {
    case JSON_NODE_OBJECT:
      return "an object";
    case JSON_NODE_ARRAY:
      return "an array";
    case JSON_NODE_NULL:
      return "null";
    case JSON_NODE_VALUE:
      break;
  }
  GType type = json_node_get_value_type(node);
  if (type == G_TYPE_BOOLEAN)
    return "a boolean";
  if (type == G_TYPE_INT64)
    return "an integer";
  if (type == G_TYPE_DOUBLE)
    return "a number with a fraction or exponent";
  if (type == G_TYPE_STRING)
    return "a string";
  return "a value";
}

bool holds(JsonNode* node, GType type) {
  return JSON_NODE_HOLDS_VALUE(node) && json_node_get_value_type(node) == type;
}

struct Rule;
// Checks one value (never null: null always means "delete"); on failure
// fills problem with "expected …, got …".
using Check = bool (*)(const Rule& rule, JsonNode* value, std::string& problem);

struct Rule {
  const char* section;  // dotted path of the object the key is in; "portals.*": every portal
  const char* key;
  Check check;
  gint64 min = 0;  // integers only
  gint64 max = 0;
};

bool check_short_string(const Rule&, JsonNode* value, std::string& problem) {
  if (holds(value, G_TYPE_STRING) && strlen(json_node_get_string(value)) <= 256 &&
      g_utf8_validate(json_node_get_string(value), -1, nullptr))
    return true;
  problem = std::string("expected a string of at most 256 bytes, got ") + describe(value);
  return false;
}

// describe(), with the text of a string (cut, escaped): enumerations and ids
// say what was written.
std::string describe_with_text(JsonNode* value) {
  if (!holds(value, G_TYPE_STRING))
    return describe(value);
  std::string_view text = json_node_get_string(value);
  return "\"" + printable(text.substr(0, 64)) + (text.size() > 64 ? "...\"" : "\"");
}

bool check_host_identity(const Rule&, JsonNode* value, std::string& problem) {
  HostIdentityMode mode;
  if (holds(value, G_TYPE_STRING) && parse_host_identity_mode(json_node_get_string(value), &mode))
    return true;
  problem = "expected \"off\", \"auto\" or \"required\", got " + describe_with_text(value);
  return false;
}

bool check_app_id(const Rule&, JsonNode* value, std::string& problem) {
  if (holds(value, G_TYPE_STRING) && is_valid_app_id(json_node_get_string(value)))
    return true;
  problem = std::string("expected an app id such as \"org.example.Vm\" (two or more elements of A-Z a-z 0-9 _ "
                        "separated by dots, '-' only in the last, at most 255 bytes), got ") + describe_with_text(value);
  return false;
}

bool check_boolean(const Rule&, JsonNode* value, std::string& problem) {
  if (holds(value, G_TYPE_BOOLEAN))
    return true;
  problem = std::string("expected a boolean (true or false), got ") + describe(value);
  return false;
}

bool check_integer_range(const Rule& rule, JsonNode* value, std::string& problem) {
  if (holds(value, G_TYPE_INT64)) {
    gint64 number = json_node_get_int(value);
    if (number >= rule.min && number <= rule.max)
      return true;
    g_autofree char* text = g_strdup_printf("expected an integer in %" G_GINT64_FORMAT "..%" G_GINT64_FORMAT
                                            ", got %" G_GINT64_FORMAT, rule.min, rule.max, number);
    problem = text;
    return false;
  }
  g_autofree char* text = g_strdup_printf("expected an integer in %" G_GINT64_FORMAT "..%" G_GINT64_FORMAT
                                          ", got %s", rule.min, rule.max, describe(value));
  problem = text;
  return false;
}

// The broker section: every key an integer in a range, and where it goes.
// Adding a limit is one line.
struct BrokerKey {
  const char* key;
  gint64 min, max;
  void (*apply)(Config::BrokerLimits& limits, gint64 value);
};
constexpr gint64 kKiB = 1024, kMiB = 1024 * 1024;
const BrokerKey kBrokerKeys[] = {
    {"max_pending_requests", 1, 10000, [](Config::BrokerLimits& l, gint64 v) { l.max_pending_requests = unsigned(v); }},
    {"max_sessions", 1, 1000, [](Config::BrokerLimits& l, gint64 v) { l.max_sessions = unsigned(v); }},
    {"max_message_size", 4 * kKiB, 128 * kMiB,
     [](Config::BrokerLimits& l, gint64 v) { l.link.traffic.max_message_size = size_t(v); }},
    {"max_message_values", 256, 10000000,
     [](Config::BrokerLimits& l, gint64 v) { l.link.traffic.max_message_values = uint64_t(v); }},
    {"max_pending_calls", 1, 100000,
     [](Config::BrokerLimits& l, gint64 v) { l.link.traffic.max_calls = unsigned(v); }},
    {"max_pending_calls_per_client", 1, 100000,
     [](Config::BrokerLimits& l, gint64 v) { l.link.traffic.max_calls_per_client = unsigned(v); }},
    {"max_pending_bytes", 64 * kKiB, 1024 * kMiB,
     [](Config::BrokerLimits& l, gint64 v) { l.link.traffic.max_bytes = size_t(v); }},
    {"max_pending_bytes_per_client", 64 * kKiB, 1024 * kMiB,
     [](Config::BrokerLimits& l, gint64 v) { l.link.traffic.max_bytes_per_client = size_t(v); }},
    {"max_signals_per_second", 1, 1000000,
     [](Config::BrokerLimits& l, gint64 v) { l.link.traffic.signals_per_second = unsigned(v); }},
    {"max_messages_per_second", 10, 1000000,
     [](Config::BrokerLimits& l, gint64 v) { l.link.max_messages_per_second = unsigned(v); }},
    // Forwarded fds (byte-only links of protocol 2): link/framed-link.hpp.
    {"max_channels", 1, 1024, [](Config::BrokerLimits& l, gint64 v) { l.link.forwarding.max_channels = unsigned(v); }},
    {"max_channel_buffer", 4 * kKiB, 64 * kMiB,
     [](Config::BrokerLimits& l, gint64 v) { l.link.forwarding.max_channel_buffer = size_t(v); }},
    {"max_link_buffer", 64 * kKiB, 1024 * kMiB,
     [](Config::BrokerLimits& l, gint64 v) { l.link.forwarding.max_link_buffer = size_t(v); }},
    {"max_content_size", 0, 4096 * kMiB,
     [](Config::BrokerLimits& l, gint64 v) { l.link.forwarding.max_content_size = uint64_t(v); }},
    {"max_content_in_flight", 0, 16384 * kMiB,
     [](Config::BrokerLimits& l, gint64 v) { l.link.forwarding.max_content_in_flight = uint64_t(v); }},
};

// The documents section: the retention policy (documents/document-retention.hpp).
struct DocumentsKey {
  const char* key;
  gint64 min, max;
  void (*apply)(RetentionPolicy& policy, gint64 value);
};
const DocumentsKey kDocumentsKeys[] = {
    {"max_documents", 0, 10000000, [](RetentionPolicy& p, gint64 v) { p.max_documents = unsigned(v); }},
    {"max_unused_days", 0, 100000, [](RetentionPolicy& p, gint64 v) { p.max_unused_days = unsigned(v); }},
};

// Every key the core reads (plugins declare theirs: check_portal()).
const std::vector<Rule> kRules = [] {
  std::vector<Rule> rules = {{"portals.*", "enabled", check_boolean},
                             {"broker", "dialog_title_prefix", check_short_string},
                             {"broker", "host_identity", check_host_identity},
                             {"broker", "host_app_id", check_app_id}};
  for (const BrokerKey& key : kBrokerKeys) rules.push_back({"broker", key.key, check_integer_range, key.min, key.max});
  for (const DocumentsKey& key : kDocumentsKeys)
    rules.push_back({"documents", key.key, check_integer_range, key.min, key.max});
  return rules;
}();

bool rule_applies(const Rule& rule, const std::string& section) {
  if (std::strcmp(rule.section, "portals.*") == 0)
    return section.rfind("portals.", 0) == 0;
  return section == rule.section;
}

// Where every object key of a JSON text is: dotted path ("portals.openuri.
// schemes") → the position of its opening quote. Run on text json-glib has
// already parsed, so it only has to follow the structure; keys inside
// arrays are not recorded (nothing validates those by key).
using KeyPositions = std::map<std::string, Position>;

KeyPositions scan_key_positions(std::string_view text) {
  struct Frame {
    bool object;
    std::string path;  // of this object; "\x01" inside an array: not recorded
    std::string key;   // the key whose value comes next
    bool want_key;
  };
  KeyPositions positions;
  std::vector<Frame> stack;
  Position here{1, 1};
  auto advance = [&](char c) {
    if (c == '\n') {
      here.line++;
      here.column = 1;
    } else {
      here.column++;
    }
  };
  auto child_path = [&]() -> std::string {
    if (stack.empty()) return "";
    const Frame& top = stack.back();
    if (!top.object || top.path == "\x01") return "\x01";
    return top.key;
  };
  for (size_t i = 0; i < text.size();) {
    char c = text[i];
    if (c == '{' || c == '[') {
      stack.push_back(Frame{c == '{', child_path(), "", c == '{'});
    } else if (c == '}' || c == ']') {
      if (!stack.empty()) stack.pop_back();
    } else if (c == ',') {
      if (!stack.empty() && stack.back().object) stack.back().want_key = true;
    } else if (c == '"') {
      Position start = here;
      std::string decoded;
      advance(c);
      i++;
      while (i < text.size() && text[i] != '"') {
        if (text[i] == '\\' && i + 1 < text.size()) {
          char e = text[i + 1];
          decoded += e == 'n' ? '\n' : e == 't' ? '\t' : e;  // keys with escapes are rare; close enough to name them
          advance(text[i]);
          advance(text[i + 1]);
          i += 2;
          continue;
        }
        decoded += text[i];
        advance(text[i]);
        i++;
      }
      if (!stack.empty() && stack.back().object && stack.back().want_key) {
        Frame& top = stack.back();
        top.want_key = false;
        top.key = top.path.empty() ? decoded : top.path + "." + decoded;
        if (top.path != "\x01") positions[top.key] = start;
      }
    }
    advance(c);
    i++;
  }
  return positions;
}

// A file being checked, for messages: "path:line:column" of a key.
struct Source {
  std::string path;
  KeyPositions keys;
  std::string where(const std::string& key) const {
    auto found = keys.find(key);
    if (found == keys.end()) return path;
    return path + ":" + std::to_string(found->second.line) + ":" + std::to_string(found->second.column);
  }
};

void set_key_error(GError** error, const Source& source, const std::string& key, const std::string& problem) {
  g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA, "%s: %s: %s", source.where(key).c_str(), key.c_str(),
              problem.c_str());
}

// Checks the members of one section against the rules. Keys without a rule
// are kept; warn_unknown is for sections only the core reads.
bool validate_section(const Source& source, const std::string& section, JsonObject* object, bool warn_unknown,
                      GError** error) {
  JsonObjectIter iter;
  const char* key;
  JsonNode* value;
  json_object_iter_init_ordered(&iter, object);
  while (json_object_iter_next_ordered(&iter, &key, &value)) {
    std::string dotted = section + "." + key;
    const Rule* rule = nullptr;
    for (const Rule& candidate : kRules) {
      if (std::strcmp(candidate.key, key) == 0 && rule_applies(candidate, section))
        rule = &candidate;
    }
    if (rule == nullptr) {
      if (warn_unknown)
        g_warning("%s: unknown key \"%s\", ignored", source.path.c_str(), dotted.c_str());
      continue;
    }
    std::string problem;
    if (!JSON_NODE_HOLDS_NULL(value) && !rule->check(*rule, value, problem)) {
      set_key_error(error, source, dotted, problem);
      return false;
    }
  }
  return true;
}

// The object under key, or nullptr for null (which deletes it); anything
// else is an error naming the key.
bool expect_object_or_null(const Source& source, const std::string& key, JsonNode* value, JsonObject** object,
                           GError** error) {
  *object = nullptr;
  if (JSON_NODE_HOLDS_NULL(value))
    return true;
  if (!JSON_NODE_HOLDS_OBJECT(value)) {
    set_key_error(error, source, key, std::string("expected an object, got ") + describe(value));
    return false;
  }
  *object = json_node_get_object(value);
  return true;
}

bool validate_portals(const Source& source, JsonNode* value, GError** error) {
  JsonObject* portals;
  if (!expect_object_or_null(source, "portals", value, &portals, error))
    return false;
  if (portals == nullptr)
    return true;
  JsonObjectIter iter;
  const char* name;
  JsonNode* section_node;
  json_object_iter_init_ordered(&iter, portals);
  while (json_object_iter_next_ordered(&iter, &name, &section_node)) {
    std::string section = std::string("portals.") + name;
    JsonObject* object;
    if (!expect_object_or_null(source, section, section_node, &object, error))
      return false;
    // Plugins own the other keys of their section.
    if (object != nullptr && !validate_section(source, section, object, false, error))
      return false;
  }
  return true;
}

bool validate_broker(const Source& source, JsonNode* value, GError** error) {
  JsonObject* broker;
  if (!expect_object_or_null(source, "broker", value, &broker, error))
    return false;
  return broker == nullptr || validate_section(source, "broker", broker, true, error);
}

bool validate_documents(const Source& source, JsonNode* value, GError** error) {
  JsonObject* documents;
  if (!expect_object_or_null(source, "documents", value, &documents, error)) return false;
  return documents == nullptr || validate_section(source, "documents", documents, true, error);
}

struct TopLevelKey {
  const char* key;
  bool (*validate)(const Source& source, JsonNode* value, GError** error);
};

const TopLevelKey kTopLevelKeys[] = {
    {"portals", validate_portals},
    {"broker", validate_broker},
    {"documents", validate_documents},
};

bool validate_file(const Source& source, JsonNode* root, GError** error) {
  if (!JSON_NODE_HOLDS_OBJECT(root)) {
    g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA, "%s: expected an object at the top level, got %s",
                source.path.c_str(), describe(root));
    return false;
  }
  JsonObjectIter iter;
  const char* key;
  JsonNode* value;
  json_object_iter_init_ordered(&iter, json_node_get_object(root));
  while (json_object_iter_next_ordered(&iter, &key, &value)) {
    auto known = std::find_if(std::begin(kTopLevelKeys), std::end(kTopLevelKeys),
                              [key](const TopLevelKey& top) { return std::strcmp(top.key, key) == 0; });
    if (known == std::end(kTopLevelKeys)) {
      // Kept, as systemd keeps going past unknown settings, but said aloud:
      // it is most likely a typo.
      g_warning("%s: unknown top-level key \"%s\", ignored", source.path.c_str(), key);
      continue;
    }
    if (!known->validate(source, value, error))
      return false;
  }
  return true;
}

// ---- Plugin schemas --------------------------------------------------------

// portals.<name> of one file's root, or nullptr.
JsonObject* portal_section_of(JsonNode* root, const std::string& name) {
  JsonNode* portals = json_object_get_member(json_node_get_object(root), "portals");
  if (portals == nullptr || !JSON_NODE_HOLDS_OBJECT(portals))
    return nullptr;
  JsonNode* section = json_object_get_member(json_node_get_object(portals), name.c_str());
  return section != nullptr && JSON_NODE_HOLDS_OBJECT(section) ? json_node_get_object(section) : nullptr;
}

// Edits to turn a into b (insert, delete, substitute, swap two neighbours):
// a key one or two edits from a known one is most likely that key mistyped.
std::size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<std::vector<std::size_t>> d(a.size() + 1, std::vector<std::size_t>(b.size() + 1));
  for (std::size_t i = 0; i <= a.size(); i++)
    d[i][0] = i;
  for (std::size_t j = 0; j <= b.size(); j++)
    d[0][j] = j;
  for (std::size_t i = 1; i <= a.size(); i++) {
    for (std::size_t j = 1; j <= b.size(); j++) {
      d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1])
        d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
    }
  }
  return d[a.size()][b.size()];
}

const char* describe_type(SidebusConfigType type) {
  switch (type) {
    case SIDEBUS_CONFIG_BOOLEAN:
      return "a boolean (true or false)";
    case SIDEBUS_CONFIG_INTEGER:
      return "an integer";
    case SIDEBUS_CONFIG_STRING:
      return "a string";
    case SIDEBUS_CONFIG_STRING_ARRAY:
      return "an array of strings";
  }
  return "a value";
}

// The type check of one schema key; "" if it holds, else the problem.
std::string check_type(const SidebusConfigKey& key, JsonNode* value) {
  std::string expected = describe_type(key.type);
  switch (key.type) {
    case SIDEBUS_CONFIG_BOOLEAN:
      if (holds(value, G_TYPE_BOOLEAN))
        return "";
      break;
    case SIDEBUS_CONFIG_INTEGER:
      if (holds(value, G_TYPE_INT64)) {
        gint64 number = json_node_get_int(value);
        if (key.min == 0 && key.max == 0)
          return "";
        if (number >= key.min && number <= key.max)
          return "";
        g_autofree char* text = g_strdup_printf("expected an integer in %" G_GINT64_FORMAT "..%" G_GINT64_FORMAT
                                                ", got %" G_GINT64_FORMAT, key.min, key.max, number);
        return text;
      }
      break;
    case SIDEBUS_CONFIG_STRING:
      if (holds(value, G_TYPE_STRING))
        return "";
      break;
    case SIDEBUS_CONFIG_STRING_ARRAY:
      if (JSON_NODE_HOLDS_ARRAY(value)) {
        JsonArray* array = json_node_get_array(value);
        for (guint i = 0; i < json_array_get_length(array); i++) {
          JsonNode* element = json_array_get_element(array, i);
          if (!holds(element, G_TYPE_STRING)) {
            g_autofree char* text =
                g_strdup_printf("expected an array of strings, got %s at [%u]", describe(element), i);
            return text;
          }
        }
        return "";
      }
      break;
  }
  return "expected " + expected + ", got " + describe(value);
}

bool check_portal_section(const Source& source, const std::string& name, JsonObject* section,
                          const SidebusConfigKey* keys, std::size_t n_keys, GError** error) {
  JsonObjectIter iter;
  const char* member;
  JsonNode* value;
  json_object_iter_init_ordered(&iter, section);
  while (json_object_iter_next_ordered(&iter, &member, &value)) {
    std::string dotted = "portals." + name + "." + member;
    if (std::strcmp(member, "enabled") == 0)
      continue;  // the core's, checked with the file
    const SidebusConfigKey* key = nullptr;
    for (std::size_t i = 0; i < n_keys; i++)
      if (std::strcmp(keys[i].key, member) == 0)
        key = &keys[i];
    if (key == nullptr) {
      std::string known = "enabled";
      std::string suggestion = edit_distance(member, "enabled") <= 2 ? "enabled" : "";
      for (std::size_t i = 0; i < n_keys; i++) {
        known += std::string(", ") + keys[i].key;
        if (suggestion.empty() && edit_distance(member, keys[i].key) <= 2)
          suggestion = keys[i].key;
      }
      set_key_error(error, source, dotted,
                    "unknown key" + (suggestion.empty() ? std::string() : " (did you mean \"" + suggestion + "\"?)") +
                        "; the " + name + " portal reads: " + known);
      return false;
    }
    if (JSON_NODE_HOLDS_NULL(value))
      continue;  // deletes an earlier value
    std::string problem = check_type(*key, value);
    if (!problem.empty()) {
      set_key_error(error, source, dotted, problem);
      return false;
    }
    g_autoptr(GError) refused = nullptr;
    if (key->validate != nullptr && !key->validate(member, value, &refused)) {
      set_key_error(error, source, dotted, refused != nullptr ? refused->message : "refused by the plugin");
      return false;
    }
  }
  return true;
}

// ---- Merging -------------------------------------------------------------

// Objects merge key by key, null deletes, anything else replaces. An object
// is always merged into a fresh object of ours (never adopted from the
// parser), so nulls nested in it are dropped too.
void merge_into(JsonObject* target, JsonObject* source) {
  JsonObjectIter iter;
  const char* key;
  JsonNode* value;
  json_object_iter_init_ordered(&iter, source);
  while (json_object_iter_next_ordered(&iter, &key, &value)) {
    if (JSON_NODE_HOLDS_NULL(value)) {
      if (json_object_has_member(target, key))
        json_object_remove_member(target, key);
    } else if (JSON_NODE_HOLDS_OBJECT(value)) {
      JsonNode* existing = json_object_get_member(target, key);
      if (existing == nullptr || !JSON_NODE_HOLDS_OBJECT(existing))
        json_object_set_object_member(target, key, json_object_new());
      merge_into(json_object_get_object_member(target, key), json_node_get_object(value));
    } else {
      json_object_set_member(target, key, json_node_copy(value));
    }
  }
}

// ---- The result ----------------------------------------------------------

class LoadedConfig final : public Config {
 public:
  LoadedConfig() : root_(json_object_new()), empty_section_(json_object_new()) {}

  // Read, parse, validate, then merge: an error leaves root_ untouched.
  // A file that is not there (any more) or not a regular file is skipped.
  bool apply_file(const std::string& path, GError** error) {
    std::string contents;
    switch (read_file(path, contents, error)) {
      case ReadResult::kSkipped:
        return true;
      case ReadResult::kFailed:
        return false;
      case ReadResult::kRead:
        break;
    }
    g_autoptr(JsonNode) root = parse_file(path, contents, error);
    if (root == nullptr)
      return false;
    auto source = std::make_unique<Source>(Source{path, scan_key_positions(contents)});
    if (!validate_file(*source, root, error))
      return false;
    merge_into(root_.get(), json_node_get_object(root));
    files_.push_back(path);  // the broker logs these with --verbose
    applied_.push_back(Applied{std::move(source), json_node_ref(root)});
    return true;
  }

  bool check_portal(const std::string& name, const SidebusConfigKey* keys, std::size_t n_keys,
                    GError** error) const override {
    for (const Applied& file : applied_) {
      JsonObject* section = portal_section_of(file.root, name);
      if (section == nullptr)
        continue;
      if (!check_portal_section(*file.source, name, section, keys, n_keys, error))
        return false;
    }
    return true;
  }

  std::vector<std::string> configured_portals() const override {
    std::vector<std::string> names;
    for (const Applied& file : applied_) {
      JsonNode* portals = json_object_get_member(json_node_get_object(file.root), "portals");
      if (portals == nullptr || !JSON_NODE_HOLDS_OBJECT(portals))
        continue;
      JsonObjectIter iter;
      const char* name;
      JsonNode* section;
      json_object_iter_init_ordered(&iter, json_node_get_object(portals));
      while (json_object_iter_next_ordered(&iter, &name, &section))
        if (std::find(names.begin(), names.end(), name) == names.end())
          names.emplace_back(name);
    }
    std::sort(names.begin(), names.end());
    return names;
  }

  // Caches the broker limits once every file is merged.
  void finish() {
    if (JsonObject* documents = documents_section(); documents != empty_section_.get())
      for (const DocumentsKey& key : kDocumentsKeys)
        if (json_object_has_member(documents, key.key))
          key.apply(retention_, json_object_get_int_member(documents, key.key));
    JsonObject* broker = json_object_get_member(root_.get(), "broker") != nullptr
                             ? json_object_get_object_member(root_.get(), "broker")
                             : nullptr;
    if (broker == nullptr)
      return;
    for (const BrokerKey& key : kBrokerKeys)
      if (json_object_has_member(broker, key.key))
        key.apply(limits_, json_object_get_int_member(broker, key.key));
    dialog_title_prefix_ =
        json_object_get_string_member_with_default(broker, "dialog_title_prefix", dialog_title_prefix_.c_str());
    parse_host_identity_mode(json_object_get_string_member_with_default(broker, "host_identity", "auto"),
                             &host_identity_);
    host_app_id_ = json_object_get_string_member_with_default(broker, "host_app_id", "");
  }

  bool portal_enabled(const std::string& name) const override {
    return json_object_get_boolean_member_with_default(portal_section(name), "enabled", FALSE);
  }

  JsonObject* portal_section(const std::string& name) const override {
    JsonNode* portals = json_object_get_member(root_.get(), "portals");
    if (portals == nullptr || !JSON_NODE_HOLDS_OBJECT(portals))
      return empty_section_.get();
    JsonNode* section = json_object_get_member(json_node_get_object(portals), name.c_str());
    if (section == nullptr || !JSON_NODE_HOLDS_OBJECT(section))
      return empty_section_.get();
    return json_node_get_object(section);
  }

  std::vector<std::string> enabled_portals() const override {
    std::vector<std::string> names;
    JsonNode* portals = json_object_get_member(root_.get(), "portals");
    if (portals == nullptr || !JSON_NODE_HOLDS_OBJECT(portals))
      return names;
    JsonObjectIter iter;
    const char* name;
    JsonNode* section;
    json_object_iter_init_ordered(&iter, json_node_get_object(portals));
    while (json_object_iter_next_ordered(&iter, &name, &section)) {
      if (JSON_NODE_HOLDS_OBJECT(section) &&
          json_object_get_boolean_member_with_default(json_node_get_object(section), "enabled", FALSE))
        names.emplace_back(name);
    }
    std::sort(names.begin(), names.end());
    return names;
  }

  const std::vector<std::string>& files() const override { return files_; }
  const BrokerLimits& limits() const override { return limits_; }
  const std::string& dialog_title_prefix() const override { return dialog_title_prefix_; }
  const RetentionPolicy& retention() const override { return retention_; }
  JsonObject* documents_section() const override {
    JsonNode* documents = json_object_get_member(root_.get(), "documents");
    return documents != nullptr && JSON_NODE_HOLDS_OBJECT(documents) ? json_node_get_object(documents)
                                                                     : empty_section_.get();
  }
  JsonObject* broker_section() const override {
    JsonNode* broker = json_object_get_member(root_.get(), "broker");
    return broker != nullptr && JSON_NODE_HOLDS_OBJECT(broker) ? json_node_get_object(broker) : empty_section_.get();
  }
  HostIdentityMode host_identity() const override { return host_identity_; }
  const std::string& host_app_id() const override { return host_app_id_; }

 private:
  JsonObjectPtr root_;
  JsonObjectPtr empty_section_;
  std::vector<std::string> files_;
  // Every file as applied, for the plugins' schemas (checked after loading).
  struct Applied {
    std::unique_ptr<Source> source;
    JsonNode* root;  // a reference
    Applied(std::unique_ptr<Source> s, JsonNode* r) : source(std::move(s)), root(r) {}
    Applied(Applied&& other) noexcept : source(std::move(other.source)), root(std::exchange(other.root, nullptr)) {}
    ~Applied() {
      if (root != nullptr)
        json_node_unref(root);
    }
  };
  std::vector<Applied> applied_;
  BrokerLimits limits_;
  RetentionPolicy retention_;
  std::string dialog_title_prefix_ = kDefaultDialogTitlePrefix;
  HostIdentityMode host_identity_ = HostIdentityMode::kAuto;
  std::string host_app_id_;
};

}  // namespace

std::vector<std::string> Config::default_dirs() {
  return {SIDEBUS_VENDOR_CONFIG_DIR, SIDEBUS_SYSCONF_CONFIG_DIR, SIDEBUS_RUNTIME_CONFIG_DIR};
}

bool Config::is_valid_vm_name(std::string_view name) {
  if (name.empty() || name.size() > kMaxVmNameLength || name[0] == '.')
    return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return g_ascii_isalnum(c) || c == '.' || c == '_' || c == '-';
  });
}

std::unique_ptr<Config> Config::load(const std::vector<std::string>& dirs, const std::string& vm_name,
                                     GError** error) {
  if (!vm_name.empty() && !is_valid_vm_name(vm_name)) {
    std::string shown = printable(std::string_view(vm_name).substr(0, kMaxVmNameLength + 1));
    if (vm_name.size() > kMaxVmNameLength + 1)
      shown += "...";
    g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                "invalid VM name \"%s\": use 1 to %zu of A-Z a-z 0-9 . _ -, not starting with \".\"", shown.c_str(),
                kMaxVmNameLength);
    return nullptr;
  }

  auto config = std::make_unique<LoadedConfig>();
  for (const std::string& dir : dirs) {
    std::vector<std::string> names;
    if (!list_drop_ins(dir, names, error))
      return nullptr;
    for (const std::string& name : names) {
      g_autofree char* path = g_build_filename(dir.c_str(), name.c_str(), nullptr);
      if (!config->apply_file(path, error))
        return nullptr;
    }
  }
  if (!vm_name.empty()) {
    std::string file_name = vm_name + ".json";
    for (const std::string& dir : dirs) {
      g_autofree char* path = g_build_filename(dir.c_str(), "vm", file_name.c_str(), nullptr);
      if (!config->apply_file(path, error))
        return nullptr;
    }
  }
  config->finish();
  return config;
}

}  // namespace sidebus
