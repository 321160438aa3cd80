// Internal to media/: RAII for the GStreamer handles the pipelines hold.
#pragma once

#include <gst/app/gstappsink.h>
#include <gst/app/gstappsrc.h>
#include <gst/gst.h>

#include <memory>
#include <string>

#include "core/core.h"

#if defined(__SANITIZE_THREAD__)
#define PARLEY_THREAD_SANITIZER 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define PARLEY_THREAD_SANITIZER 1
#endif
#endif
#ifdef PARLEY_THREAD_SANITIZER
extern "C" void __tsan_acquire(void* addr);
extern "C" void __tsan_release(void* addr);
#endif

namespace parley::media {

// GLib's mutexes are futexes ThreadSanitizer cannot see, GStreamer is not instrumented and
// reuses its streaming threads across pipelines, so the hand-offs GStreamer guarantees between
// a pipeline's owner and its streaming threads look unsynchronised to TSan. They are told to it
// here, keyed by the owner: the owner hands off before the pipeline runs and before each buffer
// it pushes, and takes over once setting NULL has joined the streaming threads; each callback
// on a streaming thread holds a StreamingCallback for its length. No-ops in other builds.
inline void HandOffToStreamingThreads([[maybe_unused]] const void* owner) {
#ifdef PARLEY_THREAD_SANITIZER
  __tsan_release(const_cast<void*>(owner));
#endif
}
inline void TakeOverFromStreamingThreads([[maybe_unused]] const void* owner) {
#ifdef PARLEY_THREAD_SANITIZER
  __tsan_acquire(const_cast<void*>(owner));
#endif
}
class StreamingCallback {
 public:
  explicit StreamingCallback(const void* owner) : owner_(owner) {
    TakeOverFromStreamingThreads(owner_);
  }
  ~StreamingCallback() { HandOffToStreamingThreads(owner_); }
  StreamingCallback(const StreamingCallback&) = delete;
  StreamingCallback& operator=(const StreamingCallback&) = delete;

 private:
  const void* owner_;
};

// Counts `pipeline` in `live` until GStreamer finalizes it (a weak reference, not the C++
// wrapper's lifetime), so a pipeline some reference keeps alive stays visible in the gauge.
inline void CountWhileAlive(GstElement* pipeline, core::Gauge& live) {
  live.Add(1);
  g_object_weak_ref(
      G_OBJECT(pipeline),
      [](gpointer gauge, GObject*) { static_cast<core::Gauge*>(gauge)->Add(-1); }, &live);
}

// The gauge of live pipelines of one kind ("ingest", "playback").
inline core::Gauge& LivePipelinesGauge(core::Metrics& metrics, const char* kind) {
  return metrics.GetGauge("parley_media_pipelines",
                          "GStreamer pipelines alive (built and not yet finalized), by kind",
                          {{"kind", kind}});
}

struct GstObjectUnref {
  void operator()(gpointer p) const {
    if (p != nullptr) gst_object_unref(p);
  }
};
template <typename T>
using GstPtr = std::unique_ptr<T, GstObjectUnref>;

struct GstSampleUnref {
  void operator()(GstSample* s) const { gst_sample_unref(s); }
};
using SamplePtr = std::unique_ptr<GstSample, GstSampleUnref>;

struct GstCapsUnref {
  void operator()(GstCaps* c) const { gst_caps_unref(c); }
};
using CapsPtr = std::unique_ptr<GstCaps, GstCapsUnref>;

struct GstMessageUnref {
  void operator()(GstMessage* m) const { gst_message_unref(m); }
};
using MessagePtr = std::unique_ptr<GstMessage, GstMessageUnref>;

// A readable mapping of a buffer for the scope of the object.
class MappedBuffer {
 public:
  explicit MappedBuffer(GstBuffer* b) : buffer_(b) {
    ok_ = gst_buffer_map(b, &info_, GST_MAP_READ);
  }
  ~MappedBuffer() {
    if (ok_) gst_buffer_unmap(buffer_, &info_);
  }
  MappedBuffer(const MappedBuffer&) = delete;
  MappedBuffer& operator=(const MappedBuffer&) = delete;
  bool ok() const { return ok_; }
  const uint8_t* data() const { return info_.data; }
  size_t size() const { return info_.size; }

 private:
  GstBuffer* buffer_;
  GstMapInfo info_{};
  bool ok_ = false;
};

// Makes an element or returns nullptr with `error` naming the missing plugin.
inline GstElement* MakeElement(const char* factory, const char* name, std::string* error) {
  GstElement* e = gst_element_factory_make(factory, name);
  if (e == nullptr && error != nullptr)
    *error = std::string("GStreamer element '") + factory + "' is not installed";
  return e;
}

}  // namespace parley::media
