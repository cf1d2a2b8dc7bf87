// SPDX-License-Identifier: LGPL-2.1-or-later
// fuzz-vmstate-blob.cpp — libFuzzer target for decode_vmstate()
// (vmstate-blob.hpp; corpus: tests/fuzz/vmstate-blob/, docs/testing.md).
//
// The input is what org.qemu.VMState1.Load receives. Once without a key and
// once with one: an accepted blob comes without an error and holds only what
// Load may apply (this VM's app id, document ids, clean absolute paths,
// known flags and permissions, portal object paths); encoding it again with
// the same key gives the very same bytes (there is one spelling of a state),
// and those decode back to an equal state. A refusal is a G_IO_ERROR.
#include <gio/gio.h>
#include <string.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "documents/vmstate-blob.hpp"

using namespace sidebus;

namespace {

constexpr char kAppId[] = "dev.sidebus.vm.fuzz";
constexpr char kKey[] = "fuzz-key-0123456789abcdef";

void check(bool condition, const char* what) {
  if (condition) return;
  fprintf(stderr, "fuzz-vmstate-blob: %s\n", what);
  abort();
}

void one(const uint8_t* data, size_t size, const std::string& key) {
  GError* error = nullptr;
  std::optional<VmState> state = decode_vmstate(data, size, key, kAppId, &error);
  check(state.has_value() == (error == nullptr), "an error is set exactly when a blob is refused");
  if (!state) {
    check(error->domain == G_IO_ERROR, "refusals are G_IO_ERRORs");
    g_error_free(error);
    return;
  }
  check(state->app_id == kAppId, "only this VM's state is accepted");
  for (const DocumentEntry& entry : state->documents) {
    check(looks_like_document_id(entry.id), "document ids");
    check(!entry.host_path.empty() && entry.host_path[0] == '/', "absolute host paths");
    check(entry.host_path.find('\0') == std::string::npos, "no NUL in host paths");
    check(entry.host_path.find("/../") == std::string::npos && entry.host_path.find("/./") == std::string::npos,
          "no . or .. in host paths");
    check((entry.flags & ~(kDocumentFlagUnique | kDocumentFlagTransient | kDocumentFlagDirectory)) == 0, "known flags");
    for (const auto& [app_id, permissions] : entry.permissions) check(app_id == kAppId, "granted only to the VM");
  }
  for (const std::string& path : state->pending_requests)
    check(g_str_has_prefix(path.c_str(), "/org/freedesktop/portal/desktop/request/"), "request paths");
  for (const std::string& path : state->sessions)
    check(g_str_has_prefix(path.c_str(), "/org/freedesktop/portal/desktop/session/"), "session paths");
  std::optional<std::string> again = encode_vmstate(*state, key, &error);
  check(again.has_value(), "an accepted state encodes");
  check(again->size() == size && memcmp(again->data(), data, size) == 0, "one spelling of a state");
  std::optional<VmState> back = decode_vmstate(again->data(), again->size(), key, kAppId, &error);
  check(back.has_value() && *back == *state, "encode ∘ decode is the identity");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  one(data, size, "");
  one(data, size, kKey);
  return 0;
}
