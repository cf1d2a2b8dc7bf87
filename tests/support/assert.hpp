// SPDX-License-Identifier: LGPL-2.1-or-later
// assert.hpp — assertions the GLib test macros lack. assert_str_eq is
// g_assert_cmpstr for std::string expressions: g_assert_cmpstr evaluates its
// operands into `const char*` locals, so `g_assert_cmpstr(f().c_str(), ...)`
// reads a temporary that is already gone. This macro copies both sides into
// std::string locals first, so temporaries, std::string and const char* are
// all safe.
#pragma once

#include <glib.h>

#include <string>

#define assert_str_eq(actual, expected)                                  \
  do {                                                                   \
    const std::string sidebus_actual_ = (actual);                        \
    const std::string sidebus_expected_ = (expected);                    \
    g_assert_cmpstr(sidebus_actual_.c_str(), ==, sidebus_expected_.c_str()); \
  } while (0)
