// SPDX-License-Identifier: LGPL-2.1-or-later
// png.hpp — the smallest PNG writer that does: 8-bit RGB, no filtering,
// stored (uncompressed) deflate blocks. Enough for the test backend's
// screenshots; any PNG reader decodes them.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace sidebus::test_backend {

// A PNG file of @width × @height pixels, @rgb holding 3 bytes a pixel, row by row.
std::string encode_png(uint32_t width, uint32_t height, const std::vector<uint8_t>& rgb);

}  // namespace sidebus::test_backend
