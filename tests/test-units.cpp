// SPDX-License-Identifier: LGPL-2.1-or-later
// test-units.cpp — the shipped systemd units as systemd reads them:
// `systemd-analyze verify` of the user and system broker units (an
// instance of the template with its socket) and the agent's user unit, with
// the paths of this build filled in. A unit systemd warns about fails the
// test, and so must a planted mistake (the check is not vacuous). Skipped,
// saying so, where systemd-analyze is not installed.
#include <glib.h>
#include <sys/wait.h>

#include <string>
#include <vector>

#include "support/files.hpp"
#include "support/process.hpp"
#include "support/temp-dir.hpp"

using namespace sidebus::test;

namespace {

struct Verdict {
  bool ok = false;
  std::string output;
};

// `systemd-analyze [--user] verify --man=no UNITS…`; ok when it exits 0
// and has nothing to say.
Verdict verify(bool user, const std::vector<std::string>& units, const std::string& runtime_dir) {
  std::vector<std::string> argv = {"systemd-analyze"};
  if (user) argv.push_back("--user");
  argv.insert(argv.end(), {"verify", "--man=no"});
  argv.insert(argv.end(), units.begin(), units.end());
  std::vector<const char*> args;
  for (const std::string& arg : argv) args.push_back(arg.c_str());
  args.push_back(nullptr);
  g_auto(GStrv) envp = g_environ_setenv(g_get_environ(), "XDG_RUNTIME_DIR", runtime_dir.c_str(), TRUE);
  g_autofree char* out = nullptr;
  g_autofree char* err = nullptr;
  int wait_status = 0;
  g_autoptr(GError) error = nullptr;
  if (!g_spawn_sync(nullptr, const_cast<char**>(args.data()), envp, G_SPAWN_SEARCH_PATH, nullptr, nullptr, &out, &err,
                    &wait_status, &error))
    throw FixtureError(std::string("cannot run systemd-analyze: ") + error->message);
  Verdict verdict;
  verdict.output = std::string(out) + err;
  verdict.ok = WIFEXITED(wait_status) && WEXITSTATUS(wait_status) == 0 && verdict.output.empty();
  return verdict;
}

// data/@name with this build's programs for @libexecdir@/@bindir@.
std::string unit_text(const std::string& name) {
  std::optional<std::string> text = read_file(env_path("SIDEBUS_SOURCE_ROOT") + "/data/" + name);
  if (!text) throw FixtureError("no data/" + name);
  std::string result = *text;
  auto replace = [&](const std::string& from, const std::string& to) {
    for (size_t at = result.find(from); at != std::string::npos; at = result.find(from, at + to.size()))
      result.replace(at, from.size(), to);
  };
  replace("@libexecdir@/sidebus-broker", env_path("SIDEBUS_BROKER"));
  replace("@bindir@/sidebus-agent", env_path("SIDEBUS_AGENT"));
  replace("@docdir@", "/usr/share/doc/sidebus");
  return result;
}

bool have_systemd_analyze() {
  g_autofree char* path = g_find_program_in_path("systemd-analyze");
  if (path != nullptr) return true;
  g_test_skip("systemd-analyze is not installed (Debian: apt install systemd): the units cannot be verified");
  return false;
}

void test_system_units() {
  if (!have_systemd_analyze()) return;
  TempDir dir("sidebus-test-units");
  std::string runtime = dir.make_dir("runtime", 0700);
  dir.write_file("system/sidebus-broker@.service", unit_text("system/sidebus-broker@.service.in"));
  dir.write_file("system/sidebus-broker@.socket", unit_text("system/sidebus-broker@.socket"));
  Verdict verdict =
      verify(false, {dir / "system/sidebus-broker@vm1.service", dir / "system/sidebus-broker@vm1.socket"}, runtime);
  if (!verdict.ok) g_error("systemd-analyze verify of the system units:\n%s", verdict.output.c_str());
}

void test_user_units() {
  if (!have_systemd_analyze()) return;
  TempDir dir("sidebus-test-units");
  std::string runtime = dir.make_dir("runtime", 0700);
  dir.write_file("user/sidebus-broker@.service", unit_text("sidebus-broker@.service.in"));
  dir.write_file("user/sidebus-broker@.socket", unit_text("sidebus-broker@.socket"));
  dir.write_file("user/sidebus-agent.service", unit_text("sidebus-agent.service.in"));
  Verdict verdict = verify(true,
                           {dir / "user/sidebus-broker@vm1.service", dir / "user/sidebus-broker@vm1.socket",
                            dir / "user/sidebus-agent.service"},
                           runtime);
  if (!verdict.ok) g_error("systemd-analyze --user verify of the user units:\n%s", verdict.output.c_str());
}

// The same check on a unit with a typo fails: verify really looks.
void test_mistake_is_found() {
  if (!have_systemd_analyze()) return;
  TempDir dir("sidebus-test-units");
  std::string runtime = dir.make_dir("runtime", 0700);
  std::string text = unit_text("system/sidebus-broker@.service.in");
  size_t at = text.find("KillMode=mixed");
  g_assert_cmpuint(at, !=, std::string::npos);
  text.replace(at, strlen("KillMode=mixed"), "KillMode=mixd");
  dir.write_file("system/sidebus-broker@.service", text);
  dir.write_file("system/sidebus-broker@.socket", unit_text("system/sidebus-broker@.socket"));
  Verdict verdict = verify(false, {dir / "system/sidebus-broker@vm1.service"}, runtime);
  g_assert_false(verdict.ok);
  g_assert_true(verdict.output.find("mixd") != std::string::npos);  // "Failed to parse kill mode …: mixd"
}

}  // namespace

int main(int argc, char** argv) {
  g_test_init(&argc, &argv, nullptr);
  add_test("/units/system/verify", test_system_units);
  add_test("/units/user/verify", test_user_units);
  add_test("/units/mistake-is-found", test_mistake_is_found);
  return g_test_run();
}
