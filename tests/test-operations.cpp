// SPDX-License-Identifier: LGPL-2.1-or-later
// test-operations.cpp — what an operator gets from a running broker: the
// control socket through the real sidebusctl (status after a link comes up
// and goes, dump-log, reload with SIGHUP and on request, a bad file that
// keeps the old configuration, portals restarted by a reload), its bounds,
// the service manager's notifications (READY=1 only once the link socket
// and the private bus are up, STATUS= following the link, on a path and an
// abstract NOTIFY_SOCKET), the log left behind by a crash or a failed start,
// every path and address checked before anything starts, a clean stop after
// SIGHUP, and D-Bus activation of the agent through the renamed guest
// activation file.
#include <fcntl.h>
#include <json-glib/json-glib.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "sidebus-config.h"
#include "support/assert.hpp"
#include "support/dbus.hpp"
#include "support/files.hpp"
#include "support/topology.hpp"
#include "support/variant.hpp"
#include "support/vm.hpp"

using namespace sidebus::test;

namespace {

// ---- sidebusctl ---------------------------------------------------------------

struct CtlResult {
  int exit_code = -1;
  std::string out;
  std::string err;
};

CtlResult run(const std::vector<std::string>& argv, const std::vector<std::string>& env = {}) {
  std::vector<const char*> args;
  for (const std::string& arg : argv) args.push_back(arg.c_str());
  args.push_back(nullptr);
  g_auto(GStrv) envp = g_get_environ();
  for (const std::string& assignment : env) {
    auto equals = assignment.find('=');
    envp = g_environ_setenv(envp, assignment.substr(0, equals).c_str(), assignment.substr(equals + 1).c_str(), TRUE);
  }
  g_autofree char* out = nullptr;
  g_autofree char* err = nullptr;
  int wait_status = 0;
  g_autoptr(GError) error = nullptr;
  if (!g_spawn_sync(nullptr, const_cast<char**>(args.data()), envp, G_SPAWN_DEFAULT, nullptr, nullptr, &out, &err,
                    &wait_status, &error))
    throw FixtureError(std::string("cannot run ") + argv[0] + ": " + error->message);
  CtlResult result;
  result.exit_code = WIFEXITED(wait_status) ? WEXITSTATUS(wait_status) : 128 + WTERMSIG(wait_status);
  result.out = out;
  result.err = err;
  return result;
}

CtlResult sidebusctl(const Broker& broker, const std::vector<std::string>& args) {
  std::vector<std::string> argv = {env_path("SIDEBUS_CTL"), "--runtime-dir", broker.runtime_dir()};
  argv.insert(argv.end(), args.begin(), args.end());
  return run(argv);
}

struct JsonNodeUnref {
  void operator()(JsonNode* node) const { json_node_unref(node); }
};
using JsonPtr = std::unique_ptr<JsonNode, JsonNodeUnref>;

JsonPtr parse_json(const std::string& text) {
  g_autoptr(JsonParser) parser = json_parser_new();
  g_autoptr(GError) error = nullptr;
  if (!json_parser_load_from_data(parser, text.c_str(), -1, &error))
    throw FixtureError("not JSON (" + std::string(error->message) + "): " + text);
  return JsonPtr(json_parser_steal_root(parser));
}

// `sidebusctl status`, parsed; FixtureError if it fails.
JsonPtr status_of(const Broker& broker) {
  CtlResult result = sidebusctl(broker, {"status"});
  if (result.exit_code != 0) throw FixtureError("sidebusctl status failed: " + result.err);
  JsonPtr status = parse_json(result.out);
  if (!JSON_NODE_HOLDS_OBJECT(status.get())) throw FixtureError("status is not an object: " + result.out);
  return status;
}

JsonObject* object(JsonNode* node) { return json_node_get_object(node); }
JsonObject* member(JsonObject* object, const char* name) { return json_object_get_object_member(object, name); }
std::string string_of(JsonObject* object, const char* name) {
  return json_object_get_string_member_with_default(object, name, "");
}
std::vector<std::string> strings_of(JsonObject* object, const char* name) {
  std::vector<std::string> values;
  JsonArray* array = json_object_get_array_member(object, name);
  for (guint i = 0; array != nullptr && i < json_array_get_length(array); i++)
    values.emplace_back(json_array_get_string_element(array, i));
  return values;
}
bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

std::string link_state(const Broker& broker) {
  JsonPtr status = status_of(broker);
  return string_of(member(object(status.get()), "link"), "state");
}

// ---- what the broker leaves in its directories ----------------------------

bool is_socket(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode);
}

bool is_mounted(const std::string& path) {
  std::ifstream mountinfo("/proc/self/mountinfo");
  std::string line;
  while (std::getline(mountinfo, line)) {
    std::istringstream fields(line);
    std::string id, parent, devices, root, mount_point;
    fields >> id >> parent >> devices >> root >> mount_point;
    if (mount_point == path) return true;
  }
  return false;
}

std::vector<std::string> entries_of(const std::string& dir) {
  std::vector<std::string> names;
  g_autoptr(GDir) handle = g_dir_open(dir.c_str(), 0, nullptr);
  while (const char* name = handle != nullptr ? g_dir_read_name(handle) : nullptr) names.emplace_back(name);
  return names;
}

// ---- a NOTIFY_SOCKET the test binds -------------------------------------------

class NotifySocket {
 public:
  // @address: a path, or "@name" for an abstract socket.
  explicit NotifySocket(std::string address) : address_(std::move(address)) {
    fd_ = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    struct sockaddr_un sun = {};
    sun.sun_family = AF_UNIX;
    memcpy(sun.sun_path, address_.data(), address_.size());
    socklen_t length = socklen_t(offsetof(struct sockaddr_un, sun_path) + address_.size());
    if (address_[0] == '@')
      sun.sun_path[0] = '\0';
    else
      length++;
    if (fd_ < 0 || bind(fd_, reinterpret_cast<struct sockaddr*>(&sun), length) != 0)
      throw FixtureError("cannot bind the notify socket " + address_ + ": " + g_strerror(errno));
  }
  ~NotifySocket() {
    if (fd_ >= 0) close(fd_);
    if (address_[0] == '/') unlink(address_.c_str());
  }
  const std::string& address() const { return address_; }

  // Every datagram that arrived since, in order.
  std::vector<std::string> receive() {
    std::vector<std::string> messages;
    char buffer[4096];
    for (ssize_t n; (n = recv(fd_, buffer, sizeof buffer, 0)) > 0;) messages.emplace_back(buffer, size_t(n));
    return messages;
  }

 private:
  std::string address_;
  int fd_ = -1;
};

bool has_line(const std::string& message, const std::string& line) {
  std::istringstream lines(message);
  for (std::string l; std::getline(lines, l);)
    if (l == line) return true;
  return false;
}

// ---- the tests ----------------------------------------------------------------

// What status says once the link is up, while a request is open, after a
// document was shared, and once the agent is gone and back.
void test_status_follows_the_link() {
  Vm vm({.portals = {"filechooser"}});
  JsonPtr status = status_of(vm.broker());
  JsonObject* top = object(status.get());
  assert_str_eq(string_of(top, "vm"), "testvm");
  assert_str_eq(string_of(top, "version"), SIDEBUS_VERSION);
  g_assert_cmpint(json_object_get_int_member(top, "pid"), ==, vm.broker().process().pid());
  g_assert_true(json_object_get_boolean_member(top, "host_portal_ready"));
  JsonObject* link = member(top, "link");
  assert_str_eq(string_of(link, "state"), "serving");
  g_assert_cmpint(json_object_get_int_member(link, "serial"), ==, 1);
  assert_str_eq(string_of(link, "transport"), "unix:" + (vm.broker().dir() / "link.sock"));
  assert_str_eq(string_of(link, "fd_mode"), "native");
  assert_str_eq(string_of(link, "agent_version"), SIDEBUS_VERSION);
  g_assert_cmpint(json_object_get_int_member(link, "guest_uid"), ==, getuid());
  g_assert_true(g_str_has_prefix(string_of(link, "guest_name").c_str(), ":"));
  g_assert_true(strings_of(top, "enabled_portals") == std::vector<std::string>{"filechooser"});
  // The version the guest is served, as the guest reads it.
  JsonArray* portals = json_object_get_array_member(top, "portals");
  g_assert_cmpuint(json_array_get_length(portals), ==, 1);
  JsonObject* filechooser = json_array_get_object_element(portals, 0);
  assert_str_eq(string_of(filechooser, "name"), "filechooser");
  VariantPtr guest_version = portal_property(vm.guest().connection(), "org.freedesktop.portal.FileChooser", "version");
  g_assert_cmpint(json_object_get_int_member(member(filechooser, "interfaces"), "org.freedesktop.portal.FileChooser"),
                  ==, g_variant_get_uint32(guest_version.get()));
  g_assert_cmpint(json_object_get_int_member(top, "pending_requests"), ==, 0);
  g_assert_cmpint(json_object_get_int_member(top, "exported_documents"), ==, 0);
  g_assert_cmpint(json_object_get_int_member(member(top, "private_bus"), "helper_restarts"), ==, 0);

  HostFiles files;
  vm.share_document(files.add("a.txt", "shared"));
  status = status_of(vm.broker());
  g_assert_cmpint(json_object_get_int_member(object(status.get()), "exported_documents"), ==, 1);

  vm.host().set_reply("OpenFile", kResponseWaitForClose, nullptr);
  auto open = vm.file_chooser("OpenFile", "{'handle_token': <'ops'>}");
  g_assert_no_error(open->error());
  status = status_of(vm.broker());
  g_assert_cmpint(json_object_get_int_member(object(status.get()), "pending_requests"), ==, 1);
  g_assert_true(open->close());
  g_assert_true(wait_until(
      [&] { return json_object_get_int_member(object(status_of(vm.broker()).get()), "pending_requests") == 0; }));

  vm.stop_agent();
  g_assert_true(wait_until([&] { return link_state(vm.broker()) == "down"; }));
  status = status_of(vm.broker());
  g_assert_cmpint(json_object_get_int_member(object(status.get()), "links_accepted"), ==, 1);
  g_assert_cmpuint(json_array_get_length(json_object_get_array_member(object(status.get()), "portals")), ==, 0);
  vm.start_agent();
  status = status_of(vm.broker());
  assert_str_eq(string_of(member(object(status.get()), "link"), "state"), "serving");
  g_assert_cmpint(json_object_get_int_member(member(object(status.get()), "link"), "serial"), ==, 2);
}

// The ring keeps debug lines even without --verbose; --size bounds it.
void test_dump_log() {
  TopologyOptions options;
  options.broker.verbose = false;
  Topology topology(options);
  CtlResult all = sidebusctl(topology.broker(), {"dump-log"});
  g_assert_cmpint(all.exit_code, ==, 0);
  g_assert_true(contains(all.out, "message: ready: VM testvm"));
  g_assert_true(contains(all.out, "debug: "));                             // not printed, but kept
  g_assert_false(contains(topology.broker().process().log(), "debug: "));  // indeed not printed
  g_assert_true(contains(all.out, "guest link 1 up on unix:"));

  CtlResult tail = sidebusctl(topology.broker(), {"dump-log", "--size", "1"});
  g_assert_cmpint(tail.exit_code, ==, 0);
  g_assert_cmpuint(tail.out.size(), <=, 1024);
  g_assert_cmpuint(tail.out.size(), >, 0);
  g_assert_true(g_str_has_suffix(tail.out.c_str(), "\n"));
  // Whole lines, the newest ones (the dump-log of the first call, at least).
  g_assert_true(contains(tail.out, "control socket: dump-log"));
  g_assert_true(g_ascii_isdigit(tail.out[0]));
}

// SIGHUP re-reads the files: the broker keeps running, and a raised limit
// holds for the next call on the same link.
void test_sighup_applies_a_changed_limit() {
  Vm vm({.portals = {"filechooser"}, .config = {{"60-limits.json", R"({"broker": {"max_pending_requests": 1}})"}}});
  vm.host().set_reply("OpenFile", kResponseWaitForClose, nullptr);
  auto first = vm.file_chooser("OpenFile", "{'handle_token': <'first'>}");
  g_assert_no_error(first->error());
  auto refused = vm.file_chooser("OpenFile", "{'handle_token': <'refused'>}");
  g_assert_nonnull(refused->error());
  assert_str_eq(remote_error_name(refused->error()), "org.freedesktop.DBus.Error.LimitsExceeded");

  write_file(vm.broker().config_dir() + "/60-limits.json", R"({"broker": {"max_pending_requests": 2}})");
  vm.broker().process().send_signal(SIGHUP);
  g_assert_true(wait_until([&] {
    return json_object_get_int_member(member(object(status_of(vm.broker()).get()), "config"), "reloads") == 1;
  }));
  g_assert_true(vm.broker().process().running());
  JsonPtr status = status_of(vm.broker());
  JsonObject* config = member(object(status.get()), "config");
  g_assert_cmpint(json_object_get_int_member(member(config, "broker"), "max_pending_requests"), ==, 2);
  g_assert_cmpint(json_array_get_length(json_object_get_array_member(config, "pending_next_link")), ==, 0);
  // The same link, the same first request, a second one allowed now.
  assert_str_eq(string_of(member(object(status.get()), "link"), "state"), "serving");
  g_assert_cmpint(json_object_get_int_member(member(object(status.get()), "link"), "serial"), ==, 1);
  auto second = vm.file_chooser("OpenFile", "{'handle_token': <'second'>}");
  g_assert_no_error(second->error());
  g_assert_cmpint(json_object_get_int_member(object(status_of(vm.broker()).get()), "pending_requests"), ==, 2);
  g_assert_true(contains(vm.broker().process().log(), "reloading the configuration (SIGHUP)"));
  g_assert_true(contains(vm.broker().process().log(), "in effect now: broker.max_pending_requests"));
}

// A file with a mistake: the reload says which file, line and key, and the
// configuration in effect stays.
void test_bad_reload_keeps_the_old_configuration() {
  Vm vm({.portals = {"filechooser"}, .config = {{"60-limits.json", R"({"broker": {"max_pending_requests": 1}})"}}});
  std::string bad = vm.broker().config_dir() + "/70-typo.json";
  write_file(bad, "{\n  \"broker\": {\n    \"max_pending_requests\": tru\n  }\n}\n");
  CtlResult result = sidebusctl(vm.broker(), {"reload"});
  g_assert_cmpint(result.exit_code, ==, 1);
  g_assert_true(contains(result.err, "configuration not reloaded, the one in effect stays"));
  g_assert_true(contains(result.err, bad + ":3:"));
  g_assert_true(vm.broker().process().running());

  write_file(bad, R"({"portals": {"openuri": {"enabeld": true}}})");
  result = sidebusctl(vm.broker(), {"reload"});
  g_assert_cmpint(result.exit_code, ==, 1);
  g_assert_true(contains(result.err, bad + ":1:"));
  g_assert_true(contains(result.err, "portals.openuri.enabeld: unknown key (did you mean \"enabled\"?)"));
  JsonPtr status = status_of(vm.broker());
  JsonObject* config = member(object(status.get()), "config");
  g_assert_cmpint(json_object_get_int_member(config, "reloads"), ==, 0);
  g_assert_true(contains(string_of(config, "last_reload_error"), "enabeld"));
  g_assert_true(contains(vm.broker().process().log(), "enabeld"));  // logged too

  // The old limit still holds.
  vm.host().set_reply("OpenFile", kResponseWaitForClose, nullptr);
  auto first = vm.file_chooser("OpenFile", "{'handle_token': <'first'>}");
  g_assert_no_error(first->error());
  auto refused = vm.file_chooser("OpenFile", "{'handle_token': <'refused'>}");
  g_assert_nonnull(refused->error());

  // Fixed: reloaded, and the error is gone.
  g_assert_cmpint(unlink(bad.c_str()), ==, 0);
  result = sidebusctl(vm.broker(), {"reload"});
  g_assert_cmpint(result.exit_code, ==, 0);
  status = status_of(vm.broker());
  config = member(object(status.get()), "config");
  g_assert_cmpint(json_object_get_int_member(config, "reloads"), ==, 1);
  g_assert_false(json_object_has_member(config, "last_reload_error"));
}

// A reload that changes portals.* restarts the link's portals: an open
// request ends with response 2, the guest sees the new set.
void test_reload_restarts_changed_portals() {
  Vm vm({.portals = {"filechooser"}});
  vm.host().set_reply("OpenFile", kResponseWaitForClose, nullptr);
  auto open = vm.file_chooser("OpenFile", "{'handle_token': <'pending'>}");
  g_assert_no_error(open->error());
  g_assert_false(contains(vm.guest_introspect(), "org.freedesktop.portal.OpenURI"));

  write_file(vm.broker().config_dir() + "/70-openuri.json", R"({"portals": {"openuri": {"enabled": true}}})");
  CtlResult result = sidebusctl(vm.broker(), {"reload"});
  g_assert_cmpint(result.exit_code, ==, 0);
  JsonPtr report = parse_json(result.out);
  g_assert_true(json_object_get_boolean_member(object(report.get()), "portals_restarted"));
  g_assert_true(strings_of(object(report.get()), "enabled_portals") ==
                (std::vector<std::string>{"filechooser", "openuri"}));
  g_assert_true(open->wait_for_response());
  g_assert_cmpuint(open->response(), ==, kResponseOther);
  g_assert_true(wait_until([&] { return contains(vm.guest_introspect(), "org.freedesktop.portal.OpenURI"); }));
  g_assert_true(contains(vm.guest_introspect(), "org.freedesktop.portal.FileChooser"));
  JsonPtr status = status_of(vm.broker());
  g_assert_cmpuint(json_array_get_length(json_object_get_array_member(object(status.get()), "portals")), ==, 2);
  g_assert_cmpint(json_object_get_int_member(member(object(status.get()), "link"), "serial"), ==, 1);  // same link

  write_file(vm.broker().config_dir() + "/80-no-filechooser.json",
             R"({"portals": {"filechooser": {"enabled": false}}})");
  g_assert_cmpint(sidebusctl(vm.broker(), {"reload"}).exit_code, ==, 0);
  g_assert_true(wait_until([&] { return !contains(vm.guest_introspect(), "org.freedesktop.portal.FileChooser"); }));
  g_assert_true(contains(vm.guest_introspect(), "org.freedesktop.portal.OpenURI"));

  // The relay's limits wait for the next link; the request limit does not.
  write_file(vm.broker().config_dir() + "/90-limits.json",
             R"({"broker": {"max_pending_requests": 5, "max_message_size": 65536}})");
  result = sidebusctl(vm.broker(), {"reload"});
  g_assert_cmpint(result.exit_code, ==, 0);
  report = parse_json(result.out);
  g_assert_true(strings_of(object(report.get()), "applied") == std::vector<std::string>{"broker.max_pending_requests"});
  g_assert_true(strings_of(object(report.get()), "next_link") == std::vector<std::string>{"broker.max_message_size"});
  g_assert_false(json_object_get_boolean_member(object(report.get()), "portals_restarted"));
  status = status_of(vm.broker());
  g_assert_true(strings_of(member(object(status.get()), "config"), "pending_next_link") ==
                std::vector<std::string>{"broker.max_message_size"});
  vm.stop_agent();
  vm.start_agent();
  status = status_of(vm.broker());
  g_assert_cmpint(
      json_array_get_length(json_object_get_array_member(member(object(status.get()), "config"), "pending_next_link")),
      ==, 0);
}

// Raw clients of the control socket: its mode, one request per line and at
// most 4096 bytes of it, what it says to garbage, how many it serves at
// once, and that another uid is kept out.
std::string ask_raw(const std::string& socket_path, const std::string& bytes) {
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_un sun = {};
  sun.sun_family = AF_UNIX;
  strncpy(sun.sun_path, socket_path.c_str(), sizeof sun.sun_path - 1);
  if (connect(fd, reinterpret_cast<struct sockaddr*>(&sun), sizeof sun) != 0) {
    close(fd);
    throw FixtureError("cannot connect to " + socket_path);
  }
  for (size_t sent = 0; sent < bytes.size();) {
    ssize_t n = send(fd, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) break;  // the broker may close once it has answered
    sent += size_t(n);
  }
  std::string reply;
  char buffer[4096];
  for (ssize_t n; (n = read(fd, buffer, sizeof buffer)) > 0;) reply.append(buffer, size_t(n));
  close(fd);
  return reply;
}

int connect_idle(const std::string& socket_path) {
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_un sun = {};
  sun.sun_family = AF_UNIX;
  strncpy(sun.sun_path, socket_path.c_str(), sizeof sun.sun_path - 1);
  g_assert_cmpint(connect(fd, reinterpret_cast<struct sockaddr*>(&sun), sizeof sun), ==, 0);
  return fd;
}

void test_control_socket_bounds() {
  Topology topology;
  std::string socket_path = topology.broker().runtime_dir() + "/control.sock";
  struct stat st;
  g_assert_cmpint(stat(socket_path.c_str(), &st), ==, 0);
  g_assert_cmpint(st.st_mode & 0777, ==, 0600);

  std::string reply = ask_raw(socket_path, std::string(5000, ' ') + "\n");
  g_assert_true(contains(reply, "\"ok\":false"));
  g_assert_true(contains(reply, "request too long: at most 4096 bytes"));
  reply = ask_raw(socket_path, "status\n");
  g_assert_true(contains(reply, "\"ok\":false"));
  reply = ask_raw(socket_path, "{}\n");
  g_assert_true(contains(reply, "expected a JSON object with a string \\\"command\\\""));
  reply = ask_raw(socket_path, "{\"command\": \"format-disk\"}\n");
  g_assert_true(contains(reply, "unknown command \\\"format-disk\\\""));
  reply = ask_raw(socket_path, "{\"command\": \"status\"}\n");
  g_assert_true(contains(reply, "\"ok\":true"));
  g_assert_true(g_str_has_suffix(reply.c_str(), "}\n"));  // one line
  g_assert_cmpuint(std::count(reply.begin(), reply.end(), '\n'), ==, 1);

  // Four idle clients are served (they time out on their own); a fifth is told.
  std::vector<int> idle;
  for (int i = 0; i < 4; i++) idle.push_back(connect_idle(socket_path));
  reply = ask_raw(socket_path, "{\"command\": \"status\"}\n");
  g_assert_true(contains(reply, "busy"));
  for (int fd : idle) close(fd);
  g_assert_true(
      wait_until([&] { return contains(ask_raw(socket_path, "{\"command\":\"status\"}\n"), "\"ok\":true"); }));

  // Another uid does not get in (the runtime directory and the socket are the broker's).
  TempDir dir("sidebus-test-ctl");
  ChildProcess other(
      SpawnOptions{.name = "sidebusctl-as-nobody",
                   .argv = {env_path("SIDEBUS_CTL"), "--runtime-dir", topology.broker().runtime_dir(), "status"},
                   .stdout_path = dir / "out",
                   .identity = kNobody});
  std::optional<ExitStatus> exit = other.wait_for_exit(20s);
  g_assert_true(exit.has_value());
  g_assert_true(exit->exited);
  g_assert_cmpint(exit->code, ==, 3);
  g_assert_true(contains(other.log(), "no broker answers at"));
}

// SIGHUP first, then SIGTERM (and SIGINT): the broker exits 0 and leaves
// nothing in its runtime directory.
void stop_cleanly_after_sighup(int stop_signal) {
  TopologyOptions options;
  options.start_agent = false;
  options.wait_for_portal = false;
  Topology topology(options);
  Broker& broker = topology.broker();
  g_assert_true(is_socket(broker.runtime_dir() + "/control.sock"));
  g_assert_true(is_socket(broker.runtime_dir() + "/private-bus.sock"));
  broker.process().send_signal(SIGHUP);
  g_assert_true(wait_until([&] { return contains(broker.process().log(), "configuration reloaded"); }));
  g_assert_true(broker.process().running());
  broker.process().send_signal(stop_signal);
  std::optional<ExitStatus> exit = broker.wait_for_exit(20s);
  g_assert_true(exit.has_value());
  g_assert_true(exit->success());
  g_assert_false(is_mounted(broker.runtime_dir() + "/doc"));
  for (const std::string& name : entries_of(broker.runtime_dir()))
    if (name != "doc") g_error("the stopped broker left %s/%s", broker.runtime_dir().c_str(), name.c_str());
  g_assert_false(is_socket(broker.dir() / "link.sock"));
}

void test_sigterm_after_sighup_cleans_up() { stop_cleanly_after_sighup(SIGTERM); }
void test_sigint_after_sighup_cleans_up() { stop_cleanly_after_sighup(SIGINT); }

// A crash leaves the last log lines in the state directory; so does a
// start that failed.
void test_crash_leaves_the_log() {
  TopologyOptions options;
  options.start_agent = false;
  options.wait_for_portal = false;
  options.broker.verbose = false;
  Topology topology(options);
  Broker& broker = topology.broker();
  std::string fatal = broker.state_dir() + "/broker-fatal.log";
  g_assert_false(g_file_test(fatal.c_str(), G_FILE_TEST_EXISTS));
  g_assert_true(wait_until([&] { return contains(sidebusctl(broker, {"dump-log"}).out, "ready: VM"); }));
  broker.process().send_signal(SIGSEGV);
  std::optional<ExitStatus> exit = broker.wait_for_exit(20s);
  g_assert_true(exit.has_value());
  g_assert_false(exit->success());
  std::optional<std::string> log = read_file(fatal);
  g_assert_true(log.has_value());
  g_assert_true(contains(*log, "message: ready: VM testvm"));
  g_assert_true(contains(*log, "debug: "));  // what was not printed is there too
}

void test_failed_start_leaves_the_log() {
  BrokerOptions options;
  options.host_bus_address = "unix:path=/nonexistent/sidebus-test-bus";
  options.wait_for_listen = false;
  Broker broker(options);
  std::optional<ExitStatus> exit = broker.wait_for_exit(20s);
  g_assert_true(exit.has_value());
  g_assert_true(exit->exited);
  g_assert_cmpint(exit->code, ==, 1);
  g_assert_true(
      contains(broker.process().log(), "the last log lines are in " + broker.state_dir() + "/broker-fatal.log"));
  std::optional<std::string> log = read_file(broker.state_dir() + "/broker-fatal.log");
  g_assert_true(log.has_value());
  g_assert_true(contains(*log, "start failed: cannot connect to the host bus"));
}

// Every address and path option is checked before anything starts: the
// broker exits at once, its message names the option, and no private bus
// was started for it.
void expect_refused(const std::vector<std::string>& args, int code, const std::string& message,
                    const std::vector<std::string>& listen = {}) {
  HostPortal host;
  BrokerOptions options;
  options.host_bus_address = host.bus_address();
  options.extra_args = args;
  options.listen = listen;
  options.wait_for_listen = false;
  options.env = {{"LC_ALL", "C.UTF-8"}};
  Broker broker(options);
  std::optional<ExitStatus> exit = broker.wait_for_exit(20s);
  g_assert_true(exit.has_value());
  g_assert_true(exit->exited);
  g_assert_cmpint(exit->code, ==, code);
  if (!contains(broker.process().log(), message))
    g_error("expected \"%s\" in:\n%s", message.c_str(), broker.process().log().c_str());
  g_assert_false(g_file_test((broker.runtime_dir() + "/private-bus.conf").c_str(), G_FILE_TEST_EXISTS));
  g_assert_false(contains(broker.process().log(), "private bus"));
  g_assert_true(entries_of(broker.runtime_dir()).empty());
}

void test_options_checked_before_start() {
  TempDir dir("sidebus-test-options");
  // With a UTF-8 locale the quotes are quotes, not "?" (setlocale).
  expect_refused({}, 2, "--listen: unknown link address “tcp:1234”", {"tcp:1234"});
  expect_refused({}, 1, "--listen: cannot listen on “unix:" + dir.path() + "/missing/link.sock”",
                 {"unix:" + dir.path() + "/missing/link.sock"});
  expect_refused({"--host-bus", "nonsense"}, 2, "--host-bus nonsense: ");
  expect_refused({"--virtiofsd", "/nonexistent/virtiofsd"}, 2, "--virtiofsd /nonexistent/virtiofsd: not an executable");
  expect_refused({"--plugin-dir", "/nonexistent/plugins"}, 2, "--plugin-dir /nonexistent/plugins: not a directory");
  expect_refused({"--guest-documents-path", "relative/docs"}, 2, "--guest-documents-path relative/docs: must be an");
  std::string long_dir = dir.path() + "/" + std::string(100, 'r');
  expect_refused({"--runtime-dir", long_dir}, 2, "--runtime-dir " + long_dir + ": too long");
}

// READY=1 comes once, when the link socket exists and the private bus is
// up; STATUS= follows the link; a reload says RELOADING=1, a stop
// STOPPING=1. Nothing else the broker starts speaks on the socket.
void check_notify_protocol(const std::string& address) {
  NotifySocket notify(address);
  TopologyOptions options;
  options.start_agent = false;
  options.wait_for_portal = false;
  options.broker.wait_for_listen = false;
  options.broker.env = {{"NOTIFY_SOCKET", address}};
  Topology topology(options);
  Broker& broker = topology.broker();
  std::vector<std::string> messages;
  size_t ready_at = 0;
  bool listening_at_ready = false, mounted_at_ready = false;
  g_assert_true(wait_until([&] {
    for (std::string& message : notify.receive()) {
      messages.push_back(std::move(message));
      if (ready_at == 0 && has_line(messages.back(), "READY=1")) {
        ready_at = messages.size();
        listening_at_ready = is_socket(broker.dir() / "link.sock");
        mounted_at_ready = is_mounted(broker.runtime_dir() + "/doc");
      }
    }
    return ready_at != 0 || !broker.process().running();
  }));
  g_assert_cmpuint(ready_at, !=, 0);
  g_assert_true(listening_at_ready);
  g_assert_true(mounted_at_ready);
  g_assert_true(has_line(messages[ready_at - 1], "STATUS=VM testvm: waiting for the guest agent"));
  for (size_t i = 0; i + 1 < ready_at; i++) g_assert_false(contains(messages[i], "READY=1"));

  auto wait_for = [&](const std::string& line) {
    bool seen = wait_until([&] {
      for (std::string& message : notify.receive()) messages.push_back(std::move(message));
      for (size_t i = ready_at; i < messages.size(); i++)
        if (has_line(messages[i], line)) {
          ready_at = i + 1;  // later lines are looked for after this one
          return true;
        }
      return false;
    });
    if (!seen)
      g_error("no \"%s\" from the broker; it sent:\n%s", line.c_str(),
              [&] {
                std::string all;
                for (const std::string& m : messages) all += m + "\n--\n";
                return all;
              }()
                  .c_str());
  };
  topology.start_agent();
  g_assert_true(topology.wait_for_guest_name());
  wait_for("STATUS=VM testvm: serving the guest (agent " SIDEBUS_VERSION " on unix:" + (broker.dir() / "link.sock") +
           "); portals: none");
  topology.stop_agent();
  wait_for("STATUS=VM testvm: waiting for the guest agent");
  broker.process().send_signal(SIGHUP);
  wait_for("RELOADING=1");
  wait_for("READY=1");
  broker.stop();
  wait_for("STOPPING=1");
  size_t readies = 0;
  for (const std::string& message : messages) readies += has_line(message, "READY=1") ? 1 : 0;
  g_assert_cmpuint(readies, ==, 2);  // start and reload, from the broker alone
}

void test_notify_on_a_path() {
  TempDir dir("sidebus-test-notify");
  check_notify_protocol(dir / "notify.sock");
}

void test_notify_on_an_abstract_socket() { check_notify_protocol("@sidebus-test-notify-" + std::to_string(getpid())); }

// The guest's activation file under its own name still starts the agent:
// the session bus goes by the Name= inside.
void test_activation_by_the_renamed_file() {
  TempDir link_dir("sidebus-test-activation");
  TopologyOptions options;
  options.start_agent = false;
  options.wait_for_portal = false;
  options.broker.listen = {"unix:" + (link_dir / "link.sock")};
  Topology topology(options);
  std::optional<std::string> installed =
      read_file(env_path("SIDEBUS_BUILD_ROOT") + "/data/dev.sidebus.portal.Desktop.service");
  g_assert_true(installed.has_value());
  // As installed, but with this build's agent and addresses, and no
  // systemd to hand the start to.
  std::string file;
  std::istringstream lines(*installed);
  for (std::string line; std::getline(lines, line);) {
    if (line.starts_with("Exec="))
      line = "Exec=" + env_path("SIDEBUS_AGENT") + " --connect unix:" + (link_dir / "link.sock") + " --bus " +
             topology.guest().address();
    if (line.starts_with("SystemdService=")) continue;
    file += line + "\n";
  }
  g_assert_true(contains(file, "Name=org.freedesktop.portal.Desktop\n"));
  topology.guest().dir().write_file("services/dev.sidebus.portal.Desktop.service", file);
  g_assert_false(name_has_owner(topology.guest().connection(), kPortalBusName));
  // An ordinary client call, with auto-start, as applications make it.
  g_autoptr(GError) error = nullptr;
  g_autoptr(GVariant) reply = g_dbus_connection_call_sync(topology.guest().connection(), kPortalBusName, kPortalPath,
                                                          "org.freedesktop.DBus.Peer", "Ping", nullptr, nullptr,
                                                          G_DBUS_CALL_FLAGS_NONE, 20000, nullptr, &error);
  g_assert_no_error(error);
  g_assert_true(name_has_owner(topology.guest().connection(), "dev.sidebus.Agent"));
  g_assert_true(wait_until([&] { return link_state(topology.broker()) == "serving"; }));
}

}  // namespace

int main(int argc, char** argv) {
  g_test_init(&argc, &argv, nullptr);
  add_test("/operations/status/follows-the-link", test_status_follows_the_link);
  add_test("/operations/dump-log", test_dump_log);
  add_test("/operations/reload/sighup-applies-a-changed-limit", test_sighup_applies_a_changed_limit);
  add_test("/operations/reload/bad-file-keeps-the-old-configuration", test_bad_reload_keeps_the_old_configuration);
  add_test("/operations/reload/restarts-changed-portals", test_reload_restarts_changed_portals);
  add_test("/operations/control-socket/bounds", test_control_socket_bounds);
  add_test("/operations/stop/sigterm-after-sighup", test_sigterm_after_sighup_cleans_up);
  add_test("/operations/stop/sigint-after-sighup", test_sigint_after_sighup_cleans_up);
  add_test("/operations/fatal/crash-leaves-the-log", test_crash_leaves_the_log);
  add_test("/operations/fatal/failed-start-leaves-the-log", test_failed_start_leaves_the_log);
  add_test("/operations/options/checked-before-start", test_options_checked_before_start);
  add_test("/operations/notify/path", test_notify_on_a_path);
  add_test("/operations/notify/abstract", test_notify_on_an_abstract_socket);
  add_test("/operations/activation/renamed-file", test_activation_by_the_renamed_file);
  return g_test_run();
}
