// A live WebM/Opus encoder for test clients: 16 kHz mono PCM in, the bytes a browser's
// MediaRecorder would send out (Opus at 48 kHz in a streamable WebM), as soon as GStreamer's
// opusenc and webmmux have them.
#pragma once

#include <gst/gst.h>

#include <cstdint>
#include <memory>
#include <span>
#include <string>

namespace parley::testing {

class WebmOpusEncoder {
 public:
  WebmOpusEncoder();  // a test failure is recorded when the pipeline cannot start
  ~WebmOpusEncoder();
  WebmOpusEncoder(const WebmOpusEncoder&) = delete;
  WebmOpusEncoder& operator=(const WebmOpusEncoder&) = delete;

  // Encodes `pcm` (continuing the stream) and returns the WebM bytes ready so far.
  std::string Encode(std::span<const int16_t> pcm);

 private:
  struct Unref {
    void operator()(GstElement* e) const { gst_object_unref(e); }
  };
  std::unique_ptr<GstElement, Unref> pipeline_, src_, sink_;
  uint64_t samples_ = 0;
};

}  // namespace parley::testing
