// SPDX-License-Identifier: LGPL-2.1-or-later
// process.hpp — running a test and its children: add_test() (a test body
// whose FixtureError fails that test after the destructors ran), the test
// environment (env_path, env_or), wait_until() (the one way a test waits:
// iterating the main context until a condition holds), and ChildProcess, a
// child in its own process group that cannot outlive the test.
//
// Teardown is the point: nothing may outlive a test, whether it passes, fails
// or crashes.
//  - Every child runs in its own process group and gets SIGKILL if the test
//    process dies (PR_SET_PDEATHSIG); the test process is a child subreaper,
//    so what a child leaves behind (D-Bus activated services, the broker's
//    helpers) is reparented to it and reaped.
//  - ~ChildProcess stops the child (SIGTERM, then SIGKILL), then its group,
//    and prints the child's log (g_test_message) when the test failed.
//  - Temp directories are swept and watched by a janitor: temp-dir.hpp.
//
// Paths come from the test environment (tests/meson.build): SIDEBUS_BROKER,
// SIDEBUS_AGENT, SIDEBUS_PLUGIN_DIR, SIDEBUS_TEST_BACKEND, SIDEBUS_SOURCE_ROOT.
#pragma once

#include <glib.h>
#include <sys/types.h>

#include <chrono>
#include <functional>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace sidebus::test {

using namespace std::chrono_literals;
using Timeout = std::chrono::milliseconds;
inline constexpr Timeout kDefaultTimeout = 20s;

// ---- Running tests ----------------------------------------------------------
// What the support library throws when it cannot set something up.
class FixtureError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// g_test_add_func() for C++ bodies: a FixtureError (or any exception) fails
// this test with its message, after the destructors cleaned up.
void add_test(const char* path, std::function<void()> body);

// Whether the running test has failed or an exception is unwinding (then the
// destructors print the children's logs).
bool test_failing();

// $name, or FixtureError if it is unset (run the test through `meson test`).
std::string env_path(const char* name);
// $name, or @fallback if it is unset.
std::string env_or(const char* name, const std::string& fallback = "");

// Iterates the thread-default main context until @predicate holds (checked at
// least every 10 ms) or @timeout passes. Returns the predicate's last value.
bool wait_until(const std::function<bool()>& predicate, Timeout timeout = kDefaultTimeout);

// ---- ChildProcess -----------------------------------------------------------
// A user to run a child as (setresuid/setresgid, no supplementary groups).
struct Identity {
  uid_t uid;
  gid_t gid;
};
inline constexpr Identity kNobody{65534, 65534};

struct ExitStatus {
  bool exited = false;  // exited normally, with @code
  int code = -1;
  int signal = 0;       // or killed by @signal
  bool success() const { return exited && code == 0; }
  std::string describe() const;
};

struct SpawnOptions {
  std::string name;                         // for messages
  std::vector<std::string> argv;            // argv[0] is looked up in PATH
  std::map<std::string, std::string> env;   // set on top of the test's environment
  std::vector<std::string> unset_env;
  std::string cwd;
  std::string stdout_path;                  // appended to; empty: /dev/null
  std::string stderr_path;                  // empty: same as stdout_path
  std::optional<Identity> identity;
  std::vector<std::pair<int, int>> fds;     // (fd here, fd number in the child)
};

// A child in its own process group, killed if the test process dies.
class ChildProcess {
 public:
  explicit ChildProcess(SpawnOptions options);
  ~ChildProcess();  // stop(), then SIGTERM/SIGKILL what is left of its group
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  pid_t pid() const { return pid_; }
  const std::string& name() const { return options_.name; }
  bool running();
  // The exit status once it exited (reaped), or nullopt on timeout. Polls
  // without iterating the main context (use wait_until() for that).
  std::optional<ExitStatus> wait_for_exit(Timeout timeout);
  // SIGTERM to the process (not its group), wait, SIGKILL after @timeout.
  ExitStatus stop(Timeout timeout = 10s);
  void send_signal(int signo);
  // What it wrote to stdout_path (and stderr_path if different).
  std::string log() const;

 private:
  void stop_group();
  SpawnOptions options_;
  pid_t pid_ = -1;
  std::optional<ExitStatus> status_;
};

}  // namespace sidebus::test
