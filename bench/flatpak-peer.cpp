// SPDX-License-Identifier: LGPL-2.1-or-later
#include "flatpak-peer.hpp"

#include <cstdlib>
#include <sstream>

#include "support/process.hpp"

namespace sidebus::bench {

using sidebus::test::FixtureError;

FlatpakPeer::FlatpakPeer(const std::string& bus_address, const std::string& app_id)
    : root_("sidebus-bench-flatpak-root") {
  const char* program = g_getenv("SIDEBUS_BENCH_FLATPAK_APP");
  if (program == nullptr) throw FixtureError("SIDEBUS_BENCH_FLATPAK_APP is not set");
  g_autoptr(GError) error = nullptr;
  process_.reset(g_subprocess_new(GSubprocessFlags(G_SUBPROCESS_FLAGS_STDIN_PIPE | G_SUBPROCESS_FLAGS_STDOUT_PIPE), &error, program,
                                  "--root", root_.path().c_str(), "--app-id", app_id.c_str(), "--bus",
                                  bus_address.c_str(), nullptr));
  if (!process_) throw FixtureError(std::string("cannot start ") + program + ": " + error->message);
  pid_ = std::atoi(g_subprocess_get_identifier(process_.get()));
  replies_.reset(g_data_input_stream_new(g_subprocess_get_stdout_pipe(process_.get())));
  const std::string ready = command(nullptr);
  if (ready != "ready") throw FixtureError("the Flatpak peer did not come up: " + ready);
}

FlatpakPeer::~FlatpakPeer() {
  if (!process_) return;
  g_output_stream_close(g_subprocess_get_stdin_pipe(process_.get()), nullptr, nullptr);
  g_subprocess_wait(process_.get(), nullptr, nullptr);
}

// Sends @line (none: just reads) and returns the reply line.
std::string FlatpakPeer::command(const char* line) {
  g_autoptr(GError) error = nullptr;
  if (line != nullptr) {
    const std::string sent = std::string(line) + "\n";
    if (!g_output_stream_write_all(g_subprocess_get_stdin_pipe(process_.get()), sent.data(), sent.size(), nullptr,
                                   nullptr, &error))
      throw FixtureError(std::string("the Flatpak peer is gone: ") + error->message);
  }
  g_autofree char* reply = g_data_input_stream_read_line_utf8(replies_.get(), nullptr, nullptr, &error);
  if (reply == nullptr) throw FixtureError("the Flatpak peer closed its output" + (error ? ": " + std::string(error->message) : ""));
  if (g_str_has_prefix(reply, "error ")) throw FixtureError(std::string("the Flatpak peer: ") + (reply + 6));
  return reply;
}

FlatpakPeer::OpenFileResult FlatpakPeer::open_file() {
  std::istringstream reply(command("open"));
  OpenFileResult result;
  reply >> result.ms >> result.uris >> result.first_uri;
  return result;
}

double FlatpakPeer::get_version() { return std::stod(command("get")); }

}  // namespace sidebus::bench
