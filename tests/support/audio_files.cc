#include "tests/support/audio_files.h"

#include <gst/app/gstappsink.h>
#include <gst/gst.h>

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

}  // namespace parley::testing
