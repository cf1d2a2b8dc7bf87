// SPDX-License-Identifier: LGPL-2.1-or-later
// qmp.hpp — Qmp, a client of QEMU's monitor protocol for the tests that
// drive a running QEMU: migration (migrate, query-migrate) and hot-plug
// (chardev-add, device_add). One unix socket (-qmp unix:PATH,server=on,wait=off),
// one command at a time, each answered within a deadline; asynchronous
// events that arrive meanwhile are kept (events(), wait_for_event()).
#pragma once

#include <json-glib/json-glib.h>

#include <string>
#include <vector>

#include "support/process.hpp"
#include "util/gobject-ptr.hpp"

namespace sidebus::test {

class Qmp {
 public:
  // Connects (waiting up to @timeout for QEMU to create the socket), reads
  // the greeting and leaves capabilities negotiation mode. FixtureError if
  // it cannot.
  explicit Qmp(const std::string& socket_path, Timeout timeout = 20s);
  ~Qmp();
  Qmp(const Qmp&) = delete;
  Qmp& operator=(const Qmp&) = delete;

  // Runs @command with @arguments (a JSON object's text; empty: none) and
  // returns its "return" value as JSON text; FixtureError with QMP's error
  // class and description if it fails or does not answer within @timeout.
  std::string execute(const std::string& command, const std::string& arguments = "", Timeout timeout = 20s);
  // query-migrate's "status" ("active", "completed", "failed", …), and its
  // "error-desc" when it failed (empty otherwise).
  std::string migration_status(std::string* error_description = nullptr);
  // Until query-migrate says completed (true) or failed, or @timeout.
  // Iterates the main context in between, like wait_until().
  bool wait_for_migration(Timeout timeout, std::string* why_not);

  // Names of the events received so far, in order.
  const std::vector<std::string>& events() const { return events_; }
  bool wait_for_event(const std::string& name, Timeout timeout);

 private:
  JsonNode* read_message(gint64 deadline_us);  // owned by the caller; nullptr on timeout
  GObjectPtr<GSocketConnection> connection_;
  GObjectPtr<GDataInputStream> input_;
  std::vector<std::string> events_;
  std::string path_;
};

}  // namespace sidebus::test
