// restore-tokens.cpp — keeping guest clients apart where the host cannot.
//
// xdg-desktop-portal lets an app skip the dialog of a new screen cast with
// the restore token of an earlier one. It keeps a "transient" token
// (persist_mode 1: while the app runs) for the D-Bus sender that got it, and
// a "persistent" one (2) for the app id. To the host every guest client is
// the broker: one sender, app id "". Without this table any guest client
// of the VM could restore another client's transient screen cast without
// the user being asked, and still could after the VM rebooted (guest
// unique names repeat; the broker's host connection, and so the host's
// transient tokens, live on).
//
// So the broker remembers, for every token the host handed this VM, its
// persist mode and who got it (the guest client and the link). A transient
// token is only its owner's; a persistent one is the VM's (the app id it is
// kept for is shared anyway, docs/screencast.md "Identity"); an unknown
// token passes — it can only be a persistent one from before this broker
// started, or nothing the host knows (then the user is simply asked).
//
// The table lives as long as the broker process (one VM), across links, and
// is bounded: getting a new token needs the user's consent in a host
// dialog, so it grows at the user's pace; when it is full, persistent
// tokens are forgotten first (they pass as unknown), and a transient token
// that cannot be recorded is not given to the guest at all.
#include <deque>
#include <map>

#include "screencast.hpp"

namespace screencast {
namespace {

constexpr size_t kMaxTokens = 1024;

struct Entry {
  guint32 persist_mode;
  TokenOwner owner;
};

struct Table {
  std::map<std::string, Entry> entries;
  std::deque<std::string> order;  // oldest first (may hold forgotten tokens)

  bool forget_oldest_persistent() {
    for (auto it = order.begin(); it != order.end(); ++it) {
      auto found = entries.find(*it);
      if (found == entries.end()) continue;
      if (found->second.persist_mode != kPersistPersistent) continue;
      entries.erase(found);
      order.erase(it);
      return true;
    }
    return false;
  }
  void compact() {
    std::erase_if(order, [this](const std::string& token) { return !entries.contains(token); });
  }
};

Table& table() {
  static Table instance;  // the module stays loaded for the broker's life
  return instance;
}

}  // namespace

bool restore_token_usable(const std::string& token, const TokenOwner& owner) {
  auto found = table().entries.find(token);
  if (found == table().entries.end() || found->second.persist_mode != kPersistTransient) return true;
  return found->second.owner.link == owner.link && found->second.owner.sender == owner.sender;
}

bool record_restore_token(const std::string& token, guint32 persist_mode, const TokenOwner& owner) {
  Table& t = table();
  auto found = t.entries.find(token);
  if (found != t.entries.end()) {
    found->second = {persist_mode, owner};
    return true;
  }
  if (t.order.size() >= kMaxTokens) t.compact();
  // Full of transient tokens: a persistent one may still go to the guest
  // unrecorded (an unknown token is treated as persistent), a transient one
  // may not.
  if (t.entries.size() >= kMaxTokens && !t.forget_oldest_persistent()) return persist_mode != kPersistTransient;
  t.entries.emplace(token, Entry{persist_mode, owner});
  t.order.push_back(token);
  return true;
}

}  // namespace screencast
