// Parley media: GStreamer pipelines that turn a session's binary WebSocket frames into 16 kHz
// mono PCM and decoded video frames (ingest), and synthesized PCM into paced Opus or PCM
// packets for the page (playback).
//
// Threads: Push() never blocks and may be called from any thread (the WebSocket service thread
// included). Ingest callbacks run on GStreamer's streaming threads: they must be quick and must
// not call back into the same object's Stop(). Stop() blocks (bounded): call it from a worker.
// Playback's threading is described with it below.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "core/core.h"

namespace parley::media {

struct MediaConfig {
  int analysis_width = 640;  // decoded video is scaled to fit within this box
  int analysis_height = 480;
  int analysis_fps = 10;    // and its frame rate capped to this
  int audio_frame_ms = 20;  // audio is delivered in frames of exactly this length (10 or 20)
  size_t max_backlog_bytes = 8 << 20;  // bytes waiting to be decoded before the overflow policy
  int stop_timeout_ms = 2000;          // how long Stop() waits for EOS to drain
  std::string Validate() const;
  void AddFlags(core::FlagSet& flags);
};

// Initialises GStreamer once per process; false (with `error`) when a required element is
// missing from the installation.
bool InitGStreamer(std::string* error);

inline constexpr int kAnalysisRate = 16000;

struct AudioFrame {
  int64_t pts_ms = 0;                // position in the stream since the first byte
  std::span<const int16_t> samples;  // kAnalysisRate Hz mono, audio_frame_ms long
};

struct VideoFrame {
  int64_t pts_ms = 0;
  int width = 0;
  int height = 0;
  int stride = 0;                // bytes per row
  const uint8_t* bgr = nullptr;  // BGR 8:8:8, valid only during the callback (no copy made)
};

struct IngestStats {
  std::atomic<uint64_t> audio_samples{0};  // at kAnalysisRate
  std::atomic<uint64_t> video_frames{0};
  std::atomic<uint64_t> decode_errors{0};
  std::atomic<uint64_t> bytes_in{0};
  std::atomic<uint64_t> dropped_frames_waiting_keyframe{0};
  std::atomic<uint64_t> video_frames_skipped{0};  // not decoded: nothing wanted them
};

class IngestPipeline {
 public:
  enum class Format { kWebm, kPcm };
  struct Callbacks {
    std::function<void(const AudioFrame&)> on_audio;
    std::function<void(const VideoFrame&)> on_video;
    // code: "decode_error", "unsupported_codec", "media_overflow"...; the pipeline has stopped
    // decoding when this is called with fatal = true.
    std::function<void(const std::string& code, const std::string& message, bool fatal)> on_error;
    // Informational: "waiting_for_keyframe", "video_started", "audio_started".
    std::function<void(const std::string& event)> on_event;
  };

  // pcm_rate is the declared rate of raw PCM (ignored for WebM). nullptr with `error` when the
  // pipeline cannot be built.
  static std::unique_ptr<IngestPipeline> Create(Format format, int pcm_rate,
                                                const MediaConfig& config, Callbacks callbacks,
                                                core::Metrics& metrics, std::string* error);
  virtual ~IngestPipeline() = default;

  // Queues bytes for decoding; any chunking works. False when the backlog is over the limit
  // or the pipeline has failed: the bytes are dropped (counted) and on_error told once.
  virtual bool Push(std::string_view bytes) = 0;
  // Sends EOS, waits (bounded) for the last frames, then releases every GStreamer object.
  virtual void Stop() = 0;
  virtual const IngestStats& stats() const = 0;
  virtual bool failed() const = 0;
  // Bytes pushed and not yet taken by the decoder.
  virtual size_t backlog_bytes() const = 0;
  // Whether anything needs decoded video (initially true). While not, video frames are dropped
  // before the decoder, costing no decoding; wanted again, decoding resumes at the next
  // keyframe. Any thread.
  virtual void SetVideoWanted(bool wanted) = 0;
};

// ---- Playback: synthesized PCM in, paced Opus (or PCM) packets out --------------------------
//
// One Pacer thread sends every session's packets at real time (not a thread per session); a
// session's Playback queues utterances on it. An utterance is written while it is synthesized:
// Begin() returns a writer, each Append() (a sentence, say) is encoded at once on the caller's
// thread by a GStreamer pipeline (appsrc -> audioresample 48 kHz -> opusenc -> appsink) and
// its packets join the pacer's queue, so the first sentence plays while the next is made.
//
// Threads: Pacer, Playback and a writer may be used from any thread. Append/Finish block for
// the encoding (a few ms per second of audio): call them on a worker. Pause/Resume/Cancel never
// block. The sink and the event callback run on the pacer thread: they must be quick.

struct PlaybackConfig {
  bool opus = true;     // false: PCM S16LE mono 48 kHz frames (kind 0x11)
  int bitrate = 32000;  // Opus bits per second
  int lead_ms = 60;     // how far ahead of real time packets may be sent
  std::string Validate() const;
  void AddFlags(core::FlagSet& flags);
};

inline constexpr int kPlaybackRate = 48000;
inline constexpr int kPlaybackFrameMs = 20;

// Header of server->client audio packets (docs/protocol.md): kind, u32 sequence, u32 position
// in 48 kHz samples since the utterance began, u16 utterance id, all big-endian.
inline constexpr size_t kPacketHeaderBytes = 11;

class Pacer {
 public:
  // Starts the pacing thread.
  static std::shared_ptr<Pacer> Create(core::Metrics& metrics);
  virtual ~Pacer() = default;           // joins the thread; every Playback must be gone first
  virtual size_t channels() const = 0;  // playbacks registered
};

struct PlaybackEvent {
  enum class Kind { kStarted, kEnded, kPaused, kResumed, kCancelled } kind;
  uint16_t utterance = 0;
  int64_t played_ms = 0;  // of the utterance, at the event (real time since its first packet)
};

class Playback {
 public:
  struct Callbacks {
    // A finished packet (header included) for the client; the pacer thread.
    std::function<void(std::string packet)> sink;
    // The utterance's life; the pacer thread (kStarted, kEnded) or the caller (the others).
    std::function<void(const PlaybackEvent&)> on_event;
  };
  static std::unique_ptr<Playback> Create(const PlaybackConfig& config,
                                          std::shared_ptr<Pacer> pacer, Callbacks callbacks,
                                          core::Metrics& metrics, std::string* error);
  virtual ~Playback() = default;  // cancels what is queued

  class Writer {
   public:
    virtual ~Writer() = default;  // releases the encoder; Finish() first to play the tail
    virtual uint16_t utterance() const = 0;
    // Encodes `pcm` (mono S16LE at `rate`) and queues its packets; false when the utterance
    // was cancelled (stop synthesizing) or could not be encoded.
    virtual bool Append(std::span<const int16_t> pcm, int rate) = 0;
    // No more audio: the tail is encoded and queued; the utterance ends after its last packet.
    virtual void Finish() = 0;
    virtual bool cancelled() const = 0;
  };
  // A new utterance, played after the ones queued before it; null when it cannot be encoded.
  virtual std::unique_ptr<Writer> Begin() = 0;
  // Begin + Append + Finish: returns the utterance id (0 when it could not be encoded).
  uint16_t Say(std::span<const int16_t> pcm, int rate);

  // Holds packets (the client hears silence); Resume continues where it paused.
  virtual void Pause() = 0;
  virtual void Resume() = 0;
  // Stops at once: no packet of the current or queued utterances follows. Returns the
  // milliseconds of the current utterance that were played (0 when none was playing).
  virtual int64_t Cancel() = 0;
  virtual bool paused() const = 0;
  // True while packets remain to be sent (or an utterance is still being written).
  virtual bool Busy() const = 0;
  // Blocks until everything queued was sent or `timeout` passed; true when idle.
  virtual bool WaitIdle(std::chrono::milliseconds timeout) = 0;
  // The utterance playing now (0 when none) and how much of it has played.
  virtual uint16_t current() const = 0;
  virtual int64_t played_ms() const = 0;
};

// A whole utterance as an Ogg Opus file (for downloads: POST /api/tts). Empty with `error` on
// failure. Blocks (a worker).
std::string EncodeOggOpus(std::span<const int16_t> pcm, int rate, int bitrate, std::string* error);

}  // namespace parley::media
