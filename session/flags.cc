#include "session/internal.h"

namespace parley::session {

void SessionConfig::AddFlags(core::FlagSet& f) {
  f.Group("Sessions");
  f.Add("--max-sessions", &max_sessions, "Sessions held in memory", "PARLEY_MAX_SESSIONS");
  f.Add("--session-capacity", &capacity,
        "Live conversations admitted at once; past it a new session is refused (503, "
        "Retry-After) and /health/ready is not ready. 0: 12 per core",
        "PARLEY_SESSION_CAPACITY");
  f.Add("--capacity-hold", &capacity_hold_s,
        "Seconds a created session keeps its place while its client connects",
        "PARLEY_CAPACITY_HOLD");
  f.Add("--disconnect-grace", &disconnect_grace_s,
        "Seconds a live session survives with no connection before it ends",
        "PARLEY_DISCONNECT_GRACE");
  f.Add("--unused-session-ttl", &unused_session_ttl_s,
        "Seconds a created session may wait for its first connection", "PARLEY_UNUSED_SESSION_TTL");
  f.Add("--end-workers", &end_workers,
        "Threads that end sessions (drain stages, store reports), apart from request handling",
        "PARLEY_END_WORKERS");
  f.Add("--checkpoint-interval", &checkpoint_interval_s,
        "Seconds between checkpoints of a live session (also one after every turn), from which "
        "a restart after a crash builds its report; 0: none",
        "PARLEY_CHECKPOINT_INTERVAL");
}

void ConversationConfig::AddFlags(core::FlagSet& f) {
  media.AddFlags(f);
  vision.AddFlags(f);
  f.Group("Vision");
  f.Add("--server-landmarks", &server_landmarks,
        "Find landmarks with dlib in the video of sessions that send none",
        "PARLEY_SERVER_LANDMARKS");
  landmarker.AddFlags(f);
  f.Group("Vision");
  f.Add("--vision-threads", &vision_workers.threads, "Threads for server-side landmarks",
        "PARLEY_VISION_THREADS");
  hearing.AddFlags(f);
  echo.AddFlags(f);
  llm.AddFlags(f);
  turn_taking.AddFlags(f);
  interruption.AddFlags(f);
  f.Group("Dialogue");
  f.Add("--llm-history-turns", &history_turns, "Earlier turns (each way) sent to the LLM",
        "PARLEY_LLM_HISTORY_TURNS");
  f.Add("--max-say-chars", &max_say_chars, "Longest typed turn (a say message), in bytes",
        "PARLEY_MAX_SAY_CHARS");
  remote_tts.AddFlags(f);
  playback.AddFlags(f);
  f.Group("Voice");
  f.Add("--reply-threads", &reply_workers.threads,
        "Replies in progress at once (each waits on its engine: sized for waiting, not cores)",
        "PARLEY_REPLY_THREADS");
  f.Add("--voice-threads", &synthesis_slots, "Local speech syntheses (Flite, CPU) at once",
        "PARLEY_VOICE_THREADS");
}

}  // namespace parley::session
