// broker-main.cpp — sidebus-broker's command line (the contract in
// docs/broker.md and DESIGN.md), defaults, signals and the main loop.
#include <glib-unix.h>
#include <malloc.h>
#include <glib/gstdio.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "broker/broker.hpp"
#include "broker/config.hpp"
#include "broker/vmstate-service.hpp"
#include "documents/app-id.hpp"
#include "util/log.hpp"
#include "sidebus-config.h"

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
  g_set_error(error, G_FILE_ERROR, g_file_error_from_errno(saved_errno), "%s %s: cannot create the directory: %s",
              option, path.c_str(), g_strerror(saved_errno));
  return false;
}

}  // namespace

int main(int argc, char** argv) {
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
       "Per-VM runtime directory (private bus, document mount DIR/doc); default $XDG_RUNTIME_DIR/sidebus/VM", "DIR"},
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
    g_printerr("sidebus-broker: nothing to serve: give --listen ADDR (where the guest agent connects) or "
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
    options.guest_documents_path =
        options.runtime_dir + "/doc/by-app/" + sidebus::app_id_for_vm(options.vm_name);
  else
    options.guest_documents_path = "/run/sidebus/documents";
  if (!g_path_is_absolute(options.guest_documents_path.c_str())) {
    g_printerr("sidebus-broker: --guest-documents-path %s: must be an absolute path inside the guest\n",
               options.guest_documents_path.c_str());
    return 2;
  }
  if (!ensure_dir(options.runtime_dir, "--runtime-dir", &error) ||
      !ensure_dir(options.state_dir, "--state-dir", &error) ||
      (debug_access != nullptr && !ensure_dir(options.debug_access_dir, "--debug-access", &error))) {
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
  options.stop = [&exit_status, loop](int status) {
    exit_status = status;
    g_main_loop_quit(loop);
  };

  auto broker = sidebus::Broker::start(options, &error);
  if (!broker) {
    g_printerr("sidebus-broker: %s\n", error->message);
    g_source_remove(sigterm);
    g_source_remove(sigint);
    return 1;
  }
  g_main_loop_run(loop);
  broker.reset();
  g_source_remove(sigterm);
  g_source_remove(sigint);
  return exit_status;
}
