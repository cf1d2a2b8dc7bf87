// SPDX-License-Identifier: LGPL-2.1-or-later
// screencast.hpp — the pieces of the ScreenCast plugin and how they meet.
//
// screencast.cpp          the portal object on the guest bus: one handler per
//                         method, the session's state from CreateSession to
//                         Start, the properties the guest reads
// screencast-options.cpp  what a guest may ask (SelectSources' table, checked
//                         against what the host offers) and what of the
//                         host's Start results it gets (streams, by table)
// restore-tokens.cpp      which guest client may use a restore token: the
//                         host keys "transient" tokens by its caller, and
//                         every guest client is the broker to the host
// stream-route.cpp        how the granted streams reach the guest on this
//                         link: OpenPipeWireRemote (and, with the stream
//                         relay, Start's node ids) — the one place that
//                         knows about the link kind
#pragma once

#include <sidebus-plugin.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace screencast {

inline constexpr char kInterface[] = "org.freedesktop.portal.ScreenCast";
// Version 5 adds the "mapping_id" stream property; 4 persist_mode and
// restore_token, 3 source_type, 2 cursor_mode. The guest is told the lower
// of this and the host portal's version.
inline constexpr guint32 kImplementedVersion = 5;

// Bits of AvailableSourceTypes / "types" and AvailableCursorModes / "cursor_mode".
inline constexpr guint32 kSourceMonitor = 1, kSourceWindow = 2, kSourceVirtual = 4;
inline constexpr guint32 kKnownSourceTypes = kSourceMonitor | kSourceWindow | kSourceVirtual;
inline constexpr guint32 kCursorHidden = 1, kCursorEmbedded = 2, kCursorMetadata = 4;
inline constexpr guint32 kKnownCursorModes = kCursorHidden | kCursorEmbedded | kCursorMetadata;
inline constexpr guint32 kPersistNone = 0, kPersistTransient = 1, kPersistPersistent = 2;
// Restore tokens are UUIDs (xdg-desktop-portal makes them with
// g_uuid_string_random and refuses anything else).
inline constexpr gsize kRestoreTokenLength = 36;
// Streams in one Start answer; more is a host answer we refuse.
inline constexpr gsize kMaxStreams = 64;

// ---- Options (screencast-options.cpp) ----------------------------------------

// What the host offers now: the checks run against these.
struct HostOffer {
  guint32 source_types = 0;  // AvailableSourceTypes
  guint32 cursor_modes = 0;  // AvailableCursorModes
};

// SelectSources' options for the host: only the documented keys, each
// type-checked; "types" and "cursor_mode" also against @offer;
// "persist_mode" at most 2; "restore_token" a UUID; options newer than
// @version dropped. InvalidArgument otherwise. A new non-floating a{sv}.
GVariant* select_sources_options(SidebusContext* context, GVariant* guest_options, const HostOffer& offer,
                                 guint32 version, GError** error);

// One stream of a Start answer: the PipeWire node and its documented
// properties (id, position, size, source_type, mapping_id).
struct Stream {
  guint32 node_id = 0;
  GVariant* properties = nullptr;  // a{sv}, a reference
  Stream() = default;
  Stream(guint32 node_id, GVariant* properties);  // takes a new reference
  Stream(const Stream& other);
  Stream& operator=(const Stream& other);
  ~Stream();
};

// The streams of a successful Start answer, every one checked; false (with
// the reason) if there are none, too many, or one is malformed.
bool streams_from_results(SidebusContext* context, GVariant* host_results, std::vector<Stream>* streams,
                          GError** error);
// "streams" as the guest gets it: a(ua{sv}) (floating).
GVariant* streams_variant(const std::vector<Stream>& streams);

// ---- Restore tokens (restore-tokens.cpp) --------------------------------------

// Who got a token: the guest client, on which link of this broker.
struct TokenOwner {
  guint64 link = 0;  // a serial per started link (guest unique names repeat across guest boots)
  std::string sender;
};
// Whether @owner may pass @token to the host. A transient token (valid
// while its app runs) is only its own client's; a persistent one any client
// of this VM; a token this broker never handed out passes (it cannot be
// transient: the host keeps transient tokens only for the broker's own
// connection, and every one the broker got is recorded).
bool restore_token_usable(const std::string& token, const TokenOwner& owner);
// The host gave @owner @token for a session persisting as @persist_mode.
// False when the table is full of transient tokens: the guest must not get
// a token the broker cannot keep apart.
bool record_restore_token(const std::string& token, guint32 persist_mode, const TokenOwner& owner);

// ---- Stream routes (stream-route.cpp) -----------------------------------------

// How the streams a session was granted reach the guest. One per link.
class StreamRoute {
 public:
  virtual ~StreamRoute() = default;
  // Start succeeded on the host with @host_streams: @done gets the streams
  // as the guest is to see them (for the fd routes: the host's; for the
  // relay: the guest nodes made for them), now or later, or an error.
  // @done never runs after the session ended.
  using PublishedFunc = std::function<void(std::vector<Stream> guest_streams, GError* error)>;
  virtual void publish(SidebusSession* session, const std::vector<Stream>& host_streams, PublishedFunc done) = 0;
  // OpenPipeWireRemote on a started session; answers @invocation.
  // @host_options: the filtered options for the host call.
  virtual void open_remote(SidebusSession* session, GDBusMethodInvocation* invocation, GVariant* host_options) = 0;
  // The session ended, however it ended: whatever the route made for it goes.
  virtual void session_ended(SidebusSession* session) = 0;
};

// The route this link allows (pipewire-remote.hpp): the host's fd on an
// fd-capable link, the stream relay on a byte-only link with fd forwarding,
// a clear NotSupported on the others.
std::unique_ptr<StreamRoute> stream_route_for(SidebusContext* context);

}  // namespace screencast
