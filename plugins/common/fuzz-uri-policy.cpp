// fuzz-uri-policy.cpp — libFuzzer target for check_guest_uri()
// (uri-policy.hpp; corpus: tests/fuzz/uri-policy/; docs/testing.md,
// "Fuzzing").
//
// Each input is one URI from the guest (up to its first NUL byte, as a C
// string reaches the policy), checked against a fixed allow-list and
// documents directory. What the policy promises, whatever the input:
//  - an accepted URI's scheme is in the allow-list, or is file;
//  - an accepted file:// URI's guest_path is an absolute path strictly
//    inside the documents directory, with no ".", ".." or empty component
//    and no NUL; any other accepted URI has no guest_path;
//  - an accepted URI is bounded, valid UTF-8, free of spaces and ASCII
//    control characters (it reaches a host handler's argv verbatim);
//  - without a documents directory, no file:// URI is accepted;
//  - a refusal is a SIDEBUS_ERROR, INVALID_ARGUMENT or NOT_ALLOWED.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "uri-policy.hpp"

// The broker defines SIDEBUS_ERROR for the plugins it loads; this
// executable stands in for it.
extern "C" GQuark sidebus_error_quark(void) { return g_quark_from_static_string("sidebus-error-quark"); }

using namespace sidebus::common;

namespace {

const std::vector<std::string> kSchemes = {"http", "https", "mailto", "x-scheme+v1.2"};
const std::string kDocuments = "/run/user/1000/doc";

void check(bool condition, const char* what, const char* uri) {
  if (condition) return;
  fprintf(stderr, "fuzz-uri-policy: %s, for the URI \"%s\"\n", what, quote_for_message(uri).c_str());
  abort();
}

bool has_bad_component(const std::string& path) {
  size_t start = 1;
  while (start <= path.size()) {
    size_t slash = path.find('/', start);
    std::string component = path.substr(start, slash == std::string::npos ? std::string::npos : slash - start);
    if (component.empty() || component == "." || component == "..") return true;
    if (slash == std::string::npos) break;
    start = slash + 1;
  }
  return false;
}

void check_uri(const char* uri, const std::string& documents) {
  GError* error = nullptr;
  std::optional<CheckedUri> checked = check_guest_uri(uri, kSchemes, documents, &error);
  check(checked.has_value() == (error == nullptr), "an error is set exactly when a URI is refused", uri);
  if (!checked) {
    check(error->domain == SIDEBUS_ERROR, "refusals are SIDEBUS_ERRORs", uri);
    check(error->code == SIDEBUS_ERROR_INVALID_ARGUMENT || error->code == SIDEBUS_ERROR_NOT_ALLOWED,
          "refusals are INVALID_ARGUMENT or NOT_ALLOWED", uri);
    g_error_free(error);
    return;
  }
  size_t length = strlen(uri);
  check(length > 0 && length <= kMaxUriLength, "an accepted URI is bounded", uri);
  check(g_utf8_validate(uri, gssize(length), nullptr), "an accepted URI is valid UTF-8", uri);
  for (size_t i = 0; i < length; i++)
    check(static_cast<unsigned char>(uri[i]) > 0x20 && uri[i] != 0x7f, "an accepted URI has no space or control", uri);
  check(g_ascii_strncasecmp(uri, checked->scheme.c_str(), checked->scheme.size()) == 0 &&
            uri[checked->scheme.size()] == ':',
        "the scheme is the URI's own", uri);
  if (!checked->is_document()) {
    check(std::find(kSchemes.begin(), kSchemes.end(), checked->scheme) != kSchemes.end(),
          "an accepted scheme is in the allow-list", uri);
    check(checked->guest_path.empty(), "only file:// URIs have a guest path", uri);
    return;
  }
  check(!documents.empty(), "file:// is refused without a documents directory", uri);
  const std::string& path = checked->guest_path;
  check(path.compare(0, documents.size() + 1, documents + "/") == 0 && path.size() > documents.size() + 1,
        "an accepted file's path is inside the documents directory", uri);
  check(path_is_inside(path, documents), "path_is_inside() agrees", uri);
  check(path.find('\0') == std::string::npos, "an accepted file's path has no NUL", uri);
  check(!has_bad_component(path), "an accepted file's path has no \".\", \"..\" or empty component", uri);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string uri(reinterpret_cast<const char*>(data), size);  // up to the first NUL, as a C string
  check_uri(uri.c_str(), kDocuments);
  check_uri(uri.c_str(), "");
  return 0;
}
