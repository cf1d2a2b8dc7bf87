// SPDX-License-Identifier: LGPL-2.1-or-later
// app-unit-name.hpp — the systemd unit name that gives the broker its VM's
// app id on the host, and how xdg-desktop-portal reads an app id back from a
// unit name. Pure functions, no I/O: host-identity.cpp uses them, and the
// unit tests check every name we make against both of xdg-desktop-portal's
// parsers.
//
// xdg-desktop-portal identifies an unsandboxed (host) client by its pid:
// sd_pid_get_user_unit() (libsystemd reads /proc/PID/cgroup; only units of a
// systemd *user* manager count), then, for a unit starting with "app-", one
// of two parsers of the names systemd.io/DESKTOP_ENVIRONMENTS describes:
//   1.14.0 – 1.16.0 (and 1.15.x)  src/xdp-utils.c _xdp_parse_app_id_from_unit_name():
//     ^app-(?:[[:alnum:]]+\-)?(.+?\..+?\..+?)(?:[@\-][[:alnum:]]*)?(?:-autostart)?(?:\.scope|\.service|\.slice)$
//     (1.14.0 itself: [0-9]* for the random part) — the app id needs three
//     or more dot-separated elements;
//   1.16.1, 1.17.0 – 1.22 (src/xdp-utils.c; src/xdp-app-info-host.c from 1.19,
//     _xdp_app_info_host_parse_app_id_from_unit_name()):
//     ^app-(?:[[:alnum:]]+\-)?(.+?)(?:\-[[:alnum:]]*)(?:\.scope|\.slice)$  or
//     ^app-(?:[[:alnum:]]+\-)?(.+?)(?:@[[:alnum:]]*|\-autostart)?\.service$
// and the match is unescaped with systemd's cunescape(UNESCAPE_RELAX) ('' if
// that fails). Anything else — no systemd, a system unit, a unit not named
// app-…, xdg-desktop-portal built without libsystemd, or older than 1.14 — is
// app id ''.
#pragma once

#include <sys/types.h>

#include <string>
#include <string_view>

namespace sidebus::unit_name {

// systemd's unit_name_escape(): [A-Za-z0-9:_.] stay (a leading '.' does
// not), '/' becomes '-', every other byte \xNN (lower-case hex).
std::string escape(std::string_view text);

// systemd's longest unit name (UNIT_NAME_MAX less its NUL).
inline constexpr size_t kMaxUnitNameLength = 255;

// "app-sidebus-<escape(app_id)>-<pid>.scope", the transient scope the broker
// moves into ("sidebus" is the launcher part of the name, the pid the random
// part); "" if that would be longer than kMaxUnitNameLength.
std::string app_scope(std::string_view app_id, pid_t pid);

// The two generations of xdg-desktop-portal's parser (above).
enum class XdpParser {
  k1_14,  // 1.14.0 – 1.16.0
  k1_17,  // 1.16.1, 1.17.0 and later
};
// The app id xdg-desktop-portal of that generation reads from @unit; "" if
// none. Unescaping handles the escapes unit names use (\xNN and systemd's
// one-letter C escapes); any other backslash stays as written, as
// UNESCAPE_RELAX keeps escapes it does not know.
std::string xdp_app_id(std::string_view unit, XdpParser parser);

// The unit a process is in, from the text of its /proc/PID/cgroup: the last
// unit-like element (a name ending in .scope or .service) of the systemd
// hierarchy's path ("0::" on cgroup v2 and hybrid hosts, "name=systemd"
// on legacy ones); "" if none.
std::string unit_of_cgroup(std::string_view proc_cgroup);

}  // namespace sidebus::unit_name
