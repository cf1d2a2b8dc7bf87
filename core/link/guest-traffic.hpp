// SPDX-License-Identifier: LGPL-2.1-or-later
// guest-traffic.hpp — what one guest may make the broker hold, charged to
// the guest client that sent it, as dbus-broker charges its peers. Pure
// bookkeeping (no I/O): the relay asks admit() about every message that comes
// from the guest and tells replied() about every reply the broker sends back.
//
// What is charged is what the guest *originates*: method calls to the broker
// and signals. Replies and errors from the guest bus (answers to the
// broker's own calls) and the bus's own signals are never charged: they are
// the broker's doing. A method call is charged from the moment it is handed
// to the broker until the broker's reply to it passes back through the relay
// (the time GDBus holds it, parsed); so bounding outstanding calls bounds the
// broker's memory for that client and for the VM, whatever the client's
// speed. What does not fit is refused at once with an error reply (a call) or
// dropped (a signal, a call that wants no reply): the client that floods is
// shed, the others are not slowed down.
#pragma once

#include <glib.h>

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <utility>

#include "wire/dbus-message.hpp"

namespace sidebus {

struct GuestTrafficLimits {
  // The largest message from the guest (broker.max_message_size); larger
  // ones are refused without being read into memory.
  size_t max_message_size = 16 * 1024 * 1024;
  // Values GDBus would allocate for one message (broker.max_message_values);
  // counted by wire::scan_body() before the broker sees the message.
  uint64_t max_message_values = 65536;
  // Method calls the broker has not answered yet, per guest client and per
  // VM (broker.max_pending_calls, broker.max_pending_calls_per_client).
  unsigned max_calls_per_client = 128;
  unsigned max_calls = 512;
  // Bytes of those calls (broker.max_pending_bytes, …_per_client).
  size_t max_bytes_per_client = 16 * 1024 * 1024;
  size_t max_bytes = 32 * 1024 * 1024;
  // Signals and no-reply calls per second per client, burst twice as many;
  // above it they are dropped (broker.max_signals_per_second).
  unsigned signals_per_second = 200;
};

class GuestTraffic {
 public:
  explicit GuestTraffic(GuestTrafficLimits limits) : limits_(limits) {}

  enum class Verdict { Forward, Refuse, Drop };
  // A message from the guest, @size bytes, @values as wire::scan_body()
  // counted them (the caller refuses what scan_body refused). Refuse: the
  // caller answers the call with an error named *error_name saying *why.
  // @now_us: g_get_monotonic_time().
  Verdict admit(const wire::MessageHeader& header, size_t size, gint64 now_us, std::string* error_name,
                std::string* why);
  // A message the broker sends to the guest: a reply releases its call.
  void sent(const wire::MessageHeader& header);

  size_t pending_calls() const { return calls_.size(); }
  size_t pending_bytes() const { return bytes_; }
  const GuestTrafficLimits& limits() const { return limits_; }

 private:
  struct Client {
    unsigned calls = 0;
    size_t bytes = 0;
    double tokens = -1;  // signal bucket; < 0: not used yet (full)
    gint64 refilled_us = 0;
  };
  bool take_signal_token(Client& client, gint64 now_us);

  GuestTrafficLimits limits_;
  std::map<std::string, Client> clients_;                         // by unique name
  std::map<std::pair<std::string, uint32_t>, size_t> calls_;      // (sender, serial) → bytes charged
  size_t bytes_ = 0;
};

}  // namespace sidebus
