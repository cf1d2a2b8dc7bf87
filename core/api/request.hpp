// request.hpp — the table of a link's pending portal requests (request.cpp).
#pragma once

#include <map>
#include <string>

#include "sidebus-plugin.h"

namespace sidebus {

class RequestTable {
 public:
  explicit RequestTable(unsigned max_pending) : max_pending_(max_pending) {}
  RequestTable(const RequestTable&) = delete;
  RequestTable& operator=(const RequestTable&) = delete;
  // Closes every pending host request and unexports the guest objects.
  ~RequestTable();

  unsigned max_pending() const { return max_pending_; }
  void set_max_pending(unsigned max_pending) { max_pending_ = max_pending; }
  size_t size() const { return by_path_.size(); }
  bool contains(const std::string& guest_path) const { return by_path_.count(guest_path) != 0; }
  void insert(const std::string& guest_path, SidebusRequest* request) { by_path_[guest_path] = request; }
  void erase(const std::string& guest_path) { by_path_.erase(guest_path); }

 private:
  unsigned max_pending_;
  std::map<std::string, SidebusRequest*> by_path_;  // one ref each
};

}  // namespace sidebus
