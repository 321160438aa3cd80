#include "media/media.h"

namespace parley::media {

void MediaConfig::AddFlags(core::FlagSet& f) {
  f.Group("Media");
  f.Add("--analysis-width", &analysis_width,
        "Decoded video is scaled to fit this width for analysis", "PARLEY_ANALYSIS_WIDTH");
  f.Add("--analysis-height", &analysis_height,
        "Decoded video is scaled to fit this height for analysis", "PARLEY_ANALYSIS_HEIGHT");
  f.Add("--analysis-fps", &analysis_fps, "Most video frames per second analysed",
        "PARLEY_ANALYSIS_FPS");
  f.Add("--audio-frame-ms", &audio_frame_ms,
        "Length of the audio frames given to analysers (10 or 20)", "PARLEY_AUDIO_FRAME_MS");
  f.AddKiB("--media-backlog-kib", &max_backlog_bytes,
           "Undecoded media a session may queue before its media is stopped",
           "PARLEY_MEDIA_BACKLOG_KIB");
}

void PlaybackConfig::AddFlags(core::FlagSet& f) {
  f.Group("Voice");
  f.Add("--opus-bitrate", &bitrate, "Bits per second of the persona's Opus voice",
        "PARLEY_OPUS_BITRATE");
  f.Add("--playback-lead-ms", &lead_ms,
        "How far ahead of real time voice packets are sent (what a cancel leaves playing)",
        "PARLEY_PLAYBACK_LEAD_MS");
}

}  // namespace parley::media
