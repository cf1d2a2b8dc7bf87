// SPDX-License-Identifier: LGPL-2.1-or-later
// test-documents.cpp — the VM's document store over its life: the retention
// policy (documents.max_unused_days, documents.max_documents) deletes what
// the guest has not been given for long, oldest first, and the same host
// file exported again is the same document with the permissions asked for.
// Real parts as in test-filechooser: the host portal and test backend, the
// broker with its private document portal, the guest bus and agent; the
// assertions are what the guest can open, read and write at its paths.
//
// "Unused for N days" is made by editing the broker's own record of when
// each document was last used (<state-dir>/document-usage, its format in
// core/documents/document-usage.hpp) while the broker is stopped, as if the
// days had passed with the VM off.
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <sstream>
#include <string>

#include "support/assert.hpp"
#include "support/files.hpp"
#include "support/vm.hpp"

using namespace sidebus::test;
using namespace std::chrono_literals;

namespace {

constexpr gint64 kDay = gint64(24) * 60 * 60 * G_USEC_PER_SEC;

// Sets the "last used" time of @doc_id in the usage file to @days ago.
void age_document(const std::string& state_dir, const std::string& doc_id, gint64 days) {
  const std::string path = state_dir + "/document-usage";
  auto text = read_file(path);
  if (!text) throw FixtureError("the broker left no " + path);
  std::istringstream in(*text);
  std::string out, line;
  bool found = false;
  const gint64 when = g_get_real_time() - days * kDay;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string id, last_used, rest;
    fields >> id >> last_used;
    std::getline(fields, rest);
    if (id == doc_id) {
      line = id + " " + std::to_string(when) + rest;
      found = true;
    }
    out += line + "\n";
  }
  if (!found) throw FixtureError(path + " does not name document " + doc_id);
  std::ofstream(path, std::ios::trunc) << out;
}

// The document id in a guest path <documents>/<id>/<name>.
std::string doc_id_of(Vm& vm, const std::string& guest_path) {
  std::string rest = guest_path.substr(vm.documents().size() + 1);
  return rest.substr(0, rest.find('/'));
}

bool can_read(const std::string& guest_path, const std::string& contents) { return read_file(guest_path) == contents; }

VmOptions retention_vm(const std::string& documents_json) {
  return {.name = "documents-vm", .portals = {"filechooser"}, .config = {{"60-documents.json", documents_json}}};
}

void test_unused_documents_deleted_at_start_up() {
  Vm vm(retention_vm(R"({"documents": {"max_unused_days": 30}})"));
  HostFiles files;
  const std::string old_path = vm.share_document(files.add("old.txt", "from last season"));
  const std::string recent_path = vm.share_document(files.add("recent.txt", "from last week"));
  g_assert_true(can_read(old_path, "from last season"));
  const std::string old_id = doc_id_of(vm, old_path);
  const std::string recent_id = doc_id_of(vm, recent_path);

  vm.restart_broker([&] {
    age_document(vm.state_dir(), old_id, 40);
    age_document(vm.state_dir(), recent_id, 7);
  });

  // The old one goes (the retention pass runs once the broker is up)…
  g_assert_true(wait_until([&] { return !read_file(old_path).has_value(); }, 10s));
  g_assert_true(wait_until(
      [&] { return vm.broker().process().log().find("document retention: deleting 1 of the 2") != std::string::npos; },
      5s));
  // …the recent one stays.
  g_assert_true(can_read(recent_path, "from last week"));
  // And a deleted document is not mapped back to its host file either: a
  // guest path of it names nothing on the host.
  vm.host().reset_backend();
  vm.host().set_reply("SaveFile", kResponseCancelled, "{}");
  auto save = vm.file_chooser("SaveFile", "{'current_file': <b'" + old_path + "'>}");
  g_assert_true(save->wait_for_response());
  auto calls = vm.host().backend_calls();
  g_assert_cmpuint(calls.size(), ==, 1);
  g_assert_false(has_key(calls[0].options.get(), "current_file"));
  // Choosing the old file again gives the guest a new document of it.
  const std::string again = vm.share_document(files.dir.path() + "/old.txt");
  g_assert_true(can_read(again, "from last season"));
  const std::string again_id = doc_id_of(vm, again);  // not a temporary: g_assert_cmpstr keeps the pointer
  g_assert_cmpstr(again_id.c_str(), !=, old_id.c_str());
}

void test_limit_deletes_oldest_first() {
  Vm vm(retention_vm(R"({"documents": {"max_documents": 3}})"));
  HostFiles files;
  const std::string oldest = vm.share_document(files.add("oldest.txt", "1"));
  const std::string older = vm.share_document(files.add("older.txt", "2"));
  vm.restart_broker([&] {
    age_document(vm.state_dir(), doc_id_of(vm, oldest), 3);
    age_document(vm.state_dir(), doc_id_of(vm, older), 2);
  });
  const std::string a = vm.share_document(files.add("a.txt", "a"));
  const std::string b = vm.share_document(files.add("b.txt", "b"));
  // Four documents, the limit three: once the exports are idle, the oldest goes.
  g_assert_true(wait_until([&] { return !read_file(oldest).has_value(); }, 20s));
  g_assert_true(can_read(older, "2"));
  g_assert_true(can_read(a, "a"));
  g_assert_true(can_read(b, "b"));
  // Using the older one again makes it the most recent: the next to go is a.
  assert_str_eq(vm.share_document(files.dir.path() + "/older.txt"), older);
  const std::string c = vm.share_document(files.add("c.txt", "c"));
  g_assert_true(wait_until([&] { return !read_file(a).has_value(); }, 20s));
  g_assert_true(can_read(older, "2"));
  g_assert_true(can_read(b, "b"));
  g_assert_true(can_read(c, "c"));
}

// A reload that lowers the limit applies it at once, oldest first.
void test_reload_applies_at_once() {
  Vm vm(retention_vm("{}"));
  HostFiles files;
  const std::string first = vm.share_document(files.add("first.txt", "1"));
  const std::string second = vm.share_document(files.add("second.txt", "2"));
  write_file(vm.broker().config_dir() + "/70-limit.json", R"({"documents": {"max_documents": 1}})");
  g_assert_cmpint(kill(vm.broker().process().pid(), SIGHUP), ==, 0);
  g_assert_true(wait_until([&] { return !read_file(first).has_value(); }, 10s));
  g_assert_true(can_read(second, "2"));
  g_assert_true(wait_until(
      [&] { return vm.broker().process().log().find("in effect now: documents.max_documents") != std::string::npos; },
      5s));
}

// The same file again is the same document; asked for writing, it becomes
// writable (never before).
void test_same_file_same_document_more_permissions_when_asked() {
  Vm vm(retention_vm("{}"));
  HostFiles files;
  const std::string host_file = files.add("notes.txt", "first");
  const std::string read_only = vm.share_document(host_file);
  assert_str_eq(vm.share_document(host_file), read_only);
  int fd = open(read_only.c_str(), O_WRONLY | O_TRUNC);
  g_assert_cmpint(fd, <, 0);

  vm.host().set_reply("SaveFile", kResponseSuccess, uris_result({host_file}));
  auto save = vm.file_chooser("SaveFile", "{'current_name': <'notes.txt'>}");
  g_assert_true(save->wait_for_response());
  g_assert_cmpuint(save->response(), ==, kResponseSuccess);
  std::vector<std::string> uris = strv(save->results(), "uris");
  g_assert_cmpuint(uris.size(), ==, 1);
  assert_str_eq(path_of(uris[0]), read_only);        // the same document…
  fd = open(read_only.c_str(), O_WRONLY | O_TRUNC);  // …now writable
  g_assert_cmpint(fd, >=, 0);
  g_assert_cmpint(write(fd, "second", 6), ==, 6);
  close(fd);
  g_assert_true(read_file(host_file) == "second");
}

}  // namespace

int main(int argc, char** argv) {
  g_test_init(&argc, &argv, nullptr);
  add_test("/documents/retention/unused-deleted-at-start-up", test_unused_documents_deleted_at_start_up);
  add_test("/documents/retention/limit-oldest-first", test_limit_deletes_oldest_first);
  add_test("/documents/retention/reload-applies-at-once", test_reload_applies_at_once);
  add_test("/documents/reuse/more-permissions-when-asked", test_same_file_same_document_more_permissions_when_asked);
  return g_test_run();
}
