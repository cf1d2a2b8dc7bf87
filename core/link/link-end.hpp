// SPDX-License-Identifier: LGPL-2.1-or-later
// link-end.hpp — the link side of a Relay (relay.hpp): whole D-Bus messages
// to and from the other end of the VM boundary, on the relay's thread.
//
// Two implementations: the raw stream (protocol 1, and every link that
// passes fds natively: messages as they are, fds with SCM_RIGHTS or not at
// all; relay.cpp) and the framed link (protocol 2 on byte-only transports:
// channel 0 carries the messages, the fds travel as channels;
// framed-link.hpp). The relay drives either the same way: it asks for the
// fds to poll, lets the end do its I/O, takes the messages that are ready,
// and hands it the messages of the local side.
#pragma once

#include <glib.h>
#include <poll.h>

#include <cstddef>
#include <string>
#include <vector>

#include "link/message-stream.hpp"

namespace sidebus {

// Why a message cannot cross: an error name and text for its sender.
struct Refusal {
  std::string error_name;
  std::string why;
};

class LinkEnd {
 public:
  virtual ~LinkEnd() = default;

  // The fds to poll this turn, appended to @pfds. @deliver: the relay takes
  // messages now (its queue toward the local side is below its mark);
  // @local_backlog: the bytes in that queue.
  virtual void add_pollfds(std::vector<struct pollfd>* pfds, bool deliver, size_t local_backlog) = 0;
  // After poll(): the I/O the end does on its own (for the framed link: the
  // link fd's frames and every channel). @pfds points at what add_pollfds()
  // added. False: the link must go; *error says why (NULL: it went away).
  virtual bool dispatch(const struct pollfd* pfds, GError** error) = 0;
  // Whether next() may have something now (the relay calls it then).
  virtual bool readable() const = 0;

  enum class Next {
    Message,     // *out: a whole message, its fds local ones
    Skipped,     // *out: the header and size of a message above the size limit (not read)
    Refused,     // *out: the header of a message whose fds could not be made here; *refusal says why
    WouldBlock,  // nothing more now
    End,         // the other end's D-Bus stream ended at a message boundary
    Failed,      // *error
  };
  virtual Next next(Message* out, Refusal* refusal, GError** error) = 0;

  // Queues a message for the other end, taking its fds. False: it cannot
  // cross (an fd that cannot be forwarded); nothing was queued, its fds are
  // closed, *refusal says why.
  virtual bool push(Message message, Refusal* refusal) = 0;
  virtual size_t queued_bytes() const = 0;  // messages queued, not yet written
  virtual bool empty() const = 0;           // nothing left to write
  // Writes what it can without blocking. False when the peer went away
  // (@error NULL) or on an error.
  virtual bool flush(GError** error) = 0;

  // The local side ended: pass its end on once everything queued is
  // written. False: this transport cannot say so (a device: no half-close);
  // the relay then finishes.
  virtual bool end_stream() = 0;
};

}  // namespace sidebus
