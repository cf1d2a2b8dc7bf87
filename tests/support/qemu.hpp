// SPDX-License-Identifier: LGPL-2.1-or-later
// qemu.hpp — a real VM for the tests: QEMU (TCG: nested KVM hangs on the
// machines this runs on) boots the host's Debian kernel with a tiny busybox
// initramfs built at test time (tests/vm/make-initramfs.sh). Its /init
// (tests/vm/guest-init.sh) sees the host's root read-only over 9p, so the
// guest runs the host's own dbus-daemon, gdbus and freshly built
// sidebus-agent in a chroot of it. The link is a virtio-serial port whose
// host end is a QEMU chardev connecting to a unix socket here (byte-only: the
// broker listens with ",nofds"); the broker's document view can be mounted
// over virtiofs. The guest reports on its serial console between markers
// (see guest-init.sh): parse_console().
//
// Qemu is restartable: start(), wait for power-off (wait_for_power_off) or
// for a condition (wait_for), stop(), start() again with the same initramfs
// and files; several can run at once (one name each), e.g. the two ends of
// a migration. QemuHost is the host side the guest's agent talks to.
//
// SIDEBUS_VM_KERNEL=/boot/vmlinuz-VERSION picks the kernel; SIDEBUS_VM_DEBUG=1
// runs the guest agent with G_MESSAGES_DEBUG=all (guest-init.sh) and the
// tests print the guest console even when they pass.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "support/broker.hpp"
#include "support/host-portal.hpp"
#include "support/process.hpp"
#include "support/temp-dir.hpp"

namespace sidebus::test {

inline constexpr char kQemuPortName[] = "dev.sidebus.link";
inline constexpr char kQemuPortPath[] = "/dev/virtio-ports/dev.sidebus.link";
// Where the guest mounts the broker's document view (QemuSpec::documents_socket).
inline constexpr char kQemuGuestDocumentsPath[] = "/run/sidebus/documents";
// The guest's own watchdog powers off after kQemuGuestTimeout seconds;
// wait_for_power_off() gives up after kQemuTimeout. Both far above a normal
// run (~10-30 s on 2 cores under TCG).
inline constexpr int kQemuGuestTimeout = 120;
inline constexpr int kQemuGuestMemoryMb = 512;
inline constexpr Timeout kQemuTimeout = 150s;

struct Kernel {
  std::string image;
  std::string version;
};

// The newest readable /boot/vmlinuz-VERSION whose modules include 9p (the
// -cloud flavour has none), or the one SIDEBUS_VM_KERNEL names; nullopt with
// @why_not set when there is none.
std::optional<Kernel> find_kernel(std::string* why_not);
// The kernel to boot, or nullopt after g_test_skip() said why there is none
// (no qemu-system-x86_64, no usable kernel).
std::optional<Kernel> kernel_or_skip();
// The guest sees the host's root, except /tmp and /run (its own tmpfs).
bool visible_in_guest(const std::string& path);
// False after g_test_skip() if one of @paths (binaries the guest runs from
// the host's root) is not visible in the guest.
bool guest_binaries_or_skip(const std::vector<std::string>& paths);
// The virtiofsd to give the broker (--virtiofsd), or "" if there is none:
// QEMU 7.2 ships the C one (Debian 12); else the standalone Rust one.
std::string find_virtiofsd();

// What the guest reported on its console.
struct GuestReport {
  bool ready = false;               // SIDEBUS-READY: the portal name appeared
  bool exited = false;              // SIDEBUS-EXIT seen
  int exit_status = -1;
  std::string result;               // between SIDEBUS-RESULT-BEGIN and -END
  std::vector<std::string> errors;  // SIDEBUS-ERROR messages
  double init_uptime = -1, ready_uptime = -1, exit_uptime = -1;
};
GuestReport parse_console(const std::string& console);

struct QemuSpec {
  std::string command;      // run in the guest with /bin/sh -c, in the host-root chroot
  std::string link_socket;  // host unix socket the virtio-serial port connects to
  std::string agent;        // agent binary (host path); empty: no guest bus, no agent
  // The broker's virtiofsd socket (--virtiofsd) for its document view,
  // mounted at kQemuGuestDocumentsPath; empty: none.
  std::string documents_socket;
  std::vector<std::string> extra_args;  // more QEMU arguments (e.g. a -drive)
  // Non-empty: no 9p share of the host's root (QEMU cannot migrate a guest
  // that has one mounted); these host files (programs with the shared
  // libraries they need, config files) are copied into the initramfs at
  // their host paths, and they are all the guest has.
  std::vector<std::string> guest_files;
  // Boot this initramfs instead of building one (the destination of a
  // migration boots nothing, but must be started like its source).
  std::string initramfs;
  // The guest's RAM in a shared memfd, as vhost-user devices need (also when
  // the device is only hot-plugged later: the memory cannot change then).
  bool shared_memory = false;
  // Mount the virtiofs share tagged sidebus-docs at kQemuGuestDocumentsPath
  // whenever it appears (hot-plugged after a migration).
  bool documents_hotplug = false;
  int guest_timeout_s = kQemuGuestTimeout;  // the guest's watchdog
  int guest_wait_s = 60;                    // bound on the portal name and on the command
};

// One VM, booted as often as asked, its files in @dir named after @name.
// QEMU is a ChildProcess: stopped by stop() or the destructor, and killed if
// the test dies, whatever happens.
class Qemu {
 public:
  Qemu(Kernel kernel, const TempDir& dir, QemuSpec spec, std::string name = "qemu");
  ~Qemu();
  Qemu(const Qemu&) = delete;
  Qemu& operator=(const Qemu&) = delete;

  // What the next start() boots; change it between boots if need be.
  QemuSpec& spec() { return spec_; }
  // Builds the initramfs (on the first start) and starts QEMU; FixtureError
  // when it cannot or when it is running already.
  void start();
  bool running();
  // Until the guest powers off, or @timeout (then QEMU is stopped). Iterates
  // the main context meanwhile, so services of the test keep running. Empty
  // when the guest powered off; otherwise what went wrong.
  std::string wait_for_power_off(Timeout timeout = kQemuTimeout);
  // Until @condition holds (true), QEMU exits or @timeout passes (false).
  bool wait_for(const std::function<bool()>& condition, Timeout timeout = kQemuTimeout);
  // Stops QEMU (SIGTERM, then SIGKILL after @timeout); its status.
  ExitStatus stop(Timeout timeout = 5s);
  int boots() const { return boots_; }
  // The initramfs it boots (built by the first start()).
  const std::string& initramfs() const { return initramfs_; }

  // The serial console of the current (or last) boot.
  std::string console() const;
  // The guest console into the test log (QEMU's own output is the
  // ChildProcess log, which is printed for a failed test).
  void dump() const;

 private:
  const Kernel kernel_;
  const TempDir& dir_;
  QemuSpec spec_;
  std::string name_;
  std::string initramfs_;
  std::string console_path_;
  std::unique_ptr<ChildProcess> qemu_;
  gint64 started_ = 0;
  int boots_ = 0;
};

// Checks a condition; the first failure prints the VM's console. Non-fatal,
// so the test returns through its destructors (QEMU and the host side stop).
class Checker {
 public:
  explicit Checker(const Qemu& qemu) : qemu_(qemu) {}
  bool operator()(bool ok, const std::string& what);

 private:
  const Qemu& qemu_;
  bool dumped_ = false;
};

// Boots @qemu, waits for it to power off and checks that the guest got as
// far as running its command (and, with an agent, saw the portal first).
// The report, or nullopt after @check failed the test.
std::optional<GuestReport> run_to_power_off(Qemu& qemu, Checker& check);

// The host end of a QEMU guest's agent: HostPortal + Broker listening
// byte-only on @link_socket, where QEMU's chardev connects, with FileChooser
// and OpenURI enabled and the guest documents path kQemuGuestDocumentsPath.
// The broker can be restarted on the same state directory.
struct QemuHostOptions {
  std::string link_socket;
  std::string virtiofsd;  // non-empty: the broker serves the documents (--virtiofsd)
  std::string vm_name = "vmtest";
  HostPortalOptions portal;  // the host portal's (applications to launch, …)
};

class QemuHost {
 public:
  explicit QemuHost(QemuHostOptions options);
  ~QemuHost();

  HostPortal& portal() { return portal_; }
  Broker& broker() { return *broker_; }
  // A new broker on the same state directory and link socket.
  void restart_broker();

 private:
  QemuHostOptions options_;
  TempDir state_;
  HostPortal portal_;
  std::unique_ptr<Broker> broker_;
};

}  // namespace sidebus::test
