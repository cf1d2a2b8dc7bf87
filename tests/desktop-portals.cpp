// desktop-portals.cpp — see desktop-portals.hpp.
#include "desktop-portals.hpp"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "support/assert.hpp"
#include "support/files.hpp"

namespace sidebus::test::desktop {

VariantPtr call(GDBusConnection* connection, const char* interface, const char* method, GVariant* parameters,
                GError** error, const char* reply_type, const char* path) {
  return VariantPtr(g_dbus_connection_call_sync(connection, kPortalBusName, path, interface, method, parameters,
                                                reply_type != nullptr ? G_VARIANT_TYPE(reply_type) : nullptr,
                                                G_DBUS_CALL_FLAGS_NONE, 30000, nullptr, error));
}

VariantPtr call_ok(GDBusConnection* connection, const char* interface, const char* method, GVariant* parameters,
                   const char* reply_type, const char* path) {
  g_autoptr(GError) error = nullptr;
  VariantPtr reply = call(connection, interface, method, parameters, &error, reply_type, path);
  if (reply == nullptr) g_error("%s.%s failed: %s", interface, method, error->message);
  return reply;
}

void assert_error(const GError* error, const char* name, const char* message_part) {
  if (error == nullptr) g_error("expected the error %s, the call succeeded", name);
  assert_str_eq(remote_error_name(error), name);
  if (message_part != nullptr && strstr(error->message, message_part) == nullptr)
    g_error("error message “%s” does not mention “%s”", error->message, message_part);
}

void assert_call_fails(GDBusConnection* connection, const char* interface, const char* method, GVariant* parameters,
                       const char* name, const char* message_part) {
  g_autoptr(GError) error = nullptr;
  VariantPtr reply = call(connection, interface, method, parameters, &error);
  if (reply != nullptr) {
    g_autofree char* shown = g_variant_print(reply.get(), TRUE);
    g_error("%s.%s answered %s, expected the error %s", interface, method, shown, name);
  }
  assert_error(error, name, message_part);
}

VariantPtr unbox(GVariant* value) {
  VariantPtr current(g_variant_ref(value));
  while (g_variant_is_of_type(current.get(), G_VARIANT_TYPE_VARIANT))
    current.reset(g_variant_get_variant(current.get()));
  return current;
}

std::vector<BackendCall> calls_of(HostPortal& host, const char* method) {
  std::vector<BackendCall> found;
  for (BackendCall& call : host.backend_calls())
    if (call.method == method) found.push_back(std::move(call));
  return found;
}

std::vector<BackendCall> wait_for_calls(HostPortal& host, const char* method, size_t count) {
  if (!wait_until([&] { return calls_of(host, method).size() >= count; }))
    throw FixtureError("the backend got " + std::to_string(calls_of(host, method).size()) + " " + method +
                       " calls, expected " + std::to_string(count));
  return calls_of(host, method);
}

void let_time_pass(Timeout duration) {
  wait_until([] { return false; }, duration);
}

SignalLog::SignalLog(GDBusConnection* connection, const char* interface, const char* member)
    : connection_(G_DBUS_CONNECTION(g_object_ref(connection))),
      subscription_(g_dbus_connection_signal_subscribe(connection, kPortalBusName, interface, member, nullptr, nullptr,
                                                       G_DBUS_SIGNAL_FLAGS_NONE, on_signal, this, nullptr)) {}

SignalLog::~SignalLog() { g_dbus_connection_signal_unsubscribe(connection_.get(), subscription_); }

bool SignalLog::wait_for(size_t count, Timeout timeout) {
  return wait_until([&] { return received_.size() >= count; }, timeout);
}

void SignalLog::on_signal(GDBusConnection*, const char*, const char* path, const char*, const char*,
                          GVariant* parameters, gpointer user_data) {
  static_cast<SignalLog*>(user_data)->received_.emplace_back(path, VariantPtr(g_variant_ref(parameters)));
}

void assert_broker_serves(Vm& vm) {
  g_assert_true(name_has_owner(vm.guest().connection(), kPortalBusName));
  std::string xml = vm.guest_introspect();
  g_assert_true(xml.find("org.freedesktop.portal.") != std::string::npos);
  g_assert_true(vm.broker().process().running());
}

// ---- GuestApp ------------------------------------------------------------------

GuestApp::GuestApp(Vm& vm, std::vector<std::string> argv, std::vector<std::pair<std::string, std::string>> env) {
  static int apps_started = 0;
  signal(SIGPIPE, SIG_IGN);  // a client that died must fail the test, not kill it
  output_ = vm.guest().dir() / ("desktop-app-" + std::to_string(++apps_started) + ".out");
  int pipe_fds[2];
  if (pipe2(pipe_fds, O_CLOEXEC) != 0) throw FixtureError(std::string("pipe2: ") + g_strerror(errno));
  commands_ = pipe_fds[1];
  argv.insert(argv.begin(), env_path("SIDEBUS_DESKTOP_CLIENT"));
  SpawnOptions options{
      .name = "guest app " + argv.at(1),
      .argv = argv,
      .env = {{"DBUS_SESSION_BUS_ADDRESS", vm.guest().address()},
              {"HOME", vm.guest().dir().path()},
              {"XDG_RUNTIME_DIR", vm.guest().dir() / "runtime"}},
      .cwd = vm.guest().dir().path(),
      .stdout_path = output_,
      .stderr_path = output_ + ".err",
      .identity = vm.guest().identity(),
      .fds = {{pipe_fds[0], 3}},
  };
  for (auto& [name, value] : env) options.env[name] = value;
  try {
    process_ = std::make_unique<ChildProcess>(std::move(options));
  } catch (...) {
    close(pipe_fds[0]);
    close(commands_);
    throw;
  }
  close(pipe_fds[0]);
}

GuestApp::~GuestApp() {
  if (commands_ >= 0) close(commands_);
  if (process_ && test_failing())
    g_test_message("guest app stderr: %s", read_file(output_ + ".err").value_or("").c_str());
}

void GuestApp::send(const std::string& command) {
  std::string line = command + "\n";
  if (commands_ < 0 || write(commands_, line.data(), line.size()) != static_cast<ssize_t>(line.size()))
    throw FixtureError("cannot send “" + command + "” to the guest app: " + g_strerror(errno));
}

std::vector<std::string> GuestApp::lines() const {
  std::vector<std::string> lines;
  g_auto(GStrv) split = g_strsplit(read_file(output_).value_or("").c_str(), "\n", -1);
  for (char** line = split; *line != nullptr; line++)
    if (**line != '\0') lines.emplace_back(*line);
  return lines;
}

size_t GuestApp::count_lines(const std::string& prefix) const {
  size_t count = 0;
  for (const std::string& line : lines()) count += line.starts_with(prefix);
  return count;
}

std::string GuestApp::wait_for_line(const std::string& prefix, size_t skip, Timeout timeout) {
  std::string found;
  auto look = [&] {
    size_t seen = 0;
    for (const std::string& line : lines())
      if (line.starts_with(prefix) && seen++ == skip) return found = line, true;
    return false;
  };
  if (wait_until(look, timeout)) return found;
  std::string all;
  for (const std::string& line : lines()) all += "  " + line + "\n";
  throw FixtureError("the guest app did not print “" + prefix + "…” (" + std::to_string(skip) +
                     " skipped); it printed:\n" + all + "stderr:\n" + read_file(output_ + ".err").value_or(""));
}

ExitStatus GuestApp::quit(Timeout timeout) {
  if (commands_ >= 0) close(commands_);
  commands_ = -1;
  if (!wait_until([&] { return !process_->running(); }, timeout)) return process_->stop(1s);
  return *process_->wait_for_exit(0ms);
}

void GuestApp::kill() {
  process_->send_signal(SIGKILL);
  wait_until([&] { return !process_->running(); });
}

}  // namespace sidebus::test::desktop
