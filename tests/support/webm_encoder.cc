#include "tests/support/webm_encoder.h"

#include <gst/app/gstappsink.h>
#include <gst/app/gstappsrc.h>
#include <gtest/gtest.h>

#include <cstring>

namespace parley::testing {

WebmOpusEncoder::WebmOpusEncoder() {
  gst_init(nullptr, nullptr);
  GError* error = nullptr;
  // 20 ms Opus frames and a cluster at least every 100 ms, as Chromium's recorder writes.
  pipeline_.reset(gst_parse_launch(
      "appsrc name=src format=time is-live=true "
      "caps=audio/x-raw,format=S16LE,rate=16000,channels=1,layout=interleaved ! audioconvert ! "
      "audioresample ! audio/x-raw,rate=48000 ! opusenc frame-size=20 bitrate=32000 ! "
      "webmmux streamable=true max-cluster-duration=100000000 ! "
      "appsink name=sink sync=false emit-signals=false",
      &error));
  if (!pipeline_) {
    ADD_FAILURE() << "WebM encoder: " << (error ? error->message : "unknown error");
    if (error) g_error_free(error);
    return;
  }
  src_.reset(gst_bin_get_by_name(GST_BIN(pipeline_.get()), "src"));
  sink_.reset(gst_bin_get_by_name(GST_BIN(pipeline_.get()), "sink"));
  if (gst_element_set_state(pipeline_.get(), GST_STATE_PLAYING) == GST_STATE_CHANGE_FAILURE)
    ADD_FAILURE() << "WebM encoder: the pipeline does not start";
}

WebmOpusEncoder::~WebmOpusEncoder() {
  if (pipeline_) gst_element_set_state(pipeline_.get(), GST_STATE_NULL);
}

std::string WebmOpusEncoder::Encode(std::span<const int16_t> pcm) {
  std::string out;
  if (!src_ || !sink_) return out;
  GstBuffer* buffer = gst_buffer_new_allocate(nullptr, pcm.size_bytes(), nullptr);
  gst_buffer_fill(buffer, 0, pcm.data(), pcm.size_bytes());
  GST_BUFFER_PTS(buffer) = gst_util_uint64_scale(samples_, GST_SECOND, 16000);
  GST_BUFFER_DURATION(buffer) = gst_util_uint64_scale(pcm.size(), GST_SECOND, 16000);
  samples_ += pcm.size();
  gst_app_src_push_buffer(GST_APP_SRC(src_.get()), buffer);  // takes the buffer
  // What the encoder has ready within a few milliseconds (its lookahead stays behind).
  for (GstSample* s;
       (s = gst_app_sink_try_pull_sample(GST_APP_SINK(sink_.get()), 5 * GST_MSECOND)) != nullptr;) {
    GstMapInfo map;
    GstBuffer* b = gst_sample_get_buffer(s);
    if (gst_buffer_map(b, &map, GST_MAP_READ)) {
      out.append(reinterpret_cast<const char*>(map.data), map.size);
      gst_buffer_unmap(b, &map);
    }
    gst_sample_unref(s);
  }
  return out;
}

}  // namespace parley::testing
