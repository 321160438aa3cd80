#include "core/core.h"
#include "speech/speech.h"

namespace parley::speech {

void HearingConfig::AddFlags(core::FlagSet& f) {
  f.Group("Hearing");
  f.Add("--asr", &enabled, "Transcribe what the person says (PocketSphinx)", "PARLEY_ASR");
  f.Add("--asr-decoders", &asr.pool_size,
        "PocketSphinx decoders loaded ahead and shared by all sessions (~90 MB each); a speaking "
        "person holds one for the turn",
        "PARLEY_ASR_DECODERS");
  f.Add("--asr-max-decoders", &asr.max_pool_size,
        "When every decoder is held, more load (one at a time, ~1 s each) up to this many; 0: "
        "the session capacity (everyone in a full house heard at once), at most 64",
        "PARLEY_ASR_MAX_DECODERS");
  f.Add("--asr-threads", &threads, "Threads decoding speech (CPU-bound: about the number of cores)",
        "PARLEY_ASR_THREADS");
  f.Add("--asr-partials", &asr.partials,
        "transcript.partial while the person speaks (the decoder's running hypothesis)",
        "PARLEY_ASR_PARTIALS");
  f.Add("--asr-second-pass", &asr.second_pass,
        "PocketSphinx's second (fwdflat) search pass once a turn ends: more CPU and latency, no "
        "measured accuracy gain on streamed turns",
        "PARLEY_ASR_SECOND_PASS");
  f.Add("--asr-search", &asr.search,
        "PocketSphinx's search pruning: fast (measured: bench/asr_sweep), full (PocketSphinx's own "
        "defaults: about twice the CPU), or its flags, e.g. \"-beam 1e-40 -topn 2\"",
        "PARLEY_ASR_SEARCH");
  f.Add("--partial-interval-ms", &partial_interval_ms,
        "transcript.partial at most this often per utterance", "PARLEY_PARTIAL_INTERVAL_MS");
  f.Add("--asr-max-lag-ms", &max_lag_ms,
        "Overload: a turn whose audio has waited this long for the local recogniser is failed "
        "(asr_overloaded) rather than transcribed late",
        "PARLEY_ASR_MAX_LAG_MS");
  f.Add("--asr-shed-partials-ms", &shed_partials_lag_ms,
        "Overload: no transcript.partial while a turn's audio has waited this long for decoding",
        "PARLEY_ASR_SHED_PARTIALS_MS");
  f.Add("--asr-remote-url", &remote.base_url,
        "OpenAI-compatible API base URL for transcription (e.g. https://api.openai.com/v1); set: "
        "transcribe there, PocketSphinx as the fallback. Unset: OPENAI_BASE_URL when that is set",
        "PARLEY_ASR_URL");
  f.Add("--asr-remote-key", &remote.api_key, "Bearer token for the transcription service",
        "OPENAI_API_KEY", /*secret=*/true);
  f.Add("--asr-remote-model", &remote.model, "Remote transcription model",
        "PARLEY_ASR_REMOTE_MODEL");
  f.Add("--asr-language", &remote.language,
        "Language hint for the remote service (ISO-639-1; empty: detect)", "PARLEY_ASR_LANGUAGE");
  f.Add("--asr-remote-timeout-ms", &remote.timeout_ms, "Remote request timeout, per attempt",
        "PARLEY_ASR_REMOTE_TIMEOUT_MS");
  f.Add("--asr-remote-retries", &remote.retries,
        "Further attempts after a failed remote request (network, 5xx, 429)",
        "PARLEY_ASR_REMOTE_RETRIES");
  f.Add("--asr-remote-concurrency", &remote_concurrency, "Remote requests in flight at once",
        "PARLEY_ASR_REMOTE_CONCURRENCY");
  f.Add("--asr-queue", &queue, "Utterances that may wait for a free decoder", "PARLEY_ASR_QUEUE");
  f.Add("--asr-model-dir", &asr.model_dir, "PocketSphinx acoustic model directory",
        "PARLEY_ASR_MODEL_DIR");
  f.Add("--asr-dictionary", &asr.dictionary, "PocketSphinx pronunciation dictionary",
        "PARLEY_ASR_DICTIONARY");
  f.Add("--asr-language-model", &asr.language_model, "PocketSphinx language model",
        "PARLEY_ASR_LANGUAGE_MODEL");
  f.Add("--vad-aggressiveness", &endpoint.aggressiveness,
        "WebRTC VAD mode 0..3 (3 rejects the most non-speech)", "PARLEY_VAD_AGGRESSIVENESS");
  f.Add("--end-of-turn-ms", &endpoint.end_silence_ms,
        "Trailing silence that ends the person's turn", "PARLEY_END_OF_TURN_MS");
  f.Add("--min-utterance-ms", &endpoint.min_utterance_ms,
        "Shorter voiced bursts are not transcribed", "PARLEY_MIN_UTTERANCE_MS");
}

void RemoteTtsConfig::AddFlags(core::FlagSet& f) {
  f.Group("Voice");
  f.Add("--tts-url", &base_url,
        "OpenAI-compatible API base URL for /audio/speech; set: the persona speaks through it, "
        "Flite as the fallback. Unset: OPENAI_BASE_URL when that is set",
        "PARLEY_TTS_URL");
  f.Add("--tts-key", &api_key, "Bearer token for the speech service", "OPENAI_API_KEY",
        /*secret=*/true);
  f.Add("--tts-model", &model, "Remote speech model", "PARLEY_TTS_MODEL");
  f.Add("--tts-voices", &voices,
        "Comma-separated voices the speech service has (the first is its default)",
        "PARLEY_TTS_VOICES");
  f.Add("--tts-timeout-ms", &timeout_ms, "Remote speech request timeout, per attempt",
        "PARLEY_TTS_TIMEOUT_MS");
  f.Add("--tts-retries", &retries, "Further attempts after a failed speech request",
        "PARLEY_TTS_RETRIES");
}

}  // namespace parley::speech
