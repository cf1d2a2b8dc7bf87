// SPDX-License-Identifier: LGPL-2.1-or-later
// flatpak-peer.hpp — the benchmarks' Flatpak app: flatpak-app (see there)
// run as a child, in its own mount namespace, and driven line by line.
#pragma once

#include <gio/gio.h>

#include <string>

#include "support/temp-dir.hpp"
#include "util/gobject-ptr.hpp"

namespace sidebus::bench {

class FlatpakPeer {
 public:
  // Starts flatpak-app ($SIDEBUS_BENCH_FLATPAK_APP) claiming @app_id on the
  // host bus at @bus_address; returns once it is connected.
  FlatpakPeer(const std::string& bus_address, const std::string& app_id);
  ~FlatpakPeer();
  FlatpakPeer(const FlatpakPeer&) = delete;
  FlatpakPeer& operator=(const FlatpakPeer&) = delete;

  struct OpenFileResult {
    double ms = 0;
    size_t uris = 0;
    std::string first_uri;
  };
  // One FileChooser.OpenFile round trip made by the app.
  OpenFileResult open_file();
  // One Properties.Get round trip; milliseconds.
  double get_version();
  pid_t pid() const { return pid_; }

 private:
  std::string command(const char* line);

  sidebus::test::TempDir root_;
  GObjectPtr<GSubprocess> process_;
  GObjectPtr<GDataInputStream> replies_;
  pid_t pid_ = 0;
};

}  // namespace sidebus::bench
