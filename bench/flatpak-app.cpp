// SPDX-License-Identifier: LGPL-2.1-or-later
// flatpak-app.cpp — a portal client that xdg-desktop-portal takes for a
// Flatpak app: the benchmarks' peer (flatpak-peer.hpp drives it).
//
// xdg-desktop-portal knows a Flatpak app by /proc/PID/root/.flatpak-info
// (xdp-utils.c, xdp_app_info_load_flatpak in 1.16). So this process makes a
// mount namespace of its own, builds a root on a tmpfs at --root that holds
// that file and bind mounts of the real /usr, /etc, /tmp, /run, /proc, /dev,
// /var and /sys, chroots into it, and only then connects to the host bus. The
// portal then treats its OpenFile like a sandboxed app's: every chosen file
// is exported through the host's xdg-document-portal before the Response,
// which is the job sidebus does for a VM.
//
// Protocol on stdin/stdout, one line each:
//   → "ready"                          once connected
//   ← "open"                           one FileChooser.OpenFile round trip
//   → "<milliseconds> <uris> <first uri or ->"
//   ← "get"                            one Properties.Get of FileChooser's version
//   → "<milliseconds>"
// Any failure: "error <message>" and exit 1. Needs root (mount namespace).
#include <gio/gio.h>
#include <glib/gstdio.h>
#include <sched.h>
#include <sys/mount.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <iostream>
#include <stdexcept>
#include <string>

#include "support/dbus.hpp"

using namespace sidebus::test;
using Clock = std::chrono::steady_clock;

namespace {

[[noreturn]] void fail(const std::string& message) {
  std::printf("error %s\n", message.c_str());
  std::fflush(stdout);
  std::exit(1);
}

void check(bool ok, const std::string& what) {
  if (!ok) fail(what + ": " + g_strerror(errno));
}

// The sandbox's root at @root, on a tmpfs only this mount namespace sees.
void enter_sandbox(const std::string& root, const std::string& app_id) {
  check(unshare(CLONE_NEWNS) == 0, "unshare(CLONE_NEWNS)");
  check(mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) == 0, "making / private");
  check(mount("tmpfs", root.c_str(), "tmpfs", 0, "mode=0755") == 0, "mounting a tmpfs at " + root);
  for (const char* dir : {"usr", "etc", "tmp", "run", "proc", "dev", "var", "sys"}) {
    const std::string target = root + "/" + dir;
    check(g_mkdir(target.c_str(), 0755) == 0, "mkdir " + target);
    check(mount((std::string("/") + dir).c_str(), target.c_str(), nullptr, MS_BIND | MS_REC, nullptr) == 0,
          "bind-mounting /" + std::string(dir));
  }
  // Debian's merged /usr.
  for (const char* link : {"bin", "lib", "lib64", "sbin"})
    check(symlink((std::string("usr/") + link).c_str(), (root + "/" + link).c_str()) == 0, "symlink " + root + "/" + link);
  const std::string info = "[Application]\nname=" + app_id + "\nruntime=runtime/org.freedesktop.Platform/x86_64/23.08\n\n"
                           "[Instance]\ninstance-id=1\n";
  g_autoptr(GError) error = nullptr;
  if (!g_file_set_contents((root + "/.flatpak-info").c_str(), info.c_str(), -1, &error)) fail(error->message);
  check(chroot(root.c_str()) == 0, "chroot " + root);
  check(chdir("/") == 0, "chdir /");
}

double ms_since(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

void open_file(GDBusConnection* bus) {
  const auto start = Clock::now();
  const std::string token = unique_token();
  PortalRequest request(bus, kPortalBusName, "org.freedesktop.portal.FileChooser", "OpenFile",
                        g_variant_new_parsed("('', 'bench', {'multiple': <true>, 'handle_token': <%s>})", token.c_str()));
  if (request.error() != nullptr) fail(std::string("OpenFile: ") + request.error()->message);
  if (!request.wait_for_response(120s)) fail("no Response to OpenFile");
  const double elapsed = ms_since(start);
  if (request.response() != 0) fail("OpenFile answered " + std::to_string(request.response()));
  g_autofree const char** uris = nullptr;
  if (!g_variant_lookup(request.results(), "uris", "^a&s", &uris)) fail("OpenFile's Response has no uris");
  std::printf("%.3f %u %s\n", elapsed, g_strv_length(const_cast<char**>(uris)), uris[0] != nullptr ? uris[0] : "-");
}

void get_version(GDBusConnection* bus) {
  const auto start = Clock::now();
  g_autoptr(GError) error = nullptr;
  g_autoptr(GVariant) reply = g_dbus_connection_call_sync(
      bus, kPortalBusName, kPortalPath, "org.freedesktop.DBus.Properties", "Get",
      g_variant_new("(ss)", "org.freedesktop.portal.FileChooser", "version"), G_VARIANT_TYPE("(v)"),
      G_DBUS_CALL_FLAGS_NONE, 30000, nullptr, &error);
  if (reply == nullptr) fail(std::string("Properties.Get: ") + error->message);
  std::printf("%.3f\n", ms_since(start));
}

}  // namespace

int main(int argc, char** argv) {
  const char* root = nullptr;
  const char* app_id = nullptr;
  const char* bus_address = nullptr;
  const GOptionEntry entries[] = {
      {"root", 0, 0, G_OPTION_ARG_FILENAME, &root, "An empty directory for the sandbox's root", "DIR"},
      {"app-id", 0, 0, G_OPTION_ARG_STRING, &app_id, "The Flatpak app id to claim", "ID"},
      {"bus", 0, 0, G_OPTION_ARG_STRING, &bus_address, "The host bus", "ADDRESS"},
      {},
  };
  g_autoptr(GOptionContext) context = g_option_context_new("- a Flatpak-like portal client for the benchmarks");
  g_option_context_add_main_entries(context, entries, nullptr);
  g_autoptr(GError) error = nullptr;
  if (!g_option_context_parse(context, &argc, &argv, &error)) fail(error->message);
  if (root == nullptr || app_id == nullptr || bus_address == nullptr) fail("--root, --app-id and --bus are needed");

  enter_sandbox(root, app_id);
  GObjectPtr<GDBusConnection> bus;
  try {
    bus = connect(bus_address);
  } catch (const std::exception& failure) {
    fail(failure.what());
  }
  std::printf("ready\n");
  std::fflush(stdout);
  std::string command;
  while (std::getline(std::cin, command)) {
    if (command == "open")
      open_file(bus.get());
    else if (command == "get")
      get_version(bus.get());
    else
      fail("unknown command '" + command + "'");
    std::fflush(stdout);
  }
  return 0;
}
