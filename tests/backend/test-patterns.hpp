// SPDX-License-Identifier: LGPL-2.1-or-later
// test-patterns.hpp — the pictures sidebus-test-backend and sidebus-test-camera
// produce, defined once so the tests can compute what they must receive:
//  - video frames (ScreenCast streams, the camera node): raw BGRx, whose
//    first 4 pixels carry the frame number and the rest a gradient tinted
//    by the source's tag;
//  - the Screenshot image: a 64×48 RGB gradient, and PickColor's color.
// Header-only, no dependencies: the backend paints with it, the tests check
// with it.
#pragma once

#include <cstddef>
#include <cstdint>

namespace sidebus::test_patterns {

// ---- Video frames -----------------------------------------------------------
// Red channel of every gradient pixel: tells a screen cast from the camera.
inline constexpr uint8_t kScreenCastTag = 0xC0;
inline constexpr uint8_t kCameraTag = 0x40;
// Pixels 0-3 of row 0 hold frame-number bytes (little endian), each in B, G and R.
inline constexpr uint32_t kCounterPixels = 4;

// The gradient pixel at (@x, @y) as B, G, R, x bytes.
inline void gradient_pixel(uint32_t x, uint32_t y, uint8_t tag, uint8_t out[4]) {
  out[0] = static_cast<uint8_t>(x & 0xFF);
  out[1] = static_cast<uint8_t>(y & 0xFF);
  out[2] = tag;
  out[3] = 0xFF;
}

// Paints frame @frame into a BGRx buffer of @width × @height with @stride bytes a row.
inline void paint_frame(uint8_t* data, uint32_t width, uint32_t height, uint32_t stride, uint32_t frame, uint8_t tag) {
  for (uint32_t y = 0; y < height; y++) {
    uint8_t* row = data + static_cast<size_t>(y) * stride;
    for (uint32_t x = 0; x < width; x++) gradient_pixel(x, y, tag, row + 4 * x);
  }
  for (uint32_t i = 0; i < kCounterPixels && i < width; i++) {
    const auto byte = static_cast<uint8_t>(frame >> (8 * i));
    data[4 * i] = data[4 * i + 1] = data[4 * i + 2] = byte;
    data[4 * i + 3] = 0xFF;
  }
}

// The frame number painted into @data (needs width >= kCounterPixels).
inline uint32_t frame_number(const uint8_t* data) {
  uint32_t frame = 0;
  for (uint32_t i = 0; i < kCounterPixels; i++) frame |= static_cast<uint32_t>(data[4 * i]) << (8 * i);
  return frame;
}

// Whether every pixel outside the counter is the gradient of @tag.
inline bool frame_matches(const uint8_t* data, uint32_t width, uint32_t height, uint32_t stride, uint8_t tag) {
  for (uint32_t y = 0; y < height; y++) {
    const uint8_t* row = data + static_cast<size_t>(y) * stride;
    for (uint32_t x = y == 0 ? kCounterPixels : 0; x < width; x++) {
      uint8_t expected[4];
      gradient_pixel(x, y, tag, expected);
      // The x byte of BGRx is padding: producers need not keep it.
      if (row[4 * x] != expected[0] || row[4 * x + 1] != expected[1] || row[4 * x + 2] != expected[2]) return false;
    }
  }
  return true;
}

// ---- The Screenshot image ---------------------------------------------------
inline constexpr uint32_t kScreenshotWidth = 64;
inline constexpr uint32_t kScreenshotHeight = 48;

// The screenshot's pixel at (@x, @y) as R, G, B.
inline void screenshot_pixel(uint32_t x, uint32_t y, uint8_t out[3]) {
  out[0] = static_cast<uint8_t>(x * 4);
  out[1] = static_cast<uint8_t>(y * 5);
  out[2] = 0x80;
}

// ---- PickColor ---------------------------------------------------------------
// The color "the user" picks (r, g, b in 0..1), unless a test scripts another.
inline constexpr double kPickedColor[3] = {0.25, 0.5, 0.75};

}  // namespace sidebus::test_patterns
