// SPDX-License-Identifier: LGPL-2.1-or-later
// replay-main.cpp — the main() of a fuzz target in an ordinary build: runs
// LLVMFuzzerTestOneInput() once on every file of the corpus directories
// given as arguments (seeds and crash reproducers, tests/fuzz/<name>/), in
// name order, and prints TAP, one "ok" per file. A failing input aborts the
// process, as under libFuzzer, so the last "ok" line shows the file before
// it. This is how every build runs the corpora (test fuzz-corpus-<name>);
// fuzzing itself needs the libFuzzer build (-Dfuzzing=true).
#include <glib.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

int main(int argc, char** argv) {
  std::vector<std::string> files;
  for (int i = 1; i < argc; i++) {
    g_autoptr(GError) error = nullptr;
    g_autoptr(GDir) dir = g_dir_open(argv[i], 0, &error);
    if (dir == nullptr) {
      printf("Bail out! cannot read corpus: %s\n", error->message);
      return 1;
    }
    while (const char* name = g_dir_read_name(dir)) {
      g_autofree char* path = g_build_filename(argv[i], name, nullptr);
      if (g_file_test(path, G_FILE_TEST_IS_REGULAR)) files.emplace_back(path);
    }
  }
  std::sort(files.begin(), files.end());
  printf("1..%zu\n", files.size());
  fflush(stdout);
  for (size_t i = 0; i < files.size(); i++) {
    g_autofree char* contents = nullptr;
    gsize length = 0;
    g_autoptr(GError) error = nullptr;
    if (!g_file_get_contents(files[i].c_str(), &contents, &length, &error)) {
      printf("not ok %zu %s # %s\n", i + 1, files[i].c_str(), error->message);
      continue;
    }
    // A copy of exactly the file's size (g_file_get_contents() adds a NUL),
    // so a read past the end is caught by AddressSanitizer as under libFuzzer.
    std::unique_ptr<uint8_t[]> exact(new uint8_t[length > 0 ? length : 1]);
    memcpy(exact.get(), contents, length);
    LLVMFuzzerTestOneInput(exact.get(), length);
    g_autofree char* base = g_path_get_basename(files[i].c_str());
    printf("ok %zu %s\n", i + 1, base);
    fflush(stdout);
  }
  return 0;
}
