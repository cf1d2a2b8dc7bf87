// fixture.hpp — the process topology every integration test runs in, as RAII
// pieces: a host bus with the real xdg-desktop-portal and the scripted test
// backend (HostPortal), a guest session bus (GuestBus), the broker (Broker),
// the agent (Agent), and all of them wired together (Topology). Each piece is
// usable on its own.
//
// Teardown is the point: nothing may outlive a test, whether it passes, fails
// or crashes.
//  - Every child runs in its own process group and gets SIGKILL if the test
//    process dies (PR_SET_PDEATHSIG); the test process is a child subreaper,
//    so what a child leaves behind (D-Bus activated services, the broker's
//    helpers) is reparented to it and reaped.
//  - Destructors stop each child (SIGTERM, then SIGKILL), then its group.
//  - Every TempDir is finally swept: processes still referencing it (argv,
//    environment, cwd) are killed, mounts under it are unmounted, it is
//    removed. A sweep that finds something counts it in leftovers_swept().
//  - A janitor process (forked once, in its own session) outlives an aborted
//    test (a failed g_assert, a crash, a meson timeout), prints the logs of
//    the directories that were not torn down and sweeps them.
//
// Failures of the fixture itself throw FixtureError; register tests with
// add_test() so such a failure fails that test after the destructors ran.
// Children's output goes to <name>.log in their TempDir; when a test fails,
// the destructors print those logs (g_test_message).
//
// Paths come from the test environment (tests/meson.build): SIDEBUS_BROKER,
// SIDEBUS_AGENT, SIDEBUS_PLUGIN_DIR, SIDEBUS_TEST_BACKEND, SIDEBUS_SOURCE_ROOT.
#pragma once

#include <gio/gio.h>
#include <sys/types.h>

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "util/gobject-ptr.hpp"

namespace sidebus::test {

using namespace std::chrono_literals;
using Timeout = std::chrono::milliseconds;
inline constexpr Timeout kDefaultTimeout = 20s;

// ---- Owning pointers for the GLib types in this API -------------------------
using sidebus::GObjectPtr;
using sidebus::VariantPtr;

// ---- Running tests ----------------------------------------------------------
class FixtureError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// g_test_add_func() for C++ bodies: a FixtureError (or any exception) fails
// this test with its message, after the fixture's destructors cleaned up.
void add_test(const char* path, std::function<void()> body);

// ---- Helpers ----------------------------------------------------------------
// $name, or FixtureError if it is unset (run the test through `meson test`).
std::string env_path(const char* name);

// Iterates the thread-default main context until @predicate holds (checked at
// least every 10 ms) or @timeout passes. Returns the predicate's last value.
bool wait_until(const std::function<bool()>& predicate, Timeout timeout = kDefaultTimeout);

// Mount points at or below @dir, from /proc/self/mountinfo.
std::vector<std::string> mounts_under(const std::string& dir);
bool is_mounted(const std::string& path);
// Live processes (not this one) whose argv, environment or cwd mention @dir.
std::vector<pid_t> processes_referencing(const std::string& dir);
// How many stray processes and mounts TempDir sweeps had to clean up so far:
// the orderly teardown should leave them nothing, so tests may assert 0.
size_t leftovers_swept();

// GVariant text of @type (FixtureError if it does not parse), sunk.
VariantPtr parse(const char* type, const std::string& text);
// file:// URI of an absolute path, and back (FixtureError if not a file URI).
std::string uri_for(const std::string& path);
std::string path_of(const std::string& uri);

// A user to run a child as (setresuid/setresgid, no supplementary groups).
struct Identity {
  uid_t uid;
  gid_t gid;
};
inline constexpr Identity kNobody{65534, 65534};

// ---- TempDir ----------------------------------------------------------------
// <tmp>/<prefix>-XXXXXX, mode 0755 (other uids can reach sockets in it).
class TempDir {
 public:
  explicit TempDir(const char* prefix);
  ~TempDir();  // sweeps it (see above) and removes it
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }
  std::string make_dir(const std::string& name, mode_t mode = 0755) const;  // with parents
  std::string write_file(const std::string& name, const std::string& contents) const;  // with parents
  void give_to(const Identity& identity) const;  // chown the directory itself

 private:
  std::string path_;
};

// ---- ChildProcess -----------------------------------------------------------
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

// ---- PortalRequest ----------------------------------------------------------
// One call of a portal method that answers through a Request object: makes
// the call and collects the Request::Response signal, on any bus (host or
// guest). @parameters (floating is fine) carry the options with a
// handle_token, as clients send them. Responses are matched by the handle
// the call returns, so the request path convention is not assumed.
class PortalRequest {
 public:
  PortalRequest(GDBusConnection* connection, const char* bus_name, const char* interface_name, const char* method,
                GVariant* parameters);
  ~PortalRequest();
  PortalRequest(const PortalRequest&) = delete;
  PortalRequest& operator=(const PortalRequest&) = delete;

  const GError* error() const { return error_; }  // the call failed (then no handle)
  const std::string& handle() const { return handle_; }
  bool wait_for_response(Timeout timeout = kDefaultTimeout);
  bool responded() const { return response_.has_value(); }
  guint32 response() const { return response_.value_or(G_MAXUINT32); }
  GVariant* results() const { return results_.get(); }  // a{sv}, borrowed
  // org.freedesktop.portal.Request.Close on the handle; false with @error set on failure.
  bool close(GError** error = nullptr);

 private:
  static void on_response(GDBusConnection*, const char*, const char* path, const char*, const char*,
                          GVariant* parameters, gpointer user_data);
  GObjectPtr<GDBusConnection> connection_;
  std::string bus_name_;
  guint subscription_ = 0;
  GError* error_ = nullptr;
  std::string handle_;
  std::map<std::string, std::pair<guint32, VariantPtr>> responses_;  // by request path
  std::optional<guint32> response_;
  VariantPtr results_;
};

// ---- HostPortal -------------------------------------------------------------
// A host session bus (dbus-daemon, no standard service directories: nothing
// of the system's can be activated on it) with the test backend and the real
// /usr/libexec/xdg-desktop-portal (XDG_DESKTOP_PORTAL_DIR = tests/portals,
// XDG_CURRENT_DESKTOP = sidebus-test, XDG_* and HOME in the temp dir, no
// system bus). xdg-permission-store is D-Bus activatable on it (OpenURI keeps
// choices there); the document portal is not needed: xdg-desktop-portal only
// registers documents for sandboxed callers, and the broker is a host client.
// The constructor returns when org.freedesktop.portal.Desktop is owned.
// $SIDEBUS_XDG_DESKTOP_PORTAL overrides the daemon's path.
inline constexpr guint32 kResponseSuccess = 0;
inline constexpr guint32 kResponseCancelled = 1;
inline constexpr guint32 kResponseOther = 2;
// Backend-only: never answer until the request is closed (then answer 2).
inline constexpr guint32 kResponseWaitForClose = 0xFFFFFFFF;
// Backend-only: fail the backend call with a D-Bus error.
inline constexpr guint32 kResponseDBusError = 0xFFFFFFFE;

// One call the test backend received (dev.sidebus.test.Backend.GetCalls).
struct BackendCall {
  std::string method;         // "OpenFile", "SaveFile", "SaveFiles", "ChooseApplication", "UpdateChoices"
  std::string handle;
  std::string app_id;
  std::string parent_window;
  std::string title;          // FileChooser methods
  VariantPtr options;         // a{sv} as xdg-desktop-portal sent it (empty for UpdateChoices)
  bool closed = false;        // Request.Close reached the backend
  bool answered = false;
  guint32 response = 0;       // when answered
  VariantPtr record;          // the whole a{sv} record (e.g. "choices" for AppChooser)
};

struct HostPortalOptions {
  // Written under the temp dir before anything starts, path → contents.
  // XDG_DATA_HOME is "data", so "data/applications/<id>.desktop" gives
  // OpenURI an application to offer and launch (GLib finds handlers for a
  // type only through "data/applications/mimeinfo.cache": write it too).
  std::vector<std::pair<std::string, std::string>> files;
  // Extra environment of the test backend and xdg-desktop-portal (on top of
  // the fixture's), e.g. HostPipeWire::env().
  std::map<std::string, std::string> env;
};

class HostPortal {
 public:
  explicit HostPortal(HostPortalOptions options = {});
  ~HostPortal();
  HostPortal(const HostPortal&) = delete;
  HostPortal& operator=(const HostPortal&) = delete;

  const std::string& bus_address() const { return bus_address_; }
  GDBusConnection* connection() const { return connection_.get(); }  // the test's own, borrowed
  const TempDir& dir() const { return dir_; }
  ChildProcess& portal() { return *portal_; }
  ChildProcess& backend() { return *backend_; }

  // Every later call of backend @method ("OpenFile", …) answers @response
  // with @results (a{sv}, floating is fine; NULL: empty) after @delay_ms.
  void set_reply(const char* method, guint32 response, GVariant* results = nullptr, guint32 delay_ms = 0);
  std::vector<BackendCall> backend_calls();
  bool wait_for_backend_calls(size_t count, Timeout timeout = kDefaultTimeout);
  void reset_backend();

 private:
  TempDir dir_;
  std::unique_ptr<ChildProcess> bus_;
  std::string bus_address_;
  GObjectPtr<GDBusConnection> connection_;
  std::unique_ptr<ChildProcess> backend_;
  std::unique_ptr<ChildProcess> portal_;
};

// ---- GuestBus ---------------------------------------------------------------
// A dbus-daemon standing for the VM's session bus, optionally run as another
// user. Such a bus accepts only its own uid, so:
//  - run_as_guest() runs a real client (e.g. `gdbus call`) as that uid;
//  - connection(), the test's own client, is root: with allow_root_client
//    (the default) the bus config adds <allow user="root"/> for it. This does
//    not weaken what the agent is tested for: the daemon still checks that
//    the identity a client claims is its socket's peer uid.
struct GuestBusOptions {
  std::optional<Identity> identity;            // nullopt: same user as the test
  bool allow_root_client = true;
  std::map<std::string, std::string> services;  // activatable: bus name → Exec line
};

class GuestBus {
 public:
  explicit GuestBus(GuestBusOptions options = {});
  ~GuestBus();
  GuestBus(const GuestBus&) = delete;
  GuestBus& operator=(const GuestBus&) = delete;

  const std::string& address() const { return address_; }
  const std::optional<Identity>& identity() const { return options_.identity; }
  const TempDir& dir() const { return dir_; }
  GDBusConnection* connection();  // connects on first use, borrowed

  struct Output {
    ExitStatus status;
    std::string out;
    std::string err;
  };
  // Runs @argv as the guest user with DBUS_SESSION_BUS_ADDRESS = this bus;
  // killed after @timeout.
  Output run_as_guest(const std::vector<std::string>& argv, Timeout timeout = kDefaultTimeout);

 private:
  GuestBusOptions options_;
  TempDir dir_;
  std::unique_ptr<ChildProcess> bus_;
  std::string address_;
  GObjectPtr<GDBusConnection> connection_;
  int clients_run_ = 0;
};

// ---- Broker -----------------------------------------------------------------
struct BrokerOptions {
  std::string host_bus_address;           // required
  std::vector<std::string> listen;        // default: unix:<dir>/link.sock
  std::string vm_name = "testvm";
  // Default: <runtime-dir>/doc/by-app/<app id>, this VM's view of the
  // document mount (what a VMM shares), so clients of a guest bus on this
  // machine can open the files they are given.
  std::string guest_documents_path;
  std::string state_dir;                  // default: <dir>/state (pass one to survive a restart)
  // JSON drop-ins written to the --config-dir before start, file name →
  // text, e.g. {"50-filechooser.json", R"({"portals":{"filechooser":{"enabled":true}}})"}.
  std::vector<std::pair<std::string, std::string>> config;
  std::string plugin_dir;                 // default: $SIDEBUS_PLUGIN_DIR
  std::vector<std::string> extra_args;
  bool verbose = true;
  bool wait_for_listen = true;            // return once unix: listen sockets exist
};

class Broker {
 public:
  explicit Broker(BrokerOptions options);
  ~Broker();
  Broker(const Broker&) = delete;
  Broker& operator=(const Broker&) = delete;

  // The first --listen address as given ("unix:PATH,nofds"), and as an agent
  // connects to it (listen options dropped: "unix:PATH").
  const std::string& listen_address() const { return options_.listen.front(); }
  std::string link_address() const;
  const std::string& runtime_dir() const { return runtime_dir_; }
  const std::string& state_dir() const { return options_.state_dir; }
  const std::string& config_dir() const { return config_dir_; }
  const TempDir& dir() const { return dir_; }
  ChildProcess& process() { return *process_; }
  ExitStatus stop(Timeout timeout = 10s) { return process_->stop(timeout); }
  std::optional<ExitStatus> wait_for_exit(Timeout timeout) { return process_->wait_for_exit(timeout); }

 private:
  BrokerOptions options_;
  TempDir dir_;
  std::string runtime_dir_;
  std::string config_dir_;
  std::unique_ptr<ChildProcess> process_;
};

// ---- Agent ------------------------------------------------------------------
struct AgentOptions {
  std::string connect;                    // e.g. the broker's link_address()
  std::string guest_bus_address;          // its DBUS_SESSION_BUS_ADDRESS
  std::optional<Identity> identity;       // run as the guest user
  std::vector<std::string> extra_args;
};

class Agent {
 public:
  explicit Agent(AgentOptions options);
  ~Agent();
  Agent(const Agent&) = delete;
  Agent& operator=(const Agent&) = delete;

  const TempDir& dir() const { return dir_; }
  ChildProcess& process() { return *process_; }
  ExitStatus stop(Timeout timeout = 10s) { return process_->stop(timeout); }
  std::optional<ExitStatus> wait_for_exit(Timeout timeout) { return process_->wait_for_exit(timeout); }

 private:
  AgentOptions options_;
  TempDir dir_;
  std::unique_ptr<ChildProcess> process_;
};

// ---- Topology ---------------------------------------------------------------
// HostPortal + GuestBus + Broker (on the host bus) + Agent (broker link →
// guest bus). Unless told otherwise, returns once the broker owns
// org.freedesktop.portal.Desktop on the guest bus.
struct TopologyOptions {
  HostPortalOptions host;
  GuestBusOptions guest;                   // the agent runs as guest.identity too
  BrokerOptions broker;                    // host_bus_address is filled in
  std::vector<std::string> agent_args;
  bool start_agent = true;
  bool wait_for_portal = true;
};

class Topology {
 public:
  explicit Topology(TopologyOptions options = {});
  ~Topology();

  HostPortal& host() { return *host_; }
  GuestBus& guest() { return *guest_; }
  Broker& broker() { return *broker_; }
  Agent& agent() { return *agent_; }  // start_agent only
  // Starts (or restarts) the agent.
  void start_agent();

  // Until @name has an owner on the guest bus; false on timeout or when the
  // broker or the agent exits first.
  bool wait_for_guest_name(const char* name, Timeout timeout = kDefaultTimeout);
  // Introspection XML of @path at @name on the guest bus.
  std::string guest_introspect(const char* path = "/org/freedesktop/portal/desktop",
                               const char* name = "org.freedesktop.portal.Desktop");

 private:
  TopologyOptions options_;
  std::unique_ptr<HostPortal> host_;
  std::unique_ptr<GuestBus> guest_;
  std::unique_ptr<Broker> broker_;
  std::unique_ptr<Agent> agent_;
};

}  // namespace sidebus::test
