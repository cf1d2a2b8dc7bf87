// SPDX-License-Identifier: LGPL-2.1-or-later
// address.cpp — the grammar of --listen and --connect addresses (address.hpp).
#include "link/address.hpp"

#include <sys/un.h>

namespace sidebus {

bool parse_decimal(std::string_view text, uint64_t max, uint64_t* out) {
  if (text.empty() || text.size() > 10 || (text.size() > 1 && text[0] == '0')) return false;
  uint64_t value = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return false;
    value = value * 10 + static_cast<uint64_t>(c - '0');
  }
  if (value > max) return false;
  *out = value;
  return true;
}

bool invalid_address(GError** error, const std::string& address, const char* reason) {
  g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT, "invalid link address “%s”: %s", address.c_str(), reason);
  return false;
}

// "cannot listen on “unix:/x”: Permission denied; <hint>"
GError* address_errno_error(int saved, const char* doing, const std::string& address, const char* hint) {
  return g_error_new(G_IO_ERROR, g_io_error_from_errno(saved), "%s “%s”: %s%s", doing, address.c_str(),
                     g_strerror(saved), hint);
}

namespace {

bool parse_address(const std::string& address, bool listen, LinkAddress* out, GError** error) {
  const char* usage = listen ? "use unix:PATH[,nofds][,mode=0660], vsock:PORT, fd:N[,nofds] or systemd[,nofds]"
                             : "use unix:PATH[,nofds], vsock:[CID:]PORT or virtio-serial:/dev/virtio-ports/NAME";
  std::string_view text = address;
  size_t comma = text.find(',');
  std::string_view main = text.substr(0, comma);
  LinkAddress result;
  uint64_t number = 0;

  if (main.substr(0, 5) == "unix:") {
    result.kind = LinkAddress::Kind::Unix;
    result.path = std::string(main.substr(5));
    if (result.path.empty()) return invalid_address(error, address, "empty socket path");
    if (result.path.size() >= sizeof(sockaddr_un::sun_path))
      return invalid_address(error, address, "socket path too long for a unix socket (107 bytes at most): use a shorter path");
    if (result.path.find('\0') != std::string::npos) return invalid_address(error, address, "NUL byte in the path");
  } else if (main.substr(0, 6) == "vsock:") {
    result.kind = LinkAddress::Kind::Vsock;
    std::string_view rest = main.substr(6);
    size_t colon = rest.find(':');
    if (colon != std::string_view::npos) {
      if (listen)
        return invalid_address(error, address, "a listening vsock takes only a port (it listens on every CID): use vsock:PORT");
      if (!parse_decimal(rest.substr(0, colon), UINT32_MAX - 1, &number))
        return invalid_address(error, address, "the CID is not a decimal number below 4294967295");
      result.cid = static_cast<uint32_t>(number);
      rest = rest.substr(colon + 1);
    }
    if (!parse_decimal(rest, UINT32_MAX - 1, &number))
      return invalid_address(error, address, "the port is not a decimal number below 4294967295");
    result.port = static_cast<uint32_t>(number);
  } else if (main.substr(0, 3) == "fd:" && listen) {
    result.kind = LinkAddress::Kind::Fd;
    if (!parse_decimal(main.substr(3), INT32_MAX, &number))
      return invalid_address(error, address, "the fd is not a decimal number");
    result.fd = static_cast<int>(number);
  } else if (main == "systemd" && listen) {
    result.kind = LinkAddress::Kind::Systemd;
  } else if (main.substr(0, 14) == "virtio-serial:" && !listen) {
    result.kind = LinkAddress::Kind::VirtioSerial;
    result.path = std::string(main.substr(14));
    if (result.path.empty()) return invalid_address(error, address, "empty device path");
  } else {
    g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT, "unknown link address “%s”: %s", address.c_str(),
                usage);
    return false;
  }

  // Options after the first comma (so paths cannot contain commas).
  bool seen_nofds = false, seen_mode = false;
  while (comma != std::string_view::npos) {
    size_t next = text.find(',', comma + 1);
    std::string_view option = text.substr(comma + 1, next == std::string_view::npos ? next : next - comma - 1);
    comma = next;
    bool fd_capable = result.kind == LinkAddress::Kind::Unix || result.kind == LinkAddress::Kind::Fd ||
                      result.kind == LinkAddress::Kind::Systemd;
    if (option == "nofds" && fd_capable) {
      if (seen_nofds) return invalid_address(error, address, "nofds given twice");
      seen_nofds = true;
      result.nofds = true;
    } else if (option.substr(0, 5) == "mode=" && listen && result.kind == LinkAddress::Kind::Unix) {
      if (seen_mode) return invalid_address(error, address, "mode given twice");
      seen_mode = true;
      std::string_view digits = option.substr(5);
      if (digits.empty() || digits.size() > 4 || digits.find_first_not_of("01234567") != std::string_view::npos)
        return invalid_address(error, address, "mode must be octal, e.g. mode=0660");
      result.mode = static_cast<int>(std::stoi(std::string(digits), nullptr, 8));
      if (result.mode > 0777) return invalid_address(error, address, "mode must be at most 0777");
    } else {
      g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                  "invalid link address “%s”: unknown or misplaced option “%.*s” (paths cannot contain ','); %s",
                  address.c_str(), static_cast<int>(option.size()), option.data(), usage);
      return false;
    }
  }
  *out = std::move(result);
  return true;
}

}  // namespace

bool parse_listen_address(const std::string& address, LinkAddress* out, GError** error) {
  return parse_address(address, true, out, error);
}

bool parse_connect_address(const std::string& address, LinkAddress* out, GError** error) {
  return parse_address(address, false, out, error);
}

}  // namespace sidebus
