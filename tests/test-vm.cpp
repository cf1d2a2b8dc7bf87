// test-vm.cpp — the real-VM integration test. QEMU (TCG: nested KVM hangs on
// the machines this runs on) boots the host's Debian kernel with a tiny busybox
// initramfs built at test time (tests/vm/make-initramfs.sh). Its /init
// (tests/vm/guest-init.sh) sees the host's root read-only over 9p, so the guest
// runs the host's own dbus-daemon, gdbus and freshly built sidebus-agent in a
// chroot of it. The link is a virtio-serial port whose host end is a QEMU
// chardev connecting to a unix socket here (byte-only: the broker listens with
// ",nofds"). The guest reports on its serial console between markers (see
// guest-init.sh), which the test parses.
//
//   /vm/link-bytes            the VM plumbing alone: a line each way over the
//                             port, the host root visible in the guest
//   /vm/portal-on-guest-bus   host bus + xdg-desktop-portal + test backend +
//                             broker on the host, guest bus + agent in the VM:
//                             a guest client introspects the portal object
//   /vm/file-chooser-document a guest client opens a file through
//                             FileChooser.OpenFile; the host backend picks a
//                             host file, and the guest reads its contents
//                             through the document view shared by virtiofsd
//   /vm/openuri-document      then hands an fd of that document to
//                             OpenURI.OpenFile: over the byte-only port the
//                             link forwards it as a document reference, and
//                             the host application opens the host file
//
// The guest-side client of the last test is this very binary, run inside the
// VM as `test-vm --guest-open-file` (the host root, build tree included, is
// the guest's root), so it uses the fixture's PortalRequest like every host
// test does.
//
// Skips (saying why) when qemu-system-x86_64 or a usable kernel is missing.
// SIDEBUS_VM_KERNEL=/boot/vmlinuz-VERSION picks the kernel; SIDEBUS_VM_DEBUG=1
// runs the guest agent with G_MESSAGES_DEBUG=all and prints the guest console
// even when the test passes.

#include <gio/gio.h>
#include <gio/gunixfdlist.h>
#include <gio/gunixsocketaddress.h>
#include <glib/gstdio.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "fixture.hpp"
#include "host-recorder.hpp"

using namespace sidebus::test;

namespace {

constexpr char kPortName[] = "dev.sidebus.link";
constexpr char kPortPath[] = "/dev/virtio-ports/dev.sidebus.link";
constexpr char kPortalName[] = "org.freedesktop.portal.Desktop";
constexpr char kPortalPath[] = "/org/freedesktop/portal/desktop";
constexpr char kVmName[] = "vmtest";
constexpr char kGuestDocumentsPath[] = "/run/sidebus/documents";
// The guest's own watchdog powers off after kGuestTimeout seconds; QEMU is
// stopped after kQemuTimeout regardless. Both far above a normal run (~10-30 s
// on 2 cores under TCG).
constexpr int kGuestTimeout = 120;
constexpr int kGuestMemoryMb = 512;
constexpr Timeout kQemuTimeout = 150s;

std::string env_or_empty(const char* name) {
  const char* value = g_getenv(name);
  return value != nullptr ? value : "";
}

std::string read_file(const std::string& path) {
  g_autofree char* contents = nullptr;
  if (!g_file_get_contents(path.c_str(), &contents, nullptr, nullptr)) return "";
  return contents;
}

// ---- the kernel ----------------------------------------------------------------

struct Kernel {
  std::string image;
  std::string version;
};

bool has_9p_module(const std::string& version) {
  g_autofree char* dir = g_build_filename("/lib/modules", version.c_str(), "kernel", "fs", "9p", nullptr);
  return g_file_test(dir, G_FILE_TEST_IS_DIR);
}

// The newest readable /boot/vmlinuz-VERSION whose modules include 9p (the
// -cloud flavour has none), or the one SIDEBUS_VM_KERNEL names.
std::optional<Kernel> find_kernel(std::string* why_not) {
  std::vector<std::string> images;
  std::string wanted = env_or_empty("SIDEBUS_VM_KERNEL");
  if (!wanted.empty()) {
    images.push_back(wanted);
  } else {
    g_autoptr(GDir) boot = g_dir_open("/boot", 0, nullptr);
    while (const char* name = boot != nullptr ? g_dir_read_name(boot) : nullptr) {
      if (g_str_has_prefix(name, "vmlinuz-")) images.push_back(std::string("/boot/") + name);
    }
    std::sort(images.begin(), images.end(),
              [](const std::string& a, const std::string& b) { return strverscmp(a.c_str(), b.c_str()) > 0; });
  }
  for (const std::string& image : images) {
    g_autofree char* base = g_path_get_basename(image.c_str());
    if (!g_str_has_prefix(base, "vmlinuz-")) continue;
    std::string version = base + strlen("vmlinuz-");
    if (g_access(image.c_str(), R_OK) != 0 || !has_9p_module(version)) continue;
    return Kernel{image, version};
  }
  *why_not = wanted.empty() ? "no /boot/vmlinuz-* with 9p modules in /lib/modules (apt-get install linux-image-amd64)"
                            : "SIDEBUS_VM_KERNEL=" + wanted + " is unreadable or has no 9p module";
  return std::nullopt;
}

// The kernel to boot, or nullopt after g_test_skip() said why there is none.
std::optional<Kernel> kernel_or_skip() {
  g_autofree char* qemu = g_find_program_in_path("qemu-system-x86_64");
  if (qemu == nullptr) {
    g_test_skip("qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)");
    return std::nullopt;
  }
  std::string why;
  std::optional<Kernel> kernel = find_kernel(&why);
  if (!kernel) g_test_skip(why.c_str());
  return kernel;
}

// The guest sees the host's root, except /tmp and /run (its own tmpfs).
bool visible_in_guest(const std::string& path) {
  return !g_str_has_prefix(path.c_str(), "/tmp/") && !g_str_has_prefix(path.c_str(), "/run/");
}

// ---- what the guest reported ------------------------------------------------------

struct GuestReport {
  bool ready = false;               // SIDEBUS-READY: the portal name appeared
  bool exited = false;              // SIDEBUS-EXIT seen
  int exit_status = -1;
  std::string result;               // between SIDEBUS-RESULT-BEGIN and -END
  std::vector<std::string> errors;  // SIDEBUS-ERROR messages
  double init_uptime = -1, ready_uptime = -1, exit_uptime = -1;
};

GuestReport parse_console(const std::string& console) {
  GuestReport report;
  bool in_result = false;
  g_auto(GStrv) lines = g_strsplit(console.c_str(), "\n", -1);
  for (char** line = lines; *line != nullptr; line++) {
    g_strchomp(*line);  // the serial console ends lines with \r\n
    const char* text = *line;
    if (in_result) {
      if (g_str_equal(text, "SIDEBUS-RESULT-END"))
        in_result = false;
      else
        report.result += std::string(text) + "\n";
    } else if (g_str_equal(text, "SIDEBUS-RESULT-BEGIN")) {
      in_result = true;
    } else if (g_str_has_prefix(text, "SIDEBUS-INIT ")) {
      report.init_uptime = g_ascii_strtod(text + strlen("SIDEBUS-INIT "), nullptr);
    } else if (g_str_has_prefix(text, "SIDEBUS-READY ")) {
      report.ready = true;
      report.ready_uptime = g_ascii_strtod(text + strlen("SIDEBUS-READY "), nullptr);
    } else if (g_str_has_prefix(text, "SIDEBUS-EXIT ")) {
      char* end = nullptr;
      report.exited = true;
      report.exit_status = static_cast<int>(g_ascii_strtoll(text + strlen("SIDEBUS-EXIT "), &end, 10));
      report.exit_uptime = g_ascii_strtod(end, nullptr);
    } else if (g_str_has_prefix(text, "SIDEBUS-ERROR ")) {
      report.errors.emplace_back(text + strlen("SIDEBUS-ERROR "));
    }
  }
  return report;
}

// ---- the VM --------------------------------------------------------------------------

struct VmSpec {
  std::string command;      // run in the guest with /bin/sh -c, in the host-root chroot
  std::string link_socket;  // host unix socket the virtio-serial port connects to
  std::string agent;        // agent binary (host path); empty: no guest bus, no agent
  // the broker's virtiofsd socket (--virtiofsd) for its document view,
  // mounted at kGuestDocumentsPath.
  std::string documents_socket;
};

// One boot of the test VM, its files in @dir. QEMU is a ChildProcess: stopped
// by the destructor and killed if the test dies, whatever happens.
class Vm {
 public:
  Vm(Kernel kernel, const TempDir& dir) : kernel_(std::move(kernel)), dir_(dir) {}

  // Builds the initramfs and starts QEMU; FixtureError when it cannot.
  void start(const VmSpec& spec) {
    std::string initramfs = dir_ / "initramfs.cpio.gz";
    gint64 begin = g_get_monotonic_time();
    ChildProcess make_initramfs({.name = "make-initramfs",
                                 .argv = {"/bin/sh", env_path("SIDEBUS_SOURCE_ROOT") + "/tests/vm/make-initramfs.sh",
                                          kernel_.version, initramfs},
                                 .stdout_path = dir_ / "make-initramfs.log"});
    std::optional<ExitStatus> built = make_initramfs.wait_for_exit(60s);
    if (!built || !built->success())
      throw FixtureError("make-initramfs.sh failed: " + make_initramfs.log());
    g_test_message("initramfs built in %.2f s", (g_get_monotonic_time() - begin) / 1e6);

    g_autofree char* command = g_base64_encode(reinterpret_cast<const guchar*>(spec.command.data()),
                                               spec.command.size());
    std::string append = "console=ttyS0 quiet panic=-1 sidebus.cmd=" + std::string(command) +
                         " sidebus.timeout=" + std::to_string(kGuestTimeout) +
                         " sidebus.connect=virtio-serial:" + kPortPath;
    if (!spec.agent.empty()) append += " sidebus.agent=" + spec.agent;
    if (!spec.documents_socket.empty()) append += std::string(" sidebus.docs=") + kGuestDocumentsPath;
    if (!env_or_empty("SIDEBUS_VM_DEBUG").empty()) append += " sidebus.debug=1";
    // A sanitizer build runs sanitized binaries in the guest too: same options.
    std::string guest_env;
    for (const char* name : {"ASAN_OPTIONS", "UBSAN_OPTIONS"}) {
      std::string value = env_or_empty(name);
      if (!value.empty() && value.find(' ') == std::string::npos) guest_env += std::string(name) + "=" + value + " ";
    }
    if (!guest_env.empty()) {
      g_autofree char* encoded = g_base64_encode(reinterpret_cast<const guchar*>(guest_env.data()), guest_env.size());
      append += std::string(" sidebus.env=") + encoded;
    }

    console_path_ = dir_ / "console.log";
    std::vector<std::string> argv = {
        "qemu-system-x86_64", "-accel", "tcg", "-m", std::to_string(kGuestMemoryMb), "-smp", "1",
        "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
        "-kernel", kernel_.image, "-initrd", initramfs, "-append", append,
        "-serial", "file:" + console_path_,
        "-virtfs", "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap",
        "-device", "virtio-serial",
        // reconnect: QEMU connects when it starts, long before the agent
        // opens the port; the broker drops a link that stays silent past its
        // handshake timeout (10 s), and QEMU must then connect again.
        "-chardev", "socket,id=link,reconnect=1,path=" + spec.link_socket,
        "-device", std::string("virtserialport,chardev=link,name=") + kPortName,
    };
    if (!spec.documents_socket.empty()) {
      // vhost-user needs the guest's memory shared with virtiofsd.
      std::string memory = "memory-backend-memfd,id=mem,share=on,size=" + std::to_string(kGuestMemoryMb) + "M";
      argv.insert(argv.end(), {"-object", memory, "-numa", "node,memdev=mem",
                               "-chardev", "socket,id=documents,path=" + spec.documents_socket,
                               "-device", "vhost-user-fs-pci,chardev=documents,tag=sidebus-docs"});
    }
    started_ = g_get_monotonic_time();
    qemu_ = std::make_unique<ChildProcess>(
        SpawnOptions{.name = "qemu", .argv = argv, .stdout_path = dir_ / "qemu.log"});
  }

  // Until the guest powers off, or kQemuTimeout (then QEMU is stopped).
  // Iterates the main context meanwhile, so services of the test keep running.
  // Empty when the guest powered off; otherwise what went wrong.
  std::string wait() {
    bool exited = wait_until([this] { return !qemu_->running(); }, kQemuTimeout);
    ExitStatus status = qemu_->stop(5s);
    g_test_message("QEMU ran %.1f s (wall clock), %s", (g_get_monotonic_time() - started_) / 1e6,
                   status.describe().c_str());
    if (!exited)
      return "the guest was still running after " + std::to_string(kQemuTimeout.count() / 1000) + " s";
    if (!status.success()) return "QEMU " + status.describe() + " (its log is printed below)";
    return "";
  }

  std::string console() const { return read_file(console_path_); }

  // The guest console into the test log (QEMU's own output is the
  // ChildProcess log, which the fixture prints for a failed test).
  void dump() const {
    g_test_message("---- guest console (%s) ----", console_path_.c_str());
    g_auto(GStrv) lines = g_strsplit(console().c_str(), "\n", -1);
    for (char** line = lines; *line != nullptr; line++) g_test_message("%s", g_strchomp(*line));
  }

 private:
  const Kernel kernel_;
  const TempDir& dir_;
  std::string console_path_;
  std::unique_ptr<ChildProcess> qemu_;
  gint64 started_ = 0;
};

// Checks a condition; the first failure prints the VM's logs. Non-fatal, so
// the test returns through its destructors (QEMU and the host side stop).
class Checker {
 public:
  explicit Checker(const Vm& vm) : vm_(vm) {}
  bool operator()(bool ok, const std::string& what) {
    if (ok) return true;
    if (!dumped_) vm_.dump();
    dumped_ = true;
    g_test_fail_printf("%s", what.c_str());
    return false;
  }

 private:
  const Vm& vm_;
  bool dumped_ = false;
};

// Boots the VM, waits for it to power off and checks that the guest got as
// far as running its command (and, with an agent, saw the portal first).
std::optional<GuestReport> run_vm(Vm& vm, const VmSpec& spec, Checker& check) {
  vm.start(spec);
  std::string qemu_problem = vm.wait();
  GuestReport report = parse_console(vm.console());
  if (!env_or_empty("SIDEBUS_VM_DEBUG").empty()) vm.dump();
  g_test_message("guest uptime: init %.2f s, portal ready %.2f s, command done %.2f s", report.init_uptime,
                 report.ready_uptime, report.exit_uptime);
  std::string errors;
  for (const std::string& error : report.errors) errors += (errors.empty() ? "" : "; ") + error;
  if (!check(report.errors.empty(), "the guest reported: " + errors)) return std::nullopt;
  if (!check(qemu_problem.empty(), qemu_problem)) return std::nullopt;
  if (!spec.agent.empty() && !check(report.ready, "the portal never appeared on the guest bus")) return std::nullopt;
  if (!check(report.exited, "the guest command never finished")) return std::nullopt;
  return report;
}

// ---- /vm/link-bytes ----------------------------------------------------------------

// The host end of the link for the plumbing test: accepts QEMU's connection,
// reads one line, answers one line.
class LineHost {
 public:
  explicit LineHost(const std::string& socket_path) {
    g_autoptr(GSocketAddress) address = g_unix_socket_address_new(socket_path.c_str());
    g_autoptr(GError) error = nullptr;
    if (!g_socket_listener_add_address(listener_.get(), address, G_SOCKET_TYPE_STREAM, G_SOCKET_PROTOCOL_DEFAULT,
                                       nullptr, nullptr, &error))
      throw FixtureError(std::string("cannot listen on ") + socket_path + ": " + error->message);
    g_socket_listener_accept_async(listener_.get(), cancellable_.get(), on_accept, this);
  }
  ~LineHost() {
    g_cancellable_cancel(cancellable_.get());
    g_socket_listener_close(listener_.get());
  }
  LineHost(const LineHost&) = delete;
  LineHost& operator=(const LineHost&) = delete;

  const std::string& received() const { return received_; }

 private:
  static void on_accept(GObject* source, GAsyncResult* result, gpointer data) {
    g_autoptr(GError) error = nullptr;
    g_autoptr(GSocketConnection) connection =
        g_socket_listener_accept_finish(G_SOCKET_LISTENER(source), result, nullptr, &error);
    if (connection == nullptr) return;  // cancelled: the LineHost is gone
    auto* self = static_cast<LineHost*>(data);
    self->connection_.reset(static_cast<GSocketConnection*>(g_steal_pointer(&connection)));
    self->lines_.reset(g_data_input_stream_new(g_io_stream_get_input_stream(G_IO_STREAM(self->connection_.get()))));
    g_data_input_stream_read_line_async(self->lines_.get(), G_PRIORITY_DEFAULT, self->cancellable_.get(), on_line,
                                        self);
  }

  static void on_line(GObject* source, GAsyncResult* result, gpointer data) {
    g_autoptr(GError) error = nullptr;
    g_autofree char* line = g_data_input_stream_read_line_finish(G_DATA_INPUT_STREAM(source), result, nullptr, &error);
    if (line == nullptr) return;  // cancelled, or the guest closed the port
    auto* self = static_cast<LineHost*>(data);
    self->received_ = line;
    std::string answer = "host heard: " + self->received_ + "\n";
    g_output_stream_write_all(g_io_stream_get_output_stream(G_IO_STREAM(self->connection_.get())), answer.data(),
                              answer.size(), nullptr, nullptr, &error);
  }

  GObjectPtr<GSocketListener> listener_{g_socket_listener_new()};
  GObjectPtr<GCancellable> cancellable_{g_cancellable_new()};
  GObjectPtr<GSocketConnection> connection_;
  GObjectPtr<GDataInputStream> lines_;
  std::string received_;
};

void test_link_bytes() {
  std::optional<Kernel> kernel = kernel_or_skip();
  if (!kernel) return;
  TempDir dir("sidebus-test-vm");
  LineHost host(dir / "link.sock");
  Vm vm(*kernel, dir);
  Checker check(vm);

  VmSpec spec;
  spec.link_socket = dir / "link.sock";
  spec.command = std::string("exec 3<>") + kPortPath +
                 " && echo 'guest says hello' >&3 && head -n 1 <&3"
                 " && test -x /usr/bin/dbus-daemon && echo 'host root visible'";
  std::optional<GuestReport> report = run_vm(vm, spec, check);
  if (!report) return;
  if (!check(report->exit_status == 0, "the guest command failed")) return;
  check(host.received() == "guest says hello", "the host did not receive the guest's line");
  check(report->result == "host heard: guest says hello\nhost root visible\n",
        "the guest did not receive the host's line: " + report->result);
}

// ---- the whole topology ----------------------------------------------------------------

// HostPortal + Broker listening byte-only where QEMU's chardev connects.
struct HostSide {
  HostPortal portal;
  std::unique_ptr<Broker> broker;

  // virtiofsd: non-empty to have the broker serve the documents (--virtiofsd).
  explicit HostSide(const std::string& link_socket, const std::string& virtiofsd = "",
                    HostPortalOptions portal_options = {})
      : portal(std::move(portal_options)) {
    BrokerOptions options;
    if (!virtiofsd.empty()) options.extra_args = {"--virtiofsd", virtiofsd};
    options.host_bus_address = portal.bus_address();
    options.listen = {"unix:" + link_socket + ",nofds"};
    options.vm_name = kVmName;
    options.guest_documents_path = kGuestDocumentsPath;
    options.config = {{"50-vm.json", R"({"portals": {"filechooser": {"enabled": true},
                                                    "openuri": {"enabled": true}}})"}};
    broker = std::make_unique<Broker>(options);
  }
};

// The broker serves its per-VM document view (<runtime-dir>/doc/by-app/<app id>)
// over virtiofs itself (--virtiofsd). Not 9p: QEMU's 9p statfs()es its
// export at start-up and opens every file with O_NOFOLLOW, and
// xdg-document-portal (1.16) refuses both (EPERM, ELOOP).
// QEMU 7.2 ships the C virtiofsd (Debian 12); else the standalone Rust one.
std::string find_virtiofsd() {
  for (const char* path : {"/usr/lib/qemu/virtiofsd", "/usr/libexec/virtiofsd"}) {
    if (g_file_test(path, G_FILE_TEST_IS_EXECUTABLE)) return path;
  }
  return "";
}

// The agent and the test binary run in the guest from the host's root.
bool guest_binaries_or_skip(const std::vector<std::string>& paths) {
  for (const std::string& path : paths) {
    if (!visible_in_guest(path)) {
      g_test_skip(("the VM sees the host's root but has its own /tmp and /run: " + path + " is not visible there")
                      .c_str());
      return false;
    }
  }
  return true;
}

void test_portal_on_guest_bus() {
  std::optional<Kernel> kernel = kernel_or_skip();
  if (!kernel) return;
  std::string agent = env_path("SIDEBUS_AGENT");
  if (!guest_binaries_or_skip({agent})) return;
  TempDir dir("sidebus-test-vm");
  HostSide host(dir / "link.sock");
  Vm vm(*kernel, dir);
  Checker check(vm);

  VmSpec spec;
  spec.link_socket = dir / "link.sock";
  spec.agent = agent;
  spec.command = std::string("gdbus introspect --session --dest ") + kPortalName + " --object-path " + kPortalPath;
  std::optional<GuestReport> report = run_vm(vm, spec, check);
  if (!report) return;
  if (!check(report->exit_status == 0, "gdbus introspect failed in the guest: " + report->result)) return;
  for (const char* interface : {"org.freedesktop.portal.FileChooser", "org.freedesktop.portal.OpenURI"}) {
    check(report->result.find(std::string("interface ") + interface + " {") != std::string::npos,
          std::string("the guest does not see ") + interface);
  }
}

void test_file_chooser_document() {
  std::optional<Kernel> kernel = kernel_or_skip();
  if (!kernel) return;
  std::string agent = env_path("SIDEBUS_AGENT");
  g_autofree char* self = g_file_read_link("/proc/self/exe", nullptr);
  if (!guest_binaries_or_skip({agent, self})) return;
  std::string virtiofsd = find_virtiofsd();
  if (virtiofsd.empty()) {
    g_test_skip("no virtiofsd (/usr/lib/qemu/virtiofsd from qemu-system-common, or the virtiofsd package)");
    return;
  }
  TempDir dir("sidebus-test-vm");
  HostSide host(dir / "link.sock", virtiofsd);
  std::string picked = dir.write_file("picked/hello.txt", "made on the host\n");
  g_autofree char* picked_uri = g_filename_to_uri(picked.c_str(), nullptr, nullptr);
  const char* uris[] = {picked_uri, nullptr};
  host.portal.set_reply("OpenFile", kResponseSuccess, g_variant_new_parsed("{'uris': <%^as>}", uris));
  Vm vm(*kernel, dir);
  Checker check(vm);

  VmSpec spec;
  spec.link_socket = dir / "link.sock";
  spec.agent = agent;
  spec.documents_socket = host.broker->runtime_dir() + "/virtiofsd.sock";
  spec.command = std::string(self) + " --guest-open-file";
  std::optional<GuestReport> report = run_vm(vm, spec, check);
  if (!report) return;
  if (!check(report->exit_status == 0, "the guest client failed: " + report->result)) return;
  std::string prefix = std::string("uri file://") + kGuestDocumentsPath + "/";
  check(report->result.find("response 0\n") != std::string::npos, "OpenFile did not succeed: " + report->result);
  check(report->result.find(prefix) != std::string::npos && report->result.find("/hello.txt\n") != std::string::npos,
        "the guest did not get a URI in its documents directory: " + report->result);
  check(report->result.find("content made on the host\n") != std::string::npos,
        "the guest could not read the picked file: " + report->result);
  check(report->result.find("write allowed") == std::string::npos,
        "the guest could open a file it was only given to read for writing: " + report->result);
  std::vector<BackendCall> calls = host.portal.backend_calls();
  check(calls.size() == 1 && calls[0].method == "OpenFile", "the host backend was not asked exactly once");
}

// The guest opens a document on the host through OpenURI.OpenFile with an fd
// (not a path): the virtio-serial link is byte-only, so the fd crosses as a
// document reference (link protocol 2) and the broker hands the host's
// xdg-desktop-portal the host file, which it opens in the host application.
void test_openuri_document() {
  std::optional<Kernel> kernel = kernel_or_skip();
  if (!kernel) return;
  std::string agent = env_path("SIDEBUS_AGENT");
  g_autofree char* self = g_file_read_link("/proc/self/exe", nullptr);
  if (!guest_binaries_or_skip({agent, self})) return;
  std::string virtiofsd = find_virtiofsd();
  if (virtiofsd.empty()) {
    g_test_skip("no virtiofsd (/usr/lib/qemu/virtiofsd from qemu-system-common, or the virtiofsd package)");
    return;
  }
  TempDir dir("sidebus-test-vm");
  HostRecorder recorder;
  HostPortalOptions portal_options;
  recorder.add_to(&portal_options);
  HostSide host(dir / "link.sock", virtiofsd, std::move(portal_options));
  std::string picked = dir.write_file("picked/report.txt", "the host's report\n");
  g_autofree char* picked_uri = g_filename_to_uri(picked.c_str(), nullptr, nullptr);
  const char* uris[] = {picked_uri, nullptr};
  host.portal.set_reply("OpenFile", kResponseSuccess, g_variant_new_parsed("{'uris': <%^as>}", uris));
  host.portal.set_reply("ChooseApplication", kResponseSuccess,
                        g_variant_new_parsed("{'choice': <%s>}", HostRecorder::kId));
  Vm vm(*kernel, dir);
  Checker check(vm);

  VmSpec spec;
  spec.link_socket = dir / "link.sock";
  spec.agent = agent;
  spec.documents_socket = host.broker->runtime_dir() + "/virtiofsd.sock";
  spec.command = std::string(self) + " --guest-open-document";
  std::optional<GuestReport> report = run_vm(vm, spec, check);
  if (!report) return;
  if (!check(report->exit_status == 0, "the guest client failed: " + report->result)) return;
  check(report->result.find("openfile response 0\n") != std::string::npos,
        "OpenURI.OpenFile did not succeed: " + report->result);
  wait_until([&] { return !recorder.launches().empty(); }, 10s);
  std::vector<std::string> launches = recorder.launches();
  check(launches.size() == 1 && launches[0] == picked_uri,
        "the host application was not asked to open the host file " + std::string(picked_uri) + " (launches: " +
            std::to_string(launches.size()) + (launches.empty() ? "" : ", first " + launches[0]) + ")");
  std::string broker_log = host.broker->process().log();
  check(broker_log.find("fds forwarded") != std::string::npos, "the link did not forward fds:\n" + broker_log);
}

// ---- inside the guest ----------------------------------------------------------------

// `test-vm --guest-open-file`, run by guest-init.sh in the VM: calls
// FileChooser.OpenFile on the guest session bus and prints "response N",
// then for every URI "uri URI", "content TEXT" (the file read through the
// guest path) and "write allowed" or "write <error>" (opening it for
// writing). Exit status 0 once it got a response.
int guest_open_file() {
  g_autoptr(GError) error = nullptr;
  g_autoptr(GDBusConnection) bus = g_bus_get_sync(G_BUS_TYPE_SESSION, nullptr, &error);
  if (bus == nullptr) {
    g_printerr("cannot connect to the session bus: %s\n", error->message);
    return 1;
  }
  g_auto(GVariantBuilder) options = G_VARIANT_BUILDER_INIT(G_VARIANT_TYPE_VARDICT);
  g_variant_builder_add(&options, "{sv}", "handle_token", g_variant_new_string("vmtest"));
  try {
    PortalRequest request(bus, kPortalName, "org.freedesktop.portal.FileChooser", "OpenFile",
                          g_variant_new("(ssa{sv})", "", "Pick a file", &options));
    if (request.error() != nullptr) {
      g_printerr("OpenFile failed: %s\n", request.error()->message);
      return 1;
    }
    if (!request.wait_for_response(60s)) {
      g_printerr("no Response for %s\n", request.handle().c_str());
      return 1;
    }
    g_print("response %u\n", request.response());
    g_autofree const char** uris = nullptr;
    if (g_variant_lookup(request.results(), "uris", "^a&s", &uris)) {
      for (const char** uri = uris; *uri != nullptr; uri++) {
        g_print("uri %s\n", *uri);
        g_autofree char* path = g_filename_from_uri(*uri, nullptr, nullptr);
        g_autofree char* contents = nullptr;
        if (path != nullptr && g_file_get_contents(path, &contents, nullptr, &error))
          g_print("content %s", contents);
        else
          g_print("unreadable %s\n", error != nullptr ? error->message : "not a file URI");
        g_clear_error(&error);
        // OpenFile without "writable" grants read only.
        int fd = path != nullptr ? g_open(path, O_WRONLY | O_APPEND, 0) : -1;
        g_print("write %s\n", fd >= 0 ? "allowed" : g_strerror(errno));
        if (fd >= 0) close(fd);
      }
    }
  } catch (const std::exception& e) {
    g_printerr("%s\n", e.what());
    return 1;
  }
  return 0;
}

// `test-vm --guest-open-document`: picks a document with FileChooser.OpenFile,
// opens it (read-only) and hands the fd to OpenURI.OpenFile; prints
// "document PATH" and "openfile response N". Exit status 0 once OpenFile
// answered.
int guest_open_document() {
  g_autoptr(GError) error = nullptr;
  g_autoptr(GDBusConnection) bus = g_bus_get_sync(G_BUS_TYPE_SESSION, nullptr, &error);
  if (bus == nullptr) {
    g_printerr("cannot connect to the session bus: %s\n", error->message);
    return 1;
  }
  try {
    g_auto(GVariantBuilder) pick_options = G_VARIANT_BUILDER_INIT(G_VARIANT_TYPE_VARDICT);
    g_variant_builder_add(&pick_options, "{sv}", "handle_token", g_variant_new_string("pick"));
    PortalRequest pick(bus, kPortalName, "org.freedesktop.portal.FileChooser", "OpenFile",
                       g_variant_new("(ssa{sv})", "", "Pick a file", &pick_options));
    if (pick.error() != nullptr || !pick.wait_for_response(60s) || pick.response() != 0) {
      g_printerr("FileChooser.OpenFile failed\n");
      return 1;
    }
    g_autofree const char** uris = nullptr;
    if (!g_variant_lookup(pick.results(), "uris", "^a&s", &uris) || uris[0] == nullptr) {
      g_printerr("FileChooser.OpenFile gave no uris\n");
      return 1;
    }
    g_autofree char* path = g_filename_from_uri(uris[0], nullptr, nullptr);
    g_print("document %s\n", path);
    int fd = path != nullptr ? open(path, O_RDONLY | O_CLOEXEC) : -1;
    if (fd < 0) {
      g_printerr("cannot open the document: %s\n", g_strerror(errno));
      return 1;
    }
    // OpenURI.OpenFile answers through a Request like any portal call: every
    // Response is watched for before the call, then the one of its handle.
    std::map<std::string, guint32> responses;
    guint subscription = g_dbus_connection_signal_subscribe(
        bus, kPortalName, "org.freedesktop.portal.Request", "Response", nullptr, nullptr, G_DBUS_SIGNAL_FLAGS_NONE,
        [](GDBusConnection*, const char*, const char* object, const char*, const char*, GVariant* parameters,
           gpointer data) {
          guint32 code = G_MAXUINT32;
          g_variant_get(parameters, "(u@a{sv})", &code, nullptr);
          (*static_cast<std::map<std::string, guint32>*>(data))[object] = code;
        },
        &responses, nullptr);
    g_autoptr(GUnixFDList) fds = g_unix_fd_list_new_from_array(&fd, 1);
    g_auto(GVariantBuilder) options = G_VARIANT_BUILDER_INIT(G_VARIANT_TYPE_VARDICT);
    g_variant_builder_add(&options, "{sv}", "handle_token", g_variant_new_string("open"));
    g_autoptr(GVariant) reply = g_dbus_connection_call_with_unix_fd_list_sync(
        bus, kPortalName, kPortalPath, "org.freedesktop.portal.OpenURI", "OpenFile",
        g_variant_new("(sha{sv})", "", 0, &options), G_VARIANT_TYPE("(o)"), G_DBUS_CALL_FLAGS_NONE, 60000, fds, nullptr,
        nullptr, &error);
    if (reply == nullptr) {
      g_printerr("OpenURI.OpenFile failed: %s\n", error->message);
      g_dbus_connection_signal_unsubscribe(bus, subscription);
      return 1;
    }
    const char* handle = nullptr;
    g_variant_get(reply, "(&o)", &handle);
    bool answered = wait_until([&] { return responses.count(handle) != 0; }, 60s);
    g_dbus_connection_signal_unsubscribe(bus, subscription);
    if (!answered) {
      g_printerr("no Response for %s\n", handle);
      return 1;
    }
    g_print("openfile response %u\n", responses[handle]);
  } catch (const std::exception& e) {
    g_printerr("%s\n", e.what());
    return 1;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 2 && g_str_equal(argv[1], "--guest-open-file")) return guest_open_file();
  if (argc == 2 && g_str_equal(argv[1], "--guest-open-document")) return guest_open_document();
  g_test_init(&argc, &argv, nullptr);
  add_test("/vm/link-bytes", test_link_bytes);
  add_test("/vm/portal-on-guest-bus", test_portal_on_guest_bus);
  add_test("/vm/file-chooser-document", test_file_chooser_document);
  add_test("/vm/openuri-document", test_openuri_document);
  return g_test_run();
}
