// SPDX-License-Identifier: LGPL-2.1-or-later
// bench-vmstate.cpp — what migrating a VM's sidebus state costs: the size
// of org.qemu.VMState1.Save's blob and the time Save takes (QEMU calls it
// with the VM stopped, so it is downtime; QEMU allows at most 1 MiB), and
// the time Load takes on an --incoming broker (the migrated table written
// and put in place, the document portal started on it, the guest served).
//
// For each document count (10 and 1000 by default) a broker gets that many
// documents the way a guest gets them (one FileChooser.OpenFile answered
// with that many host files), then Save is called --rounds times; one Load
// of that blob goes into a fresh --incoming broker. Baseline, measured in
// the same run on the same bus: one call to the permission store that
// returns the table's ids (List), the least a Save can cost.
//
// Usage: bench-vmstate [--rounds N] [--documents 10,1000] with the test
// environment (SIDEBUS_*), as `meson compile -C build run-bench-vmstate`
// provides.
#include <glib.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "bench-env.h"
#include "support/topology.hpp"
#include "support/vm.hpp"

using namespace sidebus::test;
using Clock = std::chrono::steady_clock;

namespace {

constexpr char kVmName[] = "benchvm";

double ms_since(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  return values[values.size() / 2];
}

VariantPtr call(GDBusConnection* bus, const char* name, const char* path, const char* interface, const char* method,
                GVariant* parameters) {
  g_autoptr(GError) error = nullptr;
  GVariant* reply = g_dbus_connection_call_sync(bus, name, path, interface, method, parameters, nullptr,
                                                G_DBUS_CALL_FLAGS_NO_AUTO_START, 60000, nullptr, &error);
  if (reply == nullptr) throw FixtureError(std::string(method) + " failed: " + error->message);
  return VariantPtr(reply);
}

struct Result {
  size_t documents;
  size_t bytes;
  double save_ms, baseline_ms, load_ms;
};

Result measure(size_t documents, int rounds) {
  TopologyOptions options;
  options.broker.vm_name = kVmName;
  options.broker.verbose = false;
  options.broker.config = {{"50-portals.json", R"({"portals":{"filechooser":{"enabled":true}}})"}};
  Topology topology(options);
  TempDir files("sidebus-bench-vmstate-files");
  std::vector<std::string> paths;
  for (size_t i = 0; i < documents; i++) {
    char name[64];
    std::snprintf(name, sizeof name, "Documents/report-%04zu.odt", i);
    paths.push_back(files.write_file(name, "x"));
  }
  topology.host().set_reply("OpenFile", kResponseSuccess, uris_result(paths));
  PortalRequest pick(topology.guest().connection(), kPortalBusName, "org.freedesktop.portal.FileChooser", "OpenFile",
                     g_variant_new("(ss@a{sv})", "", "Pick", with_handle_token("{'multiple': <true>}").get()));
  if (pick.error() || !pick.wait_for_response(120s) || pick.response() != kResponseSuccess)
    throw FixtureError("exporting the documents failed:\n" + topology.broker().process().log());

  GObjectPtr<GDBusConnection> bus = connect("unix:path=" + topology.broker().runtime_dir() + "/private-bus.sock");
  std::vector<double> save_ms, baseline_ms;
  std::string blob;
  for (int round = 0; round < rounds; round++) {
    auto start = Clock::now();
    call(bus.get(), "org.freedesktop.impl.portal.PermissionStore", "/org/freedesktop/impl/portal/PermissionStore",
         "org.freedesktop.impl.portal.PermissionStore", "List", g_variant_new("(s)", "documents"));
    baseline_ms.push_back(ms_since(start));
    start = Clock::now();
    VariantPtr reply = call(bus.get(), "org.qemu.VMState1", "/org/qemu/VMState1", "org.qemu.VMState1", "Save", nullptr);
    save_ms.push_back(ms_since(start));
    g_autoptr(GVariant) bytes = g_variant_get_child_value(reply.get(), 0);
    gsize size = 0;
    const char* data = static_cast<const char*>(g_variant_get_fixed_array(bytes, &size, 1));
    blob.assign(data, size);
  }

  // Load into a destination broker, as QEMU's dbus-vmstate does.
  BrokerOptions dest_options;
  dest_options.host_bus_address = topology.host().bus_address();
  dest_options.vm_name = kVmName;
  dest_options.verbose = false;
  dest_options.extra_args = {"--incoming"};
  dest_options.wait_for_listen = false;
  Broker dest(dest_options);
  const std::string socket = dest.runtime_dir() + "/private-bus.sock";
  if (!wait_until([&] { return g_file_test(socket.c_str(), G_FILE_TEST_EXISTS); }, 30s))
    throw FixtureError("the destination broker's bus did not come up:\n" + dest.process().log());
  GObjectPtr<GDBusConnection> dest_bus = connect("unix:path=" + socket);
  if (!wait_until([&] { return name_has_owner(dest_bus.get(), "org.qemu.VMState1"); }, 30s))
    throw FixtureError("the destination broker does not serve org.qemu.VMState1:\n" + dest.process().log());
  auto start = Clock::now();
  call(dest_bus.get(), "org.qemu.VMState1", "/org/qemu/VMState1", "org.qemu.VMState1", "Load",
       g_variant_new("(@ay)", g_variant_new_fixed_array(G_VARIANT_TYPE_BYTE, blob.data(), blob.size(), 1)));
  double load_ms = ms_since(start);
  return {documents, blob.size(), median(save_ms), median(baseline_ms), load_ms};
}

}  // namespace

int main(int argc, char** argv) {
  bench_env_defaults();
  int rounds = 20;
  g_autofree char* counts = nullptr;
  GOptionEntry entries[] = {
      {"rounds", 0, 0, G_OPTION_ARG_INT, &rounds, "Saves to measure per count", "N"},
      {"documents", 0, 0, G_OPTION_ARG_STRING, &counts, "Document counts (default 10,1000)", "N,N"},
      {}};
  g_autoptr(GOptionContext) context = g_option_context_new("- org.qemu.VMState1 Save size and time, Load time");
  g_option_context_add_main_entries(context, entries, nullptr);
  if (!g_option_context_parse(context, &argc, &argv, nullptr) || rounds < 1) return 2;
  std::vector<size_t> documents;
  g_auto(GStrv) parts = g_strsplit(counts ? counts : "10,1000", ",", -1);
  for (char** part = parts; *part != nullptr; part++) documents.push_back(g_ascii_strtoull(*part, nullptr, 10));

  try {
    std::printf("org.qemu.VMState1 (median of %d Saves; one Load)\n", rounds);
    std::printf("  documents     bytes  %% of 1 MiB  baseline List ms  Save ms  ratio  Load ms\n");
    for (size_t count : documents) {
      Result r = measure(count, rounds);
      std::printf("  %9zu  %8zu  %9.2f%%  %16.2f  %7.2f  %5.1f  %7.1f\n", r.documents, r.bytes,
                  100.0 * double(r.bytes) / (1024.0 * 1024.0), r.baseline_ms, r.save_ms, r.save_ms / r.baseline_ms,
                  r.load_ms);
    }
    return 0;
  } catch (const std::exception& error) {
    std::fprintf(stderr, "bench-vmstate: %s\n", error.what());
    return 1;
  }
}
