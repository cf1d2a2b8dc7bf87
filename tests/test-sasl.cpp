// SPDX-License-Identifier: LGPL-2.1-or-later
// test-sasl.cpp — SASL both ways against real peers, and the whole link end
// to end:
// * sasl::run_server() against a real GDBusConnection (AUTHENTICATION_CLIENT),
//   with and without fd passing, and against hostile hand-written clients;
// * sasl::run_client() against a real dbus-daemon, then Hello by hand;
// * a guest dbus-daemon, establish_guest_link() (broker end, via Listener) and
//   AgentSession::start() (guest end) over a real unix socket: the broker's
//   connection owns a name on the guest bus that `gdbus call` reaches; over a
//   byte-only link an fd-carrying call fails at once with NotSupported and the
//   next call still works when the agent speaks protocol 1; with protocol 2
//   the fd is forwarded (and one that cannot be is refused, the link stays);
//   over an fd link the fd arrives.
#include <fcntl.h>
#include <gio/gio.h>
#include <gio/gunixfdlist.h>
#include <poll.h>
#include <pty.h>
#include <sys/eventfd.h>
#include <termios.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "link/handshake.hpp"
#include "agent/agent-session.hpp"
#include "socket-pair.hpp"
#include "broker/accepted-link.hpp"
#include "link/listener.hpp"
#include "link/connect.hpp"
#include "link/sasl.hpp"

using namespace sidebus;
using sidebus::test::Pair;
using sidebus::test::receive_with_fds;
using sidebus::test::send_with_fd;

namespace {

constexpr gint64 kDeadline = 5 * G_USEC_PER_SEC;


GIOStream* stream_from_fd(int fd) {
  g_autoptr(GError) error = nullptr;
  g_autoptr(GSocket) socket = g_socket_new_from_fd(fd, &error);
  g_assert_no_error(error);
  return G_IO_STREAM(g_socket_connection_factory_create_connection(socket));
}

bool read_exact(int fd, char* buffer, size_t length) {
  gint64 deadline = g_get_monotonic_time() + kDeadline;
  for (size_t i = 0; i < length; i++)
    if (!handshake::read_byte(fd, deadline, "peer", &buffer[i], nullptr)) return false;
  return true;
}

// Reads one whole D-Bus message from fd.
GDBusMessage* read_message(int fd, GDBusCapabilityFlags capabilities) {
  std::string blob(16, '\0');
  g_assert_true(read_exact(fd, blob.data(), 16));
  g_autoptr(GError) error = nullptr;
  gssize needed = g_dbus_message_bytes_needed(reinterpret_cast<guchar*>(blob.data()), 16, &error);
  g_assert_no_error(error);
  g_assert_cmpint(needed, >=, 16);
  g_assert_cmpint(needed, <, 1 << 20);
  blob.resize(static_cast<size_t>(needed));
  g_assert_true(read_exact(fd, blob.data() + 16, blob.size() - 16));
  GDBusMessage* message =
      g_dbus_message_new_from_blob(reinterpret_cast<guchar*>(blob.data()), blob.size(), capabilities, &error);
  g_assert_no_error(error);
  return message;
}

// Iterates the default main context until done() or a timeout.
template <typename F>
void spin_until(F done, int seconds = 15) {
  gint64 deadline = g_get_monotonic_time() + seconds * G_USEC_PER_SEC;
  while (!done()) {
    g_assert_cmpint(g_get_monotonic_time(), <, deadline);
    if (!g_main_context_iteration(nullptr, FALSE)) g_usleep(1000);
  }
}

// A dbus-daemon standing for a bus (guest session bus), on a unix socket.
struct Bus {
  char* directory = nullptr;
  std::string path;
  std::string address;
  GSubprocess* process = nullptr;

  Bus() {
    g_autoptr(GError) error = nullptr;
    directory = g_dir_make_tmp("sidebus-test-sasl-XXXXXX", &error);
    g_assert_no_error(error);
    path = std::string(directory) + "/bus";
    std::string listen = "--address=unix:path=" + path;
    process = g_subprocess_new(G_SUBPROCESS_FLAGS_STDOUT_PIPE, &error, "dbus-daemon", "--session", "--nofork",
                               "--print-address=1", listen.c_str(), nullptr);
    g_assert_no_error(error);
    g_autoptr(GDataInputStream) out = g_data_input_stream_new(g_subprocess_get_stdout_pipe(process));
    g_autofree char* line = g_data_input_stream_read_line(out, nullptr, nullptr, &error);
    g_assert_no_error(error);
    g_assert_nonnull(line);
    address = "unix:path=" + path;
  }
  ~Bus() {
    g_subprocess_force_exit(process);
    g_subprocess_wait(process, nullptr, nullptr);
    g_object_unref(process);
    unlink(path.c_str());
    rmdir(directory);
    g_free(directory);
  }

  int connect_raw() const {
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un sun = {};
    sun.sun_family = AF_UNIX;
    g_strlcpy(sun.sun_path, path.c_str(), sizeof sun.sun_path);
    g_assert_cmpint(connect(fd, reinterpret_cast<struct sockaddr*>(&sun), sizeof sun), ==, 0);
    return fd;
  }
};

// ---- the server against GDBus ----

void test_server_with_gdbus(gconstpointer data) {
  bool allow_fds = GPOINTER_TO_INT(data);
  Pair pair;
  bool server_ok = false, agreed = !allow_fds;
  GError* server_error = nullptr;
  std::thread server([&] {
    server_ok = sasl::run_server(pair.fds[1], allow_fds, g_get_monotonic_time() + kDeadline, &agreed, &server_error);
  });
  g_autoptr(GIOStream) stream = stream_from_fd(pair.fds[0]);
  pair.fds[0] = -1;  // the GSocket owns it
  g_autoptr(GError) error = nullptr;
  g_autoptr(GDBusConnection) connection = g_dbus_connection_new_sync(
      stream, nullptr, G_DBUS_CONNECTION_FLAGS_AUTHENTICATION_CLIENT, nullptr, nullptr, &error);
  server.join();
  g_assert_no_error(error);
  g_assert_no_error(server_error);
  g_assert_true(server_ok);
  g_assert_cmpint(agreed, ==, allow_fds);
  bool can_pass = g_dbus_connection_get_capabilities(connection) & G_DBUS_CAPABILITY_FLAGS_UNIX_FD_PASSING;
  g_assert_cmpint(can_pass, ==, allow_fds);

  // The first bytes GDBus sends after BEGIN are all still there.
  g_assert_true(g_dbus_connection_emit_signal(connection, nullptr, "/dev/sidebus/Test", "dev.sidebus.Test", "Probe",
                                              g_variant_new("(s)", "intact"), &error));
  g_assert_true(g_dbus_connection_flush_sync(connection, nullptr, &error));
  g_assert_no_error(error);
  g_autoptr(GDBusMessage) message = read_message(pair.fds[1], g_dbus_connection_get_capabilities(connection));
  g_assert_cmpstr(g_dbus_message_get_member(message), ==, "Probe");
  const char* text = nullptr;
  g_variant_get(g_dbus_message_get_body(message), "(&s)", &text);
  g_assert_cmpstr(text, ==, "intact");
  g_dbus_connection_close_sync(connection, nullptr, nullptr);
}

// ---- the server against hand-written (hostile) clients ----

struct ServerRun {
  bool ok = false;
  bool agreed = false;
  GError* error = nullptr;
  std::string replies;
  ~ServerRun() { g_clear_error(&error); }
};

// Sends `input` as the client, runs the server, collects its replies.
void run_server_on(const std::string& input, bool allow_fds, gint64 timeout, ServerRun* run,
                   std::string* after = nullptr) {
  Pair pair;
  std::thread server([&] {
    run->ok = sasl::run_server(pair.fds[1], allow_fds, g_get_monotonic_time() + timeout, &run->agreed, &run->error);
  });
  g_assert_cmpint(write(pair.fds[0], input.data(), input.size()), ==, static_cast<ssize_t>(input.size()));
  server.join();
  shutdown(pair.fds[1], SHUT_WR);
  char buffer[4096];
  ssize_t n;
  while ((n = read(pair.fds[0], buffer, sizeof buffer)) > 0) run->replies.append(buffer, static_cast<size_t>(n));
  if (after) {
    shutdown(pair.fds[0], SHUT_WR);
    while ((n = read(pair.fds[1], buffer, sizeof buffer)) > 0) after->append(buffer, static_cast<size_t>(n));
  }
}

void test_server_hostile() {
  {
    ServerRun run;
    std::string after;
    static const char input[] = "\0AUTH EXTERNAL 31303030\r\nBEGIN\r\nl\0\0\1after";
    run_server_on(std::string(input, sizeof input - 1), false, kDeadline, &run, &after);
    g_assert_no_error(run.error);
    g_assert_true(run.ok);
    g_assert_true(g_str_has_prefix(run.replies.c_str(), "OK "));
    g_assert_cmpuint(after.size(), ==, 9);
    g_assert_true(after == std::string("l\0\0\1after", 9));
  }
  {
    ServerRun run;  // no initial response, then DATA; fds refused
    static const char input[] = "\0AUTH\r\nAUTH EXTERNAL\r\nDATA 31\r\nNEGOTIATE_UNIX_FD\r\nBEGIN\r\n";
    run_server_on(std::string(input, sizeof input - 1), false, kDeadline, &run);
    g_assert_no_error(run.error);
    g_assert_true(run.ok);
    g_assert_false(run.agreed);
    g_assert_true(g_str_has_prefix(run.replies.c_str(), "REJECTED EXTERNAL\r\nDATA\r\nOK "));
    g_assert_nonnull(strstr(run.replies.c_str(), "\r\nERROR"));
  }
  {
    ServerRun run;  // fds agreed
    static const char input[] = "\0AUTH EXTERNAL 30\r\nNEGOTIATE_UNIX_FD\r\nBEGIN\r\n";
    run_server_on(std::string(input, sizeof input - 1), true, kDeadline, &run);
    g_assert_true(run.ok);
    g_assert_true(run.agreed);
    g_assert_nonnull(strstr(run.replies.c_str(), "AGREE_UNIX_FD\r\n"));
  }
  struct Case {
    std::string input;
    GIOErrorEnum code;
  };
  std::string many;
  for (int i = 0; i < 100; i++) many += "AUTH\r\n";
  auto bytes = [](const char* text) { return std::string("\0", 1) + text; };  // NUL byte first
  const Case cases[] = {
      {"AUTH EXTERNAL 31\r\n", G_IO_ERROR_INVALID_DATA},                          // no NUL byte
      {bytes("BEGIN\r\n"), G_IO_ERROR_INVALID_DATA},                              // BEGIN first
      {std::string("\0", 1) + std::string(20000, 'A'), G_IO_ERROR_INVALID_DATA},  // endless line
      {std::string("\0", 1) + many, G_IO_ERROR_INVALID_DATA},                     // command flood
      {bytes("AUTH \x01\r\n"), G_IO_ERROR_INVALID_DATA},                          // control character
      {bytes("AUTH EXTERNAL 31\r\n"), G_IO_ERROR_CONNECTION_CLOSED},              // EOF before BEGIN
  };
  for (const auto& c : cases) {
    ServerRun run;
    Pair pair;
    std::thread server([&] {
      run.ok = sasl::run_server(pair.fds[1], true, g_get_monotonic_time() + kDeadline, &run.agreed, &run.error);
    });
    (void)!write(pair.fds[0], c.input.data(), c.input.size());
    shutdown(pair.fds[0], SHUT_WR);
    server.join();
    g_assert_false(run.ok);
    g_assert_error(run.error, G_IO_ERROR, c.code);
  }
  {
    ServerRun run;  // a client that stops talking
    run_server_on(std::string("\0AUTH", 5), true, 200 * 1000, &run);
    g_assert_false(run.ok);
    g_assert_error(run.error, G_IO_ERROR, G_IO_ERROR_TIMED_OUT);
  }
}

// ---- the client against dbus-daemon ----

void test_client_with_dbus_daemon(gconstpointer data) {
  bool want_fds = GPOINTER_TO_INT(data);
  Bus bus;
  int fd = bus.connect_raw();
  bool agreed = !want_fds;
  std::string guid;
  g_autoptr(GError) error = nullptr;
  g_assert_true(sasl::run_client(fd, geteuid(), want_fds, g_get_monotonic_time() + kDeadline, "the test bus", &agreed,
                                 &guid, &error));
  g_assert_no_error(error);
  g_assert_cmpint(agreed, ==, want_fds);
  g_assert_true(g_dbus_is_guid(guid.c_str()));

  g_autoptr(GDBusMessage) hello =
      g_dbus_message_new_method_call("org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus", "Hello");
  g_dbus_message_set_serial(hello, 1);
  gsize size = 0;
  g_autofree guchar* blob = g_dbus_message_to_blob(hello, &size, G_DBUS_CAPABILITY_FLAGS_NONE, &error);
  g_assert_no_error(error);
  g_assert_true(handshake::write_all(fd, std::string_view(reinterpret_cast<char*>(blob), size),
                                     g_get_monotonic_time() + kDeadline, "bus", &error));
  g_autoptr(GDBusMessage) reply = read_message(fd, G_DBUS_CAPABILITY_FLAGS_NONE);
  g_assert_cmpint(g_dbus_message_get_message_type(reply), ==, G_DBUS_MESSAGE_TYPE_METHOD_RETURN);
  const char* name = nullptr;
  g_variant_get(g_dbus_message_get_body(reply), "(&s)", &name);
  g_assert_true(g_str_has_prefix(name, ":1."));
  close(fd);
}

void test_client_rejected() {
  Bus bus;
  int fd = bus.connect_raw();
  bool agreed = false;
  g_autoptr(GError) error = nullptr;
  g_assert_false(sasl::run_client(fd, geteuid() + 4242, false, g_get_monotonic_time() + kDeadline, "the test bus",
                                  &agreed, nullptr, &error));
  g_assert_error(error, G_IO_ERROR, G_IO_ERROR_PERMISSION_DENIED);
  g_assert_nonnull(strstr(error->message, "the test bus"));
  close(fd);
}

// ---- end to end: broker end + agent end over a real unix socket ----

const char kTestInterface[] =
    "<node><interface name='dev.sidebus.Test'>"
    "<method name='Ping'><arg type='s' direction='in'/><arg type='s' direction='out'/></method>"
    "<method name='TakeFd'><arg type='h' direction='in'/><arg type='u' direction='out'/></method>"
    "</interface></node>";

void handle_method(GDBusConnection*, const char*, const char*, const char*, const char* method, GVariant* parameters,
                   GDBusMethodInvocation* invocation, gpointer) {
  if (g_str_equal(method, "Ping")) {
    const char* text = nullptr;
    g_variant_get(parameters, "(&s)", &text);
    g_autofree char* answer = g_strdup_printf("pong %s", text);
    g_dbus_method_invocation_return_value(invocation, g_variant_new("(s)", answer));
  } else {
    GUnixFDList* fds = g_dbus_message_get_unix_fd_list(g_dbus_method_invocation_get_message(invocation));
    g_dbus_method_invocation_return_value(invocation, g_variant_new("(u)", fds ? g_unix_fd_list_get_length(fds) : 0));
  }
}

struct EndToEnd {
  Bus bus;
  char* directory = g_dir_make_tmp("sidebus-test-link-XXXXXX", nullptr);
  std::unique_ptr<Listener> listener;
  std::unique_ptr<GuestLink> link;
  std::unique_ptr<AgentSession> session;
  bool broker_closed = false;
  bool agent_closed = false;
  bool agent_saw_bus_gone = true;
  guint registration = 0;

  ~EndToEnd() {
    if (registration && link) g_dbus_connection_unregister_object(link->connection(), registration);
    session.reset();
    link.reset();
    listener.reset();
    g_autofree char* socket_path = g_build_filename(directory, "link.sock", nullptr);
    g_assert_false(g_file_test(socket_path, G_FILE_TEST_EXISTS));  // the Listener removed it
    rmdir(directory);
    g_free(directory);
  }

  // Listen, connect the agent from a thread (start() blocks), establish.
  // @fds: the link carries fds natively; @protocol: what the agent offers.
  void connect(bool fds, uint32_t protocol = 2) {
    std::string suffix = fds ? "" : ",nofds";
    std::string address = std::string("unix:") + directory + "/link.sock" + suffix;
    g_autoptr(GError) error = nullptr;
    listener = Listener::create(
        {address},
        [this](UniqueFd fd, bool carries_fds, std::string transport) {
          establish_guest_link(
              std::move(fd), carries_fds, transport,
              [this](std::unique_ptr<GuestLink> established, GError* error) {
                g_assert_no_error(error);
                link = std::move(established);
              },
              [this] { broker_closed = true; });
        },
        &error);
    g_assert_no_error(error);
    std::thread agent([this, address, protocol] {
      g_autoptr(GError) error = nullptr;
      bool carries_fds = false;
      UniqueFd fd = connect_link(address, &carries_fds, &error);
      g_assert_no_error(error);
      session = AgentSession::start(
          std::move(fd), carries_fds, address, bus.address,
          [this](bool guest_bus_gone, GError*) {
            agent_closed = true;
            agent_saw_bus_gone = guest_bus_gone;
          },
          &error, protocol);
      g_assert_no_error(error);
    });
    spin_until([this] { return link != nullptr; });
    agent.join();
    g_assert_nonnull(session);
    // Protocol 2 forwards fds over a byte-only link.
    bool crosses = fds || protocol >= 2;
    g_assert_cmpint(link->peer().carries_fds, ==, crosses);
    g_assert_cmpint(link->peer().framed, ==, !fds && protocol >= 2);
    g_assert_cmpint(session->framed(), ==, !fds && protocol >= 2);
    g_assert_cmpuint(link->peer().guest_uid, ==, geteuid());
    g_assert_cmpuint(link->peer().protocol_version, ==, protocol);
    g_assert_cmpuint(session->protocol_version(), ==, protocol);
    g_assert_true(g_str_has_prefix(link->peer().transport.c_str(), "unix:"));
    bool can_pass = g_dbus_connection_get_capabilities(link->connection()) & G_DBUS_CAPABILITY_FLAGS_UNIX_FD_PASSING;
    g_assert_cmpint(can_pass, ==, crosses);

    g_autoptr(GDBusNodeInfo) info = g_dbus_node_info_new_for_xml(kTestInterface, &error);
    g_assert_no_error(error);
    static const GDBusInterfaceVTable vtable = {handle_method, nullptr, nullptr, {}};
    registration = g_dbus_connection_register_object(link->connection(), "/dev/sidebus/Test", info->interfaces[0],
                                                     &vtable, nullptr, nullptr, &error);
    g_assert_no_error(error);
  }

  // The broker's connection owns `name` on the guest bus.
  void own_name(const char* name) {
    g_autoptr(GError) error = nullptr;
    g_autoptr(GVariant) reply = g_dbus_connection_call_sync(
        link->connection(), "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus", "RequestName",
        g_variant_new("(su)", name, 4u), G_VARIANT_TYPE("(u)"), G_DBUS_CALL_FLAGS_NONE, 5000, nullptr, &error);
    g_assert_no_error(error);
    guint32 result = 0;
    g_variant_get(reply, "(u)", &result);
    g_assert_cmpuint(result, ==, 1);
  }

  // A guest application: its own connection to the guest bus.
  GDBusConnection* guest_client() {
    g_autoptr(GError) error = nullptr;
    GDBusConnection* client =
        g_dbus_connection_new_for_address_sync(bus.address.c_str(),
                                               GDBusConnectionFlags(G_DBUS_CONNECTION_FLAGS_AUTHENTICATION_CLIENT |
                                                                    G_DBUS_CONNECTION_FLAGS_MESSAGE_BUS_CONNECTION),
                                               nullptr, nullptr, &error);
    g_assert_no_error(error);
    return client;
  }

  // Calls a method on the broker from the guest client, spinning the main loop
  // (the broker's handler runs there). Returns the reply or sets *error.
  GVariant* call(GDBusConnection* client, const char* method, GVariant* parameters, GUnixFDList* fds, GError** error) {
    struct Result {
      bool done = false;
      GVariant* value = nullptr;
      GError* error = nullptr;
    } result;
    g_dbus_connection_call_with_unix_fd_list(
        client, g_dbus_connection_get_unique_name(link->connection()), "/dev/sidebus/Test", "dev.sidebus.Test", method,
        parameters, nullptr, G_DBUS_CALL_FLAGS_NONE, 5000, fds, nullptr,
        [](GObject* source, GAsyncResult* res, gpointer data) {
          auto* result = static_cast<Result*>(data);
          result->value =
              g_dbus_connection_call_with_unix_fd_list_finish(G_DBUS_CONNECTION(source), nullptr, res, &result->error);
          result->done = true;
        },
        &result);
    spin_until([&] { return result.done; });
    if (result.error) g_propagate_error(error, result.error);
    return result.value;
  }
};

enum class LinkMode { Native, Forwarded, Protocol1 };

void test_end_to_end(gconstpointer data) {
  auto mode = LinkMode(GPOINTER_TO_INT(data));
  bool fds = mode == LinkMode::Native;
  EndToEnd e2e;
  e2e.connect(fds, mode == LinkMode::Protocol1 ? 1 : 2);
  const char* name = mode == LinkMode::Native      ? "dev.sidebus.TestBrokerFds"
                     : mode == LinkMode::Forwarded ? "dev.sidebus.TestBrokerForwarded"
                                                   : "dev.sidebus.TestBroker";
  e2e.own_name(name);

  // `gdbus call` as a guest application reaches the broker's object.
  g_autoptr(GError) error = nullptr;
  g_autoptr(GSubprocessLauncher) launcher = g_subprocess_launcher_new(G_SUBPROCESS_FLAGS_STDOUT_PIPE);
  g_subprocess_launcher_setenv(launcher, "DBUS_SESSION_BUS_ADDRESS", e2e.bus.address.c_str(), TRUE);
  g_autoptr(GSubprocess) gdbus =
      g_subprocess_launcher_spawn(launcher, &error, "gdbus", "call", "--session", "--dest", name, "--object-path",
                                  "/dev/sidebus/Test", "--method", "dev.sidebus.Test.Ping", "guest", nullptr);
  g_assert_no_error(error);
  struct Output {
    bool finished = false;
    char* text = nullptr;
  } output;
  g_subprocess_communicate_utf8_async(
      gdbus, nullptr, nullptr,
      [](GObject* source, GAsyncResult* result, gpointer data) {
        auto* output = static_cast<Output*>(data);
        g_subprocess_communicate_utf8_finish(G_SUBPROCESS(source), result, &output->text, nullptr, nullptr);
        output->finished = true;
      },
      &output);
  spin_until([&] { return output.finished; });
  g_assert_true(g_subprocess_get_successful(gdbus));
  g_assert_cmpstr(output.text, ==, "('pong guest',)\n");
  g_free(output.text);

  // fds: refused at once over a byte-only protocol 1 link; delivered over an
  // fd link and forwarded over a protocol 2 one (a pipe: stdin may be a
  // device, which would not be forwarded).
  g_autoptr(GDBusConnection) client = e2e.guest_client();
  int pipe_fds[2];
  g_assert_cmpint(pipe2(pipe_fds, O_CLOEXEC), ==, 0);
  g_autoptr(GUnixFDList) fd_list = g_unix_fd_list_new_from_array(pipe_fds, 1);
  close(pipe_fds[1]);
  gint64 start = g_get_monotonic_time();
  g_autoptr(GVariant) took = e2e.call(client, "TakeFd", g_variant_new("(h)", 0), fd_list, &error);
  if (mode != LinkMode::Protocol1) {
    g_assert_no_error(error);
    guint32 count = 0;
    g_variant_get(took, "(u)", &count);
    g_assert_cmpuint(count, ==, 1);
  } else {
    g_assert_null(took);
    g_assert_nonnull(error);
    g_autofree char* remote = g_dbus_error_get_remote_error(error);
    g_assert_cmpstr(remote, ==, "org.freedesktop.DBus.Error.NotSupported");
    g_assert_cmpint(g_get_monotonic_time() - start, <, 4 * G_USEC_PER_SEC);  // not a timeout
    g_clear_error(&error);
  }
  if (mode == LinkMode::Forwarded) {
    // What cannot be forwarded is refused by the agent, naming what it is
    // (and logging a warning, which is not fatal here).
    GLogLevelFlags fatal = g_log_set_always_fatal(GLogLevelFlags(G_LOG_FATAL_MASK | G_LOG_LEVEL_CRITICAL));
    int event = eventfd(0, EFD_CLOEXEC);
    g_autoptr(GUnixFDList) events = g_unix_fd_list_new_from_array(&event, 1);
    g_autoptr(GVariant) refused = e2e.call(client, "TakeFd", g_variant_new("(h)", 0), events, &error);
    g_assert_null(refused);
    g_autofree char* remote = g_dbus_error_get_remote_error(error);
    g_assert_cmpstr(remote, ==, "org.freedesktop.DBus.Error.NotSupported");
    g_test_message("an eventfd: %s", error->message);
    g_assert_nonnull(strstr(error->message, "eventfd"));
    g_clear_error(&error);
    g_assert_cmpuint(e2e.session->counters().refused, ==, 1);
    g_log_set_always_fatal(fatal);
  }
  g_autoptr(GVariant) pong = e2e.call(client, "Ping", g_variant_new("(s)", "again"), nullptr, &error);
  g_assert_no_error(error);
  const char* text = nullptr;
  g_variant_get(pong, "(&s)", &text);
  g_assert_cmpstr(text, ==, "pong again");

  // The agent's end going away closes the broker's end.
  e2e.session.reset();
  spin_until([&] { return e2e.broker_closed; });
}

// The guest bus dying ends the agent session, from the bus side.
void test_guest_bus_gone() {
  EndToEnd e2e;
  e2e.connect(false);
  g_subprocess_force_exit(e2e.bus.process);
  spin_until([&] { return e2e.agent_closed && e2e.broker_closed; });
  g_assert_true(e2e.agent_saw_bus_gone);
}

// The broker's --debug-access mode: both ends in one process on one thread,
// a socketpair as the link, start() called from the main thread.
void test_debug_access_shape() {
  Bus bus;
  Pair pair;
  std::unique_ptr<GuestLink> link;
  establish_guest_link(
      UniqueFd(pair.fds[0]), true, "debug-access",
      [&](std::unique_ptr<GuestLink> established, GError* error) {
        g_assert_no_error(error);
        link = std::move(established);
      },
      [] {});
  g_autoptr(GError) error = nullptr;
  auto session = AgentSession::start(
      UniqueFd(pair.fds[1]), true, "debug-access", bus.address, [](bool, GError*) {}, &error);
  pair.fds[0] = pair.fds[1] = -1;
  g_assert_no_error(error);
  spin_until([&] { return link != nullptr; });
  g_assert_true(link->peer().carries_fds);
  g_assert_nonnull(g_dbus_connection_get_unique_name(link->connection()));
}

// A character device as the link, as virtio-serial is in the guest: a raw
// pty (no sockets, no half-close, read/write instead of recvmsg/sendmsg).
void test_char_device_link() {
  Bus bus;
  int master = -1, slave = -1;
  struct termios raw = {};
  cfmakeraw(&raw);
  g_assert_cmpint(openpty(&master, &slave, nullptr, &raw, nullptr), ==, 0);
  fcntl(master, F_SETFD, FD_CLOEXEC);
  fcntl(slave, F_SETFD, FD_CLOEXEC);
  std::unique_ptr<GuestLink> link;
  bool broker_closed = false;
  establish_guest_link(
      UniqueFd(master), false, "pty",
      [&](std::unique_ptr<GuestLink> established, GError* error) {
        g_assert_no_error(error);
        link = std::move(established);
      },
      [&] { broker_closed = true; });
  g_autoptr(GError) error = nullptr;
  auto session = AgentSession::start(UniqueFd(slave), false, "virtio-serial:pty", bus.address, [](bool, GError*) {},
                                     &error);
  g_assert_no_error(error);
  spin_until([&] { return link != nullptr; });
  // Protocol 2 frames the byte stream of a device: fds are forwarded.
  g_assert_true(link->peer().framed);
  g_assert_true(link->peer().carries_fds);
  g_autoptr(GVariant) reply = g_dbus_connection_call_sync(
      link->connection(), "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus", "GetId", nullptr,
      G_VARIANT_TYPE("(s)"), G_DBUS_CALL_FLAGS_NONE, 5000, nullptr, &error);
  g_assert_no_error(error);
  session.reset();  // the agent goes: the broker's end notices
  spin_until([&] { return broker_closed; });
}

// A peer that is not an agent gets an ERROR line and done() an error.
void test_broker_refuses_garbage() {
  Pair pair;
  bool done = false;
  establish_guest_link(
      UniqueFd(pair.fds[0]), true, "test:garbage",
      [&](std::unique_ptr<GuestLink> link, GError* error) {
        g_assert_null(link);
        g_assert_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA);
        g_assert_nonnull(strstr(error->message, "test:garbage"));
        done = true;
      },
      [] { g_assert_not_reached(); });
  pair.fds[0] = -1;
  const char garbage[] = "GET / HTTP/1.1\r\n";
  g_assert_cmpint(write(pair.fds[1], garbage, sizeof garbage - 1), ==, static_cast<ssize_t>(sizeof garbage - 1));
  spin_until([&] { return done; });
  std::string line;
  g_assert_true(handshake::read_line(pair.fds[1], "\n", handshake::kMaxLineLength, g_get_monotonic_time() + kDeadline,
                                     "broker", &line, nullptr));
  g_assert_cmpstr(line.c_str(), ==, "ERROR malformed handshake\n");
}

// The agent links the guest bus, and when the broker drops the link it comes
// back; a second agent on the same bus exits 0 at once; SIGTERM exits 0.
void test_agent_binary() {
  const char* agent_path = g_getenv("SIDEBUS_AGENT");
  if (!agent_path) {
    g_test_skip("SIDEBUS_AGENT is not set (run through meson test)");
    return;
  }
  Bus bus;
  g_autofree char* directory = g_dir_make_tmp("sidebus-test-agent-XXXXXX", nullptr);
  std::string address = std::string("unix:") + directory + "/link.sock";
  std::unique_ptr<GuestLink> link;
  int links = 0;
  g_autoptr(GError) error = nullptr;
  auto listener = Listener::create(
      {address},
      [&](UniqueFd fd, bool carries_fds, std::string transport) {
        establish_guest_link(
            std::move(fd), carries_fds, transport,
            [&](std::unique_ptr<GuestLink> established, GError* error) {
              g_assert_no_error(error);
              link = std::move(established);
              links++;
            },
            [] {});
      },
      &error);
  g_assert_no_error(error);
  g_autoptr(GSubprocessLauncher) launcher = g_subprocess_launcher_new(G_SUBPROCESS_FLAGS_NONE);
  g_subprocess_launcher_setenv(launcher, "DBUS_SESSION_BUS_ADDRESS", bus.address.c_str(), TRUE);
  g_subprocess_launcher_unsetenv(launcher, "CREDENTIALS_DIRECTORY");
  g_autoptr(GSubprocess) agent =
      g_subprocess_launcher_spawn(launcher, &error, agent_path, "--connect", address.c_str(), "--verbose", nullptr);
  g_assert_no_error(error);
  spin_until([&] { return links == 1; });

  // A second agent for the same bus leaves at once, successfully.
  g_autoptr(GSubprocess) second =
      g_subprocess_launcher_spawn(launcher, &error, agent_path, "--connect", address.c_str(), nullptr);
  g_assert_no_error(error);
  g_assert_true(g_subprocess_wait(second, nullptr, &error));
  g_assert_true(g_subprocess_get_if_exited(second));
  g_assert_cmpint(g_subprocess_get_exit_status(second), ==, 0);

  // Dropping the link: the agent reconnects.
  link.reset();
  spin_until([&] { return links == 2; });
  g_assert_nonnull(link);

  g_subprocess_send_signal(agent, SIGTERM);
  g_assert_true(g_subprocess_wait(agent, nullptr, &error));
  g_assert_true(g_subprocess_get_if_exited(agent));
  g_assert_cmpint(g_subprocess_get_exit_status(agent), ==, 0);
  link.reset();
  listener.reset();
  rmdir(directory);
}

// A broker of link protocol 1 refuses SIDEBUS 2: the agent links again at
// once with protocol 1 and relays the raw D-Bus stream, as that broker's own
// agent would. The "broker" here is that exchange by hand, then GDBus-made
// Hello through the link, answered by the guest bus.
void test_agent_falls_back_to_protocol_1() {
  const char* agent_path = g_getenv("SIDEBUS_AGENT");
  if (!agent_path) {
    g_test_skip("SIDEBUS_AGENT is not set (run through meson test)");
    return;
  }
  Bus bus;
  g_autofree char* directory = g_dir_make_tmp("sidebus-test-agent-XXXXXX", nullptr);
  std::string path = std::string(directory) + "/link.sock";
  int listening = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_un sun = {};
  sun.sun_family = AF_UNIX;
  g_strlcpy(sun.sun_path, path.c_str(), sizeof sun.sun_path);
  g_assert_cmpint(bind(listening, reinterpret_cast<struct sockaddr*>(&sun), sizeof sun), ==, 0);
  g_assert_cmpint(listen(listening, 4), ==, 0);
  std::vector<std::string> hellos;
  std::string answer_to_hello;
  std::thread old_broker([&] {
    gint64 deadline = g_get_monotonic_time() + 20 * G_USEC_PER_SEC;
    for (int connection = 0; connection < 2; connection++) {
      struct pollfd pfd = {listening, POLLIN, 0};
      g_assert_cmpint(poll(&pfd, 1, 20000), ==, 1);
      int fd = accept4(listening, nullptr, nullptr, SOCK_CLOEXEC);
      std::string line;
      g_assert_true(handshake::read_line(fd, "\n", handshake::kMaxLineLength, deadline, "agent", &line, nullptr));
      hellos.push_back(line);
      if (connection == 0) {
        handshake::write_all(fd, "ERROR unsupported protocol version, this broker speaks 1\n", deadline, "agent",
                             nullptr);
        close(fd);
        continue;
      }
      g_assert_true(handshake::write_all(fd, "OK 1 fds=0\n", deadline, "agent", nullptr));
      g_assert_true(handshake::read_line(fd, "\n", handshake::kMaxLineLength, deadline, "agent", &line, nullptr));
      g_assert_cmpstr(line.c_str(), ==, "READY fds=0\n");
      // The raw D-Bus stream: our Hello reaches the guest bus, its answer comes back.
      g_autoptr(GDBusMessage) hello = g_dbus_message_new_method_call("org.freedesktop.DBus", "/org/freedesktop/DBus",
                                                                     "org.freedesktop.DBus", "Hello");
      g_dbus_message_set_serial(hello, 1);
      gsize size = 0;
      g_autofree guchar* blob = g_dbus_message_to_blob(hello, &size, G_DBUS_CAPABILITY_FLAGS_NONE, nullptr);
      g_assert_true(
          handshake::write_all(fd, std::string_view(reinterpret_cast<char*>(blob), size), deadline, "agent", nullptr));
      g_autoptr(GDBusMessage) reply = read_message(fd, G_DBUS_CAPABILITY_FLAGS_NONE);
      const char* name = nullptr;
      g_variant_get(g_dbus_message_get_body(reply), "(&s)", &name);
      answer_to_hello = name;
      close(fd);
    }
  });
  g_autoptr(GError) error = nullptr;
  g_autoptr(GSubprocessLauncher) launcher = g_subprocess_launcher_new(G_SUBPROCESS_FLAGS_STDERR_PIPE);
  g_subprocess_launcher_setenv(launcher, "DBUS_SESSION_BUS_ADDRESS", bus.address.c_str(), TRUE);
  g_subprocess_launcher_unsetenv(launcher, "CREDENTIALS_DIRECTORY");
  std::string address = "unix:" + path;
  g_autoptr(GSubprocess) agent =
      g_subprocess_launcher_spawn(launcher, &error, agent_path, "--connect", address.c_str(), nullptr);
  g_assert_no_error(error);
  old_broker.join();
  g_subprocess_send_signal(agent, SIGTERM);
  g_autofree char* errors = nullptr;
  g_assert_true(g_subprocess_communicate_utf8(agent, nullptr, nullptr, nullptr, &errors, &error));
  g_test_message("agent said: %s", errors);
  g_assert_cmpuint(hellos.size(), ==, 2);
  g_assert_true(g_str_has_prefix(hellos[0].c_str(), "SIDEBUS 2 "));
  g_assert_true(g_str_has_prefix(hellos[1].c_str(), "SIDEBUS 1 "));
  g_assert_true(g_str_has_prefix(answer_to_hello.c_str(), ":1."));
  g_assert_nonnull(strstr(errors, "older link protocol"));
  close(listening);
  unlink(path.c_str());
  rmdir(directory);
}

// The agent exits 0 when its guest bus goes away.
void test_agent_exits_with_bus() {
  const char* agent_path = g_getenv("SIDEBUS_AGENT");
  if (!agent_path) {
    g_test_skip("SIDEBUS_AGENT is not set (run through meson test)");
    return;
  }
  auto bus = std::make_unique<Bus>();
  g_autoptr(GError) error = nullptr;
  g_autoptr(GSubprocessLauncher) launcher = g_subprocess_launcher_new(G_SUBPROCESS_FLAGS_STDERR_PIPE);
  g_subprocess_launcher_setenv(launcher, "DBUS_SESSION_BUS_ADDRESS", bus->address.c_str(), TRUE);
  // No broker: the agent keeps retrying until the bus goes.
  g_autoptr(GSubprocess) agent =
      g_subprocess_launcher_spawn(launcher, &error, agent_path, "--connect", "unix:/nonexistent/sidebus.sock", nullptr);
  g_assert_no_error(error);
  g_usleep(500 * 1000);
  bus.reset();
  g_autofree char* errors = nullptr;
  g_assert_true(g_subprocess_communicate_utf8(agent, nullptr, nullptr, nullptr, &errors, &error));
  g_assert_true(g_subprocess_get_if_exited(agent));
  g_assert_cmpint(g_subprocess_get_exit_status(agent), ==, 0);
  g_test_message("agent said: %s", errors);
  g_assert_nonnull(strstr(errors, "unix:/nonexistent/sidebus.sock"));  // the retry message names it
  g_assert_nonnull(strstr(errors, "guest bus went away"));
}

}  // namespace

int main(int argc, char** argv) {
  g_test_init(&argc, &argv, nullptr);
  g_test_add_data_func("/sasl/server/gdbus/fds", GINT_TO_POINTER(1), test_server_with_gdbus);
  g_test_add_data_func("/sasl/server/gdbus/nofds", GINT_TO_POINTER(0), test_server_with_gdbus);
  g_test_add_func("/sasl/server/hostile", test_server_hostile);
  g_test_add_data_func("/sasl/client/dbus-daemon/fds", GINT_TO_POINTER(1), test_client_with_dbus_daemon);
  g_test_add_data_func("/sasl/client/dbus-daemon/nofds", GINT_TO_POINTER(0), test_client_with_dbus_daemon);
  g_test_add_func("/sasl/client/rejected", test_client_rejected);
  g_test_add_data_func("/link/end-to-end/fds", GINT_TO_POINTER(int(LinkMode::Native)), test_end_to_end);
  g_test_add_data_func("/link/end-to-end/nofds-forwarded", GINT_TO_POINTER(int(LinkMode::Forwarded)),
                       test_end_to_end);
  g_test_add_data_func("/link/end-to-end/nofds-protocol-1", GINT_TO_POINTER(int(LinkMode::Protocol1)),
                       test_end_to_end);
  g_test_add_func("/link/guest-bus-gone", test_guest_bus_gone);
  g_test_add_func("/link/refuses-garbage", test_broker_refuses_garbage);
  g_test_add_func("/link/debug-access", test_debug_access_shape);
  g_test_add_func("/link/char-device", test_char_device_link);
  g_test_add_func("/agent/reconnects", test_agent_binary);
  g_test_add_func("/agent/exits-with-bus", test_agent_exits_with_bus);
  g_test_add_func("/agent/falls-back-to-protocol-1", test_agent_falls_back_to_protocol_1);
  return g_test_run();
}
