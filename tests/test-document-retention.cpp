// SPDX-License-Identifier: LGPL-2.1-or-later
// test-document-retention.cpp — the retention policy's choice
// (documents/document-retention.hpp) and the usage file's lines
// (documents/document-usage.hpp), without any process: which documents a
// VM loses, in which order, and what a damaged state file can make of it.
#include <glib.h>

#include <string>
#include <utility>
#include <vector>

#include "documents/document-retention.hpp"
#include "documents/document-usage.hpp"

using sidebus::choose_documents_to_delete;
using sidebus::DocumentUsage;
using sidebus::RetentionPolicy;

namespace {

constexpr gint64 kDay = gint64(24) * 60 * 60 * G_USEC_PER_SEC;
constexpr gint64 kNow = gint64(1800000000) * G_USEC_PER_SEC;

std::vector<std::pair<std::string, gint64>> store() {
  return {
      {"c", kNow - 100 * kDay}, {"a", kNow - 1 * kDay}, {"d", kNow - 10 * kDay}, {"b", kNow - 1 * kDay}, {"e", kNow}};
}

void test_unused_days() {
  auto choice = choose_documents_to_delete(store(), kNow, {.max_documents = 0, .max_unused_days = 30});
  g_assert_cmpuint(choice.doc_ids.size(), ==, 1);
  g_assert_cmpstr(choice.doc_ids[0].c_str(), ==, "c");
  g_assert_cmpuint(choice.unused, ==, 1);
  g_assert_cmpuint(choice.over_limit, ==, 0);
}

void test_limit_oldest_first_ties_by_id() {
  auto choice = choose_documents_to_delete(store(), kNow, {.max_documents = 2, .max_unused_days = 0});
  const std::vector<std::string> expected = {"c", "d", "a"};  // a and b tie: a first
  g_assert_true(choice.doc_ids == expected);
  g_assert_cmpuint(choice.over_limit, ==, 3);
}

void test_both_and_none() {
  auto both = choose_documents_to_delete(store(), kNow, {.max_documents = 3, .max_unused_days = 5});
  const std::vector<std::string> expected = {"c", "d"};  // both unused; then 3 left, the limit
  g_assert_true(both.doc_ids == expected);
  g_assert_cmpuint(both.unused, ==, 2);
  g_assert_cmpuint(both.over_limit, ==, 0);
  g_assert_true(choose_documents_to_delete(store(), kNow, {.max_documents = 0, .max_unused_days = 0}).doc_ids.empty());
  g_assert_true(choose_documents_to_delete({}, kNow, RetentionPolicy{}).doc_ids.empty());
}

void test_usage_lines() {
  auto file = DocumentUsage::parse_line("1a2b 1800000000000000 64768 1234 f");
  g_assert_true(file.has_value());
  g_assert_cmpstr(file->first.c_str(), ==, "1a2b");
  g_assert_cmpint(file->second.last_used, ==, gint64(1800000000000000));
  g_assert_true(file->second.key.has_value());
  g_assert_cmpuint(file->second.key->parent_inode, ==, 1234);
  g_assert_false(file->second.key->directory);
  auto unknown = DocumentUsage::parse_line("ff 5 - - -");
  g_assert_true(unknown.has_value() && !unknown->second.key.has_value());
  // What is not exactly a line of the format is skipped, never half-read.
  for (const char* bad : {"", "ff", "ff 5", "ff 5 1 2", "ff 5 1 2 x", "ff -5 1 2 f", "../x 5 1 2 f", "ff 5 - 2 f",
                          "ff 5 1 2 f extra", "ff 99999999999999999999 1 2 f", "ff 5 - - f"})
    g_assert_false(DocumentUsage::parse_line(bad).has_value());
}

}  // namespace

int main(int argc, char** argv) {
  g_test_init(&argc, &argv, nullptr);
  g_test_add_func("/document-retention/unused-days", test_unused_days);
  g_test_add_func("/document-retention/limit-oldest-first", test_limit_oldest_first_ties_by_id);
  g_test_add_func("/document-retention/both-and-none", test_both_and_none);
  g_test_add_func("/document-retention/usage-lines", test_usage_lines);
  return g_test_run();
}
