// SPDX-License-Identifier: LGPL-2.1-or-later
// private-bus.cpp — the per-VM private bus (see private-bus.hpp): one
// dbus-daemon, the real xdg-permission-store and xdg-document-portal on it,
// and their FUSE mount, owned and supervised by the broker.
//
// Start-up, in this order and against one deadline, driven by events (the
// daemon printing its address, NameOwnerChanged, replies), never by polling
// or waiting on the main loop:
//   1. clean up after a crashed run: a stale FUSE mount at <runtime>/doc, a
//      stale socket (a socket that still answers means another broker uses
//      this runtime dir: refused);
//   2. dbus-daemon with a generated config (DBusDaemon), then our connection;
//      or, joining the VM manager's bus, only our connection, and a check
//      that neither helper's name is owned or activatable there;
//   3. xdg-permission-store, until it owns its name (the document portal
//      needs it at start-up; there is no activation on this bus);
//   4. xdg-document-portal, until it owns org.freedesktop.portal.Documents,
//      GetMountPoint answers <runtime>/doc and that is a FUSE mount point
//      (or later, start_document_portal(), on a migration's destination).
// The helpers get a clean environment: the private bus address,
// XDG_RUNTIME_DIR (the portal mounts $XDG_RUNTIME_DIR/doc), XDG_DATA_HOME
// (both keep their databases in $XDG_DATA_HOME/flatpak/db) and PATH (for
// fusermount3) — nothing else from the host session.
//
// Afterwards, on the default main context: a helper that exits on its own is
// restarted after a backoff (at most kMaxRestartsPerMinute a minute); if the
// dbus-daemon goes (our connection closes), everything is restarted and
// connection() is a new object. A restart is the same asynchronous sequence
// as start-up (an Attempt); helpers that are replaced are stopped without
// waiting (ChildProcess::stop_async). on_restarted tells the owner when a
// restart is done. Only start() itself waits, iterating the main context:
// the broker has nothing to serve before the bus is up.
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

#include <algorithm>
#include <deque>
#include <vector>

#include "util/child-process.hpp"
#include "documents/dbus-daemon.hpp"
#include "sidebus-config.h"
#include "util/main-context.hpp"
#include "util/unique-fd.hpp"

namespace sidebus {
namespace {

constexpr const char* kDocumentsName = "org.freedesktop.portal.Documents";
constexpr const char* kDocumentsPath = "/org/freedesktop/portal/documents";
constexpr const char* kPermissionStoreName = "org.freedesktop.impl.portal.PermissionStore";
constexpr guint kStartTimeoutSeconds = 15;
constexpr size_t kMaxRestartsPerMinute = 5;
constexpr guint kFirstRestartDelayMs = 250;  // doubled for each restart within the last minute


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

  // What an Attempt starts: the whole bus, or helpers that died.
  struct Steps {
    bool bus = false;
    bool permission_store = false;
    bool document_portal = false;
  };
  using Done = std::function<void(GError* error)>;  // error borrowed; NULL: all up
  // Runs @steps asynchronously; @done runs on the main context.
  void start_async(Steps steps, Done done);
  void watch_all();
  void set_document_portal_deferred(bool deferred) { document_portal_wanted_ = !deferred; }

  GDBusConnection* connection() override { return connection_.get(); }
  const std::string& address() override { return address_; }
  const std::string& documents_mount() override { return documents_mount_; }
  void set_on_restarted(std::function<void()> on_restarted) override { on_restarted_ = std::move(on_restarted); }
  Health health() const override { return health_; }
  void start_document_portal(std::function<void(GError* error)> done) override;
  bool document_portal_started() override { return document_portal_wanted_; }
  std::string database_dir() override { return options_.state_dir + "/flatpak/db"; }
  bool joined() override { return !options_.join_address.empty(); }

 private:
  struct Attempt;
  bool prepare_directories(GError** error);
  std::unique_ptr<ChildProcess> spawn_helper(const char* name, const char* program, GError** error);
  void release_documents_mount();
  void retire(std::unique_ptr<ChildProcess> child);
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

  bool directories_ready_ = false;
  bool owns_runtime_dir_ = false;  // false while another broker may be using it
  std::unique_ptr<DBusDaemon> daemon_;
  GObjectPtr<GDBusConnection> connection_;
  gulong closed_handler_ = 0;
  std::unique_ptr<ChildProcess> permission_store_;
  std::unique_ptr<ChildProcess> document_portal_;
  std::vector<std::unique_ptr<ChildProcess>> stopping_;  // replaced helpers, stopping without being waited for
  std::shared_ptr<Attempt> attempt_;                     // the start or restart in progress

  // What died since the last restart; the restart timer and its history.
  Steps to_restart_;
  bool given_up_ = false;
  guint restart_source_ = 0;
  std::deque<gint64> restart_times_;
  std::function<void()> on_restarted_;
  Health health_;  // given_up mirrors given_up_
  bool document_portal_wanted_ = true;  // false until start_document_portal() when deferred
};

// One start or restart: its steps, run one after the other from callbacks,
// against one deadline. Every callback holds a weak reference and does
// nothing once the attempt is over (finished, or the bus destroyed).
struct PrivateBusImpl::Attempt : std::enable_shared_from_this<Attempt> {
  PrivateBusImpl* bus;
  Steps steps;
  Done done;
  guint deadline = 0;
  guint name_subscription = 0;  // NameOwnerChanged for the helper being waited for
  GObjectPtr<GCancellable> cancellable = adopt(g_cancellable_new());
  const char* waiting_for = nullptr;  // the helper's bus name
  std::function<std::string()> hint;  // what to check when that helper fails
  ChildProcess* helper = nullptr;     // the helper being waited for
  bool over = false;

  Attempt(PrivateBusImpl* owner, Steps what, Done on_done) : bus(owner), steps(what), done(std::move(on_done)) {}
  ~Attempt() { end(); }

  void end() {
    over = true;
    if (deadline != 0) g_source_remove(deadline);
    deadline = 0;
    stop_waiting();
    g_cancellable_cancel(cancellable.get());
  }

  void stop_waiting() {
    if (name_subscription != 0 && bus->connection_)
      g_dbus_connection_signal_unsubscribe(bus->connection_.get(), name_subscription);
    name_subscription = 0;
    if (helper != nullptr) helper->unwatch();
    helper = nullptr;
  }

  void fail(GError* error) {  // takes error
    if (over) return g_error_free(error);
    auto hold = shared_from_this();
    end();
    done(error);
    g_error_free(error);
  }

  void succeed() {
    if (over) return;
    auto hold = shared_from_this();
    end();
    done(nullptr);
  }

  void run() {
    deadline = g_timeout_add_seconds(kStartTimeoutSeconds, [](gpointer data) -> gboolean {
      auto* self = static_cast<Attempt*>(data);
      self->deadline = 0;
      self->fail(g_error_new(G_IO_ERROR, G_IO_ERROR_TIMED_OUT, "%s%s did not come up within %u s",
                             self->bus->prefix_.c_str(), self->waiting_for ? self->waiting_for : "the private bus",
                             kStartTimeoutSeconds));
      return G_SOURCE_REMOVE;
    }, this);
    next();
  }

  // The next step that is still to do.
  void next() {
    if (steps.bus) return start_bus();
    if (steps.permission_store) return start_permission_store();
    if (steps.document_portal) return start_document_portal();
    succeed();
  }

  void start_bus() {
    GError* error = nullptr;
    if (!bus->directories_ready_ && !bus->prepare_directories(&error)) return fail(error);
    if (bus->joined()) return join_bus();
    std::weak_ptr<Attempt> weak = shared_from_this();
    DBusDaemon::spawn_async(bus->config_path_, bus->socket_path_, [weak](std::unique_ptr<DBusDaemon> daemon, GError* error) {
      auto self = weak.lock();
      if (!self || self->over) return;
      if (!daemon) return self->fail(g_error_new(G_IO_ERROR, G_IO_ERROR_FAILED, "%scannot start the private bus: %s",
                                                 self->bus->prefix_.c_str(), error->message));
      self->bus->daemon_ = std::move(daemon);
      self->bus->address_ = self->bus->daemon_->address();
      g_dbus_connection_new_for_address(
          self->bus->address_.c_str(),
          GDBusConnectionFlags(G_DBUS_CONNECTION_FLAGS_AUTHENTICATION_CLIENT |
                               G_DBUS_CONNECTION_FLAGS_MESSAGE_BUS_CONNECTION),
          nullptr, self->cancellable.get(), on_connected, new std::weak_ptr<Attempt>(self));
    });
  }

  // The VM manager's bus: connect, then make sure our helpers' names are
  // free there and cannot be activated (an activated permission store or
  // document portal would use that bus's environment: another database, the
  // host user's documents).
  void join_bus() {
    bus->address_ = bus->options_.join_address;
    g_dbus_connection_new_for_address(
        bus->address_.c_str(),
        GDBusConnectionFlags(G_DBUS_CONNECTION_FLAGS_AUTHENTICATION_CLIENT |
                             G_DBUS_CONNECTION_FLAGS_MESSAGE_BUS_CONNECTION),
        nullptr, cancellable.get(), on_connected, new std::weak_ptr<Attempt>(shared_from_this()));
  }

  void check_joined_bus() {
    g_dbus_connection_call(
        bus->connection_.get(), "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus",
        "ListActivatableNames", nullptr, G_VARIANT_TYPE("(as)"), G_DBUS_CALL_FLAGS_NONE, -1, cancellable.get(),
        [](GObject* source, GAsyncResult* result, gpointer data) {
          std::unique_ptr<std::weak_ptr<Attempt>> weak(static_cast<std::weak_ptr<Attempt>*>(data));
          g_autoptr(GError) error = nullptr;
          g_autoptr(GVariant) reply = g_dbus_connection_call_finish(G_DBUS_CONNECTION(source), result, &error);
          auto self = weak->lock();
          if (!self || self->over) return;
          const std::string& prefix = self->bus->prefix_;
          if (reply == nullptr)
            return self->fail(g_error_new(G_IO_ERROR, G_IO_ERROR_FAILED, "%sthe bus %s (--private-bus) does not answer "
                                          "ListActivatableNames: %s", prefix.c_str(), self->bus->address_.c_str(),
                                          error->message));
          g_autofree const char** names = nullptr;
          g_variant_get(reply, "(^a&s)", &names);
          for (const char** name = names; *name != nullptr; name++) {
            if (g_str_equal(*name, kDocumentsName) || g_str_equal(*name, kPermissionStoreName))
              return self->fail(g_error_new(
                  G_IO_ERROR, G_IO_ERROR_EXISTS,
                  "%sthe bus %s (--private-bus) can activate %s: the broker runs this VM's own permission store and "
                  "document portal there, with the VM's directories; give that dbus-daemon a configuration without "
                  "service directories (<servicedir>, <standard_session_servicedirs/>), such as the shipped "
                  "vm-bus.conf",
                  prefix.c_str(), self->bus->address_.c_str(), *name));
          }
          self->check_name_free(kPermissionStoreName, [](Attempt& self) {
            self.check_name_free(kDocumentsName, [](Attempt& self) {
              self.steps.bus = false;
              self.next();
            });
          });
        },
        new std::weak_ptr<Attempt>(shared_from_this()));
  }

  void check_name_free(const char* name, void (*then)(Attempt&)) {
    struct Pending {
      std::weak_ptr<Attempt> weak;
      const char* name;
      void (*then)(Attempt&);
    };
    g_dbus_connection_call(
        bus->connection_.get(), "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus",
        "NameHasOwner", g_variant_new("(s)", name), G_VARIANT_TYPE("(b)"), G_DBUS_CALL_FLAGS_NONE, -1,
        cancellable.get(),
        [](GObject* source, GAsyncResult* result, gpointer data) {
          std::unique_ptr<Pending> pending(static_cast<Pending*>(data));
          g_autoptr(GError) error = nullptr;
          g_autoptr(GVariant) reply = g_dbus_connection_call_finish(G_DBUS_CONNECTION(source), result, &error);
          auto self = pending->weak.lock();
          if (!self || self->over) return;
          gboolean owned = FALSE;
          if (reply != nullptr) g_variant_get(reply, "(b)", &owned);
          if (reply == nullptr || owned)
            return self->fail(g_error_new(
                G_IO_ERROR, G_IO_ERROR_EXISTS,
                "%s%s is already owned on the bus %s (--private-bus): another broker or document portal serves "
                "that bus; each VM's bus takes one sidebus broker",
                self->bus->prefix_.c_str(), pending->name, self->bus->address_.c_str()));
          pending->then(*self);
        },
        new Pending{shared_from_this(), name, then});
  }

  static void on_connected(GObject*, GAsyncResult* result, gpointer data) {
    std::unique_ptr<std::weak_ptr<Attempt>> weak(static_cast<std::weak_ptr<Attempt>*>(data));
    GError* error = nullptr;
    GDBusConnection* connection = g_dbus_connection_new_for_address_finish(result, &error);
    auto self = weak->lock();
    if (!self || self->over) {
      g_clear_error(&error);
      g_clear_object(&connection);
      return;
    }
    if (connection == nullptr) {
      if (self->bus->joined())
        g_prefix_error(&error, "%scannot connect to the VM's bus %s (--private-bus): ", self->bus->prefix_.c_str(),
                       self->bus->address_.c_str());
      else
        g_prefix_error(&error, "%scannot connect to the private bus %s (dbus-daemon pid %d): ",
                       self->bus->prefix_.c_str(), self->bus->address_.c_str(), int(self->bus->daemon_->pid()));
      return self->fail(error);
    }
    g_dbus_connection_set_exit_on_close(connection, FALSE);
    self->bus->connection_ = adopt(connection);
    if (self->bus->joined()) return self->check_joined_bus();
    self->steps.bus = false;
    self->next();
  }

  void start_permission_store() {
    GError* error = nullptr;
    bus->retire(std::move(bus->permission_store_));
    bus->permission_store_ = bus->spawn_helper("xdg-permission-store", XDG_PERMISSION_STORE, &error);
    if (!bus->permission_store_) return fail(error);
    std::string state_dir = bus->options_.state_dir;
    wait_for_name(*bus->permission_store_, kPermissionStoreName,
                  [state_dir] { return "see its messages above; is --state-dir " + state_dir + " writable?"; },
                  [](Attempt& self) {
                    self.steps.permission_store = false;
                    self.next();
                  });
  }

  void start_document_portal() {
    GError* error = nullptr;
    bus->retire(std::move(bus->document_portal_));
    bus->release_documents_mount();  // left behind if the previous one was killed
    bus->document_portal_ = bus->spawn_helper("xdg-document-portal", XDG_DOCUMENT_PORTAL, &error);
    if (!bus->document_portal_) return fail(error);
    ChildProcess* portal = bus->document_portal_.get();
    std::string state_dir = bus->options_.state_dir, mount = bus->documents_mount_;
    wait_for_name(*portal, kDocumentsName,
                  [portal, state_dir, mount] { return document_portal_hint(portal->exit_status(), state_dir, mount); },
                  [](Attempt& self) { self.check_mount(); });
  }

  // Answered once the FUSE filesystem is mounted, or with an error if it
  // cannot be (the portal then exits).
  void check_mount() {
    g_dbus_connection_call(
        bus->connection_.get(), kDocumentsName, kDocumentsPath, kDocumentsName, "GetMountPoint", nullptr,
        G_VARIANT_TYPE("(ay)"), G_DBUS_CALL_FLAGS_NONE, -1, cancellable.get(),
        [](GObject* source, GAsyncResult* result, gpointer data) {
          std::unique_ptr<std::weak_ptr<Attempt>> weak(static_cast<std::weak_ptr<Attempt>*>(data));
          g_autoptr(GError) call_error = nullptr;
          g_autoptr(GVariant) reply = g_dbus_connection_call_finish(G_DBUS_CONNECTION(source), result, &call_error);
          auto self = weak->lock();
          if (!self || self->over) return;
          self->mount_checked(reply, call_error);
        },
        new std::weak_ptr<Attempt>(shared_from_this()));
  }

  void mount_checked(GVariant* reply, GError* call_error) {
    const std::string& prefix = bus->prefix_;
    const std::string& mount = bus->documents_mount_;
    ChildProcess& portal = *bus->document_portal_;
    if (reply == nullptr) {
      // The portal exits right after such an answer; its exit status says
      // why (document_portal_hint), so wait a moment for it.
      g_dbus_error_strip_remote_error(call_error);
      std::string answer = call_error->message;
      std::weak_ptr<Attempt> weak = shared_from_this();
      auto report = [weak, answer] {
        auto self = weak.lock();
        if (!self || self->over) return;
        ChildProcess& portal = *self->bus->document_portal_;
        self->fail(g_error_new(G_IO_ERROR, G_IO_ERROR_FAILED, "%sxdg-document-portal (pid %d) %s; GetMountPoint: %s; %s",
                               self->bus->prefix_.c_str(), int(portal.pid()), portal.exit_description().c_str(),
                               answer.c_str(),
                               document_portal_hint(portal.exit_status(), self->bus->options_.state_dir,
                                                    self->bus->documents_mount_).c_str()));
      };
      portal.watch(report);
      g_timeout_add_seconds_full(G_PRIORITY_DEFAULT, 1, [](gpointer data) -> gboolean {
        (*static_cast<std::function<void()>*>(data))();
        return G_SOURCE_REMOVE;
      }, new std::function<void()>(report), [](gpointer data) { delete static_cast<std::function<void()>*>(data); });
      return;
    }
    g_autoptr(GVariant) mount_point = g_variant_get_child_value(reply, 0);
    if (mount != g_variant_get_bytestring(mount_point))
      return fail(g_error_new(G_IO_ERROR, G_IO_ERROR_FAILED,
                              "%sxdg-document-portal mounted its filesystem at %s, not at %s: did it ignore "
                              "XDG_RUNTIME_DIR?",
                              prefix.c_str(), g_variant_get_bytestring(mount_point), mount.c_str()));
    if (fuse_mount_state(mount) != MountState::kMounted)
      return fail(g_error_new(G_IO_ERROR, G_IO_ERROR_FAILED,
                              "%sxdg-document-portal reports %s as mounted but it is not a FUSE mount point: is "
                              "/dev/fuse available and fusermount3 installed?",
                              prefix.c_str(), mount.c_str()));
    g_debug("%sprivate bus %s up: xdg-permission-store pid %d, xdg-document-portal pid %d, documents at %s",
            prefix.c_str(), bus->address_.c_str(), int(bus->permission_store_->pid()), int(portal.pid()),
            mount.c_str());
    steps.document_portal = false;
    next();
  }

  // Until @helper owns @name: NameOwnerChanged, with NameHasOwner for a
  // name taken before we subscribed. The helper exiting first fails the
  // attempt with @why_failed().
  void wait_for_name(ChildProcess& child, const char* name, std::function<std::string()> why_failed,
                     void (*then)(Attempt&)) {
    waiting_for = name;
    hint = std::move(why_failed);
    helper = &child;
    on_name = then;
    std::weak_ptr<Attempt> weak = shared_from_this();
    name_subscription = g_dbus_connection_signal_subscribe(
        bus->connection_.get(), "org.freedesktop.DBus", "org.freedesktop.DBus", "NameOwnerChanged",
        "/org/freedesktop/DBus", name, G_DBUS_SIGNAL_FLAGS_NONE,
        [](GDBusConnection*, const char*, const char*, const char*, const char*, GVariant* parameters, gpointer data) {
          const char *owner_name, *old_owner, *new_owner;
          g_variant_get(parameters, "(&s&s&s)", &owner_name, &old_owner, &new_owner);
          auto self = static_cast<std::weak_ptr<Attempt>*>(data)->lock();
          if (self && !self->over && *new_owner != '\0') self->name_owned();
        },
        new std::weak_ptr<Attempt>(weak), [](gpointer data) { delete static_cast<std::weak_ptr<Attempt>*>(data); });
    child.watch([weak] {
      auto self = weak.lock();
      if (!self || self->over || self->helper == nullptr) return;
      ChildProcess& child = *self->helper;
      self->fail(g_error_new(G_IO_ERROR, G_IO_ERROR_FAILED, "%s%s (pid %d) %s while starting: %s",
                             self->bus->prefix_.c_str(), child.name().c_str(), int(child.pid()),
                             child.exit_description().c_str(), self->hint().c_str()));
    });
    g_dbus_connection_call(
        bus->connection_.get(), "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus",
        "NameHasOwner", g_variant_new("(s)", name), G_VARIANT_TYPE("(b)"), G_DBUS_CALL_FLAGS_NONE, -1,
        cancellable.get(),
        [](GObject* source, GAsyncResult* result, gpointer data) {
          std::unique_ptr<std::weak_ptr<Attempt>> weak(static_cast<std::weak_ptr<Attempt>*>(data));
          g_autoptr(GVariant) reply = g_dbus_connection_call_finish(G_DBUS_CONNECTION(source), result, nullptr);
          auto self = weak->lock();
          gboolean owned = FALSE;
          if (reply != nullptr) g_variant_get(reply, "(b)", &owned);
          if (self && !self->over && owned) self->name_owned();
        },
        new std::weak_ptr<Attempt>(weak));
  }

  void name_owned() {
    if (helper == nullptr) return;  // both the signal and NameHasOwner said so
    stop_waiting();
    waiting_for = nullptr;
    on_name(*this);
  }

  void (*on_name)(Attempt&) = nullptr;
};

PrivateBusImpl::PrivateBusImpl(const Options& options) : options_(options), prefix_("VM " + options.vm_name + ": ") {}

PrivateBusImpl::~PrivateBusImpl() {
  if (restart_source_ != 0) g_source_remove(restart_source_);
  attempt_.reset();
  stop_all();
}

void PrivateBusImpl::start_async(Steps steps, Done done) {
  attempt_ = std::make_shared<Attempt>(this, steps, [this, done = std::move(done)](GError* error) {
    auto finished = std::move(attempt_);  // kept alive by the attempt's own frame
    done(error);
  });
  attempt_->run();
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
  directories_ready_ = true;
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

void PrivateBusImpl::release_documents_mount() {
  if (fuse_mount_state(documents_mount_) == MountState::kNotMounted) return;
  g_message("%sunmounting the document filesystem left at %s", prefix_.c_str(), documents_mount_.c_str());
  g_autoptr(GError) error = nullptr;
  if (!detach_mount(documents_mount_, &error)) g_warning("%s%s", prefix_.c_str(), error->message);
}

// A helper that is replaced stops on its own time; it is forgotten once it
// has exited (or stopped for good when the bus goes).
void PrivateBusImpl::retire(std::unique_ptr<ChildProcess> child) {
  if (!child) return;
  ChildProcess* raw = child.get();
  stopping_.push_back(std::move(child));
  raw->stop_async([this, raw] {
    // The last thing its exit watch does: the process may go now.
    auto found =
        std::find_if(stopping_.begin(), stopping_.end(), [raw](const auto& stopping) { return stopping.get() == raw; });
    if (found != stopping_.end()) stopping_.erase(found);
  });
}

// Reverse order of start-up. Safe on a partly started bus. Blocking: only
// for the broker's own exit.
void PrivateBusImpl::stop_all() {
  if (closed_handler_ != 0) g_signal_handler_disconnect(connection_.get(), closed_handler_);
  closed_handler_ = 0;
  document_portal_.reset();  // SIGTERM: it unmounts its filesystem and exits
  if (connection_) g_dbus_connection_close_sync(connection_.get(), nullptr, nullptr);
  connection_.reset();
  permission_store_.reset();
  daemon_.reset();  // removes the socket and the config
  stopping_.clear();
  if (owns_runtime_dir_) {
    release_documents_mount();
    g_rmdir(documents_mount_.c_str());  // only if empty: never through a mount
  }
}

void PrivateBusImpl::watch_all() {
  permission_store_->watch([this] { on_helper_exited(*permission_store_); });
  if (document_portal_) document_portal_->watch([this] { on_helper_exited(*document_portal_); });
  if (closed_handler_ == 0)
    closed_handler_ = g_signal_connect(connection_.get(), "closed", G_CALLBACK(on_connection_closed), this);
}

void PrivateBusImpl::on_helper_exited(const ChildProcess& helper) {
  g_warning("%s%s (pid %d) %s; restarting it", prefix_.c_str(), helper.name().c_str(), int(helper.pid()),
            helper.exit_description().c_str());
  health_.exits[helper.name()]++;
  if (&helper == permission_store_.get())
    to_restart_.permission_store = true;
  else
    to_restart_.document_portal = true;
  schedule_restart();
}

void PrivateBusImpl::on_connection_closed(GDBusConnection*, gboolean, GError* error, gpointer data) {
  auto* self = static_cast<PrivateBusImpl*>(data);
  if (self->joined())
    g_warning("%slost the VM's bus %s (%s); connecting again and restarting the helpers", self->prefix_.c_str(),
              self->address_.c_str(), error != nullptr ? error->message : "closed");
  else
    g_warning("%slost the private bus (dbus-daemon pid %d: %s); restarting it and its helpers", self->prefix_.c_str(),
              self->daemon_ ? int(self->daemon_->pid()) : 0, error != nullptr ? error->message : "closed");
  self->health_.exits["dbus-daemon"]++;
  self->to_restart_ = {true, true, true};
  self->schedule_restart();
}

void PrivateBusImpl::schedule_restart() {
  if (restart_source_ != 0 || given_up_ || attempt_) return;
  gint64 now = g_get_monotonic_time();
  while (!restart_times_.empty() && now - restart_times_.front() > 60 * G_USEC_PER_SEC) restart_times_.pop_front();
  if (restart_times_.size() >= kMaxRestartsPerMinute) {
    g_warning("%sthe private bus helpers had to be restarted %zu times within a minute; giving up: files cannot be "
              "shared with this VM until the broker is restarted",
              prefix_.c_str(), restart_times_.size());
    given_up_ = true;
    health_.given_up = true;
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
  Steps steps = std::exchange(to_restart_, Steps{});
  if (!document_portal_wanted_) steps.document_portal = false;  // not started yet: Load comes first
  if (steps.bus) {
    // Everything goes, without waiting for any of it.
    if (closed_handler_ != 0) g_signal_handler_disconnect(connection_.get(), closed_handler_);
    closed_handler_ = 0;
    if (connection_) g_dbus_connection_close(connection_.get(), nullptr, nullptr, nullptr);
    connection_.reset();
    if (daemon_) retire(daemon_->release());
    daemon_.reset();
    // On the VM manager's bus the helpers lose their connection too, but
    // they need not notice at once: make sure no old one keeps a name.
    if (joined()) {
      retire(std::move(permission_store_));
      retire(std::move(document_portal_));
    }
  }
  start_async(steps, [this, steps](GError* error) {
    if (error != nullptr) {
      g_warning("%srestarting the private bus failed: %s", prefix_.c_str(), error->message);
      to_restart_ = {true, true, true};  // next time, from scratch
      schedule_restart();
      return;
    }
    watch_all();
    health_.restarts++;
    g_message("%sprivate bus %s restarted", prefix_.c_str(),
              steps.bus ? "and its helpers" : steps.permission_store ? "permission store" : "document portal");
    if (to_restart_.bus || to_restart_.permission_store || to_restart_.document_portal) schedule_restart();
    if (on_restarted_) on_restarted_();
  });
}

void PrivateBusImpl::start_document_portal(std::function<void(GError* error)> done) {
  if (document_portal_wanted_ || attempt_ || restart_source_ != 0) {
    g_autoptr(GError) error = g_error_new(G_IO_ERROR, G_IO_ERROR_BUSY, "%s%s", prefix_.c_str(),
                                          document_portal_wanted_ ? "the document portal was started already"
                                                                  : "the private bus is restarting a helper; try again");
    return post_to_context(g_main_context_get_thread_default(), [done, message = std::string(error->message)] {
      g_autoptr(GError) error = g_error_new_literal(G_IO_ERROR, G_IO_ERROR_BUSY, message.c_str());
      done(error);
    });
  }
  document_portal_wanted_ = true;
  start_async({false, false, true}, [this, done = std::move(done)](GError* error) {
    if (error != nullptr) {
      document_portal_wanted_ = false;  // may be tried again
      return done(error);
    }
    document_portal_->watch([this] { on_helper_exited(*document_portal_); });
    done(nullptr);
  });
}

}  // namespace

std::unique_ptr<PrivateBus> PrivateBus::start(const Options& options, GError** error) {
  auto bus = std::make_unique<PrivateBusImpl>(options);
  bool finished = false;
  bool ok = false;
  bus->set_document_portal_deferred(options.defer_document_portal);
  bus->start_async({true, true, !options.defer_document_portal}, [&](GError* failure) {
    ok = failure == nullptr;
    if (failure != nullptr) g_propagate_error(error, g_error_copy(failure));
    finished = true;
  });
  while (!finished) g_main_context_iteration(nullptr, TRUE);
  if (!ok) return nullptr;  // the destructor stops what did start
  bus->watch_all();
  return bus;
}

}  // namespace sidebus
