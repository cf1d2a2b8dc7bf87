// SPDX-License-Identifier: LGPL-2.1-or-later
// guest-bus.cpp — GuestBus (guest-bus.hpp): the bus, optionally as another
// user, the test's own client connection, and guest clients run as that user.
#include "support/guest-bus.hpp"

#include <unistd.h>

#include "support/dbus-daemon.hpp"
#include "support/dbus.hpp"
#include "support/files.hpp"

namespace sidebus::test {

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
    connection_ = connect(address_);
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
  output.out = read_file(base + ".out").value_or("");
  output.err = read_file(base + ".err").value_or("");
  return output;
}

}  // namespace sidebus::test
