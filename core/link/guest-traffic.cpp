// SPDX-License-Identifier: LGPL-2.1-or-later
// guest-traffic.cpp — see guest-traffic.hpp.
#include "link/guest-traffic.hpp"

#include <algorithm>
#include <vector>

namespace sidebus {

namespace {

constexpr const char* kBusName = "org.freedesktop.DBus";
constexpr const char* kLimitsExceeded = "org.freedesktop.DBus.Error.LimitsExceeded";
// Clients without calls whose signal bucket is full again hold nothing; they
// are forgotten once this many are known.
constexpr size_t kPruneAt = 4096;

std::string mib(size_t bytes) { return std::to_string(bytes / (1024 * 1024)) + " MiB"; }

}  // namespace

bool GuestTraffic::take_signal_token(Client& client, gint64 now_us) {
  const double rate = limits_.signals_per_second, burst = 2.0 * limits_.signals_per_second;
  if (client.tokens < 0) client.tokens = burst;
  client.tokens = std::min(burst, client.tokens + double(now_us - client.refilled_us) * rate / G_USEC_PER_SEC);
  client.refilled_us = now_us;
  if (client.tokens < 1) return false;
  client.tokens -= 1;
  return true;
}

GuestTraffic::Verdict GuestTraffic::admit(const wire::MessageHeader& header, size_t size, gint64 now_us,
                                          std::string* error_name, std::string* why) {
  using wire::MessageType;
  const MessageType type = header.fixed.type;
  // The guest bus itself, and replies: the broker's own traffic.
  if (header.sender == kBusName || type == MessageType::MethodReturn || type == MessageType::Error)
    return Verdict::Forward;
  if (type != MessageType::MethodCall && type != MessageType::Signal) return Verdict::Drop;  // unknown types
  if (header.sender.empty()) return Verdict::Drop;  // no bus sends this; nothing to answer it to

  if (clients_.size() >= kPruneAt) {
    std::vector<std::string> idle;
    for (auto& [name, client] : clients_)
      if (client.calls == 0 && now_us - client.refilled_us > 2 * G_USEC_PER_SEC) idle.push_back(name);
    for (const std::string& name : idle) clients_.erase(name);
  }
  Client& client = clients_[header.sender];
  const bool wants_reply = type == MessageType::MethodCall && !(header.fixed.flags & wire::kFlagNoReplyExpected);
  if (!wants_reply) return take_signal_token(client, now_us) ? Verdict::Forward : Verdict::Drop;

  *error_name = kLimitsExceeded;
  if (client.calls >= limits_.max_calls_per_client) {
    *why = "this client already waits for " + std::to_string(client.calls) +
           " answers from the portal (broker.max_pending_calls_per_client); wait for them first";
    return Verdict::Refuse;
  }
  if (calls_.size() >= limits_.max_calls) {
    *why = "the VM already waits for " + std::to_string(calls_.size()) +
           " answers from the portal (broker.max_pending_calls); try again shortly";
    return Verdict::Refuse;
  }
  if (client.bytes + size > limits_.max_bytes_per_client) {
    *why = "this client's calls waiting for the portal already take " + mib(client.bytes) + " (at most " +
           mib(limits_.max_bytes_per_client) + ", broker.max_pending_bytes_per_client)";
    return Verdict::Refuse;
  }
  if (bytes_ + size > limits_.max_bytes) {
    *why = "the VM's calls waiting for the portal already take " + mib(bytes_) + " (at most " + mib(limits_.max_bytes) +
           ", broker.max_pending_bytes)";
    return Verdict::Refuse;
  }
  auto [call, inserted] = calls_.emplace(std::make_pair(header.sender, header.fixed.serial), size);
  if (!inserted) {
    // A second call with a serial still pending: the client reused it (only
    // a broken or hostile one does). Charged once; answered once.
    return Verdict::Forward;
  }
  client.calls++;
  client.bytes += size;
  bytes_ += size;
  return Verdict::Forward;
}

void GuestTraffic::sent(const wire::MessageHeader& header) {
  using wire::MessageType;
  if (header.fixed.type != MessageType::MethodReturn && header.fixed.type != MessageType::Error) return;
  if (!header.has_reply_serial) return;
  auto call = calls_.find(std::make_pair(header.destination, header.reply_serial));
  if (call == calls_.end()) return;
  size_t size = call->second;
  calls_.erase(call);
  bytes_ -= size;
  auto client = clients_.find(header.destination);
  if (client == clients_.end()) return;
  client->second.calls--;
  client->second.bytes -= size;
}

}  // namespace sidebus
