// Audio files for tests: any file GStreamer can read, as 16 kHz mono S16 samples.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace parley::testing {

// Empty when the file cannot be read or decoded.
std::vector<int16_t> DecodeTo16k(const std::string& file);

}  // namespace parley::testing
