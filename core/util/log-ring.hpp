// SPDX-License-Identifier: LGPL-2.1-or-later
// log-ring.hpp — the last few hundred KiB of a process's log, kept in memory
// for `sidebusctl dump-log` and written to a file when the process dies of
// a fatal error (a crash signal, g_error(), a fatal critical) or fails to
// start, as wayland-proxy-virtwl keeps its ring. Every record goes in,
// debug ones too (without --verbose they are not printed, but a dump after
// a problem shows what led to it). Each line: "TIME LEVEL: message".
//
// Appending is thread-safe (the relay and handshake threads log). The crash
// path only uses async-signal-safe calls on memory reserved up front.
#pragma once

#include <glib.h>

#include <cstddef>
#include <string>
#include <string_view>

namespace sidebus::log_ring {

constexpr size_t kDefaultCapacity = 256 * 1024;

// Starts keeping lines (once; later calls only change nothing).
void enable(size_t capacity = kDefaultCapacity);
bool enabled();
// One record, already formatted without the time and newline
// ("warning: …"); log.cpp calls this for every record.
void append(GLogLevelFlags level, std::string_view line);
// The last @max_bytes (0: all) of the ring, starting at a line boundary.
std::string tail(size_t max_bytes = 0);
size_t capacity();

// Where the ring goes when the process dies of a crash signal (SIGSEGV,
// SIGBUS, SIGILL, SIGFPE, SIGABRT — abort() covers g_error() and fatal
// criticals); the previous handlers (AddressSanitizer's, say) still run
// afterwards. Call once, after enable().
void dump_on_crash(const std::string& path);
// Writes the ring to the dump_on_crash() path now (a failed start); false
// with errno set if it could not be written.
bool dump_now();
const std::string& dump_path();

}  // namespace sidebus::log_ring
