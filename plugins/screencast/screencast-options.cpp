// screencast-options.cpp — what a guest may ask of the host's screen cast,
// and what of the host's answer it gets.
//
// SelectSources: one table, as documented (version 5): key, type,
// validator; sidebus_filter_options() drops every other key and refuses
// wrong types. The validators refuse what the host portal would refuse
// (unknown bits, more than one cursor mode, a persist mode above 2, a
// restore token that is not a UUID — and a huge one before anything else
// looks at it); then "types" and "cursor_mode" are checked against what the
// host offers right now (AvailableSourceTypes, AvailableCursorModes), so a
// guest asking for virtual monitors on a host without them hears
// InvalidArgument with the reason, instead of a host dialog that cannot
// show what was asked. Options newer than the version the guest was told
// are dropped, as the host would ignore them.
//
// Start: only the documented results cross: "streams" with each stream's
// documented properties (by table, sizes capped) and "restore_token"
// (handled by screencast.cpp). Anything else the host adds stays on the host.
#include <cstdarg>
#include <cstring>

#include "screencast.hpp"

namespace screencast {
namespace {

constexpr gsize kMaxStreamIdLength = 256;  // "id", "mapping_id"

gboolean invalid(GError** error, const char* format, ...) G_GNUC_PRINTF(2, 3);
gboolean invalid(GError** error, const char* format, ...) {
  va_list args;
  va_start(args, format);
  g_autofree char* message = g_strdup_vprintf(format, args);
  va_end(args);
  g_set_error_literal(error, SIDEBUS_ERROR, SIDEBUS_ERROR_INVALID_ARGUMENT, message);
  return FALSE;
}

gboolean validate_types(SidebusContext*, const char*, GVariant* value, GError** error) {
  const guint32 types = g_variant_get_uint32(value);
  if ((types & ~kKnownSourceTypes) != 0)
    return invalid(error, "unknown source type bits 0x%x (known: 1 monitor, 2 window, 4 virtual)",
                   types & ~kKnownSourceTypes);
  return TRUE;
}

gboolean validate_cursor_mode(SidebusContext*, const char*, GVariant* value, GError** error) {
  const guint32 mode = g_variant_get_uint32(value);
  if (mode == 0 || (mode & (mode - 1)) != 0 || (mode & ~kKnownCursorModes) != 0)
    return invalid(error, "0x%x is not one cursor mode (1 hidden, 2 embedded, 4 metadata)", mode);
  return TRUE;
}

gboolean validate_persist_mode(SidebusContext*, const char*, GVariant* value, GError** error) {
  const guint32 mode = g_variant_get_uint32(value);
  if (mode > kPersistPersistent) return invalid(error, "%u is not a persist mode (0 none, 1 transient, 2 persistent)", mode);
  return TRUE;
}

gboolean validate_restore_token(SidebusContext*, const char*, GVariant* value, GError** error) {
  gsize length = 0;
  const char* token = g_variant_get_string(value, &length);
  if (length != kRestoreTokenLength || !g_uuid_string_is_valid(token))
    return invalid(error, "not a restore token (a UUID, %zu characters)", kRestoreTokenLength);
  return TRUE;
}

constexpr SidebusOption kSelectSourcesOptions[] = {
    {"types", "u", validate_types, {}},
    {"multiple", "b", nullptr, {}},
    {"cursor_mode", "u", validate_cursor_mode, {}},
    {"restore_token", "s", validate_restore_token, {}},
    {"persist_mode", "u", validate_persist_mode, {}},
};

// The version that brought each option (unlisted: 1).
struct OptionVersion {
  const char* key;
  guint32 since;
};
constexpr OptionVersion kOptionVersions[] = {
    {"cursor_mode", 2},
    {"restore_token", 4},
    {"persist_mode", 4},
};

guint32 option_since(const char* key) {
  for (const OptionVersion& entry : kOptionVersions)
    if (strcmp(entry.key, key) == 0) return entry.since;
  return 1;
}

// ---- Start's streams ------------------------------------------------------------

gboolean validate_stream_text(SidebusContext*, const char*, GVariant* value, GError** error) {
  gsize length = 0;
  g_variant_get_string(value, &length);
  if (length > kMaxStreamIdLength) return invalid(error, "longer than %zu bytes", kMaxStreamIdLength);
  return TRUE;
}

gboolean validate_size(SidebusContext*, const char*, GVariant* value, GError** error) {
  gint32 width = 0, height = 0;
  g_variant_get(value, "(ii)", &width, &height);
  if (width < 0 || height < 0) return invalid(error, "(%d, %d) is not a size", width, height);
  return TRUE;
}

constexpr SidebusOption kStreamProperties[] = {
    {"id", "s", validate_stream_text, {}},
    {"position", "(ii)", nullptr, {}},
    {"size", "(ii)", validate_size, {}},
    {"source_type", "u", nullptr, {}},
    {"mapping_id", "s", validate_stream_text, {}},
};

}  // namespace

GVariant* select_sources_options(SidebusContext* context, GVariant* guest_options, const HostOffer& offer,
                                 guint32 version, GError** error) {
  g_autoptr(GVariant) filtered = sidebus_filter_options(context, guest_options, kSelectSourcesOptions,
                                                        G_N_ELEMENTS(kSelectSourcesOptions), error);
  if (filtered == nullptr) return nullptr;
  guint32 types = 0, cursor_mode = 0;
  if (g_variant_lookup(filtered, "types", "u", &types) && (types & ~offer.source_types) != 0) {
    invalid(error, "option 'types': the host offers source types 0x%x; 0x%x is not among them", offer.source_types,
            types & ~offer.source_types);
    return nullptr;
  }
  if (g_variant_lookup(filtered, "cursor_mode", "u", &cursor_mode) && version >= option_since("cursor_mode") &&
      (cursor_mode & offer.cursor_modes) == 0) {
    invalid(error, "option 'cursor_mode': the host offers cursor modes 0x%x; %u is not among them",
            offer.cursor_modes, cursor_mode);
    return nullptr;
  }
  g_auto(GVariantBuilder) host_options = G_VARIANT_BUILDER_INIT(G_VARIANT_TYPE_VARDICT);
  GVariantIter iter;
  const char* key;
  GVariant* value;
  g_variant_iter_init(&iter, filtered);
  while (g_variant_iter_loop(&iter, "{&sv}", &key, &value)) {
    if (option_since(key) > version) {
      sidebus_context_log(context, G_LOG_LEVEL_DEBUG, "SelectSources: dropping '%s' (version %u; the guest was told %u)",
                          key, option_since(key), version);
      continue;
    }
    g_variant_builder_add(&host_options, "{sv}", key, value);
  }
  return g_variant_ref_sink(g_variant_builder_end(&host_options));
}

Stream::Stream(guint32 node_id, GVariant* properties)
    : node_id(node_id), properties(properties != nullptr ? g_variant_ref_sink(properties) : nullptr) {}
Stream::Stream(const Stream& other)
    : node_id(other.node_id), properties(other.properties != nullptr ? g_variant_ref(other.properties) : nullptr) {}
Stream& Stream::operator=(const Stream& other) {
  if (this == &other) return *this;
  if (properties != nullptr) g_variant_unref(properties);
  node_id = other.node_id;
  properties = other.properties != nullptr ? g_variant_ref(other.properties) : nullptr;
  return *this;
}
Stream::~Stream() {
  if (properties != nullptr) g_variant_unref(properties);
}

bool streams_from_results(SidebusContext* context, GVariant* host_results, std::vector<Stream>* streams,
                          GError** error) {
  g_autoptr(GVariant) value = g_variant_lookup_value(host_results, "streams", G_VARIANT_TYPE("a(ua{sv})"));
  if (value == nullptr || g_variant_n_children(value) == 0)
    return invalid(error, "the host granted no streams");
  if (g_variant_n_children(value) > kMaxStreams)
    return invalid(error, "the host granted %zu streams, at most %zu are passed on", g_variant_n_children(value),
                   kMaxStreams);
  streams->clear();
  GVariantIter iter;
  guint32 node_id;
  GVariant* properties;
  g_variant_iter_init(&iter, value);
  while (g_variant_iter_next(&iter, "(u@a{sv})", &node_id, &properties)) {
    g_autoptr(GVariant) owned = properties;
    GVariant* filtered =
        sidebus_filter_options(context, owned, kStreamProperties, G_N_ELEMENTS(kStreamProperties), error);
    if (filtered == nullptr) {
      g_prefix_error(error, "stream %u: ", node_id);
      return false;
    }
    streams->emplace_back(node_id, filtered);
    g_variant_unref(filtered);  // the Stream holds its own reference
  }
  return true;
}

GVariant* streams_variant(const std::vector<Stream>& streams) {
  g_auto(GVariantBuilder) builder = G_VARIANT_BUILDER_INIT(G_VARIANT_TYPE("a(ua{sv})"));
  for (const Stream& stream : streams) g_variant_builder_add(&builder, "(u@a{sv})", stream.node_id, stream.properties);
  return g_variant_builder_end(&builder);
}

}  // namespace screencast
