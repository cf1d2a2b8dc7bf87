// splice.hpp — a bidirectional byte pump between two fds (the link and a D-Bus
// stream), one thread per direction, so the D-Bus traffic of a VM never waits
// for the main loop and the main loop never waits for a slow guest.
//
// * EOF on one side half-closes the other (shutdown(SHUT_WR)) and that
//   direction is done; when a side is not a socket (virtio-serial port) there
//   is no half-close, so the whole splice stops.
// * Any error stops both directions and closes both fds.
// * With pass_fds, SCM_RIGHTS fds received with a chunk are sent with that very
//   chunk, and no chunk spans two D-Bus messages (the fixed header gives the
//   length), so fds stay with the message they belong to; this requires both
//   streams to start at a message boundary (they do: after SASL's BEGIN and the
//   handshake's READY).
//   Without it, an fd that arrives is closed at once and the splice stops with
//   an error: nothing is ever forwarded or leaked (MSG_CMSG_CLOEXEC).
// * Limits on what side B sends (the broker's end of a link: B is the guest):
//   that direction is parsed as D-Bus messages too, even without pass_fds.
//   Each fixed header (16 bytes, the only thing ever held back) is checked
//   before it is forwarded; bodies stream through. A malformed header or a
//   message above max_message_size stops the splice with an error; above
//   messages_per_second, B is simply read more slowly (backpressure).
// * on_done runs once, on the main context the splice was started from, when
//   both directions are finished; never after the Splice is destroyed.
// * The destructor stops both threads (they wait in poll() on an eventfd as
//   well as on their fds, which also works for character devices) and joins.
#pragma once

#include <glib.h>

#include <cstddef>
#include <functional>
#include <memory>
#include <string>

#include "util/main-context.hpp"
#include "util/unique-fd.hpp"

namespace sidebus {

// What side B of a Splice may send; 0 means no limit.
struct SpliceLimits {
  // Largest D-Bus message in bytes (fixed header, header fields, body); 0 or
  // anything above it: the D-Bus maximum, 128 MiB. A bigger message stops
  // the splice with G_IO_ERROR_MESSAGE_TOO_LARGE, a malformed fixed header
  // (or one above the D-Bus maximum) with G_IO_ERROR_INVALID_DATA; both are
  // reported as B's end, before any byte of that message is forwarded.
  size_t max_message_size = 0;
  // Token bucket, burst = rate. When it is empty, B is not read until a
  // token is back, so B's sender waits; nothing is dropped. Logged once, at
  // debug level.
  unsigned messages_per_second = 0;
};

class Splice {
 public:
  enum class Side { A, B };
  // ended_first: the side whose EOF or error ended the splice (or started its
  // end); error is NULL for a clean EOF on both sides.
  using DoneFunc = std::function<void(Side ended_first, const GError* error)>;

  // a_name/b_name appear in error messages ("link vsock:1234", "guest bus").
  static std::unique_ptr<Splice> start(UniqueFd a, std::string a_name, UniqueFd b, std::string b_name, bool pass_fds,
                                       DoneFunc on_done, GError** error, const SpliceLimits& b_limits = {});
  virtual ~Splice() = default;

  // Whether an error stopped (or is stopping) the splice: then the side it
  // came from and a copy of it. For an owner that learns of the end another
  // way first (its peer saw EOF before on_done could run) and still wants to
  // say why. Safe to call from the owner's thread at any time.
  virtual bool failed(Side* side, GError** error) const = 0;
};

}  // namespace sidebus
