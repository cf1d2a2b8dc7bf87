// SPDX-License-Identifier: LGPL-2.1-or-later
// broker-main.cpp — sidebus-broker's command line (the contract in
// docs/broker.md, sidebus-broker(8) and DESIGN.md), defaults, the checks of
// every address and path before anything starts, signals, the control
// socket and the service manager's notifications, and the main loop.
//
// Signals: SIGTERM and SIGINT stop the broker cleanly (docs/broker.md says
// what is left behind: nothing); SIGHUP reloads the configuration, as
// `sidebusctl reload` does.
#include <glib-unix.h>
#include <glib/gstdio.h>
#include <malloc.h>
#include <sys/un.h>

#include <clocale>
#include <cstdlib>
#include <string>
#include <vector>

#include "broker/broker.hpp"
#include "broker/config.hpp"
#include "broker/control-commands.hpp"
#include "broker/control-socket.hpp"
#include "broker/vmstate-service.hpp"
#include "documents/app-id.hpp"
#include "link/address.hpp"
#include "sidebus-config.h"
#include "util/log-ring.hpp"
#include "util/log.hpp"
#include "util/service-notify.hpp"

namespace {

std::vector<std::string> to_vector(char** strv) {
  std::vector<std::string> v;
  for (char** s = strv; s != nullptr && *s != nullptr; s++) v.emplace_back(*s);
  return v;
}

std::string absolute(const char* path) {
  g_autofree char* canonical = g_canonicalize_filename(path, nullptr);
  return canonical;
}

// Defaults follow the XDG base directories, one subdirectory per VM.
std::string default_dir(const char* base, const std::string& vm_name) {
  g_autofree char* path = g_build_filename(base, "sidebus", vm_name.c_str(), nullptr);
  return path;
}

bool ensure_dir(const std::string& path, const char* option, GError** error) {
  if (g_mkdir_with_parents(path.c_str(), 0700) == 0) return true;
  int saved_errno = errno;
  g_set_error(error, G_FILE_ERROR, g_file_error_from_errno(saved_errno),
              "%s %s: cannot create the directory: %s; choose a directory this user may create", option, path.c_str(),
              g_strerror(saved_errno));
  return false;
}

// The unix sockets the broker makes in a directory must fit sun_path.
bool check_socket_dir(const std::string& dir, const char* option, std::initializer_list<const char*> names,
                      GError** error) {
  for (const char* name : names) {
    std::string path = dir + "/" + name;
    if (path.size() < sizeof(sockaddr_un::sun_path)) continue;
    g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                "%s %s: too long for the sockets the broker makes there (%s is %zu bytes, at most %zu); choose a "
                "shorter path",
                option, dir.c_str(), path.c_str(), path.size(), sizeof(sockaddr_un::sun_path) - 1);
    return false;
  }
  return true;
}

// Every address and path option, before anything is started: the message
// names the option, the value and what to do.
bool check_options(const sidebus::BrokerOptions& options, GError** error) {
  for (const std::string& address : options.listen) {
    sidebus::LinkAddress parsed;
    // The broker binds them first thing (Broker::start), before anything
    // else is started; here only what can be told from the text.
    if (!sidebus::parse_listen_address(address, &parsed, error)) {
      g_prefix_error(error, "--listen: ");
      return false;
    }
  }
  if (!options.host_bus.empty()) {
    g_autoptr(GError) invalid = nullptr;
    if (!g_dbus_is_supported_address(options.host_bus.c_str(), &invalid)) {
      g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                  "--host-bus %s: %s; give a D-Bus address such as unix:path=/run/user/1000/bus",
                  options.host_bus.c_str(), invalid->message);
      return false;
    }
  } else if (g_getenv("DBUS_SESSION_BUS_ADDRESS") == nullptr &&
             !g_file_test((std::string(g_get_user_runtime_dir()) + "/bus").c_str(), G_FILE_TEST_EXISTS)) {
    g_set_error(error, G_IO_ERROR, G_IO_ERROR_NOT_FOUND,
                "no host bus: DBUS_SESSION_BUS_ADDRESS is not set and there is no %s/bus; give --host-bus ADDR (a "
                "system unit runs outside the desktop session: set User= and DBUS_SESSION_BUS_ADDRESS in a drop-in, "
                "see sidebus-broker(8))",
                g_get_user_runtime_dir());
    return false;
  }
  if (!g_path_is_absolute(options.guest_documents_path.c_str())) {
    g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                "--guest-documents-path %s: must be an absolute path inside the guest",
                options.guest_documents_path.c_str());
    return false;
  }
  if (!options.virtiofsd.empty() && !g_file_test(options.virtiofsd.c_str(), G_FILE_TEST_IS_EXECUTABLE)) {
    g_set_error(error, G_IO_ERROR, G_IO_ERROR_NOT_FOUND,
                "--virtiofsd %s: not an executable file; give the path of virtiofsd (Debian: /usr/libexec/virtiofsd "
                "or /usr/lib/qemu/virtiofsd)",
                options.virtiofsd.c_str());
    return false;
  }
  for (const std::string& dir : options.plugin_dirs)
    if (!g_file_test(dir.c_str(), G_FILE_TEST_IS_DIR)) {
      g_set_error(error, G_IO_ERROR, G_IO_ERROR_NOT_FOUND,
                  "--plugin-dir %s: not a directory; give the directory that holds the <name>.plugin files",
                  dir.c_str());
      return false;
    }
  if (!check_socket_dir(options.runtime_dir, "--runtime-dir", {"private-bus.sock", "control.sock", "virtiofsd.sock"},
                        error))
    return false;
  if (!options.debug_access_dir.empty() &&
      !check_socket_dir(options.debug_access_dir, "--debug-access", {"vm.sock"}, error))
    return false;
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  // Messages quote with “ ” and name files in the user's encoding.
  setlocale(LC_ALL, "");
  // Before anything can spawn a child: none of them may speak to systemd
  // in the broker's name.
  sidebus::service_notify::take_from_environment();
  sidebus::log_ring::enable();
  // A guest's large messages are buffered whole for a moment: such buffers
  // must go back to the system when freed, not stay in the heap (glibc
  // raises its mmap threshold after the first big free otherwise).
  mallopt(M_MMAP_THRESHOLD, 256 * 1024);
  g_auto(GStrv) listen = nullptr;
  g_auto(GStrv) config_dirs = nullptr;
  g_auto(GStrv) plugin_dirs = nullptr;
  g_autofree char* runtime_dir = nullptr;
  g_autofree char* state_dir = nullptr;
  g_autofree char* vm_name = nullptr;
  g_autofree char* guest_documents_path = nullptr;
  g_autofree char* host_bus = nullptr;
  g_autofree char* debug_access = nullptr;
  g_autofree char* virtiofsd = nullptr;
  g_autofree char* private_bus = nullptr;
  gboolean incoming = FALSE;
  gint incoming_timeout = 0;
  g_autofree char* vmstate_id = nullptr;
  g_autofree char* vmstate_key = nullptr;
  gboolean verbose = FALSE;
  gboolean version = FALSE;

  const GOptionEntry entries[] = {
      {"listen", 0, 0, G_OPTION_ARG_STRING_ARRAY, &listen,
       "Where the guest link arrives: unix:PATH[,nofds], vsock:PORT, fd:N, systemd (repeatable)", "ADDR"},
      {"runtime-dir", 0, 0, G_OPTION_ARG_FILENAME, &runtime_dir,
       "Per-VM runtime directory (private bus, document mount DIR/doc, control.sock); default "
       "$XDG_RUNTIME_DIR/sidebus/VM",
       "DIR"},
      {"state-dir", 0, 0, G_OPTION_ARG_FILENAME, &state_dir,
       "Per-VM persistent state (documents, permissions); default $XDG_STATE_HOME/sidebus/VM", "DIR"},
      {"vm-name", 0, 0, G_OPTION_ARG_STRING, &vm_name, "Names the VM in logs; the app id documents are granted to",
       "NAME"},
      {"guest-documents-path", 0, 0, G_OPTION_ARG_FILENAME, &guest_documents_path,
       "Where the shared document directory appears inside the guest", "PATH"},
      {"host-bus", 0, 0, G_OPTION_ARG_STRING, &host_bus, "Bus of the host xdg-desktop-portal (default: session bus)",
       "ADDR"},
      {"config-dir", 0, 0, G_OPTION_ARG_FILENAME_ARRAY, &config_dirs,
       "Read configuration drop-ins from DIR instead of the defaults (repeatable)", "DIR"},
      {"plugin-dir", 0, 0, G_OPTION_ARG_FILENAME_ARRAY, &plugin_dirs,
       "Load portal plugins from DIR instead of " SIDEBUS_PLUGIN_DIR " (repeatable)", "DIR"},
      {"debug-access", 0, 0, G_OPTION_ARG_FILENAME, &debug_access,
       "No VM: serve a local bus at DIR/vm.sock that stands for the guest session bus", "DIR"},
      {"virtiofsd", 0, 0, G_OPTION_ARG_FILENAME, &virtiofsd,
       "Serve the VM's documents with this virtiofsd at RUNTIME-DIR/virtiofsd.sock (vhost-user-fs)", "PATH"},
      {"private-bus", 0, 0, G_OPTION_ARG_STRING, &private_bus,
       "Use the VM's existing D-Bus bus (the one the VM manager started for QEMU's helpers) as the private bus "
       "instead of spawning one",
       "ADDR"},
      {"incoming", 0, 0, G_OPTION_ARG_NONE, &incoming,
       "A migration's destination: serve the guest only after org.qemu.VMState1.Load brought the VM's documents",
       nullptr},
      {"incoming-timeout", 0, 0, G_OPTION_ARG_INT, &incoming_timeout,
       "With --incoming: exit (status 3) if no Load arrived within SECONDS (default: wait as long as it takes)",
       "SECONDS"},
      {"vmstate-id", 0, 0, G_OPTION_ARG_STRING, &vmstate_id,
       "The Id of org.qemu.VMState1 (name it in dbus-vmstate's id-list; default \"sidebus\")", "ID"},
      {"vmstate-key", 0, 0, G_OPTION_ARG_FILENAME, &vmstate_key,
       "Authenticate the migrated state with the secret in FILE (the same file for the source and the destination)",
       "FILE"},
      {"verbose", 'v', 0, G_OPTION_ARG_NONE, &verbose, "Log debug detail", nullptr},
      {"version", 0, 0, G_OPTION_ARG_NONE, &version, "Print the version and exit", nullptr},
      {},
  };
  g_autoptr(GOptionContext) option_context = g_option_context_new("- XDG desktop portals for one virtual machine");
  g_option_context_add_main_entries(option_context, entries, nullptr);
  g_option_context_set_description(option_context,
                                   "SIGHUP reloads the configuration; sidebusctl(1) asks a running broker for its "
                                   "status and log. See sidebus-broker(8).\n");
  g_autoptr(GError) error = nullptr;
  if (!g_option_context_parse(option_context, &argc, &argv, &error)) {
    g_printerr("sidebus-broker: %s (see --help)\n", error->message);
    return 2;
  }
  if (version) {
    g_print("sidebus-broker %s\n", SIDEBUS_VERSION);
    return 0;
  }

  sidebus::BrokerOptions options;
  options.vm_name = vm_name != nullptr ? vm_name : (debug_access != nullptr ? "sidebus-debug" : "");
  sidebus::log::setup("sidebus-broker", options.vm_name, verbose);
  if (options.vm_name.empty()) {
    g_printerr("sidebus-broker: --vm-name is required (it names the VM and the app id its documents belong to)\n");
    return 2;
  }
  if (!sidebus::Config::is_valid_vm_name(options.vm_name)) {
    g_printerr("sidebus-broker: --vm-name %s: use 1 to %zu of A-Z a-z 0-9 . _ -, not starting with '.'\n",
               options.vm_name.c_str(), sidebus::Config::kMaxVmNameLength);
    return 2;
  }
  if (listen == nullptr && debug_access == nullptr) {
    g_printerr(
        "sidebus-broker: nothing to serve: give --listen ADDR (where the guest agent connects) or "
        "--debug-access DIR\n");
    return 2;
  }
  options.listen = to_vector(listen);
  options.config_dirs = to_vector(config_dirs);
  options.plugin_dirs = to_vector(plugin_dirs);
  options.host_bus = host_bus != nullptr ? host_bus : "";
  options.runtime_dir =
      runtime_dir != nullptr ? absolute(runtime_dir) : default_dir(g_get_user_runtime_dir(), options.vm_name);
  options.state_dir = state_dir != nullptr ? absolute(state_dir) : default_dir(g_get_user_state_dir(), options.vm_name);
  if (debug_access != nullptr) options.debug_access_dir = absolute(debug_access);
  if (virtiofsd != nullptr) options.virtiofsd = virtiofsd;
  if (private_bus != nullptr) {
    if (!g_dbus_is_supported_address(private_bus, &error)) {
      g_printerr("sidebus-broker: --private-bus %s: %s\n", private_bus, error->message);
      return 2;
    }
    options.private_bus = private_bus;
  }
  options.incoming = incoming;
  if (incoming_timeout < 0 || (incoming_timeout > 0 && !incoming)) {
    g_printerr("sidebus-broker: --incoming-timeout takes a number of seconds, and only with --incoming\n");
    return 2;
  }
  options.incoming_timeout_s = unsigned(incoming_timeout);
  if (vmstate_id != nullptr) {
    if (!sidebus::VmStateService::is_valid_id(vmstate_id)) {
      g_printerr("sidebus-broker: --vmstate-id %s: use 1 to 255 printable ASCII characters without ',' or spaces "
                 "(QEMU's id-list is comma-separated)\n",
                 vmstate_id);
      return 2;
    }
    options.vmstate_id = vmstate_id;
  }
  if (vmstate_key != nullptr) {
    g_autofree char* key = nullptr;
    gsize key_size = 0;
    if (!g_file_get_contents(vmstate_key, &key, &key_size, &error)) {
      g_printerr("sidebus-broker: --vmstate-key: %s\n", error->message);
      return 2;
    }
    if (key_size < 16 || key_size > 4096) {
      g_printerr("sidebus-broker: --vmstate-key %s: the secret must be 16 to 4096 bytes (e.g. head -c 32 "
                 "/dev/urandom > FILE)\n",
                 vmstate_key);
      return 2;
    }
    options.vmstate_key.assign(key, key_size);
  }
  // With --debug-access the "guest" is this host: documents are read straight
  // from this VM's view of the document mount.
  if (guest_documents_path != nullptr)
    options.guest_documents_path = guest_documents_path;
  else if (debug_access != nullptr)
    options.guest_documents_path = options.runtime_dir + "/doc/by-app/" + sidebus::app_id_for_vm(options.vm_name);
  else
    options.guest_documents_path = "/run/sidebus/documents";
  if (!check_options(options, &error)) {
    g_printerr("sidebus-broker: %s\n", error->message);
    return 2;
  }
  if (!ensure_dir(options.runtime_dir, "--runtime-dir", &error) ||
      !ensure_dir(options.state_dir, "--state-dir", &error) ||
      (debug_access != nullptr && !ensure_dir(options.debug_access_dir, "--debug-access", &error))) {
    g_printerr("sidebus-broker: %s\n", error->message);
    return 1;
  }
  // A crash, or a failed start, leaves the last log lines behind.
  sidebus::log_ring::dump_on_crash(options.state_dir + "/broker-fatal.log");

  std::unique_ptr<sidebus::Broker> broker;
  auto control = sidebus::ControlSocket::start(options.runtime_dir + "/control.sock",
                                               sidebus::control_commands([&broker] { return broker.get(); }), &error);
  if (!control) {
    g_printerr("sidebus-broker: %s\n", error->message);
    return 1;
  }

  g_autoptr(GMainLoop) loop = g_main_loop_new(nullptr, FALSE);
  auto quit = [](gpointer data) -> gboolean {
    g_message("stopping");
    g_main_loop_quit(static_cast<GMainLoop*>(data));
    return G_SOURCE_CONTINUE;
  };
  guint sigterm = g_unix_signal_add(SIGTERM, quit, loop);
  guint sigint = g_unix_signal_add(SIGINT, quit, loop);
  int exit_status = 0;
  // The broker's own end (after a migration's source handed the VM on).
  options.stop = [&exit_status, loop](int status) {
    exit_status = status;
    g_main_loop_quit(loop);
  };
  guint sighup = g_unix_signal_add(
      SIGHUP,
      [](gpointer data) -> gboolean {
        sidebus::reload_on_signal(static_cast<std::unique_ptr<sidebus::Broker>*>(data)->get());
        return G_SOURCE_CONTINUE;
      },
      &broker);
  auto remove_signals = [&] {
    g_source_remove(sigterm);
    g_source_remove(sigint);
    g_source_remove(sighup);
  };

  broker = sidebus::Broker::start(options, &error);
  if (!broker) {
    g_printerr("sidebus-broker: %s\n", error->message);
    g_message("start failed: %s", error->message);  // into the ring, for the file below
    if (sidebus::log_ring::dump_now())
      g_printerr("sidebus-broker: the last log lines are in %s\n", sidebus::log_ring::dump_path().c_str());
    remove_signals();
    return 1;
  }
  sidebus::service_notify::ready(sidebus::summary_line(broker->status()));
  g_main_loop_run(loop);
  sidebus::service_notify::stopping();
  broker.reset();
  control.reset();
  remove_signals();
  return exit_status;
}
