// SPDX-License-Identifier: LGPL-2.1-or-later
// vm.hpp — Vm, one VM as the portal tests see it, on this machine: the host
// portal stack (HostPortal), the VM's session bus (GuestBus), the broker for
// this VM with the portals it enables, and the agent on its link — a
// Topology (topology.hpp) with what a VMM would add:
//  - the guest's documents path: by default a symlink in the guest's own
//    files to this VM's view of the broker's document mount,
//    <runtime-dir>/doc/by-app/<app id>, as a VMM shares it (virtiofs), so
//    the guest reads and writes with exactly the permissions the VM was
//    granted; and, as in a VM, the same path across broker restarts. Or the
//    broker's default (the view itself, no symlink);
//  - a state directory that outlives the broker, so restart_broker() is a
//    new broker process on the same state, as after a host reboot;
//  - optionally a byte-only link (unix:PATH,nofds), like a virtio-serial port.
// And the calls portal tests make over and over: FileChooser and OpenURI
// requests on the guest bus, and sharing a host file with the guest the way
// a user does (FileChooser.OpenFile, the backend picking it).
//
// A new integration test: `Vm vm({.portals = {"filechooser"}});`, script the
// "user" with vm.host().set_reply(), call with vm.file_chooser() (or any
// PortalRequest on vm.guest().connection()), assert on the Response, the
// files and vm.host().backend_calls().
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "support/dbus.hpp"
#include "support/temp-dir.hpp"
#include "support/topology.hpp"

namespace sidebus::test {

enum class GuestDocuments {
  kSymlinkToView,  // <guest files>/documents → <runtime-dir>/doc/by-app/<app id>
  kBrokerDefault,  // BrokerOptions' default: the view's own path
};

struct VmOptions {
  std::string name = "testvm";  // the broker's --vm-name (the app id derives from it)
  // Portals enabled in the drop-in "50-portals.json".
  std::vector<std::string> portals = {"filechooser"};
  // More JSON drop-ins, file name → text, written after it (so they win),
  // e.g. {"60-openuri.json", R"({"portals": {"openuri": {"schemes": ["https"]}}})"}.
  std::vector<std::pair<std::string, std::string>> config;
  // The broker's end of the link is byte-only (unix:PATH,nofds), like a
  // virtio-serial port: fds cross it only as link protocol 2 forwards them.
  bool byte_only = false;
  GuestDocuments documents = GuestDocuments::kSymlinkToView;
  HostPortalOptions host;
  // A host shared with other Vms (it must outlive this one), instead of a
  // host of its own started from @host: two VMs on one desktop.
  HostPortal* shared_host = nullptr;
  std::vector<std::string> broker_args;  // extra command-line arguments
  // With byte_only: the agent's end is byte-only too (it connects to
  // unix:PATH,nofds), as both ends of vsock are.
  bool agent_byte_only = false;
  // Extra agent arguments, e.g. {"--link-protocol", "1"}: no fds at all.
  std::vector<std::string> agent_args;
};

class Vm {
 public:
  explicit Vm(VmOptions options = {});
  ~Vm();
  Vm(const Vm&) = delete;
  Vm& operator=(const Vm&) = delete;

  HostPortal& host() { return topology_->host(); }
  GuestBus& guest() { return topology_->guest(); }
  Broker& broker() { return topology_->broker(); }
  Agent& agent() { return topology_->agent(); }
  Topology& topology() { return *topology_; }
  const VmOptions& options() const { return options_; }
  const std::string& name() const { return options_.name; }
  // Files of the guest's own (not shared with the host): the documents
  // symlink, a byte-only link's socket, whatever a test writes there.
  const TempDir& guest_files() const { return guest_files_; }
  // Where the guest sees its documents.
  const std::string& documents() const { return documents_; }

  // A new broker process on the same state directory (and documents path),
  // its agent reconnected; returns once the portal is back on the guest bus.
  void restart_broker();
  // The agent goes (the guest loses the portal and the link closes), and
  // comes back; start_agent() returns once the portal is on the guest bus.
  void stop_agent();
  void start_agent();
  // Introspection XML of the portal object on the guest bus.
  std::string guest_introspect() { return topology_->guest_introspect(); }

  // FileChooser.@method("x11:1234", @title, @options) on the guest bus (or
  // @connection). @options (a{sv} text) are sent as they are: a test that
  // wants a handle_token writes one.
  std::unique_ptr<PortalRequest> file_chooser(const char* method, const std::string& options = "{}",
                                              const char* title = "title", GDBusConnection* connection = nullptr);
  // OpenURI.OpenURI("x11:1234", @uri, @options) on the guest bus, a fresh
  // handle_token appended to @options.
  std::unique_ptr<PortalRequest> open_uri(const std::string& uri, const std::string& options = "{}");
  // A host file given to the guest through FileChooser.OpenFile, as a user
  // would: the backend picks @host_path; returns the document's guest path.
  // FixtureError if the guest does not get it.
  std::string share_document(const std::string& host_path);
  // The document a guest URI names: "<documents>/<id>/<name>" → id, checking
  // the shape the guest is promised (FixtureError otherwise).
  std::string document_id(const std::string& guest_uri, const std::string& expected_name) const;

 private:
  VmOptions options_;
  TempDir guest_files_;  // first: outlives the brokers that name it on their command line
  TempDir state_;
  std::string documents_;
  std::unique_ptr<Topology> topology_;
};

// Host files the "user" picks from, in a directory of their own.
struct HostFiles {
  TempDir dir{"sidebus-host-files"};
  std::string add(const std::string& name, const std::string& contents) { return dir.write_file(name, contents); }
};

// A FileChooser backend's answer picking @paths: "{'uris': <[…]>}" (a{sv} text).
std::string uris_result(const std::vector<std::string>& paths);

// @options (a{sv} text) with "handle_token" = unique_token() appended.
VariantPtr with_handle_token(const std::string& options);

}  // namespace sidebus::test
