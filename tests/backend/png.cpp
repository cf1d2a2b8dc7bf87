// SPDX-License-Identifier: LGPL-2.1-or-later
// png.cpp — see png.hpp. A PNG is the signature and chunks (length, type,
// data, CRC-32 of type and data): IHDR, one IDAT holding a zlib stream, IEND.
// The zlib stream here is a 2-byte header, deflate "stored" blocks (at most
// 65535 bytes each, with their length and its complement) and the Adler-32 of
// the raw data, which is each row prefixed by filter type 0.
#include "png.hpp"

#include <algorithm>
#include <array>

namespace sidebus::test_backend {
namespace {

uint32_t crc32(const std::string& bytes, size_t begin) {
  static const std::array<uint32_t, 256> table = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t n = 0; n < 256; n++) {
      uint32_t c = n;
      for (int k = 0; k < 8; k++) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      t[n] = c;
    }
    return t;
  }();
  uint32_t crc = 0xFFFFFFFFu;
  for (size_t i = begin; i < bytes.size(); i++) crc = table[(crc ^ static_cast<uint8_t>(bytes[i])) & 0xFF] ^ (crc >> 8);
  return crc ^ 0xFFFFFFFFu;
}

void put_u32(std::string& out, uint32_t value) {
  for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<char>((value >> shift) & 0xFF));
}

void put_chunk(std::string& out, const char type[4], const std::string& data) {
  put_u32(out, static_cast<uint32_t>(data.size()));
  const size_t crc_begin = out.size();
  out.append(type, 4);
  out.append(data);
  put_u32(out, crc32(out, crc_begin));
}

}  // namespace

std::string encode_png(uint32_t width, uint32_t height, const std::vector<uint8_t>& rgb) {
  std::string raw;  // the scanlines, each with filter type 0 (none)
  raw.reserve(static_cast<size_t>(height) * (1 + 3 * width));
  for (uint32_t y = 0; y < height; y++) {
    raw.push_back(0);
    raw.append(reinterpret_cast<const char*>(rgb.data()) + static_cast<size_t>(y) * 3 * width, 3 * width);
  }

  std::string zlib = {0x78, 0x01};
  size_t offset = 0;
  do {
    const size_t length = std::min<size_t>(raw.size() - offset, 65535);
    const bool last = offset + length == raw.size();
    zlib.push_back(last ? 1 : 0);  // BFINAL, BTYPE 00 (stored)
    zlib.push_back(static_cast<char>(length & 0xFF));
    zlib.push_back(static_cast<char>(length >> 8));
    zlib.push_back(static_cast<char>(~length & 0xFF));
    zlib.push_back(static_cast<char>((~length >> 8) & 0xFF));
    zlib.append(raw, offset, length);
    offset += length;
  } while (offset < raw.size());
  uint32_t a = 1, b = 0;
  for (char c : raw) {
    a = (a + static_cast<uint8_t>(c)) % 65521;
    b = (b + a) % 65521;
  }
  put_u32(zlib, (b << 16) | a);

  std::string header;
  put_u32(header, width);
  put_u32(header, height);
  header += {8, 2, 0, 0, 0};  // 8 bits a sample, RGB, deflate, no filter method, no interlace

  std::string png = "\x89PNG\r\n\x1a\n";
  put_chunk(png, "IHDR", header);
  put_chunk(png, "IDAT", zlib);
  put_chunk(png, "IEND", "");
  return png;
}

}  // namespace sidebus::test_backend
