// Synthesized speech for tests: Flite's voices (flite1-dev), 16 kHz mono S16.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace parley::testing {

// `voice`: "slt" (female), "kal16", "rms", "awb" (male). `duration_stretch` > 1 speaks slower.
// `pitch_stddev_hz`: how far the intonation moves around the voice's mean pitch (its
// int_f0_target_stddev; 0 is a monotone), or negative for the voice's own. Empty for an
// unknown voice.
std::vector<int16_t> FliteSpeak(const std::string& voice, const std::string& text,
                                double duration_stretch = 1.0, double pitch_stddev_hz = -1);

}  // namespace parley::testing
