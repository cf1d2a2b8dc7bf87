// SPDX-License-Identifier: LGPL-2.1-or-later
// vm.cpp — Vm (vm.hpp): the Topology options a VM needs, the documents
// symlink made after each broker start, and the portal calls.
#include "support/vm.hpp"

#include <glib/gstdio.h>
#include <unistd.h>

#include "documents/app-id.hpp"
#include "support/files.hpp"

namespace sidebus::test {

VariantPtr with_handle_token(const std::string& options) {
  VariantPtr parsed = parse("a{sv}", options);
  g_auto(GVariantBuilder) builder = G_VARIANT_BUILDER_INIT(G_VARIANT_TYPE_VARDICT);
  GVariantIter iter;
  const char* key;
  GVariant* value;
  g_variant_iter_init(&iter, parsed.get());
  while (g_variant_iter_loop(&iter, "{&sv}", &key, &value)) g_variant_builder_add(&builder, "{sv}", key, value);
  g_variant_builder_add(&builder, "{sv}", "handle_token", g_variant_new_string(unique_token().c_str()));
  return VariantPtr(g_variant_ref_sink(g_variant_builder_end(&builder)));
}

Vm::Vm(VmOptions options)
    : options_(std::move(options)), guest_files_("sidebus-test-vm-guest"), state_("sidebus-test-vm-state") {
  std::string portals;
  for (const std::string& portal : options_.portals)
    portals += (portals.empty() ? "" : ", ") + ("\"" + portal + "\": {\"enabled\": true}");
  TopologyOptions topology;
  topology.host = options_.host;
  topology.shared_host = options_.shared_host;
  topology.broker.vm_name = options_.name;
  topology.broker.state_dir = state_.path();
  topology.broker.config = {{"50-portals.json", R"({"portals": {)" + portals + "}}"}};
  topology.broker.config.insert(topology.broker.config.end(), options_.config.begin(), options_.config.end());
  topology.broker.extra_args = options_.broker_args;
  if (options_.byte_only) topology.broker.listen = {"unix:" + (guest_files_ / "link.sock") + ",nofds"};
  topology.agent_args = options_.agent_args;
  if (options_.byte_only && options_.agent_byte_only)
    topology.agent_args.insert(topology.agent_args.end(), {"--connect", topology.broker.listen[0]});
  if (options_.documents == GuestDocuments::kSymlinkToView) {
    documents_ = guest_files_ / "documents";
    topology.broker.guest_documents_path = documents_;
    // What the VMM shares into the guest: this VM's view of the mount, the
    // same path for every broker.
    topology.broker_started = [this](Broker& broker) {
      g_unlink(documents_.c_str());
      const std::string view = broker.runtime_dir() + "/doc/by-app/" + sidebus::app_id_for_vm(options_.name);
      if (symlink(view.c_str(), documents_.c_str()) != 0) throw FixtureError("cannot link " + documents_);
    };
  } else {
    topology.broker_started = [this](Broker& broker) {
      documents_ = broker.runtime_dir() + "/doc/by-app/" + sidebus::app_id_for_vm(options_.name);
    };
  }
  topology_ = std::make_unique<Topology>(std::move(topology));
}

Vm::~Vm() { topology_.reset(); }

void Vm::restart_broker() { topology_->restart_broker(); }

void Vm::stop_agent() { topology_->stop_agent(); }

void Vm::start_agent() {
  topology_->start_agent();
  if (!topology_->wait_for_guest_name())
    throw FixtureError("org.freedesktop.portal.Desktop did not come back on the guest bus (logs are printed below)");
}

std::unique_ptr<PortalRequest> Vm::file_chooser(const char* method, const std::string& options, const char* title,
                                                GDBusConnection* connection) {
  VariantPtr parsed = parse("a{sv}", options);
  return std::make_unique<PortalRequest>(connection ? connection : guest().connection(), kPortalBusName,
                                         "org.freedesktop.portal.FileChooser", method,
                                         g_variant_new("(ss@a{sv})", "x11:1234", title, parsed.get()));
}

std::unique_ptr<PortalRequest> Vm::open_uri(const std::string& uri, const std::string& options) {
  VariantPtr with_token = with_handle_token(options);
  return std::make_unique<PortalRequest>(guest().connection(), kPortalBusName, "org.freedesktop.portal.OpenURI",
                                         "OpenURI",
                                         g_variant_new("(ss@a{sv})", "x11:1234", uri.c_str(), with_token.get()));
}

std::string Vm::share_document(const std::string& host_path) {
  host().set_reply("OpenFile", kResponseSuccess, uris_result({host_path}));
  VariantPtr options = with_handle_token("{}");
  PortalRequest pick(guest().connection(), kPortalBusName, "org.freedesktop.portal.FileChooser", "OpenFile",
                     g_variant_new("(ss@a{sv})", "", "Pick a file", options.get()));
  if (pick.error()) throw FixtureError(std::string("FileChooser.OpenFile failed: ") + pick.error()->message);
  if (!pick.wait_for_response() || pick.response() != kResponseSuccess)
    throw FixtureError("FileChooser.OpenFile did not succeed (logs are printed below)");
  std::vector<std::string> uris = strv(pick.results(), "uris");
  if (uris.empty()) throw FixtureError("FileChooser.OpenFile returned no uris");
  return path_of(uris[0]);
}

std::string Vm::document_id(const std::string& guest_uri, const std::string& expected_name) const {
  std::string path = path_of(guest_uri);
  std::string prefix = documents_ + "/";
  if (!path.starts_with(prefix)) throw FixtureError(guest_uri + " is not inside " + documents_);
  std::string rest = path.substr(prefix.size());
  size_t slash = rest.find('/');
  if (slash == std::string::npos || rest.substr(slash + 1) != expected_name)
    throw FixtureError(guest_uri + " is not <documents>/<doc-id>/" + expected_name);
  return rest.substr(0, slash);
}

std::string uris_result(const std::vector<std::string>& paths) {
  std::string text = "{'uris': <[";
  for (size_t i = 0; i < paths.size(); i++) text += (i ? ", '" : "'") + uri_for(paths[i]) + "'";
  return text + (paths.empty() ? "@as []" : "") + "]>}";
}

}  // namespace sidebus::test
