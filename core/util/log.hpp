// SPDX-License-Identifier: LGPL-2.1-or-later
// log.hpp — structured logging for the broker and the agent: every line goes
// through GLib's structured log writer with SIDEBUS_VM set; debug lines only
// with --verbose, and then every line on stderr ends with the time since
// setup() ("(+12.3 ms)"), for profiling the start-up.
#pragma once

#include <string>

namespace sidebus::log {

// program: "sidebus-broker" or "sidebus-agent"; vm_name may be empty.
void setup(const char* program, const std::string& vm_name, bool verbose);
bool verbose();

}  // namespace sidebus::log
