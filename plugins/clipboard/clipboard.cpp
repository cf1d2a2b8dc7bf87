// SPDX-License-Identifier: LGPL-2.1-or-later
// clipboard.cpp — the clipboard plugin's libpeas extension: one
// FileTransferPortal (file-transfer.hpp) per guest link, and the schema of
// portals.clipboard. The clipboard's text and images, and the transfer key
// itself, cross on the Wayland clipboard (docs/clipboard.md); this plugin
// moves the files.
#include "file-transfer.hpp"
#include "portal-module.hpp"

SIDEBUS_PORTAL_MODULE(ClipboardPortal, clipboard_portal, sidebus::clipboard::FileTransferPortal,
                      std::span<const SidebusConfigKey>(sidebus::clipboard::kConfigKeys,
                                                        sidebus::clipboard::kNumConfigKeys))
