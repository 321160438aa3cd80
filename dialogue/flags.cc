#include "core/core.h"
#include "dialogue/dialogue.h"

namespace parley::dialogue {

void LlmConfig::AddFlags(core::FlagSet& f) {
  f.Group("Dialogue");
  f.Add("--llm-url", &base_url,
        "OpenAI-compatible API base URL for /chat/completions (streamed); set: the LLM answers, "
        "the offline persona engine as the fallback. Unset: OPENAI_BASE_URL when that is set",
        "PARLEY_LLM_URL");
  f.Add("--llm-key", &api_key, "Bearer token for the dialogue service", "OPENAI_API_KEY",
        /*secret=*/true);
  f.Add("--llm-model", &model, "Dialogue model", "PARLEY_LLM_MODEL");
  f.Add("--llm-first-token-timeout-ms", &first_token_timeout_ms,
        "Longest wait for the reply's first token before the offline engine answers",
        "PARLEY_LLM_FIRST_TOKEN_TIMEOUT_MS");
  f.Add("--llm-timeout-ms", &total_timeout_ms, "Longest a whole reply may take",
        "PARLEY_LLM_TIMEOUT_MS");
  f.Add("--llm-retries", &retries, "Retries on 429, 5xx or network errors before the first token",
        "PARLEY_LLM_RETRIES");
  f.Add("--llm-max-tokens", &max_tokens, "Longest reply, in tokens", "PARLEY_LLM_MAX_TOKENS");
  f.Add("--llm-temperature", &temperature, "Sampling temperature", "PARLEY_LLM_TEMPERATURE");
}

void TurnTakingConfig::AddFlags(core::FlagSet& f) {
  f.Group("Dialogue");
  f.Add("--speak-up-after-ms", &speak_up_after_ms,
        "Silence (nobody speaking, nothing to answer) after which the persona speaks up",
        "PARLEY_SPEAK_UP_AFTER_MS");
  f.Add("--max-speak-ups", &max_speak_ups, "Times in a row the persona speaks up without an answer",
        "PARLEY_MAX_SPEAK_UPS");
  f.Add("--turn-final-wait-ms", &final_wait_ms,
        "Longest the answer waits for the transcript of speech that just ended",
        "PARLEY_TURN_FINAL_WAIT_MS");
}

}  // namespace parley::dialogue
