// SPDX-License-Identifier: LGPL-2.1-or-later
// test-parts.cpp — the two parts a distribution packages separately, built
// from this source tree the way a packager would:
//  - -Dhost=false (the guest image): configured and compiled with a
//    pkg-config that cannot see libpeas, json-glib, xdg-desktop-portal or
//    any test dependency, so the guest part really needs GLib/GIO only; it
//    installs the agent, its activation file (under sidebus's own name, never
//    xdg-desktop-portal's), its user unit and its man page, and nothing of
//    the host's;
//  - -Dguest=false (the host): what it would install (meson introspect,
//    without compiling it all again) holds the broker, sidebusctl, the
//    plugins, both kinds of broker units and the host's man pages, and no
//    agent.
#include <glib.h>
#include <sys/wait.h>

#include <algorithm>
#include <string>
#include <vector>

#include "support/files.hpp"
#include "support/process.hpp"
#include "support/temp-dir.hpp"

using namespace sidebus::test;

namespace {

std::string run(const std::vector<std::string>& argv,
                const std::vector<std::pair<std::string, std::string>>& env = {}) {
  std::vector<const char*> args;
  for (const std::string& arg : argv) args.push_back(arg.c_str());
  args.push_back(nullptr);
  g_auto(GStrv) envp = g_get_environ();
  for (const auto& [name, value] : env) envp = g_environ_setenv(envp, name.c_str(), value.c_str(), TRUE);
  g_autofree char* out = nullptr;
  g_autofree char* err = nullptr;
  int wait_status = 0;
  g_autoptr(GError) error = nullptr;
  if (!g_spawn_sync(nullptr, const_cast<char**>(args.data()), envp, G_SPAWN_SEARCH_PATH, nullptr, nullptr, &out, &err,
                    &wait_status, &error))
    throw FixtureError("cannot run " + argv[0] + ": " + error->message);
  if (!g_spawn_check_wait_status(wait_status, nullptr)) {
    std::string command;
    for (const std::string& arg : argv) command += arg + " ";
    throw FixtureError(command + "failed:\n" + out + err);
  }
  return out;
}

// Every file below @root, relative to it.
std::vector<std::string> files_below(const std::string& root) {
  std::vector<std::string> files;
  std::string out = run({"find", root, "-type", "f", "-printf", "%P\\n"});
  for (size_t start = 0, end; (end = out.find('\n', start)) != std::string::npos; start = end + 1)
    files.push_back(out.substr(start, end - start));
  return files;
}

bool has_file_named(const std::vector<std::string>& files, const std::string& name) {
  return std::any_of(files.begin(), files.end(), [&](const std::string& file) {
    return file == name || (file.size() > name.size() && file.ends_with("/" + name));
  });
}

// A pkg-config search path with every .pc file of this machine but those
// only the host part (and the tests) may need.
std::string pkg_config_without_host_dependencies(const TempDir& dir) {
  const std::vector<std::string> hidden = {"json-glib-1.0.pc",      "libpeas-1.0.pc", "libpeas-gtk-1.0.pc",
                                           "xdg-desktop-portal.pc", "libportal.pc",   "libpipewire-0.3.pc"};
  std::string pc_dir = dir.make_dir("pkgconfig");
  std::string search = run({"pkg-config", "--variable", "pc_path", "pkg-config"});
  g_auto(GStrv) dirs = g_strsplit(g_strstrip(search.data()), ":", -1);
  for (char** d = dirs; *d != nullptr; d++) {
    g_autoptr(GDir) handle = g_dir_open(*d, 0, nullptr);
    while (const char* name = handle != nullptr ? g_dir_read_name(handle) : nullptr) {
      std::string link = pc_dir + "/" + name;
      if (!g_str_has_suffix(name, ".pc") || std::find(hidden.begin(), hidden.end(), name) != hidden.end() ||
          g_file_test(link.c_str(), G_FILE_TEST_EXISTS))
        continue;
      if (symlink((std::string(*d) + "/" + name).c_str(), link.c_str()) != 0) throw FixtureError("cannot link " + link);
    }
  }
  return pc_dir;
}

void test_guest_part_needs_glib_only() {
  TempDir dir("sidebus-test-parts");
  std::string pc_dir = pkg_config_without_host_dependencies(dir);
  std::vector<std::pair<std::string, std::string>> env = {{"PKG_CONFIG_LIBDIR", pc_dir}, {"PKG_CONFIG_PATH", ""}};
  // The hidden packages are really out of sight.
  run({"sh", "-c",
       "! pkg-config --exists json-glib-1.0 && ! pkg-config --exists libpeas-1.0 && pkg-config --exists gio-unix-2.0"},
      env);
  std::string build = dir / "build-guest";
  run({"meson", "setup", build, env_path("SIDEBUS_SOURCE_ROOT"), "-Dhost=false", "-Dprefix=/usr"}, env);
  run({"meson", "compile", "-C", build}, env);
  std::string root = dir.make_dir("root");
  run({"meson", "install", "-C", build, "--destdir", root, "--no-rebuild", "--quiet"}, env);
  std::vector<std::string> files = files_below(root);
  for (const char* wanted : {"usr/bin/sidebus-agent", "usr/share/dbus-1/services/dev.sidebus.portal.Desktop.service",
                             "usr/lib/systemd/user/sidebus-agent.service", "usr/share/doc/sidebus/LICENSE"})
    if (std::find(files.begin(), files.end(), wanted) == files.end()) g_error("the guest part lacks %s", wanted);
  if (g_find_program_in_path("scdoc") != nullptr) g_assert_true(has_file_named(files, "sidebus-agent.1"));
  for (const char* unwanted :
       {"sidebus-broker", "sidebusctl", "sidebus-broker@.service", "sidebus-plugin.h", "10-defaults.json",
        "org.freedesktop.portal.Desktop.service", "sidebus-broker.8", "libfilechooser.so"})
    if (has_file_named(files, unwanted)) g_error("the guest part installs the host's %s", unwanted);
  // What it links: GLib, and nothing of the host's libraries.
  std::string libraries = run({"ldd", build + "/core/agent/sidebus-agent"});
  g_assert_true(libraries.find("libgio-2.0") != std::string::npos);
  g_assert_true(libraries.find("json-glib") == std::string::npos);
  g_assert_true(libraries.find("libpeas") == std::string::npos);
}

void test_host_part_installs_no_agent() {
  TempDir dir("sidebus-test-parts");
  std::string build = dir / "build-host";
  run({"meson", "setup", build, env_path("SIDEBUS_SOURCE_ROOT"), "-Dguest=false", "-Dtests=false", "-Dprefix=/usr"});
  std::string installed = run({"meson", "introspect", "--installed", build});
  for (const char* wanted :
       {"/usr/libexec/sidebus-broker", "/usr/bin/sidebusctl", "/usr/lib/systemd/user/sidebus-broker@.service",
        "/usr/lib/systemd/system/sidebus-broker@.service", "/usr/lib/systemd/system/sidebus-broker@.socket",
        "libfilechooser.so", "/usr/share/sidebus/sidebus.d/10-defaults.json"})
    if (installed.find(wanted) == std::string::npos) g_error("the host part lacks %s:\n%s", wanted, installed.c_str());
  if (g_find_program_in_path("scdoc") != nullptr) {
    g_assert_true(installed.find("man8/sidebus-broker.8") != std::string::npos);
    g_assert_true(installed.find("man5/sidebus.d.5") != std::string::npos);
    g_assert_true(installed.find("man1/sidebusctl.1") != std::string::npos);
  }
  for (const char* unwanted : {"sidebus-agent", "dev.sidebus.portal.Desktop.service"})
    if (installed.find(unwanted) != std::string::npos) g_error("the host part installs the guest's %s", unwanted);
}

}  // namespace

int main(int argc, char** argv) {
  g_test_init(&argc, &argv, nullptr);
  add_test("/parts/guest-needs-glib-only", test_guest_part_needs_glib_only);
  add_test("/parts/host-installs-no-agent", test_host_part_installs_no_agent);
  return g_test_run();
}
