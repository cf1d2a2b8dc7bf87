// SPDX-License-Identifier: LGPL-2.1-or-later
// pipewire-remote.hpp — how a PipeWire remote (ScreenCast's and Camera's
// OpenPipeWireRemote) reaches the guest, decided once per link.
//
// The host portal answers OpenPipeWireRemote with the fd of a PipeWire
// connection it opened for the app, its permissions already cut down to the
// nodes the user granted. What the guest can do with it depends on the link:
//  - kNative: a unix-socket link passes the fd as it is (SCM_RIGHTS). The
//    guest app speaks PipeWire's native protocol to the host daemon, and the
//    memfds and eventfds PipeWire sends over that socket cross with it.
//  - kUnavailable: a byte-only link (vsock, virtio-serial), with or without
//    sidebus' fd forwarding. Without it no fd crosses at all; with it, a
//    socket becomes a byte stream channel — which would carry PipeWire's
//    messages but not the fds PipeWire passes inside them (every buffer is a
//    memfd or DMA-BUF, every wake-up an eventfd), so the app would connect
//    and then never see a frame. The call fails with NotSupported, naming
//    what is missing, before the host opens anything.
//  - kRelay: a byte-only link with fd forwarding: the stream relay
//    (stream-relay.hpp) brings the frames to a node on the guest's own
//    PipeWire, and the app's remote is a guest PipeWire connection.
// kUnavailable is left for byte-only links without fd forwarding (link
// protocol 1): the relay needs its frame socket to cross.
#pragma once

#include <sidebus-plugin.h>

namespace sidebus::plugins {

enum class PipeWireRoute {
  kNative,
  kRelay,
  kUnavailable,
};

PipeWireRoute pipewire_route(SidebusContext* context);

// The NotSupported error for a link whose route is kUnavailable; @what names
// the stream for the message ("the screen cast", "the camera").
GError* pipewire_unavailable_error(SidebusContext* context, const char* what);

// SidebusReplyFunc for a forwarded OpenPipeWireRemote on a kNative link:
// the host's reply must be "(h)" naming its one fd; the guest gets exactly
// that fd, nothing else the host may have attached.
GVariant* pass_pipewire_fd(SidebusContext* context, GVariant* host_reply, GUnixFDList* host_fds,
                           GUnixFDList** guest_fds, gpointer user_data, GError** error);

}  // namespace sidebus::plugins
