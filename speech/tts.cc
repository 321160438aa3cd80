// Text to speech: Flite in-process, or any OpenAI-compatible POST /v1/audio/speech.
#include <json/json.h>

#include <algorithm>
#include <cmath>
#include <mutex>
#include <thread>

#include "core/curl_util.h"
#include "speech/speech.h"

extern "C" {
#include <flite/flite.h>
cst_voice* register_cmu_us_slt(const char* voxdir);
cst_voice* register_cmu_us_kal16(const char* voxdir);
cst_voice* register_cmu_us_rms(const char* voxdir);
cst_voice* register_cmu_us_awb(const char* voxdir);
}

namespace parley::speech {

bool Synthesizer::HasVoice(std::string_view id) const {
  for (const auto& v : Voices())
    if (v.id == id) return true;
  return false;
}

namespace {

namespace http = core::http;

// Longest text one request synthesizes (a reply's sentence is far shorter).
constexpr size_t kMaxTextBytes = 4096;

class FliteSynthesizer final : public Synthesizer {
 public:
  std::optional<Synthesis> Synthesize(const SynthesisRequest& request,
                                      std::string* error) override {
    if (request.text.empty()) {
      *error = "nothing to say";
      return std::nullopt;
    }
    if (request.text.size() > kMaxTextBytes) {
      *error = "text over " + std::to_string(kMaxTextBytes) + " bytes";
      return std::nullopt;
    }
    const std::string voice = request.voice.empty() ? "slt" : request.voice;
    // Flite keeps global state (its init, the registered voices and their features).
    const std::lock_guard lock(mu_);
    cst_voice* v = Voice(voice);
    if (v == nullptr) {
      *error = "no Flite voice '" + voice + "' (slt, rms, awb, kal16)";
      return std::nullopt;
    }
    const double rate = std::clamp(request.rate, 0.5, 2.0);
    feat_set_float(v->features, "duration_stretch", static_cast<float>(1.0 / rate));
    cst_wave* w = flite_text_to_wave(request.text.c_str(), v);
    if (w == nullptr || w->num_channels != 1 || w->num_samples <= 0) {
      if (w != nullptr) delete_wave(w);
      *error = "Flite produced no audio";
      return std::nullopt;
    }
    Synthesis out;
    out.pcm.assign(w->samples, w->samples + w->num_samples);
    out.sample_rate = w->sample_rate;
    out.engine = "flite";
    out.voice = voice;
    delete_wave(w);
    return out;
  }

  std::vector<VoiceInfo> Voices() const override {
    return {{"slt", "flite", "en", "female"},
            {"rms", "flite", "en", "male"},
            {"awb", "flite", "en", "male"},
            {"kal16", "flite", "en", "male"}};
  }

 private:
  cst_voice* Voice(const std::string& id) {
    if (!ready_) {
      flite_init();
      ready_ = true;
    }
    if (id == "slt") return register_cmu_us_slt(nullptr);
    if (id == "kal16") return register_cmu_us_kal16(nullptr);
    if (id == "rms") return register_cmu_us_rms(nullptr);
    if (id == "awb") return register_cmu_us_awb(nullptr);
    return nullptr;
  }

  std::mutex mu_;
  bool ready_ = false;
};

class RemoteSynthesizer final : public Synthesizer {
 public:
  explicit RemoteSynthesizer(RemoteTtsConfig config) : config_(std::move(config)) {
    url_ = config_.base_url;
    while (!url_.empty() && url_.back() == '/') url_.pop_back();
    url_ += "/audio/speech";
  }

  std::optional<Synthesis> Synthesize(const SynthesisRequest& request,
                                      std::string* error) override {
    if (request.text.empty() || request.text.size() > kMaxTextBytes) {
      *error = request.text.empty() ? "nothing to say" : "text too long";
      return std::nullopt;
    }
    const std::string voice = request.voice.empty() ? config_.voices.front() : request.voice;
    Json::Value body(Json::objectValue);
    body["model"] = config_.model;
    body["input"] = request.text;
    body["voice"] = voice;
    body["response_format"] = "wav";
    body["speed"] = std::clamp(request.rate, 0.25, 4.0);
    Json::StreamWriterBuilder w;
    w["indentation"] = "";
    const std::string json = Json::writeString(w, body);
    for (int attempt = 0;; ++attempt) {
      bool retryable = false;
      auto r = Attempt(json, voice, &retryable, error);
      if (r || !retryable || attempt >= config_.retries) return r;
      std::this_thread::sleep_for(std::chrono::milliseconds(config_.retry_backoff_ms << attempt));
    }
  }

  std::vector<VoiceInfo> Voices() const override {
    std::vector<VoiceInfo> out;
    for (const auto& v : config_.voices) out.push_back({v, "remote", "", ""});
    return out;
  }

 private:
  std::optional<Synthesis> Attempt(const std::string& json, const std::string& voice,
                                   bool* retryable, std::string* error) {
    http::Easy curl(curl_easy_init());
    if (!curl) {
      *error = "libcurl could not start a request";
      return std::nullopt;
    }
    CURL* c = curl.get();
    const http::Slist headers = http::Headers(config_.api_key, {"Content-Type: application/json"});
    http::BoundedBody response;
    response.limit = 64U << 20;  // ~20 minutes of 24 kHz audio
    curl_easy_setopt(c, CURLOPT_URL, url_.c_str());
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, json.c_str());
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, static_cast<long>(json.size()));
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers.get());
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(config_.connect_timeout_ms));
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, static_cast<long>(config_.timeout_ms));
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, &http::BoundedBody::Write);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &response);
    curl_easy_setopt(c, CURLOPT_USERAGENT, "parley");
    const CURLcode rc = curl_easy_perform(c);
    if (rc != CURLE_OK) {
      *retryable = true;
      *error = std::string("the speech service could not be reached: ") + curl_easy_strerror(rc);
      return std::nullopt;
    }
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    if (status != 200) {
      *retryable = status >= 500 || status == 429;
      *error = "the speech service answered HTTP " + std::to_string(status) + ": " +
               response.bytes.substr(0, 200);
      return std::nullopt;
    }
    Synthesis out;
    std::string why;
    if (!DecodeSound(response.bytes, &out.pcm, &out.sample_rate, &why) || out.pcm.empty()) {
      *error = "the speech service answered something that is not audio (" + why + ")";
      return std::nullopt;
    }
    out.engine = "remote";
    out.voice = voice;
    return out;
  }

  const RemoteTtsConfig config_;
  std::string url_;
};

}  // namespace

std::unique_ptr<Synthesizer> CreateFliteSynthesizer() {
  return std::make_unique<FliteSynthesizer>();
}

std::string RemoteTtsConfig::Validate() const {
  if (base_url.empty()) return {};
  if (base_url.rfind("http://", 0) != 0 && base_url.rfind("https://", 0) != 0)
    return "the speech service URL must start with http:// or https://";
  if (model.empty()) return "the speech model must be named";
  if (voices.empty()) return "the speech service needs at least one voice";
  if (connect_timeout_ms < 100 || timeout_ms < 500 || timeout_ms > 600'000)
    return "speech service timeouts are out of range (connect >= 100 ms, request 0.5..600 s)";
  if (retries < 0 || retries > 5 || retry_backoff_ms < 0 || retry_backoff_ms > 10'000)
    return "speech service retries must be 0..5 with a backoff of 0..10000 ms";
  return {};
}

std::unique_ptr<Synthesizer> CreateRemoteSynthesizer(const RemoteTtsConfig& config,
                                                     std::string* error) {
  if (std::string why = config.Validate(); !why.empty()) {
    *error = why;
    return nullptr;
  }
  if (config.base_url.empty()) {
    *error = "no speech service is configured";
    return nullptr;
  }
  http::InitCurl();
  return std::make_unique<RemoteSynthesizer>(config);
}

}  // namespace parley::speech
