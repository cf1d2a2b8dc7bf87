// SPDX-License-Identifier: LGPL-2.1-or-later
// test-config.cpp — unit test of Config (core/config.cpp): where drop-ins are
// read from and in which order, how they merge, and that every malformed or
// mistyped file is refused as a whole with a message that says where.
//
// Each test builds its own vendor/ etc/ run/ tree in a temporary directory
// (removed at the end) and loads it as the three configuration directories.
// Warnings from the "sidebus" log domain are captured, so a test asserts
// exactly which ones appeared (and none appear by accident).

#include <glib/gstdio.h>
#include <sys/stat.h>

#include <string>
#include <vector>

#include "broker/config.hpp"
#include "sidebus-config.h"

using sidebus::Config;

namespace {

// ---- Captured warnings -----------------------------------------------------

std::vector<std::string> captured_warnings;

GLogWriterOutput capture_writer(GLogLevelFlags level, const GLogField* fields, gsize n_fields, gpointer user_data) {
  const char* domain = nullptr;
  const char* message = nullptr;
  for (gsize i = 0; i < n_fields; i++) {
    if (g_strcmp0(fields[i].key, "GLIB_DOMAIN") == 0)
      domain = static_cast<const char*>(fields[i].value);
    else if (g_strcmp0(fields[i].key, "MESSAGE") == 0)
      message = static_cast<const char*>(fields[i].value);
  }
  if ((level & G_LOG_LEVEL_WARNING) && g_strcmp0(domain, "sidebus") == 0) {
    captured_warnings.emplace_back(message != nullptr ? message : "");
    return G_LOG_WRITER_HANDLED;
  }
  return g_log_writer_default(level, fields, n_fields, user_data);
}

std::vector<std::string> take_warnings() {
  std::vector<std::string> warnings;
  warnings.swap(captured_warnings);
  return warnings;
}

void assert_no_warnings() {
  for (const std::string& warning : captured_warnings)
    g_test_message("unexpected warning: %s", warning.c_str());
  g_assert_cmpuint(captured_warnings.size(), ==, 0);
}

// ---- A temporary configuration tree -----------------------------------------

void remove_tree(const std::string& path) {
  GStatBuf st;
  if (g_lstat(path.c_str(), &st) != 0)
    return;
  if (S_ISDIR(st.st_mode)) {
    g_autoptr(GDir) dir = g_dir_open(path.c_str(), 0, nullptr);
    if (dir != nullptr) {
      while (const char* name = g_dir_read_name(dir))
        remove_tree(path + "/" + name);
    }
    g_rmdir(path.c_str());
  } else {
    g_unlink(path.c_str());
  }
}

class TempTree {
 public:
  TempTree() {
    g_autoptr(GError) error = nullptr;
    g_autofree char* root = g_dir_make_tmp("sidebus-test-config-XXXXXX", &error);
    g_assert_no_error(error);
    root_ = root;
  }
  ~TempTree() { remove_tree(root_); }
  TempTree(const TempTree&) = delete;
  TempTree& operator=(const TempTree&) = delete;

  std::string path(const std::string& relative) const { return root_ + "/" + relative; }

  // Writes relative (e.g. "etc/50-x.json"), creating its directories.
  std::string write(const std::string& relative, const std::string& contents) const {
    std::string full = path(relative);
    g_autofree char* parent = g_path_get_dirname(full.c_str());
    g_assert_cmpint(g_mkdir_with_parents(parent, 0700), ==, 0);
    g_autoptr(GError) error = nullptr;
    g_file_set_contents(full.c_str(), contents.data(), contents.size(), &error);
    g_assert_no_error(error);
    return full;
  }

  void mkdir(const std::string& relative) const {
    g_assert_cmpint(g_mkdir_with_parents(path(relative).c_str(), 0700), ==, 0);
  }

  // vendor < etc < run, like the real default_dirs().
  std::vector<std::string> dirs() const { return {path("vendor"), path("etc"), path("run")}; }

  std::unique_ptr<Config> load(const std::string& vm_name = "") const {
    g_autoptr(GError) error = nullptr;
    auto config = Config::load(dirs(), vm_name, &error);
    g_assert_no_error(error);
    g_assert_nonnull(config.get());
    return config;
  }

  // Loads expecting failure; returns the message.
  std::string load_error(const std::string& vm_name = "", GQuark domain = G_IO_ERROR,
                         int code = G_IO_ERROR_INVALID_DATA) const {
    g_autoptr(GError) error = nullptr;
    auto config = Config::load(dirs(), vm_name, &error);
    g_assert_null(config.get());
    g_assert_error(error, domain, code);
    g_test_message("error: %s", error->message);
    return error->message;
  }

 private:
  std::string root_;
};

// ---- Small accessors -----------------------------------------------------------

gint64 int_in(const Config& config, const char* portal, const char* key) {
  JsonObject* section = config.portal_section(portal);
  g_assert_true(json_object_has_member(section, key));
  return json_object_get_int_member(section, key);
}

std::vector<std::string> strings_in(const Config& config, const char* portal, const char* key) {
  JsonObject* section = config.portal_section(portal);
  g_assert_true(json_object_has_member(section, key));
  JsonArray* array = json_object_get_array_member(section, key);
  std::vector<std::string> strings;
  for (guint i = 0; i < json_array_get_length(array); i++)
    strings.emplace_back(json_array_get_string_element(array, i));
  return strings;
}

void assert_strings(const std::vector<std::string>& actual, const std::vector<std::string>& expected) {
  g_assert_cmpuint(actual.size(), ==, expected.size());
  for (std::size_t i = 0; i < actual.size(); i++)
    g_assert_cmpstr(actual[i].c_str(), ==, expected[i].c_str());
}

std::size_t count(const std::string& haystack, const std::string& needle) {
  std::size_t n = 0;
  for (std::size_t at = haystack.find(needle); at != std::string::npos; at = haystack.find(needle, at + 1))
    n++;
  return n;
}

bool starts_with(const std::string& text, const std::string& prefix) { return text.rfind(prefix, 0) == 0; }

void assert_starts_with(const std::string& text, const std::string& prefix) {
  if (!starts_with(text, prefix))
    g_error("\"%s\" does not start with \"%s\"", text.c_str(), prefix.c_str());
}

// ---- Tests ---------------------------------------------------------------------

void test_default_dirs() {
  assert_strings(Config::default_dirs(),
                 {SIDEBUS_VENDOR_CONFIG_DIR, SIDEBUS_SYSCONF_CONFIG_DIR, SIDEBUS_RUNTIME_CONFIG_DIR});
}

void test_precedence() {
  TempTree tree;
  tree.write("vendor/50-a.json", R"({"portals": {"test": {"vendor": 1, "etc": 1, "run": 1, "enabled": false}}})");
  tree.write("etc/50-a.json", R"({"portals": {"test": {"etc": 2, "run": 2, "enabled": true}}})");
  tree.write("run/50-a.json", R"({"portals": {"test": {"run": 3}}})");
  auto config = tree.load();
  g_assert_cmpint(int_in(*config, "test", "vendor"), ==, 1);
  g_assert_cmpint(int_in(*config, "test", "etc"), ==, 2);
  g_assert_cmpint(int_in(*config, "test", "run"), ==, 3);
  g_assert_true(config->portal_enabled("test"));
  assert_strings(config->files(), {tree.path("vendor/50-a.json"), tree.path("etc/50-a.json"),
                                   tree.path("run/50-a.json")});
  assert_no_warnings();
}

void test_lexical_order() {
  TempTree tree;
  // Written out of order on purpose; byte order puts "9-" after "50-".
  tree.write("etc/99-last.json", R"({"portals": {"test": {"winner": 99}}})");
  tree.write("etc/10-first.json", R"({"portals": {"test": {"winner": 10, "only10": true}}})");
  tree.write("etc/9-late.json", R"({"portals": {"test": {"winner": 9, "only9": true}}})");
  tree.write("etc/50-middle.json", R"({"portals": {"test": {"winner": 50, "only50": true}}})");
  // A later directory's first file still beats an earlier directory's last.
  tree.write("vendor/99-vendor.json", R"({"portals": {"test": {"winner": 0, "run": "vendor"}}})");
  tree.write("run/00-run.json", R"({"portals": {"test": {"run": "run"}}})");
  auto config = tree.load();
  g_assert_cmpint(int_in(*config, "test", "winner"), ==, 99);
  JsonObject* section = config->portal_section("test");
  g_assert_cmpstr(json_object_get_string_member(section, "run"), ==, "run");
  g_assert_true(json_object_get_boolean_member(section, "only10"));
  g_assert_true(json_object_get_boolean_member(section, "only50"));
  g_assert_true(json_object_get_boolean_member(section, "only9"));
  assert_strings(config->files(),
                 {tree.path("vendor/99-vendor.json"), tree.path("etc/10-first.json"), tree.path("etc/50-middle.json"),
                  tree.path("etc/9-late.json"), tree.path("etc/99-last.json"), tree.path("run/00-run.json")});
  assert_no_warnings();
}

void test_per_vm() {
  TempTree tree;
  tree.write("vendor/10-a.json", R"({"portals": {"filechooser": {"enabled": false, "level": "vendor"}}})");
  tree.write("run/99-z.json", R"({"portals": {"filechooser": {"enabled": false, "level": "run"}}})");
  // Even the vendor directory's per-VM file beats every main file...
  tree.write("vendor/vm/work.json", R"({"portals": {"filechooser": {"enabled": true, "level": "vendor-vm"}}})");
  // ...and per-VM files follow the directory order among themselves.
  tree.write("etc/vm/work.json", R"({"portals": {"filechooser": {"level": "etc-vm"}}})");
  tree.write("etc/vm/other.json", R"({"portals": {"filechooser": {"level": "other-vm"}}})");

  auto config = tree.load("work");
  g_assert_true(config->portal_enabled("filechooser"));
  g_assert_cmpstr(json_object_get_string_member(config->portal_section("filechooser"), "level"), ==, "etc-vm");
  assert_strings(config->files(), {tree.path("vendor/10-a.json"), tree.path("run/99-z.json"),
                                   tree.path("vendor/vm/work.json"), tree.path("etc/vm/work.json")});

  // Without a VM name, no per-VM file is read.
  auto plain = tree.load();
  g_assert_false(plain->portal_enabled("filechooser"));
  g_assert_cmpstr(json_object_get_string_member(plain->portal_section("filechooser"), "level"), ==, "run");
  g_assert_cmpuint(plain->files().size(), ==, 2);

  // A VM without its own file gets the main files only.
  auto unknown_vm = tree.load("nobody");
  g_assert_false(unknown_vm->portal_enabled("filechooser"));
  g_assert_cmpuint(unknown_vm->files().size(), ==, 2);
  assert_no_warnings();
}

void test_null_deletes() {
  TempTree tree;
  tree.write("vendor/10-a.json", R"({
    "portals": {
      "openuri": {"enabled": true, "schemes": ["http"], "extra": 1},
      "filechooser": {"enabled": true}
    }
  })");
  tree.write("etc/50-b.json", R"({
    "portals": {
      "openuri": {"schemes": null, "extra": null},
      "filechooser": null,
      "fresh": {"kept": 1, "gone": null}
    }
  })");
  auto config = tree.load();
  JsonObject* openuri = config->portal_section("openuri");
  g_assert_true(config->portal_enabled("openuri"));
  g_assert_false(json_object_has_member(openuri, "schemes"));
  g_assert_false(json_object_has_member(openuri, "extra"));
  // A deleted section reads as absent: empty and disabled.
  g_assert_false(config->portal_enabled("filechooser"));
  g_assert_cmpuint(json_object_get_size(config->portal_section("filechooser")), ==, 0);
  // A null inside a section that did not exist before leaves no null behind.
  JsonObject* fresh = config->portal_section("fresh");
  g_assert_cmpint(int_in(*config, "fresh", "kept"), ==, 1);
  g_assert_false(json_object_has_member(fresh, "gone"));

  // A later file may set a deleted key again.
  tree.write("run/50-c.json", R"({"portals": {"filechooser": {"enabled": true}}})");
  g_assert_true(tree.load()->portal_enabled("filechooser"));
  assert_no_warnings();
}

void test_arrays_replace() {
  TempTree tree;
  tree.write("vendor/10-a.json", R"({"portals": {"openuri": {"schemes": ["http", "https", "mailto"]}}})");
  tree.write("etc/50-b.json", R"({"portals": {"openuri": {"schemes": ["gemini"]}}})");
  auto config = tree.load();
  assert_strings(strings_in(*config, "openuri", "schemes"), {"gemini"});

  tree.write("run/50-c.json", R"({"portals": {"openuri": {"schemes": []}}})");
  assert_strings(strings_in(*tree.load(), "openuri", "schemes"), {});
  assert_no_warnings();
}

void test_values_replace_objects() {
  TempTree tree;
  // Plugin keys may change type between files; objects merge, others replace.
  tree.write("vendor/10-a.json", R"({"portals": {"test": {"opt": {"a": 1, "b": 2}, "flat": 1}}})");
  tree.write("etc/50-b.json", R"({"portals": {"test": {"opt": {"b": 3}, "flat": {"now": "object"}}}})");
  auto config = tree.load();
  JsonObject* test = config->portal_section("test");
  JsonObject* opt = json_object_get_object_member(test, "opt");
  g_assert_cmpint(json_object_get_int_member(opt, "a"), ==, 1);
  g_assert_cmpint(json_object_get_int_member(opt, "b"), ==, 3);
  JsonObject* flat = json_object_get_object_member(test, "flat");
  g_assert_cmpstr(json_object_get_string_member(flat, "now"), ==, "object");

  tree.write("run/50-c.json", R"({"portals": {"test": {"opt": "scalar"}}})");
  auto later = tree.load();
  g_assert_cmpstr(json_object_get_string_member(later->portal_section("test"), "opt"), ==, "scalar");
  assert_no_warnings();
}

// Every syntax error reads "PATH:LINE:COLUMN: reason", with the path exactly once.
void assert_syntax_error(const std::string& message, const std::string& path, const std::string& position,
                         const char* reason) {
  assert_starts_with(message, path + ":" + position + ": ");
  g_assert_cmpuint(count(message, path), ==, 1);
  g_assert_true(message.find("<data>") == std::string::npos);
  if (message.find(reason) == std::string::npos)
    g_error("\"%s\" does not contain \"%s\"", message.c_str(), reason);
}

void test_malformed() {
  struct Case {
    const char* contents;
    const char* position;
    const char* reason;
  };
  const Case cases[] = {
      {"{\n  \"portals\": {\n    \"x\": tru\n  }\n}\n", "3:12", "unexpected identifier"},
      {"{\"portals\": {},}", "1:15", "unexpected"},
      // json-glib 1.6 blames the last token it read for an unclosed object.
      {"{\n  \"a\": 1\n", "2:8", "Parse error: "},
      {"{\n  \"portals\": {}\n}\n{\"broker\": {}}\n", "4:1", "second top-level value"},
      {"{} []", "1:4", "second top-level value"},
      {"{\"a\": \"\xff\"}", "1:8", "invalid UTF-8"},
      {"\n\n", "3:1", "no JSON value"},
      {"", "1:1", "no JSON value"},
      {"var config = {};", "1:1", "assignment"},
  };
  for (const Case& c : cases) {
    TempTree tree;
    tree.write("vendor/10-good.json", R"({"portals": {"filechooser": {"enabled": true}}})");
    std::string path = tree.write("etc/50-x.json", c.contents);
    assert_syntax_error(tree.load_error(), path, c.position, c.reason);
  }
  assert_no_warnings();
}

// "PATH:LINE:COLUMN" of @key's quote in one-line @contents (the last
// occurrence: a key named like one of its parents is written after it).
std::string where(const std::string& path, const std::string& contents, const std::string& key) {
  size_t at = contents.rfind("\"" + key + "\"");
  g_assert_true(at != std::string::npos);
  return path + ":1:" + std::to_string(at + 1);
}

void test_wrong_types() {
  struct Case {
    const char* contents;
    const char* key;       // whose position the message names; nullptr: the file as a whole
    const char* expected;  // after "PATH[:LINE:COLUMN]: "
  };
  const Case cases[] = {
      {"[]", nullptr, "expected an object at the top level, got an array"},
      {"42", nullptr, "expected an object at the top level, got an integer"},
      {"null", nullptr, "expected an object at the top level, got null"},
      {R"({"portals": 5})", "portals", "portals: expected an object, got an integer"},
      {R"({"portals": {"openuri": true}})", "openuri", "portals.openuri: expected an object, got a boolean"},
      {R"({"portals": {"filechooser": {"enabled": "yes"}}})", "enabled",
       "portals.filechooser.enabled: expected a boolean (true or false), got a string"},
      {R"({"portals": {"anything": {"enabled": 1}}})", "enabled", "portals.anything.enabled: expected a boolean"},
      {R"({"broker": []})", "broker", "broker: expected an object, got an array"},
      {R"({"broker": {"max_pending_requests": "64"}})", "max_pending_requests",
       "broker.max_pending_requests: expected an integer in 1..10000, got a string"},
      {R"({"broker": {"max_sessions": 0}})", "max_sessions",
       "broker.max_sessions: expected an integer in 1..1000, got 0"},
      {R"({"documents": 3})", "documents", "documents: expected an object, got an integer"},
      {R"({"documents": {"max_documents": -1}})", "max_documents",
       "documents.max_documents: expected an integer in 0..10000000, got -1"},
      {R"({"documents": {"max_unused_days": "90"}})", "max_unused_days",
       "documents.max_unused_days: expected an integer in 0..100000, got a string"},
  };
  for (const Case& c : cases) {
    TempTree tree;
    std::string path = tree.write("etc/50-x.json", c.contents);
    std::string message = tree.load_error();
    assert_starts_with(message, (c.key != nullptr ? where(path, c.contents, c.key) : path) + ": " + c.expected);
    g_assert_cmpuint(count(message, path), ==, 1);
  }
  // The core knows no plugin's keys: those are checked against each
  // plugin's schema (test_plugin_schema).
  TempTree tree;
  tree.write("etc/50-x.json", R"({"portals": {"other": {"schemes": 5}}})");
  g_assert_cmpint(int_in(*tree.load(), "other", "schemes"), ==, 5);
  assert_no_warnings();
}

gboolean refuse_javascript(const char*, JsonNode* value, GError** error) {
  JsonArray* array = json_node_get_array(value);
  for (guint i = 0; i < json_array_get_length(array); i++) {
    if (g_str_equal(json_array_get_string_element(array, i), "javascript")) {
      g_set_error(error, G_IO_ERROR, G_IO_ERROR_FAILED, "[%u] \"javascript\" cannot be allowed: it runs code", i);
      return FALSE;
    }
  }
  return TRUE;
}

// A plugin's declared keys, checked in every file with the key's position.
void test_plugin_schema() {
  const SidebusConfigKey keys[] = {
      {"schemes", SIDEBUS_CONFIG_STRING_ARRAY, 0, 0, refuse_javascript, {}},
      {"copy_outside_documents", SIDEBUS_CONFIG_BOOLEAN, 0, 0, nullptr, {}},
      {"max_files", SIDEBUS_CONFIG_INTEGER, 1, 100, nullptr, {}},
      {"label", SIDEBUS_CONFIG_STRING, 0, 0, nullptr, {}},
  };
  struct Case {
    const char* contents;
    const char* expected;  // the whole message, with PATH for the file
  };
  const Case cases[] = {
      {"{\n  \"portals\": {\n    \"openuri\": {\n      \"enabeld\": true\n    }\n  }\n}\n",
       "PATH:4:7: portals.openuri.enabeld: unknown key (did you mean \"enabled\"?); the openuri portal reads: enabled, "
       "schemes, copy_outside_documents, max_files, label"},
      {R"({"portals": {"openuri": {"copy_outside_document": true}}})",
       "PATH:1:26: portals.openuri.copy_outside_document: unknown key (did you mean \"copy_outside_documents\"?); the "
       "openuri portal reads: enabled, schemes, copy_outside_documents, max_files, label"},
      {R"({"portals": {"openuri": {"colour": 1}}})",
       "PATH:1:26: portals.openuri.colour: unknown key; the openuri portal reads: enabled, schemes, "
       "copy_outside_documents, max_files, label"},
      {R"({"portals": {"openuri": {"schemes": "http"}}})",
       "PATH:1:26: portals.openuri.schemes: expected an array of strings, got a string"},
      {R"({"portals": {"openuri": {"schemes": ["http", 7]}}})",
       "PATH:1:26: portals.openuri.schemes: expected an array of strings, got an integer at [1]"},
      {R"({"portals": {"openuri": {"schemes": ["https", "javascript"]}}})",
       "PATH:1:26: portals.openuri.schemes: [1] \"javascript\" cannot be allowed: it runs code"},
      {R"({"portals": {"openuri": {"copy_outside_documents": "yes"}}})",
       "PATH:1:26: portals.openuri.copy_outside_documents: expected a boolean (true or false), got a string"},
      {R"({"portals": {"openuri": {"max_files": 0}}})",
       "PATH:1:26: portals.openuri.max_files: expected an integer in 1..100, got 0"},
      {R"({"portals": {"openuri": {"label": 5}}})", "PATH:1:26: portals.openuri.label: expected a string, got an integer"},
  };
  for (const Case& c : cases) {
    TempTree tree;
    tree.write("vendor/10-good.json", R"({"portals": {"openuri": {"enabled": true, "schemes": ["https"]}}})");
    std::string path = tree.write("etc/50-x.json", c.contents);
    auto config = tree.load();
    g_autoptr(GError) error = nullptr;
    g_assert_false(config->check_portal("openuri", keys, G_N_ELEMENTS(keys), &error));
    g_assert_nonnull(error);
    std::string expected = c.expected;
    expected.replace(expected.find("PATH"), 4, path);
    g_assert_cmpstr(error->message, ==, expected.c_str());
  }
  // Good values, a null that deletes, other portals' sections untouched.
  TempTree tree;
  tree.write("etc/50-x.json",
             R"({"portals": {"openuri": {"enabled": true, "schemes": ["https", "mailto"], "max_files": 100,
                 "label": "x", "copy_outside_documents": null}, "other": {"whatever": 1}}})");
  auto config = tree.load();
  g_autoptr(GError) error = nullptr;
  g_assert_true(config->check_portal("openuri", keys, G_N_ELEMENTS(keys), &error));
  g_assert_no_error(error);
  auto configured = config->configured_portals();
  g_assert_cmpuint(configured.size(), ==, 2);
  g_assert_cmpstr(configured[0].c_str(), ==, "openuri");
  g_assert_cmpstr(configured[1].c_str(), ==, "other");
  assert_no_warnings();
}

void test_never_half_applied() {
  TempTree tree;
  tree.write("vendor/10-good.json", R"({"portals": {"openuri": {"enabled": false}}})");
  // The first key of the bad file is fine and the second is not: the whole
  // load fails, so no caller can ever see openuri enabled by it.
  std::string bad = tree.write("etc/50-bad.json",
                               R"({"portals": {"openuri": {"enabled": true}}, "broker": {"max_pending_requests": 0}})");
  tree.write("run/90-later.json", R"({"portals": {"filechooser": {"enabled": true}}})");
  assert_starts_with(tree.load_error(),
                     bad + ":1:56: broker.max_pending_requests: expected an integer in 1..10000, got 0");

  // Same for a syntax error after a valid prefix, and in a per-VM file.
  tree.write("etc/50-bad.json", R"({"portals": {"openuri": {"enabled": true}}, "broker": )");
  assert_starts_with(tree.load_error(), bad + ":1:");
  g_unlink(bad.c_str());
  std::string vm_file = tree.write("run/vm/work.json", "{\"portals\": {\"openuri\": {\"enabled\": true}}");
  assert_starts_with(tree.load_error("work"), vm_file + ":1:");
  // Only the VM that has the broken file fails to load.
  g_assert_false(tree.load("other")->portal_enabled("openuri"));
  assert_no_warnings();
}

void test_vm_names() {
  TempTree tree;
  tree.write("etc/vm/ok.json", "{}");
  const std::string too_long(Config::kMaxVmNameLength + 1, 'a');
  const std::string invalid[] = {
      "a/b", "..", ".", ".hidden", "../etc/passwd", "a b", "a\nb", "caf\xc3\xa9", "a*", too_long, std::string("a\0b", 3),
  };
  for (const std::string& name : invalid) {
    g_assert_false(Config::is_valid_vm_name(name));
    std::string message = tree.load_error(name, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT);
    assert_starts_with(message, "invalid VM name \"");
  }
  g_assert_true(tree.load_error("a/b", G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT).find("\"a/b\"") !=
                std::string::npos);
  // Control characters and NUL are escaped in the message, a long name cut.
  g_assert_true(tree.load_error("a\nb", G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT).find("\"a\\nb\"") !=
                std::string::npos);
  g_assert_true(tree.load_error(std::string("a\0b", 3), G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT)
                    .find("\"a\\000b\"") != std::string::npos);
  g_assert_cmpuint(tree.load_error(std::string(100000, 'x'), G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT).size(), <, 300);

  const std::string valid[] = {"ok", "work-vm_1.2", "A.b-C_9", "x.", std::string(Config::kMaxVmNameLength, 'z')};
  for (const std::string& name : valid) {
    g_assert_true(Config::is_valid_vm_name(name));
    tree.load(name);
  }
  g_assert_false(Config::is_valid_vm_name(""));  // load() takes "" as "no VM" instead
  assert_strings(tree.load("ok")->files(), {tree.path("etc/vm/ok.json")});
  assert_no_warnings();
}

void test_missing_dirs() {
  TempTree tree;  // vendor/, etc/ and run/ do not exist
  auto config = tree.load("some-vm");
  g_assert_cmpuint(config->files().size(), ==, 0);
  g_assert_false(config->portal_enabled("filechooser"));
  g_assert_cmpuint(json_object_get_size(config->portal_section("filechooser")), ==, 0);
  g_assert_cmpuint(config->limits().max_pending_requests, ==, Config::BrokerLimits{}.max_pending_requests);

  // Only a missing directory is fine; one that is a file is an error.
  tree.write("etc", "");
  g_autoptr(GError) error = nullptr;
  g_assert_null(Config::load(tree.dirs(), "", &error).get());
  g_assert_nonnull(error);
  g_assert_true(strstr(error->message, tree.path("etc").c_str()) != nullptr);
  assert_no_warnings();
}

void test_ignored_files() {
  TempTree tree;
  const char* broken = "{ this is not JSON";
  tree.write("etc/50-a.json", R"({"portals": {"filechooser": {"enabled": true}}})");
  tree.write("etc/50-a.json~", broken);
  tree.write("etc/50-a.json.bak", broken);
  tree.write("etc/50-a.conf", broken);
  tree.write("etc/50-a.JSON", broken);
  tree.write("etc/README", broken);
  tree.write("etc/.hidden.json", broken);
  tree.write("etc/.#50-a.json", broken);
  tree.mkdir("etc/60-directory.json");
  tree.write("etc/vm/x.json", broken);  // only read for the VM "x"
  g_assert_cmpint(symlink("/nonexistent/target.json", tree.path("etc/70-dangling.json").c_str()), ==, 0);
  g_assert_cmpint(symlink("/dev/null", tree.path("etc/80-masked.json").c_str()), ==, 0);
  // A symlink to a regular file is read.
  std::string target = tree.write("elsewhere/shared.json", R"({"portals": {"openuri": {"enabled": true}}})");
  g_assert_cmpint(symlink(target.c_str(), tree.path("etc/90-linked.json").c_str()), ==, 0);
  // A per-VM path that is not a file is skipped like a main one.
  tree.mkdir("run/vm/y.json");

  auto config = tree.load("y");
  g_assert_true(config->portal_enabled("filechooser"));
  g_assert_true(config->portal_enabled("openuri"));
  assert_strings(config->files(), {tree.path("etc/50-a.json"), tree.path("etc/90-linked.json")});
  assert_no_warnings();
}

void test_too_large() {
  TempTree tree;
  std::string big = "{\"portals\": {\"x\": {\"pad\": \"" + std::string(1024 * 1024, 'a') + "\"}}}";
  std::string path = tree.write("etc/50-big.json", big);
  assert_starts_with(tree.load_error(), path + ": file too large");
  assert_no_warnings();
}

void test_document_retention() {
  TempTree tree;
  tree.write("etc/50-a.json", R"({"portals": {}})");
  g_assert_true(tree.load()->retention() == sidebus::RetentionPolicy{});
  tree.write("vendor/10-a.json", R"({"documents": {"max_documents": 500, "max_unused_days": 7}})");
  tree.write("etc/50-b.json", R"({"documents": {"max_unused_days": 0}})");
  auto config = tree.load();
  g_assert_cmpuint(config->retention().max_documents, ==, 500);
  g_assert_cmpuint(config->retention().max_unused_days, ==, 0);
}

void test_broker_limits() {
  {
    TempTree tree;
    tree.write("etc/50-a.json", R"({"portals": {}})");
    auto config = tree.load();
    g_assert_cmpuint(config->limits().max_pending_requests, ==, 64);
    g_assert_cmpuint(config->limits().link.traffic.max_message_size, ==, 16 * 1024 * 1024);
  }
  {
    TempTree tree;
    tree.write("vendor/10-a.json", R"({"broker": {"max_pending_requests": 10, "max_message_size": 8192}})");
    tree.write("etc/50-b.json", R"({"broker": {"max_pending_requests": 20}})");
    auto config = tree.load();
    g_assert_cmpuint(config->limits().max_pending_requests, ==, 20);
    g_assert_cmpuint(config->limits().link.traffic.max_message_size, ==, 8192);
    // null goes back to the default.
    tree.write("run/50-c.json", R"({"broker": {"max_message_size": null}})");
    g_assert_cmpuint(tree.load()->limits().link.traffic.max_message_size, ==, Config::BrokerLimits{}.link.traffic.max_message_size);
    tree.write("run/50-c.json", R"({"broker": null})");
    g_assert_cmpuint(tree.load()->limits().max_pending_requests, ==, Config::BrokerLimits{}.max_pending_requests);
  }

  struct Limit {
    const char* key;
    gint64 value;
    bool accepted;
  };
  const Limit limits[] = {
      {"max_pending_requests", 1, true},          {"max_pending_requests", 10000, true},
      {"max_pending_requests", 0, false},         {"max_pending_requests", 10001, false},
      {"max_pending_requests", -1, false},        {"max_message_size", 4096, true},
      {"max_message_size", 134217728, true},      {"max_message_size", 4095, false},
      {"max_message_size", 134217729, false},     {"max_message_size", G_GINT64_CONSTANT(1) << 40, false},
  };
  for (const Limit& limit : limits) {
    TempTree tree;
    g_autofree char* json =
        g_strdup_printf("{\"broker\": {\"%s\": %" G_GINT64_FORMAT "}}", limit.key, limit.value);
    std::string path = tree.write("etc/50-limit.json", json);
    if (limit.accepted) {
      auto config = tree.load();
      gint64 got = g_str_equal(limit.key, "max_pending_requests") ? gint64(config->limits().max_pending_requests)
                                                                  : gint64(config->limits().link.traffic.max_message_size);
      g_assert_cmpint(got, ==, limit.value);
    } else {
      std::string message = tree.load_error();
      g_autofree char* expected = g_strdup_printf("%s: broker.%s: expected an integer in ",
                                                  where(path, json, limit.key).c_str(), limit.key);
      assert_starts_with(message, expected);
      g_autofree char* got = g_strdup_printf(", got %" G_GINT64_FORMAT, limit.value);
      g_assert_true(g_str_has_suffix(message.c_str(), got));
    }
  }
  // The fd forwarding limits (byte-only links): defaults, and where they go.
  {
    TempTree tree;
    tree.write("etc/50-a.json", R"({"portals": {}})");
    auto loaded = tree.load();
    const sidebus::ForwardingLimits& defaults = loaded->limits().link.forwarding;
    g_assert_cmpuint(defaults.max_channels, ==, 32);
    g_assert_cmpuint(defaults.max_channel_buffer, ==, 1024 * 1024);
    g_assert_cmpuint(defaults.max_link_buffer, ==, 16 * 1024 * 1024);
    g_assert_cmpuint(defaults.max_content_size, ==, 64 * 1024 * 1024);
    g_assert_cmpuint(defaults.max_content_in_flight, ==, 256 * 1024 * 1024);
    tree.write("etc/60-b.json", R"({"broker": {"max_channels": 2, "max_channel_buffer": 4096,
                                    "max_link_buffer": 65536, "max_content_size": 0,
                                    "max_content_in_flight": 17179869184}})");
    auto config = tree.load();
    const sidebus::ForwardingLimits& set = config->limits().link.forwarding;
    g_assert_cmpuint(set.max_channels, ==, 2);
    g_assert_cmpuint(set.max_channel_buffer, ==, 4096);
    g_assert_cmpuint(set.max_link_buffer, ==, 65536);
    g_assert_cmpuint(set.max_content_size, ==, 0);
    g_assert_cmpuint(set.max_content_in_flight, ==, G_GUINT64_CONSTANT(17179869184));
    for (const char* bad : {R"({"broker": {"max_channels": 0}})", R"({"broker": {"max_channels": 1025}})",
                            R"({"broker": {"max_channel_buffer": 4095}})", R"({"broker": {"max_link_buffer": 1}})",
                            R"({"broker": {"max_content_size": -1}})"}) {
      TempTree bad_tree;
      bad_tree.write("etc/50-bad.json", bad);
      g_assert_true(bad_tree.load_error().find("expected an integer in") != std::string::npos);
    }
  }
  // Not integers.
  for (const char* value : {"64.0", "6.4e1", "true", "\"64\"", "[64]"}) {
    TempTree tree;
    g_autofree char* json = g_strdup_printf("{\"broker\": {\"max_pending_requests\": %s}}", value);
    std::string path = tree.write("etc/50-limit.json", json);
    assert_starts_with(tree.load_error(),
                       where(path, json, "max_pending_requests") + ": broker.max_pending_requests: expected an integer in "
                       "1..10000, got ");
  }
  assert_no_warnings();
}

void test_unknown_keys() {
  TempTree tree;
  std::string path = tree.write("etc/50-a.json", R"({
    "portal": {"filechooser": {"enabled": true}},
    "broker": {"max_pending_request": 5},
    "portals": {"filechooser": {"enabled": true, "plugin_option": [1, 2]}}
  })");
  auto config = tree.load();
  std::vector<std::string> warnings = take_warnings();
  assert_strings(warnings, {path + ": unknown top-level key \"portal\", ignored",
                            path + ": unknown key \"broker.max_pending_request\", ignored"});
  // Keys inside a portal's section belong to its plugin: kept, no warning.
  JsonObject* section = config->portal_section("filechooser");
  g_assert_cmpuint(json_array_get_length(json_object_get_array_member(section, "plugin_option")), ==, 2);
  g_assert_cmpuint(config->limits().max_pending_requests, ==, Config::BrokerLimits{}.max_pending_requests);
  assert_no_warnings();
}

void test_portal_section_lifetime() {
  TempTree tree;
  tree.write("etc/50-a.json", R"({"portals": {"openuri": {"enabled": true, "schemes": ["https"]}}})");
  auto config = tree.load();
  JsonObject* first = config->portal_section("openuri");
  JsonObject* absent = config->portal_section("nope");
  // Borrowed pointers stay the same (and valid) for the Config's lifetime.
  g_assert_true(config->portal_section("openuri") == first);
  g_assert_true(config->portal_section("nope") == absent);
  g_assert_cmpuint(json_object_get_size(absent), ==, 0);
  g_assert_false(config->portal_enabled("nope"));
  g_assert_false(config->portal_enabled(""));
  assert_strings(strings_in(*config, "openuri", "schemes"), {"https"});
  assert_no_warnings();
}

void test_enabled_portals() {
  TempTree tree;
  tree.write("vendor/10-a.json", R"({"portals": {"zeta": {"enabled": true}, "alpha": {"enabled": true},
                                                "off": {"enabled": false}, "unset": {}, "gone": {"enabled": true}}})");
  tree.write("etc/50-b.json", R"({"portals": {"alpha": {"enabled": false}, "gone": null, "beta": {"enabled": true}}})");
  auto config = tree.load();
  assert_strings(config->enabled_portals(), {"beta", "zeta"});
  for (const char* name : {"beta", "zeta"})
    g_assert_true(config->portal_enabled(name));
  for (const char* name : {"alpha", "off", "unset", "gone", "never"})
    g_assert_false(config->portal_enabled(name));
  assert_strings(TempTree().load()->enabled_portals(), {});
  assert_no_warnings();
}

// The distribution defaults shipped in data/sidebus.d must load cleanly and
// enable nothing.
void test_shipped_defaults() {
  const char* source_root = g_getenv("SIDEBUS_SOURCE_ROOT");
  if (source_root == nullptr) {
    g_test_skip("SIDEBUS_SOURCE_ROOT is not set (run through meson test)");
    return;
  }
  g_autofree char* dir = g_build_filename(source_root, "data", "sidebus.d", nullptr);
  g_autoptr(GError) error = nullptr;
  auto config = Config::load({dir}, "", &error);
  g_assert_no_error(error);
  g_assert_cmpuint(config->files().size(), >=, 1);
  g_assert_false(config->portal_enabled("filechooser"));
  g_assert_false(config->portal_enabled("openuri"));
  assert_strings(strings_in(*config, "openuri", "schemes"), {"http", "https", "mailto"});
  g_assert_cmpuint(config->limits().max_pending_requests, ==, Config::BrokerLimits{}.max_pending_requests);
  g_assert_cmpuint(config->limits().link.traffic.max_message_size, ==, Config::BrokerLimits{}.link.traffic.max_message_size);
  assert_no_warnings();
}

}  // namespace

int main(int argc, char** argv) {
  g_test_init(&argc, &argv, nullptr);
  g_log_set_writer_func(capture_writer, nullptr, nullptr);

  g_test_add_func("/config/default-dirs", test_default_dirs);
  g_test_add_func("/config/precedence", test_precedence);
  g_test_add_func("/config/lexical-order", test_lexical_order);
  g_test_add_func("/config/per-vm", test_per_vm);
  g_test_add_func("/config/null-deletes", test_null_deletes);
  g_test_add_func("/config/arrays-replace", test_arrays_replace);
  g_test_add_func("/config/values-replace-objects", test_values_replace_objects);
  g_test_add_func("/config/malformed", test_malformed);
  g_test_add_func("/config/wrong-types", test_wrong_types);
  g_test_add_func("/config/plugin-schema", test_plugin_schema);
  g_test_add_func("/config/never-half-applied", test_never_half_applied);
  g_test_add_func("/config/vm-names", test_vm_names);
  g_test_add_func("/config/missing-dirs", test_missing_dirs);
  g_test_add_func("/config/ignored-files", test_ignored_files);
  g_test_add_func("/config/too-large", test_too_large);
  g_test_add_func("/config/broker-limits", test_broker_limits);
  g_test_add_func("/config/document-retention", test_document_retention);
  g_test_add_func("/config/unknown-keys", test_unknown_keys);
  g_test_add_func("/config/portal-section-lifetime", test_portal_section_lifetime);
  g_test_add_func("/config/enabled-portals", test_enabled_portals);
  g_test_add_func("/config/shipped-defaults", test_shipped_defaults);
  return g_test_run();
}
