// test-settings-namespaces.cpp — the Settings plugin's namespace rules
// (plugins/settings/namespaces.hpp) on their own: which allow-list entries
// an administrator may write, what each matches, and how the guest's ReadAll
// filters narrow it.
#include <glib.h>

#include "namespaces.hpp"

using namespace sidebus::settings;

namespace {

void test_allow_patterns() {
  for (const char* good : {"org.freedesktop.appearance", "org.gnome.*", "org.kde.kdeglobals.General", "a", "x-y_z.*"}) {
    std::string why = check_allow_pattern(good);
    if (!why.empty()) g_error("\"%s\" refused: %s", good, why.c_str());
  }
  for (const char* bad : {"", "*", ".*", "org.gnome*", "org..gnome", ".org", "org.", "org.gnome.**", "org.*.x",
                          "org gnome", "org/gnome", "org.gnome.*.*"}) {
    if (check_allow_pattern(bad).empty()) g_error("\"%s\" accepted", bad);
  }
  std::string too_long = check_allow_pattern(std::string(256, 'a'));
  g_assert_cmpstr(too_long.c_str(), ==, "is longer than 255 bytes");
  g_assert_true(check_allow_pattern("*").find("every host setting") != std::string::npos);
}

void test_allow_matches() {
  g_assert_true(allow_pattern_matches("org.freedesktop.appearance", "org.freedesktop.appearance"));
  g_assert_false(allow_pattern_matches("org.freedesktop.appearance", "org.freedesktop.appearance.x"));
  g_assert_false(allow_pattern_matches("org.freedesktop.appearance", "org.freedesktop"));
  g_assert_true(allow_pattern_matches("org.gnome.*", "org.gnome.desktop.privacy"));
  g_assert_false(allow_pattern_matches("org.gnome.*", "org.gnome"));
  g_assert_false(allow_pattern_matches("org.gnome.*", "org.gnome."));
  g_assert_false(allow_pattern_matches("org.gnome.*", "org.gnomeish.x"));
  AllowList list({"org.freedesktop.appearance", "org.gnome.desktop.interface"});
  g_assert_true(list.allows("org.gnome.desktop.interface"));
  g_assert_false(list.allows("org.gnome.desktop.privacy"));
  g_assert_false(AllowList({}).allows("org.freedesktop.appearance"));
  std::string none = AllowList({}).describe(), both = list.describe();
  g_assert_cmpstr(none.c_str(), ==, "(none)");
  g_assert_cmpstr(both.c_str(), ==, "org.freedesktop.appearance, org.gnome.desktop.interface");
}

void test_guest_filters() {
  g_assert_true(filters_match({}, "org.freedesktop.appearance"));
  g_assert_true(filters_match({""}, "org.freedesktop.appearance"));
  g_assert_true(filters_match({"*"}, "org.freedesktop.appearance"));
  g_assert_true(filters_match({"org.freedesktop.*"}, "org.freedesktop.appearance"));
  g_assert_true(filters_match({"org.free*"}, "org.freedesktop.appearance"));
  g_assert_true(filters_match({"x", "org.freedesktop.appearance"}, "org.freedesktop.appearance"));
  g_assert_false(filters_match({"org.gnome.*"}, "org.freedesktop.appearance"));
  g_assert_false(filters_match({"org.freedesktop.appearanc"}, "org.freedesktop.appearance"));
}

}  // namespace

int main(int argc, char** argv) {
  g_test_init(&argc, &argv, nullptr);
  g_test_add_func("/settings-namespaces/allow-patterns", test_allow_patterns);
  g_test_add_func("/settings-namespaces/allow-matches", test_allow_matches);
  g_test_add_func("/settings-namespaces/guest-filters", test_guest_filters);
  return g_test_run();
}
