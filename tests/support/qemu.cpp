// SPDX-License-Identifier: LGPL-2.1-or-later
// qemu.cpp — the QEMU helper of qemu.hpp: finding a kernel, the QEMU command
// line from a QemuSpec, boots and waits, the console protocol of
// tests/vm/guest-init.sh, and the broker side of the guest's link.
#include "support/qemu.hpp"

#include <glib/gstdio.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "support/files.hpp"

namespace sidebus::test {
namespace {

bool has_9p_module(const std::string& version) {
  g_autofree char* dir = g_build_filename("/lib/modules", version.c_str(), "kernel", "fs", "9p", nullptr);
  return g_file_test(dir, G_FILE_TEST_IS_DIR);
}

}  // namespace

std::optional<Kernel> find_kernel(std::string* why_not) {
  std::vector<std::string> images;
  std::string wanted = env_or("SIDEBUS_VM_KERNEL");
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

bool visible_in_guest(const std::string& path) {
  return !g_str_has_prefix(path.c_str(), "/tmp/") && !g_str_has_prefix(path.c_str(), "/run/");
}

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

// The broker serves its per-VM document view (<runtime-dir>/doc/by-app/<app id>)
// over virtiofs itself (--virtiofsd). Not 9p: QEMU's 9p statfs()es its
// export at start-up and opens every file with O_NOFOLLOW, and
// xdg-document-portal (1.16) refuses both (EPERM, ELOOP).
std::string find_virtiofsd() {
  for (const char* path : {"/usr/lib/qemu/virtiofsd", "/usr/libexec/virtiofsd"}) {
    if (g_file_test(path, G_FILE_TEST_IS_EXECUTABLE)) return path;
  }
  return "";
}

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

// ---- Qemu -------------------------------------------------------------------

Qemu::Qemu(Kernel kernel, const TempDir& dir, QemuSpec spec, std::string name)
    : kernel_(std::move(kernel)), dir_(dir), spec_(std::move(spec)), name_(std::move(name)) {}

Qemu::~Qemu() { qemu_.reset(); }

void Qemu::start() {
  if (running()) throw FixtureError(name_ + " is running already");
  if (initramfs_.empty() && !spec_.initramfs.empty()) initramfs_ = spec_.initramfs;
  if (initramfs_.empty()) {
    const std::string initramfs = dir_ / (name_ + "-initramfs.cpio.gz");
    gint64 begin = g_get_monotonic_time();
    std::vector<std::string> argv = {"/bin/sh", env_path("SIDEBUS_SOURCE_ROOT") + "/tests/vm/make-initramfs.sh",
                                     kernel_.version, initramfs};
    argv.insert(argv.end(), spec_.guest_files.begin(), spec_.guest_files.end());
    ChildProcess make_initramfs({.name = "make-initramfs",
                                 .argv = argv,
                                 .stdout_path = dir_ / (name_ + "-make-initramfs.log")});
    std::optional<ExitStatus> built = make_initramfs.wait_for_exit(60s);
    if (!built || !built->success()) throw FixtureError("make-initramfs.sh failed: " + make_initramfs.log());
    g_test_message("initramfs built in %.2f s", (g_get_monotonic_time() - begin) / 1e6);
    initramfs_ = initramfs;
  }

  g_autofree char* command = g_base64_encode(reinterpret_cast<const guchar*>(spec_.command.data()),
                                             spec_.command.size());
  std::string append = "console=ttyS0 quiet panic=-1 sidebus.cmd=" + std::string(command) +
                       " sidebus.timeout=" + std::to_string(spec_.guest_timeout_s) +
                       " sidebus.wait=" + std::to_string(spec_.guest_wait_s) +
                       " sidebus.connect=virtio-serial:" + kQemuPortPath;
  if (!spec_.agent.empty()) append += " sidebus.agent=" + spec_.agent;
  if (!spec_.documents_socket.empty()) append += std::string(" sidebus.docs=") + kQemuGuestDocumentsPath;
  if (spec_.documents_hotplug) append += std::string(" sidebus.docs-hotplug=") + kQemuGuestDocumentsPath;
  if (!env_or("SIDEBUS_VM_DEBUG").empty()) append += " sidebus.debug=1";
  // A sanitizer build runs sanitized binaries in the guest too: same options.
  std::string guest_env;
  for (const char* name : {"ASAN_OPTIONS", "UBSAN_OPTIONS"}) {
    std::string value = env_or(name);
    if (!value.empty() && value.find(' ') == std::string::npos) guest_env += std::string(name) + "=" + value + " ";
  }
  if (!guest_env.empty()) {
    g_autofree char* encoded = g_base64_encode(reinterpret_cast<const guchar*>(guest_env.data()), guest_env.size());
    append += std::string(" sidebus.env=") + encoded;
  }

  boots_++;
  console_path_ = dir_ / (name_ + "-console-" + std::to_string(boots_) + ".log");
  std::vector<std::string> argv = {
      "qemu-system-x86_64", "-accel", "tcg", "-m", std::to_string(kQemuGuestMemoryMb), "-smp", "1",
      "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
      "-kernel", kernel_.image, "-initrd", initramfs_, "-append", append,
      "-serial", "file:" + console_path_,
      "-device", "virtio-serial",
      // reconnect: QEMU connects when it starts, long before the agent
      // opens the port; the broker drops a link that stays silent past its
      // handshake timeout (10 s), and QEMU must then connect again.
      "-chardev", "socket,id=link,reconnect=1,path=" + spec_.link_socket,
      "-device", std::string("virtserialport,chardev=link,name=") + kQemuPortName,
  };
  if (spec_.guest_files.empty())
    argv.insert(argv.end(), {"-virtfs", "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap"});
  if (!spec_.documents_socket.empty() || spec_.shared_memory) {
    // vhost-user needs the guest's memory shared with virtiofsd.
    std::string memory = "memory-backend-memfd,id=mem,share=on,size=" + std::to_string(kQemuGuestMemoryMb) + "M";
    argv.insert(argv.end(), {"-object", memory, "-numa", "node,memdev=mem"});
  }
  if (!spec_.documents_socket.empty()) {
    argv.insert(argv.end(), {"-chardev", "socket,id=documents,path=" + spec_.documents_socket,
                             "-device", "vhost-user-fs-pci,chardev=documents,tag=sidebus-docs"});
  }
  argv.insert(argv.end(), spec_.extra_args.begin(), spec_.extra_args.end());
  started_ = g_get_monotonic_time();
  qemu_.reset();
  qemu_ = std::make_unique<ChildProcess>(
      SpawnOptions{.name = name_, .argv = argv, .stdout_path = dir_ / (name_ + ".log")});
}

bool Qemu::running() { return qemu_ && qemu_->running(); }

std::string Qemu::wait_for_power_off(Timeout timeout) {
  if (!qemu_) return name_ + " was never started";
  bool exited = wait_until([this] { return !qemu_->running(); }, timeout);
  ExitStatus status = stop();
  if (!exited) return "the guest was still running after " + std::to_string(timeout.count() / 1000) + " s";
  if (!status.success()) return "QEMU " + status.describe() + " (its log is printed below)";
  return "";
}

bool Qemu::wait_for(const std::function<bool()>& condition, Timeout timeout) {
  wait_until([&] { return condition() || !running(); }, timeout);
  return condition();
}

ExitStatus Qemu::stop(Timeout timeout) {
  if (!qemu_) return ExitStatus{};
  ExitStatus status = qemu_->stop(timeout);
  g_test_message("%s ran %.1f s (wall clock), %s", name_.c_str(), (g_get_monotonic_time() - started_) / 1e6,
                 status.describe().c_str());
  return status;
}

std::string Qemu::console() const { return read_file(console_path_).value_or(""); }

void Qemu::dump() const {
  g_test_message("---- guest console (%s) ----", console_path_.c_str());
  g_auto(GStrv) lines = g_strsplit(console().c_str(), "\n", -1);
  for (char** line = lines; *line != nullptr; line++) g_test_message("%s", g_strchomp(*line));
}

bool Checker::operator()(bool ok, const std::string& what) {
  if (ok) return true;
  if (!dumped_) qemu_.dump();
  dumped_ = true;
  g_test_fail_printf("%s", what.c_str());
  return false;
}

std::optional<GuestReport> run_to_power_off(Qemu& qemu, Checker& check) {
  qemu.start();
  std::string qemu_problem = qemu.wait_for_power_off();
  GuestReport report = parse_console(qemu.console());
  if (!env_or("SIDEBUS_VM_DEBUG").empty()) qemu.dump();
  g_test_message("guest uptime: init %.2f s, portal ready %.2f s, command done %.2f s", report.init_uptime,
                 report.ready_uptime, report.exit_uptime);
  std::string errors;
  for (const std::string& error : report.errors) errors += (errors.empty() ? "" : "; ") + error;
  if (!check(report.errors.empty(), "the guest reported: " + errors)) return std::nullopt;
  if (!check(qemu_problem.empty(), qemu_problem)) return std::nullopt;
  if (!qemu.spec().agent.empty() && !check(report.ready, "the portal never appeared on the guest bus"))
    return std::nullopt;
  if (!check(report.exited, "the guest command never finished")) return std::nullopt;
  return report;
}

// ---- QemuHost ---------------------------------------------------------------

QemuHost::QemuHost(QemuHostOptions options)
    : options_(std::move(options)), state_("sidebus-test-qemu-state"), portal_(options_.portal) {
  restart_broker();
}

QemuHost::~QemuHost() { broker_.reset(); }

void QemuHost::restart_broker() {
  broker_.reset();
  BrokerOptions options;
  if (!options_.virtiofsd.empty()) options.extra_args = {"--virtiofsd", options_.virtiofsd};
  options.host_bus_address = portal_.bus_address();
  options.listen = {"unix:" + options_.link_socket + ",nofds"};
  options.vm_name = options_.vm_name;
  options.guest_documents_path = kQemuGuestDocumentsPath;
  options.state_dir = state_.path();
  options.config = {{"50-vm.json", R"({"portals": {"filechooser": {"enabled": true},
                                                  "openuri": {"enabled": true}}})"}};
  broker_ = std::make_unique<Broker>(options);
}

}  // namespace sidebus::test
