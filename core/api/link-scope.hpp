// portal-context.hpp — what stands behind the opaque SidebusContext of the
// plugin API. One LinkScope per guest link is shared by every plugin on that
// link (connections, file export, the request table and its limits); each
// plugin instance gets its own SidebusContext pointing at it.
#pragma once

#include <gio/gio.h>
#include <json-glib/json-glib.h>

#include <memory>
#include <string>
#include <vector>

#include "sidebus-plugin.h"

namespace sidebus {

class DocumentExporter;
class RequestTable;

struct LinkScope {
  GDBusConnection* guest = nullptr;  // borrowed from the GuestLink
  GDBusConnection* host = nullptr;   // borrowed from the Broker
  std::string vm_name;
  std::string transport;             // for messages: "unix:/run/…", "vsock:1234"
  SidebusFdTransport fd_transport = SIDEBUS_FD_TRANSPORT_NONE;
  DocumentExporter* exporter = nullptr;
  std::unique_ptr<RequestTable> requests;

  LinkScope();
  ~LinkScope();
};

}  // namespace sidebus

struct _SidebusContext {
  sidebus::LinkScope* link = nullptr;
  std::string portal_name;
  JsonObject* config = nullptr;  // borrowed from Config
  std::vector<GDBusInterfaceSkeleton*> exported;  // refs held; unexported on destruction

  _SidebusContext() = default;
  _SidebusContext(const _SidebusContext&) = delete;
  _SidebusContext& operator=(const _SidebusContext&) = delete;
  ~_SidebusContext();
};
