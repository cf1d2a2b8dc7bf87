// options.cpp — sidebus_filter_options(): an option dictionary from the guest
// is rebuilt from a table of known keys, each with its type and optional
// validator. Unknown keys are dropped, so nothing the table does not name
// ever reaches the host portal.
#include <cstring>

#include "api/link-scope.hpp"

extern "C" GVariant* sidebus_filter_options(SidebusContext* context, GVariant* options, const SidebusOption* table,
                                            gsize n_entries, GError** error) {
  g_return_val_if_fail(options != nullptr && g_variant_is_of_type(options, G_VARIANT_TYPE_VARDICT), nullptr);

  g_auto(GVariantBuilder) builder = G_VARIANT_BUILDER_INIT(G_VARIANT_TYPE_VARDICT);
  GVariantIter iter;
  const char* key;
  GVariant* raw_value;
  g_variant_iter_init(&iter, options);
  while (g_variant_iter_loop(&iter, "{&sv}", &key, &raw_value)) {
    if (strcmp(key, "handle_token") == 0 || strcmp(key, "session_handle_token") == 0) continue;
    const SidebusOption* entry = nullptr;
    for (gsize i = 0; i < n_entries; i++) {
      if (strcmp(table[i].key, key) == 0) {
        entry = &table[i];
        break;
      }
    }
    if (entry == nullptr) {
      sidebus_context_log(context, G_LOG_LEVEL_DEBUG, "dropping unknown option '%s'", key);
      continue;
    }
    if (!g_variant_is_of_type(raw_value, G_VARIANT_TYPE(entry->type))) {
      g_set_error(error, SIDEBUS_ERROR, SIDEBUS_ERROR_INVALID_ARGUMENT, "option '%s' must be of type '%s', not '%s'",
                  key, entry->type, g_variant_get_type_string(raw_value));
      return nullptr;
    }
    if (entry->validate != nullptr && !entry->validate(context, key, raw_value, error)) {
      g_prefix_error(error, "option '%s': ", key);
      return nullptr;
    }
    g_variant_builder_add(&builder, "{sv}", key, raw_value);
  }
  return g_variant_ref_sink(g_variant_builder_end(&builder));
}
