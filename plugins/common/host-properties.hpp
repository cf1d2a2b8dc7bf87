// host-properties.hpp — HostProperties: the properties of one host portal
// interface as they are now, for a plugin that serves them to the guest
// (ScreenCast's AvailableSourceTypes, Camera's IsCameraPresent) or checks
// guest input against them.
//
// The core reads every property once, before the plugin starts
// (sidebus_context_get_host_property); afterwards the host portal announces
// changes with org.freedesktop.DBus.Properties.PropertiesChanged on its
// object — xdg-desktop-portal emits it when its backend's source types
// change, or (since 1.19) when a camera comes or goes. HostProperties starts
// from the core's values and follows those signals, calling @on_changed for
// each property that changed, so the guest's copy follows the host's.
// Values of an unexpected type are ignored (the host is trusted, but a
// plugin still must not crash on a bad variant).
#pragma once

#include <sidebus-plugin.h>

#include <functional>
#include <initializer_list>
#include <map>
#include <string>

namespace sidebus::plugins {

class HostProperties {
 public:
  using ChangedFunc = std::function<void(const std::string& name, GVariant* value)>;

  // Follows @names of @interface_name, each expected to have @type (e.g. "u").
  HostProperties(SidebusContext* context, const char* interface_name,
                 std::initializer_list<std::pair<const char*, const char*>> names_and_types, ChangedFunc on_changed);
  ~HostProperties();
  HostProperties(const HostProperties&) = delete;
  HostProperties& operator=(const HostProperties&) = delete;

  // The current value of @name, or nullptr if the host has none (borrowed).
  GVariant* get(const std::string& name) const;
  guint32 get_uint32(const std::string& name, guint32 fallback = 0) const;
  bool get_boolean(const std::string& name, bool fallback = false) const;

 private:
  static void on_properties_changed(SidebusContext* context, const char* object_path, const char* signal_name,
                                    GVariant* parameters, gpointer user_data);
  SidebusContext* context_;
  std::string interface_name_;
  std::map<std::string, std::string> types_;     // name → expected type
  std::map<std::string, GVariant*> values_;      // name → value (a reference)
  ChangedFunc on_changed_;
  guint subscription_ = 0;
};

}  // namespace sidebus::plugins
