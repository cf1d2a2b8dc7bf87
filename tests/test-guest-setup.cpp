// SPDX-License-Identifier: LGPL-2.1-or-later
// test-guest-setup.cpp — the files a guest image gets (data/guest/; the
// agent's user unit is test-units') are what systemd takes, checked with systemd's own
// tools: the environment.d snippet through the real environment.d generator
// (what the user manager would put in every session's environment), and the
// units through `systemd-analyze verify`. Each skips, saying why, where the
// tool is missing.
#include <gio/gio.h>
#include <glib/gstdio.h>

#include <map>
#include <string>
#include <vector>

namespace {

std::string env_path(const char* name) {
  const char* value = g_getenv(name);
  if (value == nullptr) g_error("$%s is unset: run through meson test", name);
  return value;
}

std::string contents_of(const std::string& path) {
  g_autofree char* text = nullptr;
  g_autoptr(GError) error = nullptr;
  if (!g_file_get_contents(path.c_str(), &text, nullptr, &error)) g_error("%s", error->message);
  return text;
}

struct Run {
  bool ran = false;
  int status = -1;
  std::string output;  // stdout and stderr
};

Run run(const std::vector<std::string>& argv, const std::map<std::string, std::string>& env) {
  std::vector<const char*> args;
  for (const std::string& arg : argv) args.push_back(arg.c_str());
  args.push_back(nullptr);
  std::vector<std::string> env_strings;
  for (const auto& [name, value] : env) env_strings.push_back(name + "=" + value);
  std::vector<const char*> envp;
  for (const std::string& entry : env_strings) envp.push_back(entry.c_str());
  envp.push_back(nullptr);
  Run result;
  g_autofree char* out = nullptr;
  g_autofree char* err = nullptr;
  g_autoptr(GError) error = nullptr;
  result.ran = g_spawn_sync(nullptr, const_cast<char**>(args.data()), const_cast<char**>(envp.data()),
                            G_SPAWN_SEARCH_PATH, nullptr, nullptr, &out, &err, &result.status, &error);
  if (!result.ran) g_error("cannot run %s: %s", argv[0].c_str(), error->message);
  result.output = std::string(out ? out : "") + (err ? err : "");
  return result;
}

std::string first_executable(std::initializer_list<const char*> paths) {
  for (const char* path : paths)
    if (g_file_test(path, G_FILE_TEST_IS_EXECUTABLE)) return path;
  return "";
}

void skip(const std::string& why) {
  g_test_skip(why.c_str());
  g_printerr("# skipped: %s\n", why.c_str());
}

struct ScratchDir {
  std::string path;
  ScratchDir() {
    g_autofree char* made = g_dir_make_tmp("sidebus-test-guest-XXXXXX", nullptr);
    path = made;
  }
  ~ScratchDir() { run({"rm", "-rf", path}, {{"PATH", "/usr/bin:/bin"}}); }
  std::string write(const std::string& name, const std::string& text) const {
    std::string file = path + "/" + name;
    g_autofree char* dir = g_path_get_dirname(file.c_str());
    g_mkdir_with_parents(dir, 0755);
    g_file_set_contents(file.c_str(), text.c_str(), -1, nullptr);
    return file;
  }
};

// Every setting of the snippet is a plain NAME=value line, and the user
// manager's generator hands exactly those values to sessions.
void test_environment_d() {
  const std::string snippet = contents_of(env_path("SIDEBUS_SOURCE_ROOT") + "/data/guest/60-sidebus-portals.conf");
  std::map<std::string, std::string> expected;
  g_auto(GStrv) lines = g_strsplit(snippet.c_str(), "\n", -1);
  for (char** line = lines; *line != nullptr; line++) {
    if (**line == '\0' || **line == '#') continue;
    g_autoptr(GRegex) assignment =
        g_regex_new("^([A-Z_][A-Z0-9_]*)=([^\\s$\"'\\\\]+)$", GRegexCompileFlags(0), GRegexMatchFlags(0), nullptr);
    g_autoptr(GMatchInfo) match = nullptr;
    if (!g_regex_match(assignment, *line, GRegexMatchFlags(0), &match))
      g_error("60-sidebus-portals.conf: not a plain NAME=value line: \"%s\"", *line);
    g_autofree char* name = g_match_info_fetch(match, 1);
    g_autofree char* value = g_match_info_fetch(match, 2);
    expected[name] = value;
  }
  for (const char* name : {"GTK_USE_PORTAL", "GDK_DEBUG", "GIO_USE_PORTALS", "QT_QPA_PLATFORMTHEME"})
    g_assert_true(expected.count(name) == 1);

  std::string generator =
      first_executable({"/usr/lib/systemd/user-environment-generators/30-systemd-environment-d-generator",
                        "/lib/systemd/user-environment-generators/30-systemd-environment-d-generator"});
  if (generator.empty()) return skip("no systemd environment.d generator (30-systemd-environment-d-generator)");
  ScratchDir config;
  config.write("environment.d/60-sidebus-portals.conf", snippet);
  Run generated = run({generator}, {{"XDG_CONFIG_HOME", config.path}, {"PATH", "/usr/bin:/bin"}});
  g_assert_cmpint(generated.status, ==, 0);
  std::map<std::string, std::string> environment;
  g_auto(GStrv) entries = g_strsplit(generated.output.c_str(), "\n", -1);
  for (char** entry = entries; *entry != nullptr; entry++)
    if (const char* equals = strchr(*entry, '=')) environment[std::string(*entry, equals - *entry)] = equals + 1;
  for (const auto& [name, value] : expected) {
    if (environment[name] != value)
      g_error("the environment.d generator gives %s=%s, the snippet says %s", name.c_str(), environment[name].c_str(),
              value.c_str());
  }
}

// systemd-analyze verify finds nothing to say about our units (a warning
// naming one of them fails the test).
void verify_units(const std::vector<std::string>& units) {
  g_autofree char* analyze = g_find_program_in_path("systemd-analyze");
  if (analyze == nullptr) return skip("no systemd-analyze");
  ScratchDir runtime;
  std::vector<std::string> argv = {analyze};
  argv.insert(argv.end(), {"verify", "--man=no"});  // man pages need not be installed
  argv.insert(argv.end(), units.begin(), units.end());
  Run verified = run(
      argv,
      {{"PATH", "/usr/bin:/bin:/usr/sbin:/sbin"}, {"XDG_RUNTIME_DIR", runtime.path}, {"SYSTEMD_LOG_LEVEL", "notice"}});
  g_test_message("systemd-analyze verify: %s", verified.output.c_str());
  g_assert_cmpint(verified.status, ==, 0);
  for (const std::string& unit : units) {
    g_autofree char* name = g_path_get_basename(unit.c_str());
    if (verified.output.find(name) != std::string::npos)
      g_error("systemd-analyze verify complains about %s:\n%s", name, verified.output.c_str());
  }
}

void test_documents_mount_unit() {
  verify_units({env_path("SIDEBUS_BUILD_ROOT") + "/data/run-sidebus-documents.mount"});
}


}  // namespace

int main(int argc, char** argv) {
  g_test_init(&argc, &argv, nullptr);
  g_test_add_func("/guest-setup/environment-d", test_environment_d);
  g_test_add_func("/guest-setup/documents-mount-unit", test_documents_mount_unit);
  return g_test_run();
}
