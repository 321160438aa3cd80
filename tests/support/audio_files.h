// Audio files for tests: any file GStreamer can read, as 16 kHz mono S16 samples.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace parley::testing {

// Empty when the file cannot be read or decoded.
std::vector<int16_t> DecodeTo16k(const std::string& file);

// Runs a gst-launch style description, adding `! filesink location=<file>`; returns the file's
// bytes (a test failure is recorded when the pipeline fails).
std::string MakeFixture(const std::string& description, const std::string& file);

// A hummed, closed-mouth "mhm" (16 kHz): two nasal murmurs (glottal pulses through the nasal
// tract's ~250 Hz resonance, a weak ~2.2 kHz one, breath noise) with a breathy [h] between,
// the pitch falling then rising around `f0_hz`; ~0.5 s. Flite cannot say it: it spells "mhm"
// and "hmm" out as letters ("em aitch em", 0.9 s), which is not a backchannel.
std::vector<int16_t> HummedMhm(double f0_hz, unsigned seed);

// The words of a transcript (split on white space).
std::vector<std::string> SplitWords(const std::string& text);
// Word error rate: the word-level edit distance / the reference's length (0 for an empty one).
double WordErrorRate(const std::string& reference, const std::string& hypothesis);

}  // namespace parley::testing
