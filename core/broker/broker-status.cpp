// SPDX-License-Identifier: LGPL-2.1-or-later
// broker-status.cpp — BrokerStatus and ReloadReport as JSON (see
// broker-status.hpp); the field names are the documented interface of
// `sidebusctl status`, so they only ever grow.
#include "broker/broker-status.hpp"

namespace sidebus {

namespace {

void add_strings(JsonBuilder* builder, const char* name, const std::vector<std::string>& values) {
  json_builder_set_member_name(builder, name);
  json_builder_begin_array(builder);
  for (const std::string& value : values) json_builder_add_string_value(builder, value.c_str());
  json_builder_end_array(builder);
}

void add_string(JsonBuilder* builder, const char* name, const std::string& value) {
  json_builder_set_member_name(builder, name);
  json_builder_add_string_value(builder, value.c_str());
}

void add_int(JsonBuilder* builder, const char* name, int64_t value) {
  json_builder_set_member_name(builder, name);
  json_builder_add_int_value(builder, value);
}

void add_seconds(JsonBuilder* builder, const char* name, double value) {
  json_builder_set_member_name(builder, name);
  json_builder_add_double_value(builder, double(int64_t(value * 1000)) / 1000);  // milliseconds are plenty
}

void add_bool(JsonBuilder* builder, const char* name, bool value) {
  json_builder_set_member_name(builder, name);
  json_builder_add_boolean_value(builder, value);
}

void add_link(JsonBuilder* builder, const std::optional<LinkStatus>& link) {
  json_builder_set_member_name(builder, "link");
  json_builder_begin_object(builder);
  add_string(builder, "state", link ? link->state : "down");
  if (link) {
    add_int(builder, "serial", int64_t(link->serial));
    add_seconds(builder, "up_seconds", link->up_seconds);
    add_string(builder, "transport", link->transport);
    add_string(builder, "fd_mode", link->fd_mode);
    add_int(builder, "protocol", link->protocol);
    add_string(builder, "agent_version", link->agent_version);
    add_int(builder, "guest_uid", link->guest_uid);
    add_string(builder, "guest_name", link->guest_name);
  }
  json_builder_end_object(builder);
}

JsonNode* finish(JsonBuilder* builder) {
  json_builder_end_object(builder);
  return json_builder_get_root(builder);
}

}  // namespace

JsonNode* to_json(const BrokerStatus& status) {
  g_autoptr(JsonBuilder) builder = json_builder_new();
  json_builder_begin_object(builder);
  add_string(builder, "vm", status.vm_name);
  add_string(builder, "version", status.version);
  add_int(builder, "pid", status.pid);
  add_seconds(builder, "uptime_seconds", status.uptime_seconds);
  add_link(builder, status.link);
  add_int(builder, "links_accepted", int64_t(status.links_accepted));
  add_bool(builder, "host_portal_ready", status.host_portal_ready);
  add_strings(builder, "enabled_portals", status.enabled_portals);

  json_builder_set_member_name(builder, "portals");
  json_builder_begin_array(builder);
  for (const PortalStatus& portal : status.serving) {
    json_builder_begin_object(builder);
    add_string(builder, "name", portal.name);
    json_builder_set_member_name(builder, "interfaces");
    json_builder_begin_object(builder);
    for (const auto& [interface_name, version] : portal.interfaces) add_int(builder, interface_name.c_str(), version);
    json_builder_end_object(builder);
    json_builder_end_object(builder);
  }
  json_builder_end_array(builder);

  add_int(builder, "pending_requests", int64_t(status.pending_requests));
  add_int(builder, "sessions", int64_t(status.sessions));
  add_int(builder, "exported_documents", int64_t(status.exported_documents));

  json_builder_set_member_name(builder, "private_bus");
  json_builder_begin_object(builder);
  add_int(builder, "helper_restarts", status.helper_restarts);
  json_builder_set_member_name(builder, "helper_exits");
  json_builder_begin_object(builder);
  for (const auto& [helper, exits] : status.helper_exits) add_int(builder, helper.c_str(), exits);
  json_builder_end_object(builder);
  add_bool(builder, "given_up", status.helpers_given_up);
  json_builder_end_object(builder);

  json_builder_set_member_name(builder, "config");
  json_builder_begin_object(builder);
  add_strings(builder, "files", status.config_files);
  add_int(builder, "reloads", status.reloads);
  if (!status.last_reload_error.empty()) add_string(builder, "last_reload_error", status.last_reload_error);
  json_builder_set_member_name(builder, "broker");
  json_builder_begin_object(builder);
  for (const auto& [key, node] : status.broker_settings) {
    json_builder_set_member_name(builder, key.c_str());
    json_builder_add_value(builder, json_node_copy(node));
  }
  json_builder_end_object(builder);
  add_strings(builder, "pending_next_link", status.pending_next_link);
  json_builder_end_object(builder);

  add_string(builder, "runtime_dir", status.runtime_dir);
  add_string(builder, "state_dir", status.state_dir);
  return finish(builder);
}

JsonNode* to_json(const ReloadReport& report) {
  g_autoptr(JsonBuilder) builder = json_builder_new();
  json_builder_begin_object(builder);
  add_strings(builder, "files", report.files);
  add_strings(builder, "applied", report.applied);
  add_strings(builder, "next_link", report.next_link);
  add_bool(builder, "portals_restarted", report.portals_restarted);
  add_strings(builder, "enabled_portals", report.enabled_portals);
  return finish(builder);
}

std::string summary_line(const BrokerStatus& status) {
  if (!status.link) return "VM " + status.vm_name + ": waiting for the guest agent";
  std::string agent = "agent " + status.link->agent_version + " on " + status.link->transport;
  if (status.link->state != "serving")
    return "VM " + status.vm_name + ": link up (" + agent + "), waiting for the host's xdg-desktop-portal";
  std::string names;
  for (const PortalStatus& portal : status.serving) names += (names.empty() ? "" : ", ") + portal.name;
  return "VM " + status.vm_name + ": serving the guest (" + agent + "); portals: " + (names.empty() ? "none" : names);
}

}  // namespace sidebus
