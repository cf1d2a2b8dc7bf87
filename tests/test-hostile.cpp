// SPDX-License-Identifier: LGPL-2.1-or-later
// test-hostile.cpp — the broker against a guest that misbehaves, a VM that
// goes away mid-dialog, and helpers that die or freeze, with real parts: the
// host's xdg-desktop-portal and test backend, the broker with the
// FileChooser portal and its private document portal, a guest bus and the
// agent — and, where a guest bus would never send what a hostile agent can,
// a fake guest bus speaking on the link itself (FakeGuestBus).
//
// What every case asserts is what a user would notice: the broker is still
// there (or, on SIGTERM, exited 0), the host dialog was closed, the guest got
// the error it should (by name), and another client of the same VM is still
// served. "Served" means its call is answered within kServed, the point
// where a user gives up, not a measured speed: speed is for bench/.
#include <fcntl.h>
#include <gio/gunixfdlist.h>
#include <glib/gstdio.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <mutex>
#include <string>
#include <vector>

#include "support/assert.hpp"
#include "support/dbus.hpp"
#include "support/files.hpp"
#include "support/variant.hpp"
#include "support/vm.hpp"

using namespace sidebus::test;
using sidebus::retain;

namespace {

constexpr char kFileChooser[] = "org.freedesktop.portal.FileChooser";
constexpr char kLimitsExceeded[] = "org.freedesktop.DBus.Error.LimitsExceeded";
// A call that is not answered within this is a broker that stalls.
constexpr Timeout kServed = 5s;

// ---- helpers ------------------------------------------------------------------

// What the kernel says about a process: its resident memory and open fds.
struct Footprint {
  long rss_kib = 0;
  size_t fds = 0;
};

Footprint footprint(pid_t pid) {
  Footprint result;
  auto status = read_file("/proc/" + std::to_string(pid) + "/status");
  if (status) {
    size_t at = status->find("VmRSS:");
    if (at != std::string::npos) result.rss_kib = strtol(status->c_str() + at + 6, nullptr, 10);
  }
  g_autofree char* fd_dir = g_strdup_printf("/proc/%d/fd", int(pid));
  if (GDir* dir = g_dir_open(fd_dir, 0, nullptr)) {
    while (g_dir_read_name(dir) != nullptr) result.fds++;
    g_dir_close(dir);
  }
  return result;
}

// The pid of @name's owner on the bus at @address.
pid_t owner_pid(const std::string& address, const char* name) {
  auto connection = connect(address);
  g_autoptr(GVariant) reply = g_dbus_connection_call_sync(
      connection.get(), "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus",
      "GetConnectionUnixProcessID", g_variant_new("(s)", name), G_VARIANT_TYPE("(u)"), G_DBUS_CALL_FLAGS_NONE, 5000,
      nullptr, nullptr);
  if (reply == nullptr) throw FixtureError(std::string("no owner of ") + name + " on " + address);
  guint32 pid;
  g_variant_get(reply, "(u)", &pid);
  return pid_t(pid);
}

pid_t document_portal_pid(Vm& vm) {
  return owner_pid("unix:path=" + vm.broker().runtime_dir() + "/private-bus.sock", "org.freedesktop.portal.Documents");
}

// A FileChooser call made asynchronously: while the host call is in flight
// the guest's call does not return, but its request object already exists
// at the path every client predicts.
class AsyncOpen {
 public:
  AsyncOpen(GDBusConnection* client, const std::string& token, const char* method = "OpenFile")
      : client_(retain(client)), token_(token) {
    const char* unique = g_dbus_connection_get_unique_name(client);
    std::string sender = unique + 1;
    for (char& c : sender)
      if (c == '.') c = '_';
    handle_ = "/org/freedesktop/portal/desktop/request/" + sender + "/" + token;
    subscription_ = g_dbus_connection_signal_subscribe(
        client, kPortalBusName, "org.freedesktop.portal.Request", "Response", handle_.c_str(), nullptr,
        G_DBUS_SIGNAL_FLAGS_NONE,
        [](GDBusConnection*, const char*, const char*, const char*, const char*, GVariant* parameters, gpointer data) {
          auto* self = static_cast<AsyncOpen*>(data);
          guint32 response;
          g_variant_get(parameters, "(u@a{sv})", &response, nullptr);
          self->response_ = response;
        },
        this, nullptr);
    VariantPtr options = parse("a{sv}", "{'handle_token': <'" + token + "'>}");
    g_dbus_connection_call(
        client, kPortalBusName, kPortalPath, kFileChooser, method,
        g_variant_new("(ss@a{sv})", "", "hostile", options.get()), G_VARIANT_TYPE("(o)"), G_DBUS_CALL_FLAGS_NONE,
        120000, nullptr,
        [](GObject* source, GAsyncResult* result, gpointer data) {
          auto* self = static_cast<AsyncOpen*>(data);
          g_autoptr(GVariant) reply = g_dbus_connection_call_finish(G_DBUS_CONNECTION(source), result, &self->error_);
          self->returned_ = true;
        },
        this);
  }
  ~AsyncOpen() {
    wait_until([this] { return returned_; }, 10s);  // the call's callback points here
    g_dbus_connection_signal_unsubscribe(client_.get(), subscription_);
    g_clear_error(&error_);
  }
  const std::string& handle() const { return handle_; }
  bool returned() const { return returned_; }
  const GError* error() const { return error_; }
  std::optional<guint32> response() const { return response_; }

 private:
  GObjectPtr<GDBusConnection> client_;
  std::string token_;
  std::string handle_;
  guint subscription_ = 0;
  bool returned_ = false;
  GError* error_ = nullptr;
  std::optional<guint32> response_;
};

// A call from a well-behaved client: FileChooser.OpenFile that the user
// cancels; true if its Response arrived within kServed.
bool served(GDBusConnection* client, Vm& vm) {
  vm.host().set_reply("OpenFile", kResponseCancelled, nullptr);
  PortalRequest request(client, kPortalBusName, kFileChooser, "OpenFile",
                        g_variant_new("(ss@a{sv})", "", "served?", with_handle_token("{}").release()));
  if (request.error() != nullptr) {
    g_test_message("the well-behaved call failed: %s", request.error()->message);
    return false;
  }
  return request.wait_for_response(kServed) && request.response() == kResponseCancelled;
}

bool request_object_exists(GDBusConnection* client, const std::string& handle) {
  g_autoptr(GVariant) reply = g_dbus_connection_call_sync(
      client, kPortalBusName, handle.c_str(), "org.freedesktop.DBus.Introspectable", "Introspect", nullptr,
      G_VARIANT_TYPE("(s)"), G_DBUS_CALL_FLAGS_NONE, 5000, nullptr, nullptr);
  if (reply == nullptr) return false;
  const char* xml;
  g_variant_get(reply, "(&s)", &xml);
  return strstr(xml, "org.freedesktop.portal.Request") != nullptr;
}

// ---- the link goes, the caller goes, the guest closes, the broker stops -------

enum class Stage { kHostCallInFlight, kWaitingForResponse, kExporting };
enum class Ending { kLinkDrops, kCallerLeaves, kGuestCloses, kSigterm };

const char* stage_name(Stage stage) {
  switch (stage) {
    case Stage::kHostCallInFlight: return "host-call-in-flight";
    case Stage::kWaitingForResponse: return "waiting-for-response";
    case Stage::kExporting: return "exporting";
  }
  return "";
}

const char* ending_name(Ending ending) {
  switch (ending) {
    case Ending::kLinkDrops: return "link-drops";
    case Ending::kCallerLeaves: return "caller-leaves";
    case Ending::kGuestCloses: return "guest-closes";
    case Ending::kSigterm: return "sigterm";
  }
  return "";
}

// One dialog, stopped at @stage, ended by @ending. The broker must retire
// the request on both sides and go on (SIGTERM: exit 0); the host dialog is
// closed; the guest never gets a Response for what it closed or left.
void test_teardown(Stage stage, Ending ending) {
  Vm vm;
  HostFiles files;
  auto client = connect(vm.guest().address());
  pid_t stopped = 0;
  switch (stage) {
    case Stage::kHostCallInFlight:
      // The host portal takes the call but never answers it (yet).
      vm.host().set_reply("OpenFile", kResponseWaitForClose);
      stopped = vm.host().portal().pid();
      break;
    case Stage::kWaitingForResponse:
      vm.host().set_reply("OpenFile", kResponseWaitForClose);
      break;
    case Stage::kExporting:
      // The user picks a file; the private document portal freezes before
      // the broker could export it.
      vm.host().set_reply("OpenFile", kResponseSuccess, uris_result({files.add("picked.txt", "picked")}));
      stopped = document_portal_pid(vm);
      break;
  }
  if (stopped != 0) g_assert_cmpint(kill(stopped, SIGSTOP), ==, 0);
  std::string token = std::string("hostile_") + stage_name(stage);
  for (char& c : token)
    if (c == '-') c = '_';
  auto call = std::make_unique<AsyncOpen>(client.get(), token);
  switch (stage) {
    case Stage::kHostCallInFlight:
      g_assert_true(wait_until([&] { return vm.broker().process().log().find("→ host") != std::string::npos; }));
      break;
    case Stage::kWaitingForResponse:
      g_assert_true(vm.host().wait_for_backend_calls(1));
      break;
    case Stage::kExporting:
      g_assert_true(wait_until([&] {
        auto calls = vm.host().backend_calls();
        return !calls.empty() && calls[0].answered;
      }));
      break;
  }

  switch (ending) {
    case Ending::kLinkDrops:  // the VM is gone at once (crash, reboot)
      vm.agent().process().send_signal(SIGKILL);
      g_assert_true(wait_until([&] {
        return vm.broker().process().log().find("closed; waiting for the agent to reconnect") != std::string::npos;
      }));
      break;
    case Ending::kCallerLeaves:
      g_dbus_connection_close_sync(client.get(), nullptr, nullptr);
      break;
    case Ending::kGuestCloses: {
      g_autoptr(GError) error = nullptr;
      g_autoptr(GVariant) reply = g_dbus_connection_call_sync(
          client.get(), kPortalBusName, call->handle().c_str(), "org.freedesktop.portal.Request", "Close", nullptr,
          nullptr, G_DBUS_CALL_FLAGS_NONE, int(kServed.count()), nullptr, &error);
      g_assert_no_error(error);
      break;
    }
    case Ending::kSigterm:
      vm.broker().process().send_signal(SIGTERM);
      // A host that answers while the broker stops: its dialog must be
      // closed all the same.
      if (stopped != 0) g_assert_cmpint(kill(stopped, SIGCONT), ==, 0);
      stopped = 0;
      break;
  }
  if (ending == Ending::kSigterm) {
    std::optional<ExitStatus> status = vm.broker().wait_for_exit(20s);
    g_assert_true(status.has_value());
    g_test_message("broker: %s", status->describe().c_str());
    g_assert_true(status->success());
  }
  if (stopped != 0) g_assert_cmpint(kill(stopped, SIGCONT), ==, 0);

  // The host dialog is closed: the backend saw Request.Close (an exporting
  // dialog had been answered already).
  if (stage != Stage::kExporting) {
    g_assert_true(wait_until([&] {
      auto calls = vm.host().backend_calls();
      return calls.size() == 1 && calls[0].closed;
    }));
  }
  if (ending == Ending::kSigterm) return;
  g_assert_true(vm.broker().process().running());
  if (ending == Ending::kLinkDrops) {
    vm.start_agent();
    client = connect(vm.guest().address());
  }
  // What the guest closed or left gets no Response, and its object is gone.
  if (ending != Ending::kCallerLeaves) {
    wait_until([&] { return call->returned(); });
    wait_until([] { return false; }, 500ms);  // a Response would have arrived by now
    g_assert_false(call->response().has_value());
    g_assert_false(request_object_exists(client.get(), call->handle()));
  }
  // Another client of the VM is served.
  auto other = connect(vm.guest().address());
  g_assert_true(served(other.get(), vm));
}

// ---- what a hostile agent can say: a fake guest bus on the link ------------------

// Speaks the link handshake, then plays the guest's session bus toward the
// broker: answers its Hello and its calls to org.freedesktop.DBus, and sends
// it messages from any sender name, as only a hostile agent (or guest kernel)
// could. Replies and signals the broker sends are kept for the test.
class FakeGuestBus {
 public:
  explicit FakeGuestBus(const std::string& link_path) {
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un address = {};
    address.sun_family = AF_UNIX;
    g_strlcpy(address.sun_path, link_path.c_str(), sizeof address.sun_path);
    if (::connect(fd, reinterpret_cast<struct sockaddr*>(&address), sizeof address) != 0)
      throw FixtureError("cannot connect to " + link_path);
    line(fd, "SIDEBUS 1 fds=1 uid=1000 agent=fake-1\n");
    std::string ok = read_line(fd);
    if (!g_str_has_prefix(ok.c_str(), "OK ")) throw FixtureError("the broker answered " + ok);
    line(fd, "READY fds=" + std::string(ok.find("fds=1") != std::string::npos ? "1" : "0") + "\n");
    g_autoptr(GError) error = nullptr;
    g_autoptr(GSocket) gsocket = g_socket_new_from_fd(fd, &error);
    if (gsocket == nullptr) throw FixtureError(error->message);
    g_autoptr(GSocketConnection) stream = g_socket_connection_factory_create_connection(gsocket);
    // No authentication: the broker's own SASL was answered inside the broker.
    connection_ = GObjectPtr<GDBusConnection>(g_dbus_connection_new_sync(
        G_IO_STREAM(stream), nullptr, G_DBUS_CONNECTION_FLAGS_DELAY_MESSAGE_PROCESSING, nullptr, nullptr, &error));
    if (!connection_) throw FixtureError(std::string("fake guest bus: ") + error->message);
    g_dbus_connection_set_exit_on_close(connection_.get(), FALSE);
    g_dbus_connection_add_filter(connection_.get(), on_message, this, nullptr);
    g_dbus_connection_start_message_processing(connection_.get());
  }
  ~FakeGuestBus() {
    if (connection_) g_dbus_connection_close_sync(connection_.get(), nullptr, nullptr);
  }

  // Until the broker owns the portal name through us.
  bool wait_for_portal() {
    return wait_until([this] {
      std::lock_guard lock(mutex_);
      return owns_portal_;
    });
  }

  // A method call to the broker "from" @sender; returns its serial.
  guint32 call(const char* sender, const char* interface_name, const char* member, GVariant* body) {
    g_autoptr(GDBusMessage) message =
        g_dbus_message_new_method_call(kBrokerName, kPortalPath, interface_name, member);
    g_dbus_message_set_sender(message, sender);
    g_dbus_message_set_body(message, body);
    guint32 serial = 0;
    g_autoptr(GError) error = nullptr;
    if (!g_dbus_connection_send_message(connection_.get(), message, G_DBUS_SEND_MESSAGE_FLAGS_NONE, &serial, &error))
      throw FixtureError(std::string("fake guest bus: ") + error->message);
    return serial;
  }

  // The broker's reply to call @serial (METHOD_RETURN or ERROR), or null.
  GObjectPtr<GDBusMessage> reply_to(guint32 serial, Timeout timeout = kDefaultTimeout) {
    GObjectPtr<GDBusMessage> found;
    wait_until([&] {
      std::lock_guard lock(mutex_);
      for (auto& message : received_)
        if (g_dbus_message_get_reply_serial(message.get()) == serial) found = retain(message.get());
      return found != nullptr;
    }, timeout);
    return found;
  }

 private:
  static constexpr const char* kBrokerName = ":1.1";

  static void line(int fd, const std::string& text) {
    if (write(fd, text.data(), text.size()) != ssize_t(text.size())) throw FixtureError("link write failed");
  }
  static std::string read_line(int fd) {
    std::string text;
    char c;
    while (text.size() < 512 && read(fd, &c, 1) == 1 && c != '\n') text += c;
    return text;
  }

  // Runs in GDBus's worker thread: every message from the broker ends here.
  static GDBusMessage* on_message(GDBusConnection* connection, GDBusMessage* message, gboolean incoming,
                                  gpointer data) {
    auto* self = static_cast<FakeGuestBus*>(data);
    if (!incoming) return message;
    if (g_dbus_message_get_message_type(message) == G_DBUS_MESSAGE_TYPE_METHOD_CALL &&
        g_strcmp0(g_dbus_message_get_destination(message), "org.freedesktop.DBus") == 0) {
      self->answer_bus_call(connection, message);
    } else {
      std::lock_guard lock(self->mutex_);
      self->received_.push_back(retain(message));
    }
    g_object_unref(message);
    return nullptr;  // nothing for GDBus to dispatch
  }

  void answer_bus_call(GDBusConnection* connection, GDBusMessage* call) {
    const char* member = g_dbus_message_get_member(call);
    g_autoptr(GDBusMessage) reply = g_dbus_message_new_method_reply(call);
    GVariant* body = g_dbus_message_get_body(call);
    if (g_str_equal(member, "Hello")) {
      g_dbus_message_set_body(reply, g_variant_new("(s)", kBrokerName));
    } else if (g_str_equal(member, "RequestName")) {
      const char* name;
      g_variant_get(body, "(&su)", &name, nullptr);
      if (g_str_equal(name, kPortalBusName)) {
        std::lock_guard lock(mutex_);
        owns_portal_ = true;
      }
      g_dbus_message_set_body(reply, g_variant_new("(u)", 1u));
    } else if (g_str_equal(member, "GetNameOwner")) {
      const char* name;
      g_variant_get(body, "(&s)", &name);
      if (name[0] == ':') {
        g_dbus_message_set_body(reply, g_variant_new("(s)", name));  // every client is there
      } else {
        g_object_unref(reply);
        reply = g_dbus_message_new_method_error(call, "org.freedesktop.DBus.Error.NameHasNoOwner", "no owner");
      }
    } else if (g_str_equal(member, "NameHasOwner")) {
      g_dbus_message_set_body(reply, g_variant_new("(b)", TRUE));
    }  // AddMatch, RemoveMatch, …: an empty reply
    g_dbus_message_set_sender(reply, "org.freedesktop.DBus");
    g_dbus_connection_send_message(connection, reply, G_DBUS_SEND_MESSAGE_FLAGS_NONE, nullptr, nullptr);
  }

  GObjectPtr<GDBusConnection> connection_;
  std::mutex mutex_;
  std::vector<GObjectPtr<GDBusMessage>> received_;
  bool owns_portal_ = false;
};

// Unique names may hold '-' (":x-y.1"); the request path escapes it (to
// "x_y_1"), and the broker answers instead of failing on an invalid path.
void test_sender_with_dash() {
  HostPortal host;
  BrokerOptions options;
  options.host_bus_address = host.bus_address();
  options.config = {{"50-portals.json", R"({"portals": {"filechooser": {"enabled": true}}})"}};
  Broker broker(options);
  std::string link = broker.link_address().substr(strlen("unix:"));
  FakeGuestBus bus(link);
  g_assert_true(bus.wait_for_portal());
  host.set_reply("OpenFile", kResponseCancelled, nullptr);
  VariantPtr opts = parse("a{sv}", "{'handle_token': <'dash'>}");
  guint32 serial = bus.call(":x-y.1", kFileChooser, "OpenFile", g_variant_new("(ss@a{sv})", "", "t", opts.get()));
  auto reply = bus.reply_to(serial);
  g_assert_nonnull(reply.get());
  g_assert_cmpint(g_dbus_message_get_message_type(reply.get()), ==, G_DBUS_MESSAGE_TYPE_METHOD_RETURN);
  const char* handle;
  g_variant_get(g_dbus_message_get_body(reply.get()), "(&o)", &handle);
  g_assert_cmpstr(handle, ==, "/org/freedesktop/portal/desktop/request/x_y_1/dash");
  g_assert_true(broker.process().running());
}

// ---- what a guest client may make the broker hold -------------------------------------

// A call above broker.max_message_size is refused by name and the link
// stays: the next call on it works, and no link was dropped.
void test_oversized_call_refused() {
  Vm vm({.portals = {"filechooser"}, .config = {{"60-limits.json", R"({"broker": {"max_message_size": 65536}})"}}});
  std::string big(70000, 'b');
  g_autoptr(GError) error = nullptr;
  g_autoptr(GVariant) reply = g_dbus_connection_call_sync(
      vm.guest().connection(), kPortalBusName, kPortalPath, kFileChooser, "OpenFile",
      g_variant_new("(ss@a{sv})", "", big.c_str(), with_handle_token("{}").release()), nullptr,
      G_DBUS_CALL_FLAGS_NONE, 10000, nullptr, &error);
  g_assert_null(reply);
  assert_str_eq(remote_error_name(error), kLimitsExceeded);
  g_test_message("%s", error->message);
  g_assert_nonnull(strstr(error->message, "broker.max_message_size"));
  g_assert_true(served(vm.guest().connection(), vm));
  std::string log = vm.broker().process().log();
  g_assert_true(log.find("guest link 2") == std::string::npos);  // the link never dropped
}

// Ten option dictionaries of 14 MiB, 600 000 keys each: each refused before
// the broker parses it (broker.max_message_values), and the broker's memory
// stays where it was.
void test_huge_dictionaries_bounded() {
  Vm vm;
  pid_t broker = vm.broker().process().pid();
  Footprint before = footprint(broker);
  g_auto(GVariantBuilder) builder = G_VARIANT_BUILDER_INIT(G_VARIANT_TYPE_VARDICT);
  for (int i = 0; i < 600000; i++)
    g_variant_builder_add(&builder, "{sv}", ("k" + std::to_string(i)).c_str(), g_variant_new_byte(0));
  VariantPtr huge(g_variant_ref_sink(g_variant_builder_end(&builder)));
  g_test_message("one dictionary: %zu bytes", g_variant_get_size(huge.get()));
  g_assert_cmpuint(g_variant_get_size(huge.get()), <, 16 * 1024 * 1024);  // under broker.max_message_size
  for (int round = 0; round < 10; round++) {
    g_autoptr(GError) error = nullptr;
    g_autoptr(GVariant) reply = g_dbus_connection_call_sync(
        vm.guest().connection(), kPortalBusName, kPortalPath, kFileChooser, "OpenFile",
        g_variant_new("(ss@a{sv})", "", "t", huge.get()), nullptr, G_DBUS_CALL_FLAGS_NONE, 30000, nullptr, &error);
    g_assert_null(reply);
    assert_str_eq(remote_error_name(error), kLimitsExceeded);
    g_assert_nonnull(strstr(error->message, "broker.max_message_values"));
  }
  Footprint after = footprint(broker);
  g_test_message("broker: RSS %ld KiB → %ld KiB, %zu → %zu fds", before.rss_kib, after.rss_kib, before.fds,
                 after.fds);
#if defined(__SANITIZE_ADDRESS__)
  // AddressSanitizer keeps freed memory in its quarantine: RSS says nothing here.
  g_test_message("AddressSanitizer build: the RSS bound is checked in the plain build only");
#else
  g_assert_cmpint(after.rss_kib - before.rss_kib, <, 4 * 1024);
#endif
  g_assert_cmpuint(after.fds, <=, before.fds + 4);
  g_assert_true(served(vm.guest().connection(), vm));
  // One line for the refusals, not one per call or per key.
  std::string log = vm.broker().process().log();
  size_t lines = 0;
  for (size_t at = log.find("broker.max_message_values"); at != std::string::npos;
       at = log.find("broker.max_message_values", at + 1))
    lines++;
  g_assert_cmpuint(lines, <=, 2);
}

// One guest client floods the broker with calls; another client of the
// same VM is still served, the flooder is refused (LimitsExceeded) rather
// than everyone slowed down, and afterwards the broker holds what it held.
void test_flood_sheds_the_flooder() {
  Vm vm;
  pid_t broker = vm.broker().process().pid();
  Footprint before = footprint(broker);
  auto flooder = connect(vm.guest().address());
  struct Tally {
    std::atomic<int> answered{0}, refused{0}, other{0};
  } tally;
  constexpr int kCalls = 25000;
  for (int i = 0; i < kCalls; i++) {
    g_dbus_connection_call(
        flooder.get(), kPortalBusName, kPortalPath, "org.freedesktop.DBus.Properties", "Get",
        g_variant_new("(ss)", kFileChooser, "version"), nullptr, G_DBUS_CALL_FLAGS_NONE, 60000, nullptr,
        [](GObject* source, GAsyncResult* result, gpointer data) {
          auto* tally = static_cast<Tally*>(data);
          g_autoptr(GError) error = nullptr;
          g_autoptr(GVariant) reply = g_dbus_connection_call_finish(G_DBUS_CONNECTION(source), result, &error);
          if (reply != nullptr)
            tally->answered++;
          else if (remote_error_name(error) == kLimitsExceeded)
            tally->refused++;
          else
            tally->other++;
        },
        &tally);
  }
  // While the flood is on its way: the well-behaved client.
  auto client = connect(vm.guest().address());
  gint64 start = g_get_monotonic_time();
  g_assert_true(served(client.get(), vm));
  g_test_message("the other client waited %.0f ms during the flood", (g_get_monotonic_time() - start) / 1000.0);
  g_assert_true(wait_until([&] { return tally.answered + tally.refused + tally.other == kCalls; }, 60s));
  g_test_message("flood: %d answered, %d refused (LimitsExceeded), %d other errors", tally.answered.load(),
                 tally.refused.load(), tally.other.load());
  g_assert_cmpint(tally.other, ==, 0);
  Footprint after = footprint(broker);
  g_test_message("broker: RSS %ld KiB → %ld KiB, %zu → %zu fds", before.rss_kib, after.rss_kib, before.fds,
                 after.fds);
  g_assert_cmpuint(after.fds, <=, before.fds + 4);
  g_assert_true(served(client.get(), vm));
}

// broker.max_pending_requests holds: the next dialog is refused by name, and
// closing one makes room again.
void test_pending_requests_limit() {
  Vm vm({.portals = {"filechooser"}, .config = {{"60-limits.json", R"({"broker": {"max_pending_requests": 3}})"}}});
  vm.host().set_reply("OpenFile", kResponseWaitForClose);
  std::vector<std::unique_ptr<PortalRequest>> open;
  for (int i = 0; i < 3; i++) {
    open.push_back(vm.file_chooser("OpenFile", "{'handle_token': <'open" + std::to_string(i) + "'>}"));
    g_assert_no_error(open.back()->error());
  }
  auto refused = vm.file_chooser("OpenFile", "{'handle_token': <'one_more'>}");
  g_assert_nonnull(refused->error());
  assert_str_eq(remote_error_name(refused->error()), kLimitsExceeded);
  g_assert_nonnull(strstr(refused->error()->message, "broker.max_pending_requests"));
  g_assert_true(open[0]->close());
  auto again = vm.file_chooser("OpenFile", "{'handle_token': <'room_again'>}");
  g_assert_no_error(again->error());
}

// Copies of guest files (OpenURI copy mode) reserve their size before they
// start: three made at once where two fit, the third is refused at once.
void test_copies_reserve_before_copying() {
  Vm vm({.portals = {"openuri"},
         .config = {{"60-openuri.json",
                     R"({"portals": {"openuri": {"copy_outside_documents": true, "max_copied_total": 8388608}}})"}}});
  vm.host().set_reply("ChooseApplication", kResponseCancelled, nullptr);  // no host app opens them
  std::vector<std::string> paths;
  for (int i = 0; i < 3; i++) paths.push_back(vm.guest_files().write_file("big" + std::to_string(i), std::string(3 << 20, 'c')));
  struct Outcome {
    bool done = false;
    std::string error;
  };
  Outcome outcomes[3];
  for (int i = 0; i < 3; i++) {
    int fd = open(paths[i].c_str(), O_RDONLY | O_CLOEXEC);
    g_autoptr(GUnixFDList) fds = g_unix_fd_list_new_from_array(&fd, 1);
    g_dbus_connection_call_with_unix_fd_list(
        vm.guest().connection(), kPortalBusName, kPortalPath, "org.freedesktop.portal.OpenURI", "OpenFile",
        g_variant_new("(sh@a{sv})", "", 0, with_handle_token("{}").release()), G_VARIANT_TYPE("(o)"),
        G_DBUS_CALL_FLAGS_NONE, 30000, fds, nullptr,
        [](GObject* source, GAsyncResult* result, gpointer data) {
          auto* outcome = static_cast<Outcome*>(data);
          g_autoptr(GError) error = nullptr;
          g_autoptr(GVariant) reply =
              g_dbus_connection_call_with_unix_fd_list_finish(G_DBUS_CONNECTION(source), nullptr, result, &error);
          if (reply == nullptr) outcome->error = remote_error_name(error) + ": " + error->message;
          outcome->done = true;
        },
        &outcomes[i]);
  }
  g_assert_true(wait_until([&] { return outcomes[0].done && outcomes[1].done && outcomes[2].done; }));
  int refused = 0;
  for (const Outcome& outcome : outcomes) {
    g_test_message("%s", outcome.error.empty() ? "copied" : outcome.error.c_str());
    if (outcome.error.empty()) continue;
    g_assert_true(g_str_has_prefix(outcome.error.c_str(), kLimitsExceeded));
    g_assert_nonnull(strstr(outcome.error.c_str(), "max_copied_total"));
    refused++;
  }
  g_assert_cmpint(refused, ==, 1);
}

// ---- helpers that die or freeze --------------------------------------------------------

// The host's xdg-desktop-portal dies with a dialog open: the guest gets
// Response 2 at once, new calls a clear error until it is back, then work.
void test_host_portal_dies() {
  Vm vm;
  vm.host().set_reply("OpenFile", kResponseWaitForClose);
  auto pending = vm.file_chooser("OpenFile", "{'handle_token': <'pending'>}");
  g_assert_no_error(pending->error());
  g_assert_true(vm.host().wait_for_backend_calls(1));
  vm.host().kill_portal();
  g_assert_true(pending->wait_for_response(kServed));
  g_assert_cmpuint(pending->response(), ==, kResponseOther);
  auto refused = vm.file_chooser("OpenFile", "{'handle_token': <'while_gone'>}");
  g_assert_nonnull(refused->error());
  g_test_message("%s", refused->error()->message);
  assert_str_eq(remote_error_name(refused->error()), "org.freedesktop.portal.Error.Failed");
  g_assert_nonnull(strstr(refused->error()->message, "not running"));
  vm.host().start_portal();
  g_assert_true(wait_until([&] { return vm.broker().process().log().find("host portal ready") != std::string::npos &&
                                       served(vm.guest().connection(), vm); }));
  g_assert_true(vm.broker().process().running());
}

// A link whose agent froze is replaced by a new one (a VM that rebooted):
// the broker drops the old link without waiting on it, and serves the new
// guest at once.
void test_frozen_link_replaced() {
  Vm vm;
  vm.host().set_reply("OpenFile", kResponseWaitForClose);
  auto pending = vm.file_chooser("OpenFile", "{'handle_token': <'frozen'>}");
  g_assert_true(vm.host().wait_for_backend_calls(1));
  pid_t frozen = vm.agent().process().pid();
  g_assert_cmpint(kill(frozen, SIGSTOP), ==, 0);
  // The rebooted guest: a new session bus, a new agent on the same link.
  GuestBus rebooted;
  Agent agent({.connect = vm.broker().link_address(), .guest_bus_address = rebooted.address()});
  g_assert_true(wait_until([&] { return name_has_owner(rebooted.connection(), kPortalBusName); }, kServed));
  g_assert_true(served(rebooted.connection(), vm));
  // The old dialog was closed on the host.
  g_assert_true(wait_until([&] {
    auto calls = vm.host().backend_calls();
    return !calls.empty() && calls[0].closed;
  }));
  g_assert_cmpint(kill(frozen, SIGCONT), ==, 0);
  g_assert_true(vm.broker().process().running());
}

// The private document portal freezes while one export is pending: other
// calls of the VM are still served, and the export completes once it thaws.
void test_frozen_document_portal() {
  Vm vm;
  HostFiles files;
  vm.host().set_reply("OpenFile", kResponseSuccess, uris_result({files.add("slow.txt", "slow")}));
  pid_t portal = document_portal_pid(vm);
  g_assert_cmpint(kill(portal, SIGSTOP), ==, 0);
  auto exporting = vm.file_chooser("OpenFile", "{'handle_token': <'exporting'>}");
  g_assert_no_error(exporting->error());
  g_assert_true(wait_until([&] {
    auto calls = vm.host().backend_calls();
    return !calls.empty() && calls[0].answered;
  }));
  auto other = connect(vm.guest().address());
  g_assert_true(served(other.get(), vm));
  g_assert_false(exporting->responded());
  g_assert_cmpint(kill(portal, SIGCONT), ==, 0);
  g_assert_true(exporting->wait_for_response());
  g_assert_cmpuint(exporting->response(), ==, kResponseSuccess);
  g_assert_cmpuint(strv(exporting->results(), "uris").size(), ==, 1);
}

// A host answer of 10 000 files is exported while the broker goes on
// serving the VM's other clients; the guest gets every file.
void test_ten_thousand_files() {
  Vm vm;
  HostFiles files;
  std::vector<std::string> paths;
  for (int i = 0; i < 10000; i++) paths.push_back(files.add("f" + std::to_string(i) + ".txt", std::to_string(i)));
  vm.host().set_reply("OpenFile", kResponseSuccess, uris_result(paths));
  auto big = vm.file_chooser("OpenFile", "{'handle_token': <'big'>, 'multiple': <true>}");
  g_assert_no_error(big->error());
  g_assert_true(wait_until([&] {
    auto calls = vm.host().backend_calls();
    return !calls.empty() && calls[0].answered;
  }));
  auto other = connect(vm.guest().address());
  g_assert_true(served(other.get(), vm));
  g_assert_true(big->wait_for_response(120s));
  g_assert_cmpuint(big->response(), ==, kResponseSuccess);
  std::vector<std::string> uris = strv(big->results(), "uris");
  g_assert_cmpuint(uris.size(), ==, 10000);
  assert_str_eq(*read_file(path_of(uris[4321])), "4321");
}

}  // namespace

int main(int argc, char** argv) {
  g_test_init(&argc, &argv, nullptr);
  for (Ending ending : {Ending::kLinkDrops, Ending::kCallerLeaves, Ending::kGuestCloses, Ending::kSigterm}) {
    for (Stage stage : {Stage::kHostCallInFlight, Stage::kWaitingForResponse, Stage::kExporting}) {
      std::string path = std::string("/hostile/teardown/") + ending_name(ending) + "/" + stage_name(stage);
      add_test(path.c_str(), [ending, stage] { test_teardown(stage, ending); });
    }
  }
  add_test("/hostile/sender-with-dash", test_sender_with_dash);
  add_test("/hostile/limits/oversized-call-refused", test_oversized_call_refused);
  add_test("/hostile/limits/huge-dictionaries-bounded", test_huge_dictionaries_bounded);
  add_test("/hostile/limits/flood-sheds-the-flooder", test_flood_sheds_the_flooder);
  add_test("/hostile/limits/pending-requests", test_pending_requests_limit);
  add_test("/hostile/limits/copies-reserve-before-copying", test_copies_reserve_before_copying);
  add_test("/hostile/helpers/host-portal-dies", test_host_portal_dies);
  add_test("/hostile/helpers/frozen-link-replaced", test_frozen_link_replaced);
  add_test("/hostile/helpers/frozen-document-portal", test_frozen_document_portal);
  add_test("/hostile/helpers/ten-thousand-files", test_ten_thousand_files);
  return g_test_run();
}
