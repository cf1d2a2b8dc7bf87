// SPDX-License-Identifier: LGPL-2.1-or-later
// vmstate-blob.cpp — see vmstate-blob.hpp. The payload is a GVariant: GLib
// reads serialized GVariants from untrusted sources safely (every access is
// bounds-checked, a malformed one reads as defaults), and the normal-form
// check refuses anything that is not exactly what encode_vmstate() writes.
#include "documents/vmstate-blob.hpp"

#include <gio/gio.h>
#include <string.h>

#include <algorithm>
#include <set>

namespace sidebus {
namespace {

constexpr char kMagic[16] = {'s', 'i', 'd', 'e', 'b', 'u', 's', '-', 'v', 'm', 's', 't', 'a', 't', 'e', '\0'};
constexpr size_t kHeaderSize = sizeof kMagic + 3 * 4;
constexpr size_t kMacSize = 32;  // SHA-256
constexpr uint32_t kFlagAuthenticated = 1 << 0;
constexpr uint32_t kKnownFlags = kFlagAuthenticated;
constexpr size_t kMaxPathLength = 4096;  // PATH_MAX
constexpr char kRequestPathPrefix[] = "/org/freedesktop/portal/desktop/request/";
constexpr char kSessionPathPrefix[] = "/org/freedesktop/portal/desktop/session/";

void put_u32(std::string& out, uint32_t value) {
  for (int shift = 24; shift >= 0; shift -= 8) out += char((value >> shift) & 0xff);
}

uint32_t get_u32(const unsigned char* at) {
  return (uint32_t(at[0]) << 24) | (uint32_t(at[1]) << 16) | (uint32_t(at[2]) << 8) | uint32_t(at[3]);
}

std::string hmac_sha256(const std::string& key, const void* data, size_t size) {
  g_autoptr(GHmac) hmac = g_hmac_new(G_CHECKSUM_SHA256, reinterpret_cast<const guchar*>(key.data()), key.size());
  g_hmac_update(hmac, static_cast<const guchar*>(data), gssize(size));
  guint8 digest[kMacSize];
  gsize length = sizeof digest;
  g_hmac_get_digest(hmac, digest, &length);
  return std::string(reinterpret_cast<const char*>(digest), length);
}

// Constant time: a MAC is compared without telling how much of it matched.
bool same_mac(const std::string& a, const unsigned char* b) {
  unsigned char difference = 0;
  for (size_t i = 0; i < kMacSize; i++) difference |= static_cast<unsigned char>(a[i]) ^ b[i];
  return difference == 0;
}

bool invalid(GError** error, const char* format, ...) G_GNUC_PRINTF(2, 3);
bool invalid(GError** error, const char* format, ...) {
  va_list args;
  va_start(args, format);
  g_autofree char* message = g_strdup_vprintf(format, args);
  va_end(args);
  g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA, "refusing the migrated sidebus state: %s", message);
  return false;
}

// An absolute path with no empty, "." or ".." component (but "/" itself).
bool is_clean_absolute_path(const std::string& path) {
  if (path.empty() || path[0] != '/' || path.size() > kMaxPathLength) return false;
  if (path.find('\0') != std::string::npos) return false;
  if (path == "/") return true;
  if (path.back() == '/') return false;
  size_t start = 1;
  while (start <= path.size()) {
    size_t end = path.find('/', start);
    if (end == std::string::npos) end = path.size();
    std::string component = path.substr(start, end - start);
    if (component.empty() || component == "." || component == "..") return false;
    start = end + 1;
  }
  return true;
}

bool is_known_permission(const char* permission) {
  return std::any_of(std::begin(kDocumentPermissions), std::end(kDocumentPermissions),
                     [&](const char* known) { return strcmp(known, permission) == 0; });
}

// A guest object path under @prefix: one or more elements of [A-Za-z0-9_].
bool is_portal_object_path(const char* path, const char* prefix) {
  if (!g_variant_is_object_path(path) || !g_str_has_prefix(path, prefix)) return false;
  return strlen(path) > strlen(prefix) && strlen(path) <= 1024;
}

bool check_paths(GVariant* paths, const char* prefix, const char* what, std::vector<std::string>& out, GError** error) {
  GVariantIter iter;
  const char* path;
  g_variant_iter_init(&iter, paths);
  std::set<std::string> seen;
  while (g_variant_iter_next(&iter, "&s", &path)) {
    if (!is_portal_object_path(path, prefix)) return invalid(error, "“%s” is not a portal %s path", path, what);
    if (!seen.insert(path).second) return invalid(error, "the %s %s is listed twice", what, path);
    out.emplace_back(path);
  }
  return true;
}

}  // namespace

bool looks_like_document_id(const std::string& id) {
  return !id.empty() && id.size() <= 64 && std::all_of(id.begin(), id.end(), [](char c) { return g_ascii_isalnum(c); });
}

std::optional<std::string> encode_vmstate(const VmState& state, const std::string& key, GError** error) {
  g_auto(GVariantBuilder) documents = G_VARIANT_BUILDER_INIT(G_VARIANT_TYPE("a(sayttua{sas})"));
  for (const DocumentEntry& entry : state.documents) {
    g_auto(GVariantBuilder) permissions = G_VARIANT_BUILDER_INIT(G_VARIANT_TYPE("a{sas}"));
    for (const auto& [app_id, granted] : entry.permissions) {
      std::vector<const char*> strv;
      for (const std::string& permission : granted) strv.push_back(permission.c_str());
      strv.push_back(nullptr);
      g_variant_builder_add(&permissions, "{s^as}", app_id.c_str(), strv.data());
    }
    g_variant_builder_add(&documents, "(s^ayttu@a{sas})", entry.id.c_str(), entry.host_path.c_str(),
                          guint64(entry.directory_device), guint64(entry.directory_inode), guint32(entry.flags),
                          g_variant_builder_end(&permissions));
  }
  auto strv_of = [](const std::vector<std::string>& strings) {
    g_auto(GVariantBuilder) builder = G_VARIANT_BUILDER_INIT(G_VARIANT_TYPE_STRING_ARRAY);
    for (const std::string& string : strings) g_variant_builder_add(&builder, "s", string.c_str());
    return g_variant_builder_end(&builder);
  };
  g_autoptr(GVariant) payload = g_variant_ref_sink(
      g_variant_new("(s@a(sayttua{sas})@as@as)", state.app_id.c_str(), g_variant_builder_end(&documents),
                    strv_of(state.pending_requests), strv_of(state.sessions)));
  const size_t payload_size = g_variant_get_size(payload);
  const size_t total = kHeaderSize + payload_size + (key.empty() ? 0 : kMacSize);
  if (total > kMaxVmStateSize) {
    g_set_error(error, G_IO_ERROR, G_IO_ERROR_MESSAGE_TOO_LARGE,
                "the sidebus state of %zu documents is %zu bytes, more than QEMU's limit of %zu bytes for one "
                "helper (dbus-vmstate): this VM has too many documents to migrate",
                state.documents.size(), total, kMaxVmStateSize);
    return std::nullopt;
  }
  std::string blob(kMagic, sizeof kMagic);
  put_u32(blob, kVmStateFormatVersion);
  put_u32(blob, key.empty() ? 0 : kFlagAuthenticated);
  put_u32(blob, uint32_t(payload_size));
  blob.append(static_cast<const char*>(g_variant_get_data(payload)), payload_size);
  if (!key.empty()) blob += hmac_sha256(key, blob.data(), blob.size());
  return blob;
}

std::optional<VmState> decode_vmstate(const void* data, size_t size, const std::string& key,
                                      const std::string& expected_app_id, GError** error) {
  const auto* bytes = static_cast<const unsigned char*>(data);
  if (size > kMaxVmStateSize) {
    invalid(error, "%zu bytes, more than the %zu bytes a helper's state may have", size, kMaxVmStateSize);
    return std::nullopt;
  }
  if (size < kHeaderSize || memcmp(bytes, kMagic, sizeof kMagic) != 0) {
    invalid(error, "it does not start with the sidebus-vmstate header: it is not state saved by a sidebus broker");
    return std::nullopt;
  }
  const uint32_t version = get_u32(bytes + sizeof kMagic);
  const uint32_t flags = get_u32(bytes + sizeof kMagic + 4);
  const uint32_t payload_size = get_u32(bytes + sizeof kMagic + 8);
  if (version != kVmStateFormatVersion) {
    g_set_error(error, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED,
                "refusing the migrated sidebus state: it is in format version %u; this broker reads version %u "
                "(migrate to a broker of the same or a newer sidebus)",
                version, kVmStateFormatVersion);
    return std::nullopt;
  }
  if ((flags & ~kKnownFlags) != 0) {
    invalid(error, "unknown header flags 0x%x", flags & ~kKnownFlags);
    return std::nullopt;
  }
  const bool authenticated = (flags & kFlagAuthenticated) != 0;
  const size_t expected = kHeaderSize + size_t(payload_size) + (authenticated ? kMacSize : 0);
  if (size != expected) {
    invalid(error, "it is %zu bytes, its header says %zu", size, expected);
    return std::nullopt;
  }
  if (!key.empty() && !authenticated) {
    invalid(error,
            "it is not authenticated, and this broker has a --vmstate-key: the source broker needs the same key");
    return std::nullopt;
  }
  if (key.empty() && authenticated) {
    invalid(error, "it is authenticated with a key this broker was not given (--vmstate-key)");
    return std::nullopt;
  }
  if (authenticated && !same_mac(hmac_sha256(key, bytes, size - kMacSize), bytes + size - kMacSize)) {
    invalid(error, "its authentication code does not match --vmstate-key: corrupt, or not from this VM's broker");
    return std::nullopt;
  }

  // The payload must be exactly what encode_vmstate() writes.
  g_autoptr(GBytes) payload_bytes = g_bytes_new(bytes + kHeaderSize, payload_size);
  g_autoptr(GVariant) payload =
      g_variant_ref_sink(g_variant_new_from_bytes(G_VARIANT_TYPE(kVmStatePayloadType), payload_bytes, FALSE));
  if (!g_variant_is_normal_form(payload)) {
    invalid(error, "its payload is not a well-formed %s value", kVmStatePayloadType);
    return std::nullopt;
  }
  VmState state;
  g_autoptr(GVariant) documents = nullptr;
  g_autoptr(GVariant) requests = nullptr;
  g_autoptr(GVariant) sessions = nullptr;
  const char* app_id = nullptr;
  g_variant_get(payload, "(&s@a(sayttua{sas})@as@as)", &app_id, &documents, &requests, &sessions);
  if (app_id != expected_app_id) {
    invalid(error, "it is the state of app id “%s”, and this broker serves “%s” (another VM's state?)", app_id,
            expected_app_id.c_str());
    return std::nullopt;
  }
  state.app_id = app_id;

  std::set<std::string> ids;
  GVariantIter iter;
  g_variant_iter_init(&iter, documents);
  const char* id;
  g_autoptr(GVariant) path = nullptr;
  guint64 device, inode;
  guint32 entry_flags;
  g_autoptr(GVariant) permissions = nullptr;
  while (g_variant_iter_next(&iter, "(&s@ayttu@a{sas})", &id, &path, &device, &inode, &entry_flags, &permissions)) {
    g_autoptr(GVariant) path_value = g_steal_pointer(&path);
    g_autoptr(GVariant) permissions_value = g_steal_pointer(&permissions);
    DocumentEntry entry;
    entry.id = id;
    if (!looks_like_document_id(entry.id)) {
      invalid(error, "“%s” is not a document id", id);
      return std::nullopt;
    }
    if (!ids.insert(entry.id).second) {
      invalid(error, "document %s is listed twice", id);
      return std::nullopt;
    }
    gsize path_size = 0;
    const char* path_bytes = static_cast<const char*>(g_variant_get_fixed_array(path_value, &path_size, 1));
    // A bytestring: exactly one NUL, at the end.
    if (path_size == 0 || path_bytes[path_size - 1] != '\0' || memchr(path_bytes, '\0', path_size - 1) != nullptr) {
      invalid(error, "document %s: its host path is not a NUL-terminated string", id);
      return std::nullopt;
    }
    entry.host_path.assign(path_bytes, path_size - 1);
    if (!is_clean_absolute_path(entry.host_path)) {
      g_autofree char* shown = g_utf8_make_valid(entry.host_path.c_str(), -1);
      invalid(error, "document %s: “%s” is not a clean absolute path", id, shown);
      return std::nullopt;
    }
    const uint32_t known = kDocumentFlagUnique | kDocumentFlagTransient | kDocumentFlagDirectory;
    if ((entry_flags & ~known) != 0) {
      invalid(error, "document %s: unknown flags 0x%x", id, entry_flags & ~known);
      return std::nullopt;
    }
    entry.directory_device = device;
    entry.directory_inode = inode;
    entry.flags = entry_flags;
    GVariantIter apps;
    g_variant_iter_init(&apps, permissions_value);
    const char* granted_app;
    g_autofree const char** granted = nullptr;
    while (g_variant_iter_next(&apps, "{&s^a&s}", &granted_app, &granted)) {
      g_autofree const char** list = g_steal_pointer(&granted);
      if (granted_app != expected_app_id) {
        invalid(error, "document %s is granted to “%s”, not to this VM (%s)", id, granted_app, expected_app_id.c_str());
        return std::nullopt;
      }
      if (!entry.permissions.empty()) {
        invalid(error, "document %s lists the VM's permissions twice", id);
        return std::nullopt;
      }
      std::vector<std::string> kept;
      for (const char** permission = list; *permission != nullptr; permission++) {
        if (!is_known_permission(*permission)) {
          invalid(error, "document %s: unknown permission “%s”", id, *permission);
          return std::nullopt;
        }
        if (std::find(kept.begin(), kept.end(), *permission) != kept.end()) {
          invalid(error, "document %s: permission “%s” given twice", id, *permission);
          return std::nullopt;
        }
        kept.emplace_back(*permission);
      }
      entry.permissions.emplace_back(granted_app, std::move(kept));
    }
    state.documents.push_back(std::move(entry));
  }
  if (!check_paths(requests, kRequestPathPrefix, "request", state.pending_requests, error) ||
      !check_paths(sessions, kSessionPathPrefix, "session", state.sessions, error))
    return std::nullopt;
  return state;
}

}  // namespace sidebus
