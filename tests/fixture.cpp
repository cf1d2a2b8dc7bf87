// fixture.cpp — the RAII test topology declared in fixture.hpp: temp dirs
// that are swept (and watched by a janitor process), children in their own
// process groups, the host portal stack, the guest bus, broker and agent.
#include "fixture.hpp"

#include "documents/app-id.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <glib/gstdio.h>
#include <grp.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <exception>
#include <set>

#include "sidebus-config.h"
#include "util/unique-fd.hpp"

namespace sidebus::test {
namespace {

constexpr char kPortalBusName[] = "org.freedesktop.portal.Desktop";
constexpr char kPortalPath[] = "/org/freedesktop/portal/desktop";
constexpr char kBackendBusName[] = "org.freedesktop.impl.portal.Test";
constexpr char kBackendPath[] = "/dev/sidebus/test/Backend";
constexpr char kBackendInterface[] = "dev.sidebus.test.Backend";

std::atomic<size_t> leftovers{0};

// ---- Sweeping: plain libc, because the janitor runs it in a forked child ----

std::string read_all(const std::string& path) {
  std::string data;
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return data;
  char buffer[4096];
  for (;;) {
    ssize_t n = read(fd, buffer, sizeof buffer);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    data.append(buffer, n);
  }
  close(fd);
  return data;
}

// Alive and not a zombie, from /proc/PID/stat ("pid (comm) S ...").
bool process_alive(pid_t pid) {
  std::string stat = read_all("/proc/" + std::to_string(pid) + "/stat");
  size_t paren = stat.rfind(')');
  if (paren == std::string::npos || paren + 2 >= stat.size()) return false;
  char state = stat[paren + 2];
  return state != 'Z' && state != 'X';
}

bool references(pid_t pid, const std::string& dir) {
  const std::string proc = "/proc/" + std::to_string(pid);
  if (read_all(proc + "/cmdline").find(dir) != std::string::npos) return true;
  if (read_all(proc + "/environ").find(dir) != std::string::npos) return true;
  char cwd[PATH_MAX];
  ssize_t n = readlink((proc + "/cwd").c_str(), cwd, sizeof cwd);
  if (n > 0) {
    std::string path(cwd, n);
    if (path == dir || path.starts_with(dir + "/")) return true;
  }
  return false;
}

std::string describe_process(pid_t pid) {
  std::string cmdline = read_all("/proc/" + std::to_string(pid) + "/cmdline");
  std::replace(cmdline.begin(), cmdline.end(), '\0', ' ');
  return "process " + std::to_string(pid) + ": " + cmdline;
}

// mountinfo escapes space, tab, newline and backslash as \ooo.
std::string unescape_mount_point(const std::string& escaped) {
  std::string path;
  for (size_t i = 0; i < escaped.size(); i++) {
    if (escaped[i] == '\\' && i + 3 < escaped.size()) {
      path += static_cast<char>(std::stoi(escaped.substr(i + 1, 3), nullptr, 8));
      i += 3;
    } else {
      path += escaped[i];
    }
  }
  return path;
}

bool unmount(const std::string& path) {
  if (umount2(path.c_str(), MNT_DETACH) == 0) return true;
  // Not root: our own FUSE mounts still go with fusermount.
  for (const char* tool : {"fusermount3", "fusermount"}) {
    pid_t pid = fork();
    if (pid == 0) {
      int null = open("/dev/null", O_RDWR);
      dup2(null, STDOUT_FILENO);
      dup2(null, STDERR_FILENO);
      execlp(tool, tool, "-u", "-z", path.c_str(), static_cast<char*>(nullptr));
      _exit(127);
    }
    int status = 0;
    if (pid > 0 && waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0) return true;
  }
  return false;
}

int remove_entry(const char* path, const struct stat*, int, struct FTW*) {
  remove(path);
  return 0;
}

// Kills what still references @dir, unmounts what is mounted under it and
// removes it (never crossing into a mount). Returns one line per stray.
std::vector<std::string> sweep(const std::string& dir) {
  std::vector<std::string> strays;
  for (int round = 0; round < 3; round++) {  // a killed process may have left children
    std::vector<pid_t> pids = processes_referencing(dir);
    if (pids.empty()) break;
    for (pid_t pid : pids) {
      strays.push_back(describe_process(pid));
      kill(pid, SIGKILL);
    }
    for (int i = 0; i < 400; i++) {  // up to 2 s; our children are reaped here
      bool alive = false;
      for (pid_t pid : pids) {
        waitpid(pid, nullptr, WNOHANG);
        alive = alive || process_alive(pid);
      }
      if (!alive) break;
      usleep(5000);
    }
  }
  std::vector<std::string> mounts = mounts_under(dir);
  std::sort(mounts.rbegin(), mounts.rend());  // deepest first
  for (const std::string& mount : mounts) {
    strays.push_back("mount " + mount);
    unmount(mount);
  }
  nftw(dir.c_str(), remove_entry, 32, FTW_DEPTH | FTW_PHYS | FTW_MOUNT);
  return strays;
}

// ---- The janitor ------------------------------------------------------------
// A process forked once, in its own session (so a kill of the test's process
// group does not reach it). TempDirs register with it and unregister when
// torn down; when the test process is gone (the socket reaches EOF), the
// janitor prints the logs of what is still registered and sweeps it.
class Janitor {
 public:
  static Janitor& instance() {
    static Janitor janitor;
    return janitor;
  }
  void track(const std::string& dir) { send("+" + dir + "\n"); }
  void untrack(const std::string& dir) { send("-" + dir + "\n"); }

 private:
  Janitor() {
    int fds[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) return;
    UniqueFd ours(fds[0]), theirs(fds[1]);
    pid_t pid = fork();
    if (pid == 0) run(theirs.get());
    if (pid > 0) fd_ = std::move(ours);
  }

  void send(const std::string& line) {
    const char* data = line.data();
    size_t left = line.size();
    while (fd_ && left > 0) {
      ssize_t n = ::send(fd_.get(), data, left, MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return;
      data += n;
      left -= n;
    }
  }

  static void write_stderr(const std::string& text) {
    size_t done = 0;
    while (done < text.size()) {
      ssize_t n = write(STDERR_FILENO, text.data() + done, text.size() - done);
      if (n <= 0) return;
      done += n;
    }
  }

  [[noreturn]] static void run(int fd) {
    setsid();
    prctl(PR_SET_NAME, "sidebus-janitor");
    signal(SIGPIPE, SIG_IGN);
    dup2(fd, 3);
    int null = open("/dev/null", O_RDWR);
    dup2(null, STDIN_FILENO);
    dup2(null, STDOUT_FILENO);  // keep the TAP stream to the test alone
    close_range(4, ~0U, 0);

    std::set<std::string> dirs;
    std::string pending;
    char chunk[4096];
    for (;;) {
      ssize_t n = read(3, chunk, sizeof chunk);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      pending.append(chunk, n);
      for (size_t end; (end = pending.find('\n')) != std::string::npos; pending.erase(0, end + 1)) {
        std::string dir = pending.substr(1, end - 1);
        if (pending[0] == '+') dirs.insert(dir);
        else dirs.erase(dir);
      }
    }
    for (const std::string& dir : dirs) {
      write_stderr("sidebus test fixture: the test ended without tearing down " + dir + "\n");
      if (DIR* listing = opendir(dir.c_str())) {
        while (struct dirent* entry = readdir(listing)) {
          std::string name = entry->d_name;
          if (!name.ends_with(".log")) continue;
          write_stderr("---- " + name + " ----\n" + read_all(dir + "/" + name) + "\n");
        }
        closedir(listing);
      }
      for (const std::string& stray : sweep(dir)) write_stderr("sidebus test fixture: swept " + stray + "\n");
    }
    _exit(0);
  }

  UniqueFd fd_;  // without a janitor, destructors and PR_SET_PDEATHSIG remain
};

// ---- Small GLib helpers -----------------------------------------------------

bool test_failing() { return (g_test_initialized() && g_test_failed()) || std::uncaught_exceptions() > 0; }

// Prints @text as test messages, one per line (a TAP comment is one line).
void print_log(const std::string& title, const std::string& text) {
  constexpr size_t kMaxLines = 400;
  g_auto(GStrv) lines = g_strsplit(text.c_str(), "\n", -1);
  size_t count = g_strv_length(lines);
  size_t first = count > kMaxLines ? count - kMaxLines : 0;
  g_test_message("---- %s%s ----", title.c_str(), first > 0 ? " (last lines)" : "");
  for (size_t i = first; i < count; i++)
    if (lines[i][0] != '\0') g_test_message("%s", lines[i]);
}

GObjectPtr<GDBusConnection> connect_bus(const std::string& address) {
  g_autoptr(GError) error = nullptr;
  GDBusConnection* connection = g_dbus_connection_new_for_address_sync(
      address.c_str(),
      static_cast<GDBusConnectionFlags>(G_DBUS_CONNECTION_FLAGS_AUTHENTICATION_CLIENT |
                                        G_DBUS_CONNECTION_FLAGS_MESSAGE_BUS_CONNECTION),
      nullptr, nullptr, &error);
  if (!connection) throw FixtureError("cannot connect to " + address + ": " + error->message);
  return GObjectPtr<GDBusConnection>(connection);
}

bool name_has_owner(GDBusConnection* connection, const char* name) {
  g_autoptr(GVariant) reply = g_dbus_connection_call_sync(
      connection, "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus", "NameHasOwner",
      g_variant_new("(s)", name), G_VARIANT_TYPE("(b)"), G_DBUS_CALL_FLAGS_NONE, 5000, nullptr, nullptr);
  gboolean owned = FALSE;
  if (reply) g_variant_get(reply, "(b)", &owned);
  return owned;
}

// A session-type bus: no standard service directories, so nothing of the
// system's can be activated, only what is in @services_dir.
std::string bus_config(const std::string& socket_path, const std::string& services_dir,
                       const std::string& extra_policy) {
  return "<!DOCTYPE busconfig PUBLIC \"-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN\"\n"
         " \"http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd\">\n"
         "<busconfig>\n"
         "  <type>session</type>\n"
         "  <listen>unix:path=" + socket_path + "</listen>\n"
         "  <auth>EXTERNAL</auth>\n"
         "  <servicedir>" + services_dir + "</servicedir>\n"
         "  <policy context=\"default\">\n"
         "    <allow send_destination=\"*\" eavesdrop=\"true\"/>\n"
         "    <allow eavesdrop=\"true\"/>\n"
         "    <allow own=\"*\"/>\n" +
         extra_policy +
         "  </policy>\n"
         "</busconfig>\n";
}

// Starts dbus-daemon with @config and returns once it printed its address.
std::unique_ptr<ChildProcess> start_dbus_daemon(const TempDir& dir, const std::string& name, const std::string& config,
                                                std::optional<Identity> identity,
                                                std::map<std::string, std::string> env, std::string* address) {
  const std::string config_path = dir.write_file(name + ".conf", config);
  int pipe_fds[2];
  if (pipe2(pipe_fds, O_CLOEXEC) != 0) throw FixtureError("pipe: " + std::string(g_strerror(errno)));
  UniqueFd address_in(pipe_fds[0]), address_out(pipe_fds[1]);
  auto daemon = std::make_unique<ChildProcess>(SpawnOptions{
      .name = name,
      .argv = {DBUS_DAEMON, "--config-file=" + config_path, "--nofork", "--nopidfile", "--print-address=3"},
      .env = std::move(env),
      .unset_env = {"G_DEBUG"},
      .cwd = dir.path(),
      .stdout_path = dir / (name + ".log"),
      .identity = identity,
      .fds = {{address_out.get(), 3}},
  });
  address_out.reset();  // so a daemon that dies is an EOF here

  std::string line;
  const gint64 deadline = g_get_monotonic_time() + 10 * G_USEC_PER_SEC;
  while (line.find('\n') == std::string::npos) {
    struct pollfd poll_fd = {address_in.get(), POLLIN, 0};
    int timeout_ms = static_cast<int>((deadline - g_get_monotonic_time()) / 1000);
    if (timeout_ms <= 0 || poll(&poll_fd, 1, timeout_ms) <= 0) break;
    char chunk[256];
    ssize_t n = read(address_in.get(), chunk, sizeof chunk);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    line.append(chunk, n);
  }
  size_t end = line.find('\n');
  if (end == std::string::npos || end == 0)
    throw FixtureError(name + " did not start (its log is printed below)");
  *address = line.substr(0, end);
  return daemon;
}

}  // namespace

// ---- Running tests ----------------------------------------------------------

void add_test(const char* path, std::function<void()> body) {
  g_test_add_data_func_full(
      path, new std::function<void()>(std::move(body)),
      [](gconstpointer data) {
        try {
          (*static_cast<const std::function<void()>*>(data))();
        } catch (const std::exception& error) {
          g_test_fail_printf("%s", error.what());
        }
      },
      [](gpointer data) { delete static_cast<std::function<void()>*>(data); });
}

// ---- Helpers ----------------------------------------------------------------

std::string env_path(const char* name) {
  const char* value = g_getenv(name);
  if (!value || !*value) throw FixtureError(std::string("$") + name + " is not set: run the tests with `meson test`");
  return value;
}

bool wait_until(const std::function<bool()>& predicate, Timeout timeout) {
  if (predicate()) return true;
  g_autoptr(GMainContext) context = g_main_context_ref_thread_default();
  // Wakes the loop so polled predicates are re-checked; gone even if the predicate throws.
  struct Tick {
    GSource* source = g_timeout_source_new(10);
    ~Tick() {
      g_source_destroy(source);
      g_source_unref(source);
    }
  } tick;
  g_source_set_callback(tick.source, [](gpointer) -> gboolean { return G_SOURCE_CONTINUE; }, nullptr, nullptr);
  g_source_attach(tick.source, context);
  const gint64 deadline = g_get_monotonic_time() + std::chrono::microseconds(timeout).count();
  bool done = false;
  while (!(done = predicate()) && g_get_monotonic_time() < deadline) g_main_context_iteration(context, TRUE);
  return done;
}

VariantPtr parse(const char* type, const std::string& text) {
  g_autoptr(GError) error = nullptr;
  GVariant* value = g_variant_parse(G_VARIANT_TYPE(type), text.c_str(), nullptr, nullptr, &error);
  if (value == nullptr) throw FixtureError("bad GVariant text in the test: " + text + ": " + error->message);
  return VariantPtr(g_variant_ref_sink(value));
}

std::string uri_for(const std::string& path) {
  g_autofree char* uri = g_filename_to_uri(path.c_str(), nullptr, nullptr);
  return uri;
}

std::string path_of(const std::string& uri) {
  g_autofree char* path = g_filename_from_uri(uri.c_str(), nullptr, nullptr);
  if (path == nullptr) throw FixtureError("not a file URI: " + uri);
  return path;
}

std::vector<std::string> mounts_under(const std::string& dir) {
  std::vector<std::string> mounts;
  const std::string info = read_all("/proc/self/mountinfo");
  size_t line_start = 0;
  while (line_start < info.size()) {
    size_t line_end = info.find('\n', line_start);
    if (line_end == std::string::npos) line_end = info.size();
    // "id parent major:minor root mount-point options ...": the fifth field.
    size_t field_start = line_start;
    for (int field = 0; field < 4 && field_start < line_end; field++)
      field_start = info.find(' ', field_start) + 1;
    size_t field_end = std::min(info.find(' ', field_start), line_end);
    if (field_start > line_start && field_start < line_end) {
      std::string mount_point = unescape_mount_point(info.substr(field_start, field_end - field_start));
      if (mount_point == dir || mount_point.starts_with(dir + "/")) mounts.push_back(mount_point);
    }
    line_start = line_end + 1;
  }
  return mounts;
}

bool is_mounted(const std::string& path) {
  std::vector<std::string> mounts = mounts_under(path);
  return std::find(mounts.begin(), mounts.end(), path) != mounts.end();
}

std::vector<pid_t> processes_referencing(const std::string& dir) {
  std::vector<pid_t> pids;
  DIR* proc = opendir("/proc");
  if (!proc) return pids;
  const pid_t self = getpid();
  while (struct dirent* entry = readdir(proc)) {
    char* end = nullptr;
    long pid = strtol(entry->d_name, &end, 10);
    if (*end != '\0' || pid <= 0 || pid == self) continue;
    if (references(static_cast<pid_t>(pid), dir) && process_alive(static_cast<pid_t>(pid)))
      pids.push_back(static_cast<pid_t>(pid));
  }
  closedir(proc);
  return pids;
}

size_t leftovers_swept() { return leftovers.load(); }

// ---- TempDir ----------------------------------------------------------------

TempDir::TempDir(const char* prefix) {
  std::string path_template = std::string(g_get_tmp_dir()) + "/" + prefix + "-XXXXXX";
  if (!mkdtemp(path_template.data())) throw FixtureError("mkdtemp: " + std::string(g_strerror(errno)));
  path_ = path_template;
  chmod(path_.c_str(), 0755);
  Janitor::instance().track(path_);
}

TempDir::~TempDir() {
  std::vector<std::string> strays = sweep(path_);
  leftovers += strays.size();
  for (const std::string& stray : strays) g_test_message("teardown swept %s: %s", path_.c_str(), stray.c_str());
  Janitor::instance().untrack(path_);
}

std::string TempDir::make_dir(const std::string& name, mode_t mode) const {
  const std::string path = *this / name;
  if (g_mkdir_with_parents(path.c_str(), mode) != 0 || chmod(path.c_str(), mode) != 0)
    throw FixtureError("cannot create " + path + ": " + g_strerror(errno));
  return path;
}

std::string TempDir::write_file(const std::string& name, const std::string& contents) const {
  const std::string path = *this / name;
  g_autofree char* parent = g_path_get_dirname(path.c_str());
  g_mkdir_with_parents(parent, 0755);
  g_autoptr(GError) error = nullptr;
  if (!g_file_set_contents(path.c_str(), contents.data(), static_cast<gssize>(contents.size()), &error))
    throw FixtureError(error->message);
  return path;
}

void TempDir::give_to(const Identity& identity) const {
  if (chown(path_.c_str(), identity.uid, identity.gid) != 0)
    throw FixtureError("cannot chown " + path_ + ": " + g_strerror(errno));
}

// ---- ChildProcess -----------------------------------------------------------

std::string ExitStatus::describe() const {
  if (exited) return "exited with code " + std::to_string(code);
  if (signal) return "killed by signal " + std::to_string(signal) + " (" + g_strsignal(signal) + ")";
  return "did not exit";
}

namespace {

struct ChildSetup {
  std::optional<Identity> identity;
  pid_t parent;
};

// Runs in the child between fork and exec: only async-signal-safe calls.
void setup_child(gpointer data) {
  const auto* setup = static_cast<const ChildSetup*>(data);
  setpgid(0, 0);
  if (setup->identity) {
    const Identity& who = *setup->identity;
    if (setgroups(0, nullptr) != 0 || setresgid(who.gid, who.gid, who.gid) != 0 ||
        setresuid(who.uid, who.uid, who.uid) != 0) {
      static const char message[] = "sidebus test fixture: cannot switch user\n";
      if (write(STDERR_FILENO, message, sizeof message - 1) < 0) _exit(127);
      _exit(127);
    }
  }
  // After the user switch, which clears it.
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (getppid() != setup->parent) _exit(127);
}

ExitStatus exit_status_from(int status) {
  ExitStatus result;
  if (WIFEXITED(status)) {
    result.exited = true;
    result.code = WEXITSTATUS(status);
  } else if (WIFSIGNALED(status)) {
    result.signal = WTERMSIG(status);
  }
  return result;
}

UniqueFd open_output(const std::string& path) {
  UniqueFd fd(open(path.empty() ? "/dev/null" : path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644));
  if (!fd) throw FixtureError("cannot open " + path + ": " + g_strerror(errno));
  return fd;
}

}  // namespace

ChildProcess::ChildProcess(SpawnOptions options) : options_(std::move(options)) {
  // What our children leave behind is reparented to us and reaped here.
  static const bool subreaper [[maybe_unused]] = prctl(PR_SET_CHILD_SUBREAPER, 1) == 0;
  if (options_.name.empty()) {
    g_autofree char* base = g_path_get_basename(options_.argv.at(0).c_str());
    options_.name = base;
  }
  if (options_.stderr_path.empty()) options_.stderr_path = options_.stdout_path;

  g_auto(GStrv) envp = g_get_environ();
  for (const auto& [key, value] : options_.env) envp = g_environ_setenv(envp, key.c_str(), value.c_str(), TRUE);
  for (const std::string& key : options_.unset_env) envp = g_environ_unsetenv(envp, key.c_str());
  std::vector<char*> argv;
  for (std::string& arg : options_.argv) argv.push_back(arg.data());
  argv.push_back(nullptr);
  std::vector<int> source_fds, target_fds;
  for (const auto& [source, target] : options_.fds) {
    source_fds.push_back(source);
    target_fds.push_back(target);
  }

  UniqueFd stdout_fd = open_output(options_.stdout_path);
  UniqueFd separate_stderr_fd;
  if (options_.stderr_path != options_.stdout_path) separate_stderr_fd = open_output(options_.stderr_path);
  const int stderr_fd = separate_stderr_fd ? separate_stderr_fd.get() : stdout_fd.get();
  ChildSetup setup{options_.identity, getpid()};
  g_autoptr(GError) error = nullptr;
  gboolean spawned = g_spawn_async_with_pipes_and_fds(
      options_.cwd.empty() ? nullptr : options_.cwd.c_str(), argv.data(), envp,
      static_cast<GSpawnFlags>(G_SPAWN_DO_NOT_REAP_CHILD | G_SPAWN_SEARCH_PATH | G_SPAWN_STDIN_FROM_DEV_NULL),
      setup_child, &setup, -1, stdout_fd.get(), stderr_fd, source_fds.data(), target_fds.data(),
      source_fds.size(), &pid_, nullptr, nullptr, nullptr, &error);
  if (!spawned) throw FixtureError("cannot start " + options_.name + ": " + error->message);
  setpgid(pid_, pid_);  // also here, so a kill of the group cannot race the child's own setpgid
}

ChildProcess::~ChildProcess() {
  if (running()) stop(5s);
  stop_group();
  if (test_failing()) print_log(options_.name + " (" + options_.stdout_path + ")", log());
}

bool ChildProcess::running() {
  if (status_) return false;
  int status = 0;
  pid_t result = waitpid(pid_, &status, WNOHANG);
  if (result == pid_) {
    status_ = exit_status_from(status);
    return false;
  }
  return result == 0;
}

std::optional<ExitStatus> ChildProcess::wait_for_exit(Timeout timeout) {
  const gint64 deadline = g_get_monotonic_time() + std::chrono::microseconds(timeout).count();
  while (running()) {
    if (g_get_monotonic_time() >= deadline) return std::nullopt;
    g_usleep(5000);
  }
  return status_;
}

ExitStatus ChildProcess::stop(Timeout timeout) {
  if (!running()) return status_.value_or(ExitStatus{});
  kill(pid_, SIGTERM);
  if (auto status = wait_for_exit(timeout)) return *status;
  g_test_message("%s did not exit within %lld ms of SIGTERM; killing it", options_.name.c_str(),
                 static_cast<long long>(timeout.count()));
  kill(pid_, SIGKILL);
  return wait_for_exit(5s).value_or(ExitStatus{});
}

void ChildProcess::send_signal(int signo) {
  if (running()) kill(pid_, signo);
}

// Whatever is left in the process group once the leader is gone: SIGTERM,
// then SIGKILL; members reparented to us (we are a subreaper) are reaped.
void ChildProcess::stop_group() {
  if (pid_ <= 0) return;
  auto group_gone = [this](Timeout timeout) {
    const gint64 deadline = g_get_monotonic_time() + std::chrono::microseconds(timeout).count();
    for (;;) {
      while (waitpid(-pid_, nullptr, WNOHANG) > 0) {
      }
      if (kill(-pid_, 0) != 0) return true;
      if (g_get_monotonic_time() >= deadline) return false;
      g_usleep(5000);
    }
  };
  if (group_gone(0ms)) return;
  kill(-pid_, SIGTERM);
  if (group_gone(3s)) return;
  kill(-pid_, SIGKILL);
  if (!group_gone(3s)) g_test_message("processes of %s's group %d survived SIGKILL", options_.name.c_str(), pid_);
}

std::string ChildProcess::log() const {
  std::string text = read_all(options_.stdout_path);
  if (options_.stderr_path != options_.stdout_path) text += read_all(options_.stderr_path);
  return text;
}

// ---- PortalRequest ----------------------------------------------------------

PortalRequest::PortalRequest(GDBusConnection* connection, const char* bus_name, const char* interface_name,
                             const char* method, GVariant* parameters)
    : connection_(G_DBUS_CONNECTION(g_object_ref(connection))), bus_name_(bus_name) {
  // Subscribed before the call, so no Response can be missed.
  subscription_ = g_dbus_connection_signal_subscribe(connection, bus_name, "org.freedesktop.portal.Request",
                                                     "Response", nullptr, nullptr, G_DBUS_SIGNAL_FLAGS_NONE,
                                                     on_response, this, nullptr);
  g_autoptr(GVariant) reply =
      g_dbus_connection_call_sync(connection, bus_name, kPortalPath, interface_name, method, parameters,
                                  G_VARIANT_TYPE("(o)"), G_DBUS_CALL_FLAGS_NONE, 30000, nullptr, &error_);
  if (reply) {
    const char* handle = nullptr;
    g_variant_get(reply, "(&o)", &handle);
    handle_ = handle;
  }
}

PortalRequest::~PortalRequest() {
  g_dbus_connection_signal_unsubscribe(connection_.get(), subscription_);
  g_clear_error(&error_);
}

void PortalRequest::on_response(GDBusConnection*, const char*, const char* path, const char*, const char*,
                                GVariant* parameters, gpointer user_data) {
  auto* self = static_cast<PortalRequest*>(user_data);
  if (!g_variant_is_of_type(parameters, G_VARIANT_TYPE("(ua{sv})"))) {
    g_test_fail_printf("Request::Response at %s has the signature %s", path, g_variant_get_type_string(parameters));
    return;
  }
  guint32 response = 0;
  GVariant* results = nullptr;
  g_variant_get(parameters, "(u@a{sv})", &response, &results);
  self->responses_[path] = {response, VariantPtr(results)};
}

bool PortalRequest::wait_for_response(Timeout timeout) {
  if (handle_.empty()) return false;
  return wait_until(
      [this] {
        auto found = responses_.find(handle_);
        if (found == responses_.end()) return false;
        response_ = found->second.first;
        results_.reset(g_variant_ref(found->second.second.get()));
        return true;
      },
      timeout);
}

bool PortalRequest::close(GError** error) {
  g_autoptr(GVariant) reply = g_dbus_connection_call_sync(connection_.get(), bus_name_.c_str(), handle_.c_str(),
                                                          "org.freedesktop.portal.Request", "Close", nullptr,
                                                          nullptr, G_DBUS_CALL_FLAGS_NONE, 30000, nullptr, error);
  return reply != nullptr;
}

// ---- HostPortal -------------------------------------------------------------

HostPortal::HostPortal(HostPortalOptions options) : dir_("sidebus-test-host") {
  const char* portal_program = g_getenv("SIDEBUS_XDG_DESKTOP_PORTAL");
  if (!portal_program) portal_program = "/usr/libexec/xdg-desktop-portal";

  // Shared by the bus (and so what it activates), the backend and the portal.
  std::map<std::string, std::string> env = {
      {"XDG_RUNTIME_DIR", dir_.make_dir("runtime", 0700)},
      {"XDG_DATA_HOME", dir_.make_dir("data")},
      {"XDG_CONFIG_HOME", dir_.make_dir("config")},
      {"XDG_CACHE_HOME", dir_.make_dir("cache")},
      {"HOME", dir_.make_dir("home")},
      {"DBUS_SYSTEM_BUS_ADDRESS", "unix:path=" + (dir_ / "no-system-bus")},
      {"GSETTINGS_BACKEND", "memory"},
      {"GIO_USE_VFS", "local"},
  };
  for (const auto& [path, contents] : options.files) dir_.write_file(path, contents);
  dir_.write_file("services/org.freedesktop.impl.portal.PermissionStore.service",
                  "[D-BUS Service]\n"
                  "Name=org.freedesktop.impl.portal.PermissionStore\n"
                  "Exec=" XDG_PERMISSION_STORE "\n");
  bus_ = start_dbus_daemon(dir_, "host-bus", bus_config(dir_ / "bus", dir_ / "services", ""), std::nullopt, env,
                           &bus_address_);
  env["DBUS_SESSION_BUS_ADDRESS"] = bus_address_;
  connection_ = connect_bus(bus_address_);
  for (const auto& [name, value] : options.env) env[name] = value;

  backend_ = std::make_unique<ChildProcess>(SpawnOptions{
      .name = "test-backend",
      .argv = {env_path("SIDEBUS_TEST_BACKEND")},
      .env = env,
      .cwd = dir_.path(),
      .stdout_path = dir_ / "test-backend.log",
  });
  if (!wait_until([&] { return name_has_owner(connection(), kBackendBusName) || !backend_->running(); }) ||
      !backend_->running())
    throw FixtureError("the test backend did not come up (its log is printed below)");

  env["XDG_DESKTOP_PORTAL_DIR"] = env_path("SIDEBUS_SOURCE_ROOT") + "/tests/portals";
  env["XDG_CURRENT_DESKTOP"] = "sidebus-test";
  portal_ = std::make_unique<ChildProcess>(SpawnOptions{
      .name = "xdg-desktop-portal",
      .argv = {portal_program, "--verbose"},
      .env = env,
      .unset_env = {"G_DEBUG"},  // its own criticals are not what we test
      .cwd = dir_.path(),
      .stdout_path = dir_ / "xdg-desktop-portal.log",
  });
  if (!wait_until([&] { return name_has_owner(connection(), kPortalBusName) || !portal_->running(); }) ||
      !portal_->running())
    throw FixtureError("xdg-desktop-portal did not come up (its log is printed below)");
}

HostPortal::~HostPortal() {
  portal_.reset();
  backend_.reset();
  if (connection_) g_dbus_connection_close_sync(connection_.get(), nullptr, nullptr);
  connection_.reset();
  bus_.reset();
}

namespace {

VariantPtr call_backend(GDBusConnection* connection, const char* method, GVariant* parameters,
                        const GVariantType* reply_type) {
  g_autoptr(GError) error = nullptr;
  GVariant* reply = g_dbus_connection_call_sync(connection, kBackendBusName, kBackendPath, kBackendInterface, method,
                                                parameters, reply_type, G_DBUS_CALL_FLAGS_NONE, 10000, nullptr,
                                                &error);
  if (!reply) throw FixtureError(std::string("test backend ") + method + ": " + error->message);
  return VariantPtr(reply);
}

std::string lookup_string(GVariant* dict, const char* key) {
  g_autoptr(GVariant) value = g_variant_lookup_value(dict, key, nullptr);
  if (!value || !(g_variant_is_of_type(value, G_VARIANT_TYPE_STRING) ||
                  g_variant_is_of_type(value, G_VARIANT_TYPE_OBJECT_PATH)))
    return {};
  return g_variant_get_string(value, nullptr);
}

}  // namespace

void HostPortal::set_reply(const char* method, guint32 response, GVariant* results, guint32 delay_ms) {
  g_autoptr(GVariant) owned_results =
      g_variant_ref_sink(results ? results : g_variant_new_array(G_VARIANT_TYPE("{sv}"), nullptr, 0));
  call_backend(connection(), "SetReply", g_variant_new("(su@a{sv}u)", method, response, owned_results, delay_ms),
               nullptr);
}

std::vector<BackendCall> HostPortal::backend_calls() {
  VariantPtr reply = call_backend(connection(), "GetCalls", nullptr, G_VARIANT_TYPE("(aa{sv})"));
  g_autoptr(GVariant) records = g_variant_get_child_value(reply.get(), 0);
  std::vector<BackendCall> calls;
  for (gsize i = 0; i < g_variant_n_children(records); i++) {
    BackendCall call;
    call.record.reset(g_variant_get_child_value(records, i));
    GVariant* record = call.record.get();
    call.method = lookup_string(record, "method");
    call.handle = lookup_string(record, "handle");
    call.app_id = lookup_string(record, "app_id");
    call.parent_window = lookup_string(record, "parent_window");
    call.title = lookup_string(record, "title");
    GVariant* options = g_variant_lookup_value(record, "options", G_VARIANT_TYPE_VARDICT);
    call.options.reset(options ? options : g_variant_ref_sink(g_variant_new_array(G_VARIANT_TYPE("{sv}"), nullptr, 0)));
    gboolean flag = FALSE;
    if (g_variant_lookup(record, "closed", "b", &flag)) call.closed = flag;
    if (g_variant_lookup(record, "answered", "b", &flag)) call.answered = flag;
    g_variant_lookup(record, "response", "u", &call.response);
    calls.push_back(std::move(call));
  }
  return calls;
}

bool HostPortal::wait_for_backend_calls(size_t count, Timeout timeout) {
  return wait_until([&] { return backend_calls().size() >= count; }, timeout);
}

void HostPortal::reset_backend() { call_backend(connection(), "Reset", nullptr, nullptr); }

// ---- GuestBus ---------------------------------------------------------------

GuestBus::GuestBus(GuestBusOptions options) : options_(std::move(options)), dir_("sidebus-test-guest") {
  const std::string runtime_dir = dir_.make_dir("runtime", 0700);
  if (options_.identity) {
    dir_.give_to(*options_.identity);
    if (chown(runtime_dir.c_str(), options_.identity->uid, options_.identity->gid) != 0)
      throw FixtureError("cannot chown " + runtime_dir);
  }
  dir_.make_dir("services");
  for (const auto& [name, exec] : options_.services)
    dir_.write_file("services/" + name + ".service", "[D-BUS Service]\nName=" + name + "\nExec=" + exec + "\n");
  const bool other_user = options_.identity && options_.identity->uid != getuid();
  const std::string root_policy =
      other_user && options_.allow_root_client ? "    <allow user=\"" + std::string(g_get_user_name()) + "\"/>\n" : "";
  bus_ = start_dbus_daemon(dir_, "guest-bus", bus_config(dir_ / "bus", dir_ / "services", root_policy),
                           options_.identity, {{"HOME", dir_.path()}, {"XDG_RUNTIME_DIR", runtime_dir}}, &address_);
}

GuestBus::~GuestBus() {
  if (connection_) g_dbus_connection_close_sync(connection_.get(), nullptr, nullptr);
  connection_.reset();
  bus_.reset();
}

GDBusConnection* GuestBus::connection() {
  if (!connection_) {
    if (options_.identity && options_.identity->uid != getuid() && !options_.allow_root_client)
      throw FixtureError("this guest bus only accepts its own user: use run_as_guest(), or allow_root_client");
    connection_ = connect_bus(address_);
  }
  return connection_.get();
}

GuestBus::Output GuestBus::run_as_guest(const std::vector<std::string>& argv, Timeout timeout) {
  const std::string base = dir_ / ("client-" + std::to_string(++clients_run_));
  Output output;
  {
    ChildProcess client(SpawnOptions{
        .name = "guest client " + argv.at(0),
        .argv = argv,
        .env = {{"DBUS_SESSION_BUS_ADDRESS", address_}, {"HOME", dir_.path()},
                {"XDG_RUNTIME_DIR", dir_ / "runtime"}},
        .cwd = dir_.path(),
        .stdout_path = base + ".out",
        .stderr_path = base + ".err",
        .identity = options_.identity,
    });
    // The main context keeps running: the client may need something of this process.
    if (wait_until([&] { return !client.running(); }, timeout)) output.status = *client.wait_for_exit(0ms);
    else output.status = client.stop(1s);
  }
  output.out = read_all(base + ".out");
  output.err = read_all(base + ".err");
  return output;
}

// ---- Broker -----------------------------------------------------------------

namespace {

std::optional<std::string> unix_socket_path(const std::string& address) {
  if (!address.starts_with("unix:")) return std::nullopt;
  std::string path = address.substr(5);
  return path.substr(0, path.find(','));  // drop ",nofds", ",mode=…"
}

}  // namespace

std::string Broker::link_address() const {
  std::optional<std::string> path = unix_socket_path(listen_address());
  return path ? "unix:" + *path : listen_address();
}

Broker::Broker(BrokerOptions options) : options_(std::move(options)), dir_("sidebus-test-broker") {
  if (options_.host_bus_address.empty()) throw FixtureError("BrokerOptions.host_bus_address is required");
  runtime_dir_ = dir_.make_dir("runtime");
  if (options_.state_dir.empty()) options_.state_dir = dir_.make_dir("state");
  config_dir_ = dir_.make_dir("config");
  for (const auto& [name, json] : options_.config) dir_.write_file("config/" + name, json);
  if (options_.listen.empty()) options_.listen.push_back("unix:" + (dir_ / "link.sock"));
  // The guest is on this machine: it sees this VM's view of the document
  // mount where the host has it, as a VMM would share it.
  if (options_.guest_documents_path.empty())
    options_.guest_documents_path = runtime_dir_ + "/doc/by-app/" + sidebus::app_id_for_vm(options_.vm_name);
  if (options_.plugin_dir.empty()) options_.plugin_dir = env_path("SIDEBUS_PLUGIN_DIR");

  std::vector<std::string> argv = {env_path("SIDEBUS_BROKER")};
  for (const std::string& address : options_.listen) argv.insert(argv.end(), {"--listen", address});
  argv.insert(argv.end(), {"--runtime-dir", runtime_dir_, "--state-dir", options_.state_dir, "--vm-name",
                           options_.vm_name, "--guest-documents-path", options_.guest_documents_path, "--host-bus",
                           options_.host_bus_address, "--config-dir", config_dir_, "--plugin-dir",
                           options_.plugin_dir});
  if (options_.verbose) argv.push_back("--verbose");
  argv.insert(argv.end(), options_.extra_args.begin(), options_.extra_args.end());

  process_ = std::make_unique<ChildProcess>(SpawnOptions{
      .name = "sidebus-broker",
      .argv = argv,
      // Nothing may reach the developer's own session: the host bus is the test's.
      .env = {{"DBUS_SESSION_BUS_ADDRESS", options_.host_bus_address},
              {"XDG_RUNTIME_DIR", dir_.make_dir("xdg-runtime", 0700)}},
      .cwd = dir_.path(),
      .stdout_path = dir_ / "broker.log",
  });
  if (!options_.wait_for_listen) return;
  for (const std::string& address : options_.listen) {
    std::optional<std::string> path = unix_socket_path(address);
    if (!path) continue;
    auto listening = [&] {
      struct stat info;
      return stat(path->c_str(), &info) == 0 && S_ISSOCK(info.st_mode);
    };
    if (!wait_until([&] { return listening() || !process_->running(); }) || !listening())
      throw FixtureError("the broker is not listening on " + address + " (its log is printed below)");
  }
}

Broker::~Broker() { process_.reset(); }

// ---- Agent ------------------------------------------------------------------

Agent::Agent(AgentOptions options) : options_(std::move(options)), dir_("sidebus-test-agent") {
  if (options_.identity) dir_.give_to(*options_.identity);
  std::vector<std::string> argv = {env_path("SIDEBUS_AGENT"), "--connect", options_.connect};
  argv.insert(argv.end(), options_.extra_args.begin(), options_.extra_args.end());
  process_ = std::make_unique<ChildProcess>(SpawnOptions{
      .name = "sidebus-agent",
      .argv = argv,
      .env = {{"DBUS_SESSION_BUS_ADDRESS", options_.guest_bus_address},
              {"G_MESSAGES_DEBUG", "sidebus"},
              {"HOME", dir_.path()}},
      .cwd = dir_.path(),
      .stdout_path = dir_ / "agent.log",
      .identity = options_.identity,
  });
}

Agent::~Agent() { process_.reset(); }

// ---- Topology ---------------------------------------------------------------

Topology::Topology(TopologyOptions options) : options_(std::move(options)) {
  host_ = std::make_unique<HostPortal>(options_.host);
  guest_ = std::make_unique<GuestBus>(options_.guest);
  BrokerOptions broker_options = options_.broker;
  broker_options.host_bus_address = host_->bus_address();
  broker_ = std::make_unique<Broker>(std::move(broker_options));
  if (options_.guest.identity) {
    // As a VMM would: the guest user's agent must be able to connect.
    std::optional<std::string> path = unix_socket_path(broker_->link_address());
    if (path) chmod(path->c_str(), 0666);
  }
  if (!options_.start_agent) return;
  start_agent();
  if (options_.wait_for_portal && !wait_for_guest_name(kPortalBusName))
    throw FixtureError("org.freedesktop.portal.Desktop did not appear on the guest bus (logs are printed below)");
}

Topology::~Topology() {
  agent_.reset();
  broker_.reset();
  guest_.reset();
  host_.reset();
}

void Topology::start_agent() {
  agent_.reset();
  agent_ = std::make_unique<Agent>(AgentOptions{
      .connect = broker_->link_address(),
      .guest_bus_address = guest_->address(),
      .identity = options_.guest.identity,
      .extra_args = options_.agent_args,
  });
}

bool Topology::wait_for_guest_name(const char* name, Timeout timeout) {
  GDBusConnection* connection = guest_->connection();
  wait_until(
      [&] {
        return name_has_owner(connection, name) || !broker_->process().running() ||
               (agent_ && !agent_->process().running());
      },
      timeout);
  return name_has_owner(connection, name);
}

std::string Topology::guest_introspect(const char* path, const char* name) {
  g_autoptr(GError) error = nullptr;
  g_autoptr(GVariant) reply = g_dbus_connection_call_sync(
      guest_->connection(), name, path, "org.freedesktop.DBus.Introspectable", "Introspect", nullptr,
      G_VARIANT_TYPE("(s)"), G_DBUS_CALL_FLAGS_NONE, 10000, nullptr, &error);
  if (!reply) throw FixtureError(std::string("cannot introspect ") + path + " at " + name + ": " + error->message);
  const char* xml = nullptr;
  g_variant_get(reply, "(&s)", &xml);
  return xml;
}

}  // namespace sidebus::test
