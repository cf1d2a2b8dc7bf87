// SPDX-License-Identifier: LGPL-2.1-or-later
// framed-link.hpp — the link end of a protocol 2 link on a byte-only
// transport (vsock, hybrid vsock, virtio-serial): D-Bus messages with their
// file descriptors, over frames (wire/channel-frames.hpp). docs/broker.md,
// "Protocol 2", is the user's description; this is how it is done.
//
// Channel 0 is the D-Bus stream. Each side cuts what its local peer sends at
// message boundaries (the relay reads whole messages), so every message goes
// out as DATA frames of channel 0, preceded by one FD record per fd it
// carries (fd-kinds.hpp decides what each becomes). The receiving side
// builds a local fd for each record — a document's host file, a memfd with a
// file's content, a pipe or socketpair end whose other end it pumps — and
// hands the message on with them once all are there, in order: a message
// that waits for a file's content holds back the ones behind it.
//
// Flow control: every channel, 0 included, is credit-based. The receiver of
// a channel grants (CREDIT) what it can buffer; the sender never sends more
// DATA than it was granted. So the link fd can always be read — whatever
// arrives fits in what was granted — and a stalled reader of one channel
// only stops the credit of that channel: channel 0 and the others go on.
// Channel 0's credit comes back as the local peer takes its messages (and
// stops while the relay's queue toward it is full); a stream channel's as
// its local reader takes the bytes; a content channel's as it is written to
// the memfd. A direction ends with END from its sender (EOF, or in answer to
// STOP from its receiver, whose reader went away). Channel ids are never
// reused: the broker's are even, the agent's odd, channel 0 is both's.
//
// What the other end may make this end hold is bounded (ForwardingLimits):
// channels open at once, bytes buffered per channel and per link, the size of
// one file sent as content and the content being received at once. A message
// over a limit is refused (Refused: the relay answers it), the link stays. A
// peer that breaks the protocol — an unknown frame kind, a frame for a
// channel it did not open or already ended, DATA beyond its credit, a
// malformed record, a record in the middle of a message, a message whose fd
// count does not match its records — is an error: the relay closes the link.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <string>

#include "link/link-end.hpp"
#include "util/unique-fd.hpp"
#include "wire/channel-frames.hpp"

namespace sidebus {

struct ForwardingLimits {
  unsigned max_channels = 32;                     // broker.max_channels
  size_t max_channel_buffer = 1024 * 1024;        // broker.max_channel_buffer (a channel's credit)
  size_t max_link_buffer = 16 * 1024 * 1024;      // broker.max_link_buffer (all channels but 0)
  uint64_t max_content_size = 64 * 1024 * 1024;   // broker.max_content_size (one file)
  uint64_t max_content_in_flight = 256 * 1024 * 1024;  // broker.max_content_in_flight
};

// A guest fd of one of its documents, as the agent announced it.
struct DocumentReference {
  std::string doc_id;
  std::string path;  // inside the document
  wire::FdAccess access = wire::FdAccess::ReadOnly;
};
// Opens the host file of a document reference (same access mode), or says
// why not: a D-Bus error name and a message that may go to the guest. Runs on
// the relay thread: must be thread-safe and must not wait for the main loop.
using DocumentResolver = std::function<UniqueFd(const DocumentReference&, Refusal* refusal)>;

struct FramedLinkOptions {
  bool broker_end = false;     // which channel ids are ours (broker: even)
  std::string documents_path;  // agent end: local files under it cross as document references
  DocumentResolver resolver;   // broker end: document references → host fds; none: refused
  ForwardingLimits limits;     // what the other end may make this end hold
  std::string limit_prefix;    // how the limits are named in refusals ("broker." at the broker end)
  size_t max_message_size = 0;  // larger messages from the other end are Skipped
};

// What a framed link did (the relay's counters, relay.hpp): written by the
// relay thread, read by anyone.
struct FramedLinkCounters {
  std::atomic<uint64_t> fds_forwarded{0};    // fds sent or received as records
  std::atomic<uint64_t> channels_opened{0};  // by either end
  std::atomic<uint64_t> channels_open{0};    // holding resources now
  std::atomic<uint64_t> buffered_peak{0};    // most bytes held for all channels but 0 at once
  std::atomic<uint64_t> channel_buffered_peak{0};  // most bytes held for one channel at once
};

// @fd: the link, non-blocking, borrowed. @counters may be NULL.
std::unique_ptr<LinkEnd> make_framed_link(int fd, std::string name, FramedLinkOptions options,
                                          FramedLinkCounters* counters);

}  // namespace sidebus
