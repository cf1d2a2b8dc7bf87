// SPDX-License-Identifier: LGPL-2.1-or-later
// demo.cpp — the README's first command ends here: sidebus working end to
// end on one machine, no VM and no desktop needed.
//
//  1. A host session bus with the real xdg-desktop-portal. There is no
//     desktop to show a dialog, so the project's test backend plays the user
//     and "picks" a file this demo writes.
//  2. sidebus-broker --debug-access DIR, with the FileChooser portal enabled:
//     DIR/vm.sock stands for the VM's session bus.
//  3. The example application (example-app.c, plain libportal) runs against
//     DIR/vm.sock, opens a file, and reads the copy that sidebus exported to
//     it through the VM's private document portal.
#include <cstdio>

#include "support/broker.hpp"
#include "support/host-portal.hpp"

using namespace sidebus::test;

int main() {
  try {
    std::printf("== host: session bus, xdg-desktop-portal, a backend that plays the user\n");
    HostPortal host;
    TempDir files("sidebus-demo-files");
    std::string chosen =
        files.write_file("notes.txt", "Hello from the host!\nThis file was picked in a (scripted) host file dialog.\n");
    g_autofree char* chosen_uri = g_filename_to_uri(chosen.c_str(), nullptr, nullptr);
    GVariantBuilder results;
    g_variant_builder_init(&results, G_VARIANT_TYPE_VARDICT);
    const char* uris[] = {chosen_uri, nullptr};
    g_variant_builder_add(&results, "{sv}", "uris", g_variant_new_strv(uris, -1));
    host.set_reply("OpenFile", kResponseSuccess, g_variant_builder_end(&results));
    std::printf("   the \"user\" will pick %s\n", chosen.c_str());

    std::printf("== host: sidebus-broker --debug-access (FileChooser enabled)\n");
    TempDir access("sidebus-demo-access");
    BrokerOptions options;
    options.host_bus_address = host.bus_address();
    options.vm_name = "demo";
    options.verbose = false;
    options.config = {{"50-filechooser.json", R"({"portals":{"filechooser":{"enabled":true}}})"}};
    options.extra_args = {"--debug-access", access.path()};
    Broker broker(options);
    std::string vm_bus = "unix:path=" + (access / "vm.sock");
    if (!wait_until([&] { return g_file_test((access / "vm.sock").c_str(), G_FILE_TEST_EXISTS); }))
      throw FixtureError("the broker did not open " + (access / "vm.sock") + "; its log:\n" +
                         broker.process().log());

    std::printf("== guest side: DBUS_SESSION_BUS_ADDRESS=%s example-app\n", vm_bus.c_str());
    ChildProcess app({.name = "example-app",
                      .argv = {env_path("SIDEBUS_EXAMPLE_APP")},
                      .env = {{"DBUS_SESSION_BUS_ADDRESS", vm_bus}},
                      .stdout_path = files / "example-app.log"});
    auto status = app.wait_for_exit(60s);
    std::printf("%s", app.log().c_str());
    if (!status || !status->success()) {
      std::printf("== the example app failed (%s); broker log:\n%s", status ? status->describe().c_str() : "timeout",
                  broker.process().log().c_str());
      return 1;
    }
    std::printf("== done: the guest read the host file through sidebus. Everything is stopped and cleaned up.\n");
    return 0;
  } catch (const std::exception& error) {
    std::fprintf(stderr, "demo failed: %s\n", error.what());
    return 1;
  }
}
