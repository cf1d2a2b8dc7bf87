// desktop-portals.hpp — what the tests of the desktop portals (Settings,
// Notification, Inhibit, NetworkMonitor, ProxyResolver) share beyond the
// support library: plain portal calls on a bus, the signals a client hears,
// the backend's records of one method, error assertions, "nothing more
// happens" waits, and GuestApp, a real application in the guest
// (tests/desktop-client.cpp: libportal and GIO) driven line by line.
#pragma once

#include <gio/gio.h>

#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "support/host-portal.hpp"
#include "support/vm.hpp"

namespace sidebus::test::desktop {

inline constexpr char kNotFound[] = "org.freedesktop.portal.Error.NotFound";
inline constexpr char kNotSupported[] = "org.freedesktop.DBus.Error.NotSupported";
inline constexpr char kLimitsExceeded[] = "org.freedesktop.DBus.Error.LimitsExceeded";
inline constexpr char kUnknownMethod[] = "org.freedesktop.DBus.Error.UnknownMethod";
// How long a test waits to be sure something does not happen.
inline constexpr Timeout kNothingHappens = 1500ms;

// A method of the portal object (or @path) at kPortalBusName; the reply, or
// nullptr with @error set.
VariantPtr call(GDBusConnection* connection, const char* interface, const char* method, GVariant* parameters,
                GError** error, const char* reply_type = nullptr, const char* path = kPortalPath);
// The same, asserting it succeeds.
VariantPtr call_ok(GDBusConnection* connection, const char* interface, const char* method, GVariant* parameters,
                   const char* reply_type = nullptr, const char* path = kPortalPath);
// The call fails with the D-Bus error @name (and a message containing
// @message_part, if given).
void assert_call_fails(GDBusConnection* connection, const char* interface, const char* method, GVariant* parameters,
                       const char* name, const char* message_part = nullptr);
void assert_error(const GError* error, const char* name, const char* message_part = nullptr);

// @value without its variant boxes: <<uint32 1>> → uint32 1.
VariantPtr unbox(GVariant* value);

// The backend's records of @method, oldest first.
std::vector<BackendCall> calls_of(HostPortal& host, const char* method);
// Waits until the backend has @count records of @method; returns them.
std::vector<BackendCall> wait_for_calls(HostPortal& host, const char* method, size_t count);

// Iterates the main context for @duration (to see that nothing arrives).
void let_time_pass(Timeout duration = kNothingHappens);

// The signals @member of @interface from kPortalBusName that a connection
// hears (broadcast, or unicast to it).
class SignalLog {
 public:
  SignalLog(GDBusConnection* connection, const char* interface, const char* member);
  ~SignalLog();
  SignalLog(const SignalLog&) = delete;
  SignalLog& operator=(const SignalLog&) = delete;

  bool wait_for(size_t count, Timeout timeout = kDefaultTimeout);
  size_t size() const { return received_.size(); }
  GVariant* parameters(size_t i) const { return received_.at(i).second.get(); }
  const std::string& path(size_t i) const { return received_.at(i).first; }

 private:
  static void on_signal(GDBusConnection*, const char*, const char* path, const char*, const char*, GVariant* parameters,
                        gpointer user_data);
  GObjectPtr<GDBusConnection> connection_;
  guint subscription_;
  std::vector<std::pair<std::string, VariantPtr>> received_;
};

// The broker still serves the guest: the portal name is owned and the portal
// object answers (after refused input, a vanished client, …).
void assert_broker_serves(Vm& vm);

// ---- GuestApp ------------------------------------------------------------------
// tests/desktop-client.cpp running on the guest bus as a guest application:
// it prints one line per event on stdout and reads commands, one per line,
// from its fd 3 (a pipe the test holds). The lines it prints are its report
// (see the client's header for each command).
class GuestApp {
 public:
  // @argv: the client's arguments (its command first); @env: more environment.
  GuestApp(Vm& vm, std::vector<std::string> argv, std::vector<std::pair<std::string, std::string>> env = {});
  ~GuestApp();
  GuestApp(const GuestApp&) = delete;
  GuestApp& operator=(const GuestApp&) = delete;

  // Sends one command line.
  void send(const std::string& command);
  // All lines printed so far.
  std::vector<std::string> lines() const;
  // Waits for a line starting with @prefix after the first @skip such
  // lines; returns it (FixtureError with the client's output on timeout).
  std::string wait_for_line(const std::string& prefix, size_t skip = 0, Timeout timeout = kDefaultTimeout);
  size_t count_lines(const std::string& prefix) const;
  // Closes the command pipe (the client exits) and waits for it to exit.
  ExitStatus quit(Timeout timeout = 10s);
  // SIGKILL, as when an application crashes.
  void kill();
  ChildProcess& process() { return *process_; }

 private:
  std::string output_;
  int commands_ = -1;  // the write end of the client's fd 3
  std::unique_ptr<ChildProcess> process_;
};

}  // namespace sidebus::test::desktop
