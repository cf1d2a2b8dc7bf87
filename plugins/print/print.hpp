// print.hpp — the pieces of the Print plugin and how they meet.
//
// print.cpp          the portal object on the guest bus: PreparePrint and
//                    Print, each validated, then forwarded to the host
//                    portal through the core's Request helper; the tokens
//                    PreparePrint hands out, per guest client; the
//                    document's fd → a host file (plugins/common/host-input)
// print-options.cpp  the tables: what each method's options, the print
//                    settings and the page setup may hold, type-checked,
//                    validated and capped; the host's answer made fit for
//                    the guest (no host paths)
#pragma once

#include <sidebus-plugin.h>

namespace sidebus::print {

inline constexpr char kInterface[] = "org.freedesktop.portal.Print";
// Version 2 added accept_label, 3 supported_output_file_formats, 4
// has_current_page and has_selected_pages. The guest is told the lower of
// this and the host portal's version (xdg-desktop-portal 1.16: 1).
inline constexpr guint32 kImplementedVersion = 4;

// Each returns a new non-floating a{sv} with only the keys its table names,
// checked (INVALID_ARGUMENT otherwise).
GVariant* prepare_print_options(SidebusContext* context, GVariant* options, GError** error);
GVariant* print_options(SidebusContext* context, GVariant* options, GError** error);
GVariant* print_settings(SidebusContext* context, GVariant* settings, GError** error);
GVariant* page_setup(SidebusContext* context, GVariant* page_setup, GError** error);

// The host's PreparePrint results as the guest gets them: "settings",
// "page-setup" and "token", the settings without the host's print-to-file
// location (a host path). A new floating a{sv}.
GVariant* guest_prepare_results(GVariant* host_results);

}  // namespace sidebus::print
