// SPDX-License-Identifier: LGPL-2.1-or-later
// vmstate-blob.hpp — the bytes a broker hands QEMU's dbus-vmstate in
// org.qemu.VMState1.Save and takes back in Load on the migration's
// destination: this VM's document database (every entry of the private
// permission store's "documents" table, i.e. what the document portal needs
// to give the same document ids for the same host files) and the guest
// portal requests and sessions that were pending on the source. Pure: no
// I/O, no D-Bus; the bytes of Load are untrusted (they travel in the
// migration stream through QEMU, which may run as another, less trusted
// uid) and decode_vmstate() is fuzzed (fuzz-vmstate-blob.cpp).
//
// Format, version 1 (docs/migration.md describes it for people):
//   16 bytes  magic "sidebus-vmstate\0"
//   u32 BE    format version (1)
//   u32 BE    flags: bit 0 = an HMAC-SHA256 trailer follows the payload
//   u32 BE    payload length
//   payload   a GVariant in normal form, type kVmStatePayloadType:
//             (app id, documents, pending request paths, session paths)
//             documents: (doc id, host path (bytestring, NUL-terminated),
//                         device and inode of the document's directory,
//                         document portal flags, {app id: permissions})
//   32 bytes  HMAC-SHA256 (with the --vmstate-key secret) of everything
//             before it, when flag bit 0 is set
// Nothing else; at most kMaxVmStateSize bytes in all (QEMU's limit for one
// helper's state).
#pragma once

#include <glib.h>

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace sidebus {

inline constexpr uint32_t kVmStateFormatVersion = 1;
// QEMU's DBUS_VMSTATE_SIZE_LIMIT (backends/dbus-vmstate.c): 1 MiB per helper.
inline constexpr size_t kMaxVmStateSize = 1024 * 1024;
inline constexpr char kVmStatePayloadType[] = "(sa(sayttua{sas})asas)";
// Bits of xdg-document-portal's entry flags (document-portal/document-store.h).
inline constexpr uint32_t kDocumentFlagUnique = 1 << 0;
inline constexpr uint32_t kDocumentFlagTransient = 1 << 1;
inline constexpr uint32_t kDocumentFlagDirectory = 1 << 2;
// Permissions the document portal knows (document-enums.h).
inline constexpr const char* kDocumentPermissions[] = {"read", "write", "grant-permissions", "delete"};

// One entry of the "documents" table, as xdg-document-portal 1.16 stores it:
// data (ayttu) = host path, st_dev and st_ino of the document's directory
// (the parent of a file, the directory itself for a directory document),
// flags; and the permissions of each app it is granted to.
struct DocumentEntry {
  std::string id;
  std::string host_path;
  uint64_t directory_device = 0;
  uint64_t directory_inode = 0;
  uint32_t flags = 0;
  std::vector<std::pair<std::string, std::vector<std::string>>> permissions;  // app id → permissions
  bool operator==(const DocumentEntry&) const = default;
};

struct VmState {
  std::string app_id;  // whose documents these are
  std::vector<DocumentEntry> documents;
  std::vector<std::string> pending_requests;  // guest object paths of requests waiting for the host
  std::vector<std::string> sessions;          // guest object paths of open sessions
  bool operator==(const VmState&) const = default;
};

// The blob for @state; with a non-empty @key, authenticated (HMAC-SHA256).
// Fails with G_IO_ERROR_MESSAGE_TOO_LARGE (saying how many documents made
// how many bytes) past kMaxVmStateSize.
std::optional<std::string> encode_vmstate(const VmState& state, const std::string& key, GError** error);

// Checks everything before it returns anything: size, magic, version, flags,
// the HMAC (required when @key is non-empty; a blob with one is refused when
// @key is empty: the keys differ), the payload's type and normal form, that
// it is @expected_app_id's state (a blob of another VM is refused), and each
// entry (document ids, absolute host paths without "."/".." or NUL, known
// flags, only @expected_app_id granted, known permissions, no duplicate ids;
// object paths under the portal's request/session trees). The message of
// the error (G_IO_ERROR_INVALID_DATA, or G_IO_ERROR_NOT_SUPPORTED for
// another format version) says what was wrong.
std::optional<VmState> decode_vmstate(const void* data, size_t size, const std::string& key,
                                      const std::string& expected_app_id, GError** error);

// Whether @id looks like a document id (what the document portal makes:
// "%x" of a random 32-bit number; any short alphanumeric string is taken).
bool looks_like_document_id(const std::string& id);

}  // namespace sidebus
