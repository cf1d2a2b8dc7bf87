// host-properties.cpp — see host-properties.hpp.
#include "host-properties.hpp"

#include <cstring>

namespace sidebus::plugins {

HostProperties::HostProperties(SidebusContext* context, const char* interface_name,
                               std::initializer_list<std::pair<const char*, const char*>> names_and_types,
                               ChangedFunc on_changed)
    : context_(context), interface_name_(interface_name), on_changed_(std::move(on_changed)) {
  for (const auto& [name, type] : names_and_types) {
    types_[name] = type;
    GVariant* value = sidebus_context_get_host_property(context, interface_name, name);
    if (value != nullptr && !g_variant_is_of_type(value, G_VARIANT_TYPE(type))) g_clear_pointer(&value, g_variant_unref);
    if (value != nullptr) values_[name] = value;
  }
  // Unsubscribed in the destructor, which runs no later than stop(); the
  // core drops subscriptions at stop() too, and no callback runs after it.
  subscription_ = sidebus_context_subscribe_host_signal(context, "org.freedesktop.DBus.Properties", "PropertiesChanged",
                                                        SIDEBUS_PORTAL_OBJECT_PATH, on_properties_changed, this,
                                                        nullptr);
}

HostProperties::~HostProperties() {
  if (subscription_ != 0) sidebus_context_unsubscribe_host_signal(context_, subscription_);
  for (auto& [name, value] : values_) g_variant_unref(value);
}

GVariant* HostProperties::get(const std::string& name) const {
  auto found = values_.find(name);
  return found != values_.end() ? found->second : nullptr;
}

guint32 HostProperties::get_uint32(const std::string& name, guint32 fallback) const {
  GVariant* value = get(name);
  return value != nullptr && g_variant_is_of_type(value, G_VARIANT_TYPE_UINT32) ? g_variant_get_uint32(value)
                                                                                 : fallback;
}

bool HostProperties::get_boolean(const std::string& name, bool fallback) const {
  GVariant* value = get(name);
  return value != nullptr && g_variant_is_of_type(value, G_VARIANT_TYPE_BOOLEAN) ? g_variant_get_boolean(value)
                                                                                  : fallback;
}

void HostProperties::on_properties_changed(SidebusContext*, const char*, const char*, GVariant* parameters,
                                           gpointer user_data) {
  auto* self = static_cast<HostProperties*>(user_data);
  if (!g_variant_is_of_type(parameters, G_VARIANT_TYPE("(sa{sv}as)"))) return;
  const char* interface_name;
  g_autoptr(GVariant) changed = nullptr;
  g_variant_get(parameters, "(&s@a{sv}as)", &interface_name, &changed, nullptr);
  if (self->interface_name_ != interface_name) return;
  GVariantIter iter;
  const char* name;
  GVariant* value;
  g_variant_iter_init(&iter, changed);
  while (g_variant_iter_next(&iter, "{&sv}", &name, &value)) {
    auto type = self->types_.find(name);
    if (type == self->types_.end() || !g_variant_is_of_type(value, G_VARIANT_TYPE(type->second.c_str()))) {
      g_variant_unref(value);
      continue;
    }
    GVariant*& slot = self->values_[name];
    const bool same = slot != nullptr && g_variant_equal(slot, value);
    if (slot != nullptr) g_variant_unref(slot);
    slot = value;
    if (!same) {
      sidebus_context_log(self->context_, G_LOG_LEVEL_DEBUG, "host %s.%s changed", interface_name, name);
      if (self->on_changed_) self->on_changed_(name, value);
    }
  }
}

}  // namespace sidebus::plugins
