// SPDX-License-Identifier: LGPL-2.1-or-later
// host-recorder.hpp — a host application that records what it was asked to
// open, for tests where the host's xdg-desktop-portal launches one (OpenURI):
// a shell script that writes its arguments to a file per launch, registered
// as the default handler of text/plain, folders and https through the host
// portal's own XDG_DATA_HOME (HostPortalOptions::files), so nothing of the
// test process's environment changes. (test-openuri has its own, older
// variant registered through XDG_DATA_DIRS.)
#pragma once

#include <glib.h>
#include <sys/stat.h>

#include <string>
#include <vector>

#include "support/files.hpp"
#include "support/host-portal.hpp"
#include "support/temp-dir.hpp"

namespace sidebus::test {

class HostRecorder {
 public:
  static constexpr const char* kId = "sidebus-test-recorder";

  HostRecorder() : dir_("sidebus-recorder") {
    opened_ = dir_.make_dir("opened");
    script_ = dir_.write_file("recorder.sh", "#!/bin/sh\n"
                                             "tmp=\"" + opened_ + "/.$$\"\n"
                                             "for arg in \"$@\"; do printf '%s\\n' \"$arg\"; done > \"$tmp\"\n"
                                             "mv \"$tmp\" \"" + opened_ + "/$$\"\n");
    chmod(script_.c_str(), 0755);
  }

  // What the host portal's options need: the .desktop file and the
  // defaults, in its XDG_DATA_HOME ("data").
  void add_to(HostPortalOptions* options) const {
    const char* types[] = {"text/plain", "inode/directory", "x-scheme-handler/https"};
    std::string mime_types, defaults, cache;
    for (const char* type : types) {
      mime_types += std::string(type) + ";";
      defaults += std::string(type) + "=" + kId + ".desktop\n";
      cache += std::string(type) + "=" + kId + ".desktop;\n";
    }
    options->files.emplace_back(std::string("data/applications/") + kId + ".desktop",
                                "[Desktop Entry]\nType=Application\nName=sidebus test recorder\nExec=" + script_ +
                                    " %u\nMimeType=" + mime_types + "\nNoDisplay=true\n");
    options->files.emplace_back("data/applications/mimeapps.list", "[Default Applications]\n" + defaults);
    options->files.emplace_back("data/applications/mimeinfo.cache", "[MIME Cache]\n" + cache);
  }

  // The first argument of every launch so far, as URIs (GIO gives local
  // files as plain paths).
  std::vector<std::string> launches() const {
    std::vector<std::string> launches;
    g_autoptr(GDir) dir = g_dir_open(opened_.c_str(), 0, nullptr);
    while (const char* name = dir ? g_dir_read_name(dir) : nullptr) {
      if (name[0] == '.') continue;
      g_autofree char* contents = nullptr;
      if (!g_file_get_contents((opened_ + "/" + name).c_str(), &contents, nullptr, nullptr)) continue;
      std::string first = contents;
      first = first.substr(0, first.find('\n'));
      launches.push_back(!first.empty() && first[0] == '/' ? uri_for(first) : first);
    }
    return launches;
  }

 private:
  TempDir dir_;
  std::string opened_;
  std::string script_;
};

}  // namespace sidebus::test
