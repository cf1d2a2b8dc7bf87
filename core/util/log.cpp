// SPDX-License-Identifier: LGPL-2.1-or-later
// log.cpp — the structured log writer of the broker and the agent (log.hpp).
//
// Every g_message/g_warning/g_debug (ours and GLib's) arrives here. When
// stderr is the journal, the record goes to journald with an extra SIDEBUS_VM
// field (filter with `journalctl SIDEBUS_VM=name`); otherwise one line
// "program[vm]: level: message" is written to stderr in a single write(2), so
// lines from different threads never interleave. Debug and info lines appear
// only with --verbose or when G_MESSAGES_DEBUG names our domain (or "all").
// Control characters in messages (which may quote guest input) are replaced.
#include "util/log.hpp"

#include <glib.h>
#include <unistd.h>

#include <cstdio>
#include <string_view>
#include <vector>

#include "util/log-ring.hpp"

namespace sidebus::log {

namespace {

std::string program_name = "sidebus";
std::string vm_name;
bool verbose_enabled = false;
bool to_journal = false;
gint64 started_at = 0;  // with --verbose, lines end with the time since setup()

const char* level_name(GLogLevelFlags level) {
  if (level & G_LOG_LEVEL_ERROR) return "error";
  if (level & G_LOG_LEVEL_CRITICAL) return "critical";
  if (level & G_LOG_LEVEL_WARNING) return "warning";
  if (level & G_LOG_LEVEL_MESSAGE) return "message";
  if (level & G_LOG_LEVEL_INFO) return "info";
  return "debug";
}

std::string_view field_value(const GLogField& field) {
  if (!field.value) return {};
  auto* text = static_cast<const char*>(field.value);
  return field.length < 0 ? std::string_view(text) : std::string_view(text, static_cast<size_t>(field.length));
}

GLogWriterOutput write_record(GLogLevelFlags level, const GLogField* fields, gsize n_fields, gpointer) {
  const char* domain = nullptr;
  std::string_view message;
  for (gsize i = 0; i < n_fields; i++) {
    std::string_view key = fields[i].key;
    if (key == "GLIB_DOMAIN" && fields[i].length < 0)
      domain = static_cast<const char*>(fields[i].value);
    else if (key == "MESSAGE")
      message = field_value(fields[i]);
  }
  std::string text;
  text.reserve(message.size());
  for (char c : message) text += (static_cast<unsigned char>(c) < 0x20 && c != '\n' && c != '\t') ? '?' : c;
  // The ring keeps debug lines even when they are not printed (log-ring.hpp).
  if (log_ring::enabled()) log_ring::append(level, text);
  if ((level & (G_LOG_LEVEL_DEBUG | G_LOG_LEVEL_INFO)) && g_log_writer_default_would_drop(level, domain))
    return G_LOG_WRITER_HANDLED;

  if (to_journal) {
    std::vector<GLogField> extended(fields, fields + n_fields);
    if (!vm_name.empty()) extended.push_back(GLogField{"SIDEBUS_VM", vm_name.c_str(), -1});
    if (g_log_writer_journald(level, extended.data(), extended.size(), nullptr) == G_LOG_WRITER_HANDLED)
      return G_LOG_WRITER_HANDLED;
  }

  std::string line = program_name;
  if (!vm_name.empty()) line += "[" + vm_name + "]";
  line += ": ";
  line += level_name(level);
  line += ": ";
  line += text;
  if (verbose_enabled) {
    char elapsed[32];
    g_snprintf(elapsed, sizeof elapsed, " (+%.1f ms)", double(g_get_monotonic_time() - started_at) / 1000.0);
    line += elapsed;
  }
  line += '\n';
  std::string_view rest = line;
  while (!rest.empty()) {
    ssize_t n = write(STDERR_FILENO, rest.data(), rest.size());
    if (n <= 0) break;
    rest.remove_prefix(static_cast<size_t>(n));
  }
  return G_LOG_WRITER_HANDLED;
}

}  // namespace

void setup(const char* program, const std::string& vm, bool verbose) {
  static bool installed = false;  // GLib allows one writer per process
  program_name = program ? program : "sidebus";
  vm_name = vm;
  verbose_enabled = verbose;
  if (started_at == 0) started_at = g_get_monotonic_time();
  if (verbose) g_log_set_debug_enabled(TRUE);
  if (installed) return;
  installed = true;
  to_journal = g_log_writer_is_journald(STDERR_FILENO);
  g_log_set_writer_func(write_record, nullptr, nullptr);
}

bool verbose() { return verbose_enabled; }

}  // namespace sidebus::log
