// SPDX-License-Identifier: LGPL-2.1-or-later
// options.cpp — sidebus_filter_options(): an option dictionary from the guest
// is rebuilt from a table of known keys, each with its type and optional
// validator. Unknown keys are dropped, so nothing the table does not name
// ever reaches the host portal. The dictionary's size is checked before any
// key is looked at, and what was dropped is logged once per call (a guest
// may send thousands of keys; --verbose must not write a line for each).
#include <cstring>

#include "api/context.hpp"

extern "C" GVariant* sidebus_filter_options(SidebusContext* context, GVariant* options, const SidebusOption* table,
                                            gsize n_entries, GError** error) {
  g_return_val_if_fail(options != nullptr && g_variant_is_of_type(options, G_VARIANT_TYPE_VARDICT), nullptr);
  gsize n_options = g_variant_n_children(options);
  if (n_options > SIDEBUS_MAX_OPTIONS) {
    g_set_error(error, SIDEBUS_ERROR, SIDEBUS_ERROR_INVALID_ARGUMENT, "%zu options, at most %d are accepted",
                n_options, SIDEBUS_MAX_OPTIONS);
    return nullptr;
  }

  g_auto(GVariantBuilder) builder = G_VARIANT_BUILDER_INIT(G_VARIANT_TYPE_VARDICT);
  gsize dropped = 0;
  g_autofree char* first_dropped = nullptr;
  GVariantIter iter;
  const char* key;
  GVariant* next_value;
  g_variant_iter_init(&iter, options);
  // Not g_variant_iter_loop(): returning from inside it leaks the value, so
  // every refused option (as large as the guest's message) stayed in memory.
  while (g_variant_iter_next(&iter, "{&sv}", &key, &next_value)) {
    g_autoptr(GVariant) raw_value = next_value;
    if (strcmp(key, "handle_token") == 0 || strcmp(key, "session_handle_token") == 0) continue;
    const SidebusOption* entry = nullptr;
    for (gsize i = 0; i < n_entries; i++) {
      if (strcmp(table[i].key, key) == 0) {
        entry = &table[i];
        break;
      }
    }
    if (entry == nullptr) {
      if (dropped++ == 0) first_dropped = g_strndup(key, 64);
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
  if (dropped > 0)
    sidebus_context_log(context, G_LOG_LEVEL_DEBUG, "dropped %zu unknown option%s (the first: '%s')", dropped,
                        dropped == 1 ? "" : "s", first_dropped);
  return g_variant_ref_sink(g_variant_builder_end(&builder));
}
