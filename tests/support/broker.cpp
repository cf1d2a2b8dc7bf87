// SPDX-License-Identifier: LGPL-2.1-or-later
// broker.cpp — Broker (broker.hpp): its command line from BrokerOptions,
// and the wait until its unix: link sockets exist.
#include "support/broker.hpp"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>

#include "documents/app-id.hpp"

namespace sidebus::test {

std::optional<std::string> unix_socket_path(const std::string& address) {
  if (!address.starts_with("unix:")) return std::nullopt;
  std::string path = address.substr(5);
  return path.substr(0, path.find(','));  // drop ",nofds", ",mode=…"
}

std::string Broker::link_address() const {
  std::optional<std::string> path = unix_socket_path(listen_address());
  return path ? "unix:" + *path : listen_address();
}

namespace {

// One {"command": "status"} on the control socket; true if it says "ok".
bool answers_status(const std::string& path) {
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_un address = {};
  address.sun_family = AF_UNIX;
  strncpy(address.sun_path, path.c_str(), sizeof address.sun_path - 1);
  std::string reply;
  if (connect(fd, reinterpret_cast<struct sockaddr*>(&address), sizeof address) == 0) {
    static const char kRequest[] = "{\"command\": \"status\"}\n";
    if (send(fd, kRequest, sizeof kRequest - 1, MSG_NOSIGNAL) == ssize_t(sizeof kRequest - 1)) {
      char buffer[256];
      ssize_t n = read(fd, buffer, sizeof buffer);
      if (n > 0) reply.assign(buffer, size_t(n));
    }
  }
  close(fd);
  return reply.starts_with("{\"ok\":true");
}

}  // namespace

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

  // Nothing may reach the developer's own session: the host bus is the test's.
  std::map<std::string, std::string> env = {{"DBUS_SESSION_BUS_ADDRESS", options_.host_bus_address},
                                            {"XDG_RUNTIME_DIR", dir_.make_dir("xdg-runtime", 0700)}};
  for (const auto& [name, value] : options_.env) env[name] = value;
  process_ = std::make_unique<ChildProcess>(SpawnOptions{
      .name = "sidebus-broker",
      .argv = argv,
      .env = env,
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
  // The sockets are bound before the rest starts: the broker is ready once
  // its control socket answers a status.
  if (!wait_until([&] { return answers_status(runtime_dir_ + "/control.sock") || !process_->running(); }) ||
      !process_->running())
    throw FixtureError("the broker did not become ready (its log is printed below)");
}

Broker::~Broker() { process_.reset(); }

}  // namespace sidebus::test
