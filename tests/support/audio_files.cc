#include "tests/support/audio_files.h"

#include <gst/app/gstappsink.h>
#include <gst/gst.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <random>
#include <sstream>

#include "media/media.h"

namespace parley::testing {

std::vector<int16_t> DecodeTo16k(const std::string& file) {
  std::string error;
  if (!media::InitGStreamer(&error)) return {};
  GError* err = nullptr;
  GstElement* p = gst_parse_launch(
      ("filesrc location=" + file +
       " ! decodebin ! audioconvert ! audioresample ! audio/x-raw,format=S16LE,rate=16000,"
       "channels=1 ! appsink name=out sync=false")
          .c_str(),
      &err);
  if (err) g_error_free(err);
  std::vector<int16_t> out;
  if (p == nullptr) return out;
  GstElement* sink = gst_bin_get_by_name(GST_BIN(p), "out");
  gst_element_set_state(p, GST_STATE_PLAYING);
  for (;;) {
    GstSample* sample = gst_app_sink_try_pull_sample(GST_APP_SINK(sink), 10 * GST_SECOND);
    if (sample == nullptr) break;
    GstMapInfo map;
    GstBuffer* b = gst_sample_get_buffer(sample);
    if (gst_buffer_map(b, &map, GST_MAP_READ)) {
      const auto* s16 = reinterpret_cast<const int16_t*>(map.data);
      out.insert(out.end(), s16, s16 + map.size / 2);
      gst_buffer_unmap(b, &map);
    }
    gst_sample_unref(sample);
  }
  gst_element_set_state(p, GST_STATE_NULL);
  gst_object_unref(sink);
  gst_object_unref(p);
  return out;
}

std::string MakeFixture(const std::string& description, const std::string& file) {
  std::string error;
  EXPECT_TRUE(media::InitGStreamer(&error)) << error;
  GError* err = nullptr;
  GstElement* p = gst_parse_launch((description + " ! filesink location=" + file).c_str(), &err);
  if (p == nullptr) {
    ADD_FAILURE() << "fixture pipeline: " << (err ? err->message : "?");
    if (err) g_error_free(err);
    return {};
  }
  gst_element_set_state(p, GST_STATE_PLAYING);
  GstBus* bus = gst_element_get_bus(p);
  GstMessage* msg = gst_bus_timed_pop_filtered(
      bus, 60 * GST_SECOND, static_cast<GstMessageType>(GST_MESSAGE_EOS | GST_MESSAGE_ERROR));
  EXPECT_TRUE(msg != nullptr && GST_MESSAGE_TYPE(msg) == GST_MESSAGE_EOS) << "fixture failed";
  if (msg) gst_message_unref(msg);
  gst_object_unref(bus);
  gst_element_set_state(p, GST_STATE_NULL);
  gst_object_unref(p);
  std::ifstream in(file, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::vector<int16_t> HummedMhm(double f0_hz, unsigned seed) {
  constexpr double kRate = 16000;
  std::mt19937 rng(seed);
  std::normal_distribution<double> noise(0, 1);
  std::vector<double> source;
  double phase = 0;
  const auto murmur = [&](int ms, double f_start, double f_end) {
    const int n = static_cast<int>(ms * kRate / 1000);
    for (int i = 0; i < n; ++i) {
      phase += (f_start + (f_end - f_start) * i / n) * (1 + 0.01 * noise(rng)) / kRate;
      double pulse = 0;
      if (phase >= 1) {
        phase -= 1;
        pulse = 1 + 0.05 * noise(rng);  // shimmer
      }
      const double fade = std::min(1.0, std::min(i, n - i) / (0.03 * kRate));
      source.push_back(fade * (pulse + 0.01 * noise(rng)));
    }
  };
  std::uniform_int_distribution<int> jitter_ms(-30, 30);
  murmur(190 + jitter_ms(rng), f0_hz, f0_hz * 0.92);
  for (int i = 0; i < static_cast<int>(0.07 * kRate); ++i) source.push_back(0.02 * noise(rng));
  murmur(240 + jitter_ms(rng), f0_hz * 0.88, f0_hz * 1.15);
  const auto resonate = [&](double f, double bandwidth) {
    const double r = std::exp(-M_PI * bandwidth / kRate),
                 a1 = 2 * r * std::cos(2 * M_PI * f / kRate), a2 = -r * r;
    std::vector<double> y(source.size());
    double y1 = 0, y2 = 0;
    for (size_t i = 0; i < source.size(); ++i) {
      y[i] = source[i] + a1 * y1 + a2 * y2;
      y2 = y1;
      y1 = y[i];
    }
    return y;
  };
  const auto low = resonate(250, 80), high = resonate(2200, 200);
  std::vector<double> mixed(source.size());
  double peak = 1e-9;
  for (size_t i = 0; i < source.size(); ++i) {
    mixed[i] = low[i] + 0.02 * high[i];
    peak = std::max(peak, std::abs(mixed[i]));
  }
  std::vector<int16_t> out(mixed.size());
  for (size_t i = 0; i < mixed.size(); ++i)
    out[i] = static_cast<int16_t>(std::lround(mixed[i] / peak * 12000));
  return out;
}

std::vector<std::string> SplitWords(const std::string& text) {
  std::istringstream in(text);
  std::vector<std::string> words;
  for (std::string w; in >> w;) words.push_back(w);
  return words;
}

double WordErrorRate(const std::string& reference, const std::string& hypothesis) {
  const auto r = SplitWords(reference), h = SplitWords(hypothesis);
  std::vector<std::vector<size_t>> d(r.size() + 1, std::vector<size_t>(h.size() + 1));
  for (size_t i = 0; i <= r.size(); ++i) d[i][0] = i;
  for (size_t j = 0; j <= h.size(); ++j) d[0][j] = j;
  for (size_t i = 1; i <= r.size(); ++i)
    for (size_t j = 1; j <= h.size(); ++j)
      d[i][j] = std::min(
          {d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (r[i - 1] == h[j - 1] ? 0 : 1)});
  return r.empty() ? 0 : static_cast<double>(d[r.size()][h.size()]) / static_cast<double>(r.size());
}

}  // namespace parley::testing
