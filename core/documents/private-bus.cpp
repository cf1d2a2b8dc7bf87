// private-bus.cpp — the per-VM private bus (see private-bus.hpp): one
// dbus-daemon, the real xdg-permission-store and xdg-document-portal on it,
// and their FUSE mount, owned and supervised by the broker.
//
// Start-up, in this order and against one deadline:
//   1. clean up after a crashed run: a stale FUSE mount at <runtime>/doc, a
//      stale socket (a socket that still answers means another broker uses
//      this runtime dir: refused);
//   2. dbus-daemon with a generated config (DBusDaemon), then our connection;
//   3. xdg-permission-store, until it owns its name (the document portal
//      needs it at start-up; there is no activation on this bus);
//   4. xdg-document-portal, until it owns org.freedesktop.portal.Documents,
//      GetMountPoint answers <runtime>/doc and that is a FUSE mount point.
// The helpers get a clean environment: the private bus address,
// XDG_RUNTIME_DIR (the portal mounts $XDG_RUNTIME_DIR/doc), XDG_DATA_HOME
// (both keep their databases in $XDG_DATA_HOME/flatpak/db) and PATH (for
// fusermount3) — nothing else from the host session.
//
// Afterwards, on the default main context: a helper that exits on its own is
// restarted after a backoff (at most kMaxRestartsPerMinute a minute); if the
// dbus-daemon goes (our connection closes), everything is restarted and
// connection() is a new object. Restarts block the main loop while they run
// (bounded like start-up); on_restarted tells the owner when they are done.
#include "util/gobject-ptr.hpp"
#include "documents/private-bus.hpp"

#include <errno.h>
#include <fcntl.h>
#include <glib/gstdio.h>
#include <signal.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <deque>

#include "util/child-process.hpp"
#include "documents/dbus-daemon.hpp"
#include "sidebus-config.h"
#include "util/unique-fd.hpp"

namespace sidebus {
namespace {

constexpr const char* kDocumentsName = "org.freedesktop.portal.Documents";
constexpr const char* kDocumentsPath = "/org/freedesktop/portal/documents";
constexpr const char* kPermissionStoreName = "org.freedesktop.impl.portal.PermissionStore";
constexpr gint64 kStartTimeoutUs = 15 * G_USEC_PER_SEC;
constexpr gint64 kPollIntervalUs = 10 * 1000;
constexpr size_t kMaxRestartsPerMinute = 5;
constexpr guint kFirstRestartDelayMs = 250;  // doubled for each restart within the last minute


struct Deadline {
  gint64 end_us;
  explicit Deadline(gint64 timeout_us) : end_us(g_get_monotonic_time() + timeout_us) {}
  bool passed() const { return g_get_monotonic_time() >= end_us; }
  int remaining_ms() const { return int(MAX(end_us - g_get_monotonic_time(), 0) / 1000) + 1; }
};

// ---- The FUSE mount and the socket ----------------------------------------

enum class MountState { kNotMounted, kMounted, kDead };

// /proc/self/mountinfo spells the mount point with \ooo escapes.
std::string mountinfo_escape(const std::string& path) {
  std::string escaped;
  for (char c : path) {
    char octal[8];
    if (c == ' ' || c == '\t' || c == '\n' || c == '\\') {
      g_snprintf(octal, sizeof octal, "\\%03o", (unsigned char)c);
      escaped += octal;
    } else {
      escaped += c;
    }
  }
  return escaped;
}

// Whether path is a FUSE mount point (per /proc/self/mountinfo; statfs is no
// help: xdg-document-portal answers it with EPERM), kDead when its daemon is
// gone (ENOTCONN).
MountState fuse_mount_state(const std::string& path) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0) return errno == ENOTCONN ? MountState::kDead : MountState::kNotMounted;
  g_autofree char* mountinfo = nullptr;
  if (!g_file_get_contents("/proc/self/mountinfo", &mountinfo, nullptr, nullptr)) return MountState::kNotMounted;
  const std::string mount_point = mountinfo_escape(path);
  bool mounted = false;  // the last mount on that point is the visible one
  g_auto(GStrv) lines = g_strsplit(mountinfo, "\n", -1);
  for (char** line = lines; *line != nullptr; line++) {
    // "36 35 0:39 / /run/user/0/doc rw,nosuid,nodev - fuse.portal portal rw,…"
    g_auto(GStrv) fields = g_strsplit(*line, " ", -1);
    if (g_strv_length(fields) < 5 || mount_point != fields[4]) continue;
    const char* separator = strstr(*line, " - ");
    mounted = separator != nullptr && g_str_has_prefix(separator + 3, "fuse");
  }
  return mounted ? MountState::kMounted : MountState::kNotMounted;
}

// Lazily unmounts a FUSE mount: umount2(MNT_DETACH) as root, else fusermount3.
bool detach_mount(const std::string& path, GError** error) {
  if (geteuid() == 0 && umount2(path.c_str(), MNT_DETACH) == 0) return true;
  if (fuse_mount_state(path) == MountState::kNotMounted) return true;  // went away meanwhile
  const char* argv[] = {"fusermount3", "-u", "-z", path.c_str(), nullptr};
  int wait_status = 0;
  if (!g_spawn_sync(nullptr, const_cast<char**>(argv), nullptr,
                    GSpawnFlags(G_SPAWN_SEARCH_PATH | G_SPAWN_STDOUT_TO_DEV_NULL), nullptr, nullptr, nullptr,
                    nullptr, &wait_status, error)) {
    g_prefix_error(error, "cannot unmount %s: cannot run fusermount3 (install fuse3): ", path.c_str());
    return false;
  }
  if (!g_spawn_check_wait_status(wait_status, error)) {
    g_prefix_error(error, "cannot unmount %s (fusermount3 -u -z failed; unmount it by hand): ", path.c_str());
    return false;
  }
  return true;
}

// True if something accepts connections on the unix socket at path.
bool socket_answers(const std::string& path) {
  sockaddr_un address = {};
  if (path.size() >= sizeof address.sun_path) return false;
  address.sun_family = AF_UNIX;
  memcpy(address.sun_path, path.c_str(), path.size() + 1);
  UniqueFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  return fd && connect(fd.get(), reinterpret_cast<sockaddr*>(&address), sizeof address) == 0;
}

// What an exit status of xdg-document-portal 1.16 means (its main()).
std::string document_portal_hint(int status, const std::string& state_dir, const std::string& mount) {
  switch (status) {
    case 2:
      return "it could not load its database " + state_dir + "/flatpak/db/documents: is --state-dir writable "
             "and the file intact?";
    case 3:
    case 4:
      return "it could not reach the private bus or the permission store on it";
    case 6:
    case 7:
      return "its FUSE mount at " + mount + " failed: is /dev/fuse available (modprobe fuse) and fusermount3 "
             "installed (package fuse3)?";
    case 20:
      return "another document portal took its bus name";
    case 21:
      return "its FUSE filesystem " + mount + " was unmounted from outside";
    default:
      return "see its messages above";
  }
}

// ---- The private bus -------------------------------------------------------

class PrivateBusImpl final : public PrivateBus {
 public:
  explicit PrivateBusImpl(const Options& options);
  ~PrivateBusImpl() override;

  bool start_all(GError** error);
  void watch_all();

  GDBusConnection* connection() override { return connection_.get(); }
  const std::string& address() override { return address_; }
  const std::string& documents_mount() override { return documents_mount_; }
  void set_on_restarted(std::function<void()> on_restarted) override { on_restarted_ = std::move(on_restarted); }

 private:
  bool prepare_directories(GError** error);
  bool start_bus(GError** error);
  bool start_permission_store(const Deadline& deadline, GError** error);
  bool start_document_portal(const Deadline& deadline, GError** error);
  std::unique_ptr<ChildProcess> spawn_helper(const char* name, const char* program, GError** error);
  bool wait_for_name(const ChildProcess& helper, const char* name, const Deadline& deadline,
                     const std::function<std::string()>& hint, GError** error);
  bool name_has_owner(const char* name);
  void release_documents_mount();
  void stop_all();

  void on_helper_exited(const ChildProcess& helper);
  static void on_connection_closed(GDBusConnection*, gboolean, GError*, gpointer self);
  void schedule_restart();
  void restart();

  Options options_;
  std::string prefix_;  // "VM <name>: " for messages
  std::string config_path_;
  std::string socket_path_;
  std::string documents_mount_;
  std::string address_;

  bool owns_runtime_dir_ = false;  // false while another broker may be using it
  std::unique_ptr<DBusDaemon> daemon_;
  GObjectPtr<GDBusConnection> connection_;
  gulong closed_handler_ = 0;
  std::unique_ptr<ChildProcess> permission_store_;
  std::unique_ptr<ChildProcess> document_portal_;

  // What died since the last restart; the restart timer and its history.
  bool restart_bus_ = false;
  bool restart_permission_store_ = false;
  bool restart_document_portal_ = false;
  bool given_up_ = false;
  guint restart_source_ = 0;
  std::deque<gint64> restart_times_;
  std::function<void()> on_restarted_;
};

PrivateBusImpl::PrivateBusImpl(const Options& options) : options_(options), prefix_("VM " + options.vm_name + ": ") {}

PrivateBusImpl::~PrivateBusImpl() {
  if (restart_source_ != 0) g_source_remove(restart_source_);
  stop_all();
}

bool PrivateBusImpl::start_all(GError** error) {
  Deadline deadline(kStartTimeoutUs);
  return prepare_directories(error) && start_bus(error) && start_permission_store(deadline, error) &&
         start_document_portal(deadline, error);
}

bool PrivateBusImpl::prepare_directories(GError** error) {
  if (options_.runtime_dir.empty() || options_.state_dir.empty()) {
    g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                "%sthe private bus needs a runtime directory and a state directory (--runtime-dir, --state-dir)",
                prefix_.c_str());
    return false;
  }
  for (const std::string* dir : {&options_.runtime_dir, &options_.state_dir}) {
    if (g_mkdir_with_parents(dir->c_str(), 0700) != 0) {
      int saved_errno = errno;
      g_set_error(error, G_IO_ERROR, g_io_error_from_errno(saved_errno), "%scannot create directory %s: %s",
                  prefix_.c_str(), dir->c_str(), g_strerror(saved_errno));
      return false;
    }
  }
  // One spelling of each directory everywhere: the document portal reports
  // $XDG_RUNTIME_DIR/doc as it was given, the kernel lists the real path.
  for (std::string* dir : {&options_.runtime_dir, &options_.state_dir}) {
    g_autofree char* resolved = realpath(dir->c_str(), nullptr);
    if (resolved == nullptr) {
      int saved_errno = errno;
      g_set_error(error, G_IO_ERROR, g_io_error_from_errno(saved_errno), "%scannot resolve directory %s: %s",
                  prefix_.c_str(), dir->c_str(), g_strerror(saved_errno));
      return false;
    }
    *dir = resolved;
  }
  config_path_ = options_.runtime_dir + "/private-bus.conf";
  socket_path_ = options_.runtime_dir + "/private-bus.sock";
  documents_mount_ = options_.runtime_dir + "/doc";
  if (socket_path_.size() >= sizeof(sockaddr_un::sun_path)) {
    g_set_error(error, G_IO_ERROR, G_IO_ERROR_FILENAME_TOO_LONG,
                "%sthe socket path %s is longer than a unix socket allows (%zu bytes); use a shorter --runtime-dir",
                prefix_.c_str(), socket_path_.c_str(), sizeof(sockaddr_un::sun_path) - 1);
    return false;
  }
  if (socket_answers(socket_path_)) {
    g_set_error(error, G_IO_ERROR, G_IO_ERROR_EXISTS,
                "%sa private bus is already running at %s: another broker uses the runtime directory %s; give each "
                "VM its own --runtime-dir",
                prefix_.c_str(), socket_path_.c_str(), options_.runtime_dir.c_str());
    return false;
  }
  owns_runtime_dir_ = true;  // from here on, what is in it is ours to clean up
  g_unlink(socket_path_.c_str());  // stale, from a crashed run
  release_documents_mount();
  if (fuse_mount_state(documents_mount_) != MountState::kNotMounted) {
    g_set_error(error, G_IO_ERROR, G_IO_ERROR_BUSY,
                "%sa stale FUSE mount at %s could not be removed; unmount it by hand (fusermount3 -u -z %s)",
                prefix_.c_str(), documents_mount_.c_str(), documents_mount_.c_str());
    return false;
  }
  return true;
}

bool PrivateBusImpl::start_bus(GError** error) {
  daemon_ = DBusDaemon::spawn(config_path_, socket_path_, error);
  if (!daemon_) {
    g_prefix_error(error, "%scannot start the private bus: ", prefix_.c_str());
    return false;
  }
  address_ = daemon_->address();
  // Made on the default main context, so that "closed" is delivered there.
  connection_.reset(g_dbus_connection_new_for_address_sync(
      address_.c_str(),
      GDBusConnectionFlags(G_DBUS_CONNECTION_FLAGS_AUTHENTICATION_CLIENT |
                           G_DBUS_CONNECTION_FLAGS_MESSAGE_BUS_CONNECTION),
      nullptr, nullptr, error));
  if (!connection_) {
    g_prefix_error(error, "%scannot connect to the private bus %s (dbus-daemon pid %d): ", prefix_.c_str(),
                   address_.c_str(), int(daemon_->pid()));
    return false;
  }
  g_dbus_connection_set_exit_on_close(connection_.get(), FALSE);
  return true;
}

std::unique_ptr<ChildProcess> PrivateBusImpl::spawn_helper(const char* name, const char* program, GError** error) {
  const char* path = g_getenv("PATH");
  g_auto(GStrv) environment = nullptr;
  environment = g_environ_setenv(environment, "PATH", path != nullptr ? path : "/usr/local/bin:/usr/bin:/bin", TRUE);
  environment = g_environ_setenv(environment, "DBUS_SESSION_BUS_ADDRESS", address_.c_str(), TRUE);
  environment = g_environ_setenv(environment, "XDG_RUNTIME_DIR", options_.runtime_dir.c_str(), TRUE);
  environment = g_environ_setenv(environment, "XDG_DATA_HOME", options_.state_dir.c_str(), TRUE);
  // No gvfs and no dconf: they would look for services on this bus.
  environment = g_environ_setenv(environment, "GIO_USE_VFS", "local", TRUE);
  environment = g_environ_setenv(environment, "GSETTINGS_BACKEND", "memory", TRUE);
  auto helper = ChildProcess::spawn(name, {.argv = {program}, .envp = environment}, error);
  if (!helper) g_prefix_error(error, "%s", prefix_.c_str());
  return helper;
}

bool PrivateBusImpl::name_has_owner(const char* name) {
  g_autoptr(GVariant) reply = g_dbus_connection_call_sync(
      connection_.get(), "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus", "NameHasOwner",
      g_variant_new("(s)", name), G_VARIANT_TYPE("(b)"), G_DBUS_CALL_FLAGS_NONE, 1000, nullptr, nullptr);
  gboolean has_owner = FALSE;
  if (reply) g_variant_get(reply, "(b)", &has_owner);
  return has_owner;
}

// Polls until helper owns name on the bus, exits, or the deadline passes;
// hint() (asked once it failed) says what to check.
bool PrivateBusImpl::wait_for_name(const ChildProcess& helper, const char* name, const Deadline& deadline,
                                   const std::function<std::string()>& hint, GError** error) {
  while (!name_has_owner(name)) {
    if (helper.has_exited()) {
      g_set_error(error, G_IO_ERROR, G_IO_ERROR_FAILED, "%s%s (pid %d) %s while starting: %s", prefix_.c_str(),
                  helper.name().c_str(), int(helper.pid()), helper.exit_description().c_str(), hint().c_str());
      return false;
    }
    if (deadline.passed()) {
      g_set_error(error, G_IO_ERROR, G_IO_ERROR_TIMED_OUT,
                  "%s%s (pid %d) did not take the name %s on the private bus within %d s", prefix_.c_str(),
                  helper.name().c_str(), int(helper.pid()), name, int(kStartTimeoutUs / G_USEC_PER_SEC));
      return false;
    }
    g_usleep(kPollIntervalUs);
  }
  return true;
}

bool PrivateBusImpl::start_permission_store(const Deadline& deadline, GError** error) {
  permission_store_.reset();
  permission_store_ = spawn_helper("xdg-permission-store", XDG_PERMISSION_STORE, error);
  if (!permission_store_) return false;
  return wait_for_name(*permission_store_, kPermissionStoreName, deadline,
                       [this] { return "see its messages above; is --state-dir " + options_.state_dir + " writable?"; },
                       error);
}

bool PrivateBusImpl::start_document_portal(const Deadline& deadline, GError** error) {
  document_portal_.reset();
  release_documents_mount();  // left behind if the previous one was killed
  document_portal_ = spawn_helper("xdg-document-portal", XDG_DOCUMENT_PORTAL, error);
  if (!document_portal_) return false;
  const ChildProcess& portal = *document_portal_;
  auto hint = [&] { return document_portal_hint(portal.exit_status(), options_.state_dir, documents_mount_); };
  if (!wait_for_name(portal, kDocumentsName, deadline, hint, error)) return false;

  // Answered once the FUSE filesystem is mounted, or with an error if it
  // cannot be (the portal then exits).
  g_autoptr(GError) call_error = nullptr;
  g_autoptr(GVariant) reply = g_dbus_connection_call_sync(
      connection_.get(), kDocumentsName, kDocumentsPath, kDocumentsName, "GetMountPoint", nullptr,
      G_VARIANT_TYPE("(ay)"), G_DBUS_CALL_FLAGS_NONE, deadline.remaining_ms(), nullptr, &call_error);
  if (!reply) {
    g_dbus_error_strip_remote_error(call_error);
    portal.wait_exit(G_USEC_PER_SEC);  // so that its exit status is known
    g_set_error(error, G_IO_ERROR, G_IO_ERROR_FAILED, "%sxdg-document-portal (pid %d) %s; GetMountPoint: %s; %s",
                prefix_.c_str(), int(portal.pid()), portal.exit_description().c_str(), call_error->message,
                hint().c_str());
    return false;
  }
  g_autoptr(GVariant) mount_point = g_variant_get_child_value(reply, 0);
  if (documents_mount_ != g_variant_get_bytestring(mount_point)) {
    g_set_error(error, G_IO_ERROR, G_IO_ERROR_FAILED,
                "%sxdg-document-portal mounted its filesystem at %s, not at %s: did it ignore XDG_RUNTIME_DIR?",
                prefix_.c_str(), g_variant_get_bytestring(mount_point), documents_mount_.c_str());
    return false;
  }
  if (fuse_mount_state(documents_mount_) != MountState::kMounted) {
    g_set_error(error, G_IO_ERROR, G_IO_ERROR_FAILED,
                "%sxdg-document-portal reports %s as mounted but it is not a FUSE mount point: is /dev/fuse "
                "available and fusermount3 installed?",
                prefix_.c_str(), documents_mount_.c_str());
    return false;
  }
  g_debug("%sprivate bus %s up: xdg-permission-store pid %d, xdg-document-portal pid %d, documents at %s",
          prefix_.c_str(), address_.c_str(), int(permission_store_->pid()), int(portal.pid()),
          documents_mount_.c_str());
  return true;
}

void PrivateBusImpl::release_documents_mount() {
  if (fuse_mount_state(documents_mount_) == MountState::kNotMounted) return;
  g_message("%sunmounting the document filesystem left at %s", prefix_.c_str(), documents_mount_.c_str());
  g_autoptr(GError) error = nullptr;
  if (!detach_mount(documents_mount_, &error)) g_warning("%s%s", prefix_.c_str(), error->message);
}

// Reverse order of start-up. Safe on a partly started bus.
void PrivateBusImpl::stop_all() {
  if (closed_handler_ != 0) g_signal_handler_disconnect(connection_.get(), closed_handler_);
  closed_handler_ = 0;
  document_portal_.reset();  // SIGTERM: it unmounts its filesystem and exits
  if (connection_) g_dbus_connection_close_sync(connection_.get(), nullptr, nullptr);
  connection_.reset();
  permission_store_.reset();
  daemon_.reset();  // removes the socket and the config
  if (owns_runtime_dir_) {
    release_documents_mount();
    g_rmdir(documents_mount_.c_str());  // only if empty: never through a mount
  }
}

void PrivateBusImpl::watch_all() {
  permission_store_->watch([this] { on_helper_exited(*permission_store_); });
  document_portal_->watch([this] { on_helper_exited(*document_portal_); });
  if (closed_handler_ == 0)
    closed_handler_ = g_signal_connect(connection_.get(), "closed", G_CALLBACK(on_connection_closed), this);
}

void PrivateBusImpl::on_helper_exited(const ChildProcess& helper) {
  g_warning("%s%s (pid %d) %s; restarting it", prefix_.c_str(), helper.name().c_str(), int(helper.pid()),
            helper.exit_description().c_str());
  if (&helper == permission_store_.get())
    restart_permission_store_ = true;
  else
    restart_document_portal_ = true;
  schedule_restart();
}

void PrivateBusImpl::on_connection_closed(GDBusConnection*, gboolean, GError* error, gpointer data) {
  auto* self = static_cast<PrivateBusImpl*>(data);
  g_warning("%slost the private bus (dbus-daemon pid %d: %s); restarting it and its helpers", self->prefix_.c_str(),
            self->daemon_ ? int(self->daemon_->pid()) : 0, error != nullptr ? error->message : "closed");
  self->restart_bus_ = true;
  self->schedule_restart();
}

void PrivateBusImpl::schedule_restart() {
  if (restart_source_ != 0 || given_up_) return;
  gint64 now = g_get_monotonic_time();
  while (!restart_times_.empty() && now - restart_times_.front() > 60 * G_USEC_PER_SEC) restart_times_.pop_front();
  if (restart_times_.size() >= kMaxRestartsPerMinute) {
    g_warning("%sthe private bus helpers had to be restarted %zu times within a minute; giving up: files cannot be "
              "shared with this VM until the broker is restarted",
              prefix_.c_str(), restart_times_.size());
    given_up_ = true;
    return;
  }
  guint delay_ms = kFirstRestartDelayMs << restart_times_.size();
  restart_times_.push_back(now);
  restart_source_ = g_timeout_add(
      delay_ms,
      [](gpointer data) {
        auto* self = static_cast<PrivateBusImpl*>(data);
        self->restart_source_ = 0;
        self->restart();
        return G_SOURCE_REMOVE;
      },
      this);
}

void PrivateBusImpl::restart() {
  bool whole_bus = std::exchange(restart_bus_, false);
  bool permission_store = std::exchange(restart_permission_store_, false);
  bool document_portal = std::exchange(restart_document_portal_, false);
  g_autoptr(GError) error = nullptr;
  Deadline deadline(kStartTimeoutUs);
  bool ok = true;
  if (whole_bus) {
    stop_all();
    ok = start_all(&error);
  } else {
    if (permission_store) ok = start_permission_store(deadline, &error);
    if (ok && document_portal) ok = start_document_portal(deadline, &error);
  }
  if (!ok) {
    g_warning("%srestarting the private bus failed: %s", prefix_.c_str(), error->message);
    restart_bus_ = true;  // next time, from scratch
    schedule_restart();
    return;
  }
  watch_all();
  g_message("%sprivate bus %s restarted", prefix_.c_str(),
            whole_bus ? "and its helpers" : permission_store ? "permission store" : "document portal");
  if (on_restarted_) on_restarted_();
}

}  // namespace

std::unique_ptr<PrivateBus> PrivateBus::start(const Options& options, GError** error) {
  auto bus = std::make_unique<PrivateBusImpl>(options);
  if (!bus->start_all(error)) return nullptr;  // the destructor stops what did start
  bus->watch_all();
  return bus;
}

}  // namespace sidebus
