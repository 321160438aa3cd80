// Remote speech recognition through any OpenAI-compatible POST /v1/audio/transcriptions
// (OpenAI, whisper.cpp's server, faster-whisper servers...): one utterance per request as a WAV
// in multipart/form-data, libcurl for HTTP, jsoncpp for the verbose_json answer.
#include <curl/curl.h>
#include <json/json.h>
#include <sndfile.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <mutex>
#include <optional>
#include <sstream>
#include <thread>

#include "core/core.h"
#include "core/curl_util.h"
#include "speech/speech.h"

namespace parley::speech {
namespace {

namespace http = core::http;

using http::EasyDeleter;
using http::MimeDeleter;

// libsndfile writes through these callbacks into a string.
struct MemoryFile {
  std::string bytes;
  sf_count_t pos = 0;
};
sf_count_t MemLength(void* user) {
  return static_cast<sf_count_t>(static_cast<MemoryFile*>(user)->bytes.size());
}
sf_count_t MemSeek(sf_count_t offset, int whence, void* user) {
  auto* f = static_cast<MemoryFile*>(user);
  const auto size = static_cast<sf_count_t>(f->bytes.size());
  sf_count_t to = offset;
  if (whence == SEEK_CUR) to += f->pos;
  if (whence == SEEK_END) to += size;
  f->pos = std::clamp<sf_count_t>(to, 0, size);
  return f->pos;
}
sf_count_t MemRead(void* out, sf_count_t count, void* user) {
  auto* f = static_cast<MemoryFile*>(user);
  const sf_count_t n =
      std::max<sf_count_t>(0, std::min(count, static_cast<sf_count_t>(f->bytes.size()) - f->pos));
  std::memcpy(out, f->bytes.data() + f->pos, static_cast<size_t>(n));
  f->pos += n;
  return n;
}
sf_count_t MemWrite(const void* in, sf_count_t count, void* user) {
  auto* f = static_cast<MemoryFile*>(user);
  const auto at = static_cast<size_t>(f->pos);
  if (f->bytes.size() < at + static_cast<size_t>(count)) f->bytes.resize(at + count);
  std::memcpy(f->bytes.data() + at, in, static_cast<size_t>(count));
  f->pos += count;
  return count;
}
sf_count_t MemTell(void* user) { return static_cast<MemoryFile*>(user)->pos; }

double Confidence(double avg_logprob) { return std::clamp(std::exp(avg_logprob), 0.0, 1.0); }

// The verbose_json answer → words with times (ms from the first sample) and confidences.
std::optional<Recognition> ParseAnswer(const std::string& body, std::string* error) {
  const auto parsed = core::ParseJson(body);  // bounded depth, never throws
  if (!parsed || !parsed->isObject() || !(*parsed)["text"].isString()) {
    *error = "the transcription service answered something that is not a transcription";
    return std::nullopt;
  }
  const Json::Value& root = *parsed;
  Recognition r;
  r.engine = "remote";
  // Trimmed text; the engine punctuates, which the question counter uses.
  std::string text = root["text"].asString();
  text.erase(0, text.find_first_not_of(" \t\n"));
  text.erase(text.find_last_not_of(" \t\n") + 1);
  r.text = text;
  // Times in seconds as a service may send them: anything. Kept: finite, 0..a day, and an end
  // not before its start (the timeline and the report rely on ordered times).
  constexpr double kMaxSeconds = 24 * 3600;
  const auto span_of = [&](const Json::Value& v) -> std::optional<std::pair<double, double>> {
    if (!v.isObject() || !v["start"].isNumeric() || !v["end"].isNumeric()) return std::nullopt;
    const double a = v["start"].asDouble(), b = v["end"].asDouble();
    if (!std::isfinite(a) || !std::isfinite(b) || a < 0 || a > kMaxSeconds || b > kMaxSeconds)
      return std::nullopt;
    return std::pair{a, std::max(a, b)};
  };
  struct Segment {
    double start, end, confidence;
  };
  std::vector<Segment> segments;
  for (const auto& s : root["segments"]) {
    const auto span = span_of(s);
    if (!span) continue;
    const Json::Value& logprob = s["avg_logprob"];
    const double confidence = logprob.isNumeric() && std::isfinite(logprob.asDouble())
                                  ? Confidence(logprob.asDouble())
                                  : 0.0;
    segments.push_back({span->first, span->second, confidence});
  }
  const auto confidence_at = [&](double t) {
    for (const auto& s : segments)
      if (t >= s.start && t <= s.end) return s.confidence;
    return segments.empty() ? 0.0 : segments.back().confidence;
  };
  const auto to_ms = [](double s) { return static_cast<int64_t>(std::lround(s * 1000)); };
  for (const auto& w : root["words"]) {
    const auto span = span_of(w);
    if (!span || !w["word"].isString()) continue;
    std::string word = w["word"].asString();
    word.erase(0, word.find_first_not_of(' '));
    if (word.empty()) continue;
    r.words.push_back({word, to_ms(span->first), to_ms(span->second), confidence_at(span->first)});
  }
  if (r.words.empty() && !segments.empty()) {
    // No word timestamps (a server without them): spread each segment's words over it.
    for (const auto& s : root["segments"]) {
      const auto span = span_of(s);
      if (!span || !s["text"].isString()) continue;
      std::istringstream words(s["text"].asString());
      std::vector<std::string> ws;
      for (std::string x; words >> x;) ws.push_back(x);
      const auto [t0, t1] = *span;
      for (size_t i = 0; i < ws.size(); ++i) {
        const double a = t0 + (t1 - t0) * static_cast<double>(i) / static_cast<double>(ws.size());
        const double b =
            t0 + (t1 - t0) * static_cast<double>(i + 1) / static_cast<double>(ws.size());
        r.words.push_back({ws[i], to_ms(a), to_ms(b), confidence_at(a)});
      }
    }
  }
  double sum = 0;
  for (const auto& s : segments) sum += s.confidence;
  r.confidence = segments.empty() ? 0 : sum / static_cast<double>(segments.size());
  return r;
}

class RemoteRecognizerImpl final : public RemoteRecognizer {
 public:
  explicit RemoteRecognizerImpl(RemoteAsrConfig config) : config_(std::move(config)) {
    url_ = config_.base_url;
    while (!url_.empty() && url_.back() == '/') url_.pop_back();
    url_ += "/audio/transcriptions";
  }

  std::optional<Recognition> Transcribe(std::span<const int16_t> pcm, std::string* error) override {
    const std::string wav = EncodeWav(pcm);
    for (int attempt = 0;; ++attempt) {
      bool retryable = false;
      auto r = Attempt(wav, &retryable, error);
      if (r || !retryable || attempt >= config_.retries) return r;
      std::this_thread::sleep_for(std::chrono::milliseconds(config_.retry_backoff_ms << attempt));
    }
  }

 private:
  std::optional<Recognition> Attempt(const std::string& wav, bool* retryable, std::string* error) {
    std::unique_ptr<CURL, EasyDeleter> curl(curl_easy_init());
    if (!curl) {
      *error = "libcurl could not start a request";
      return std::nullopt;
    }
    CURL* c = curl.get();
    std::unique_ptr<curl_mime, MimeDeleter> mime(curl_mime_init(c));
    curl_mimepart* file = curl_mime_addpart(mime.get());
    curl_mime_name(file, "file");
    curl_mime_filename(file, "utterance.wav");
    curl_mime_type(file, "audio/wav");
    curl_mime_data(file, wav.data(), wav.size());
    const auto field = [&](const char* name, const std::string& value) {
      curl_mimepart* part = curl_mime_addpart(mime.get());
      curl_mime_name(part, name);
      curl_mime_data(part, value.c_str(), CURL_ZERO_TERMINATED);
    };
    field("model", config_.model);
    if (!config_.language.empty()) field("language", config_.language);
    field("response_format", "verbose_json");
    field("timestamp_granularities[]", "word");
    field("timestamp_granularities[]", "segment");
    const http::Slist headers = http::Headers(config_.api_key);
    // A transcription is small; a server streaming megabytes at us is not one.
    http::BoundedBody response;
    const std::string& body = response.bytes;
    curl_easy_setopt(c, CURLOPT_URL, url_.c_str());
    curl_easy_setopt(c, CURLOPT_MIMEPOST, mime.get());
    if (headers) curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers.get());
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(config_.connect_timeout_ms));
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, static_cast<long>(config_.timeout_ms));
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);  // timeouts without SIGALRM: we are threaded
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, &http::BoundedBody::Write);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &response);
    curl_easy_setopt(c, CURLOPT_USERAGENT, "parley");
    const CURLcode rc = curl_easy_perform(c);
    if (rc != CURLE_OK) {
      *retryable = true;
      *error =
          std::string("the transcription service could not be reached: ") + curl_easy_strerror(rc);
      return std::nullopt;
    }
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    if (status != 200) {
      *retryable = status >= 500 || status == 429;
      *error = "the transcription service answered HTTP " + std::to_string(status) + ": " +
               body.substr(0, 200);
      return std::nullopt;
    }
    return ParseTranscription(body, error);
  }

  const RemoteAsrConfig config_;
  std::string url_;
};

}  // namespace

std::optional<Recognition> ParseTranscription(const std::string& body, std::string* error) {
  return ParseAnswer(body, error);
}

std::string EncodeWav(std::span<const int16_t> pcm, int rate) {
  MemoryFile f;
  SF_VIRTUAL_IO io{&MemLength, &MemSeek, &MemRead, &MemWrite, &MemTell};
  SF_INFO info{};
  info.samplerate = rate;
  info.channels = 1;
  info.format = SF_FORMAT_WAV | SF_FORMAT_PCM_16;
  SNDFILE* snd = sf_open_virtual(&io, SFM_WRITE, &info, &f);
  if (snd == nullptr) return {};
  sf_write_short(snd, pcm.data(), static_cast<sf_count_t>(pcm.size()));
  sf_close(snd);
  return std::move(f.bytes);
}

bool DecodeSound(std::string_view bytes, std::vector<int16_t>* pcm, int* rate, std::string* error,
                 double max_seconds) {
  MemoryFile f;
  f.bytes.assign(bytes);
  SF_VIRTUAL_IO io{&MemLength, &MemSeek, &MemRead, &MemWrite, &MemTell};
  SF_INFO info{};
  SNDFILE* snd = sf_open_virtual(&io, SFM_READ, &info, &f);
  if (snd == nullptr) {
    *error = std::string("not a sound file: ") + sf_strerror(nullptr);
    return false;
  }
  if (info.channels < 1 || info.channels > 8 || info.samplerate < 8000 ||
      info.samplerate > 192000) {
    sf_close(snd);
    *error = "unsupported sound: " + std::to_string(info.channels) + " channels at " +
             std::to_string(info.samplerate) + " Hz";
    return false;
  }
  const auto max_frames = static_cast<sf_count_t>(max_seconds * info.samplerate);
  const sf_count_t frames = std::min<sf_count_t>(info.frames, max_frames);
  std::vector<int16_t> interleaved(static_cast<size_t>(frames * info.channels));
  const sf_count_t got = sf_readf_short(snd, interleaved.data(), frames);
  sf_close(snd);
  pcm->assign(static_cast<size_t>(got), 0);
  for (sf_count_t i = 0; i < got; ++i) {
    int sum = 0;
    for (int c = 0; c < info.channels; ++c)
      sum += interleaved[static_cast<size_t>(i * info.channels + c)];
    (*pcm)[static_cast<size_t>(i)] = static_cast<int16_t>(sum / info.channels);
  }
  *rate = info.samplerate;
  return true;
}

std::string RemoteAsrConfig::Validate() const {
  if (base_url.empty()) return {};
  if (base_url.rfind("http://", 0) != 0 && base_url.rfind("https://", 0) != 0)
    return "the transcription service URL must start with http:// or https://";
  if (model.empty()) return "the transcription model must be named";
  if (connect_timeout_ms < 100 || timeout_ms < 500 || timeout_ms > 600'000)
    return "transcription timeouts are out of range (connect >= 100 ms, request 0.5..600 s)";
  if (retries < 0 || retries > 5 || retry_backoff_ms < 0 || retry_backoff_ms > 10'000)
    return "transcription retries must be 0..5 with a backoff of 0..10000 ms";
  return {};
}

std::unique_ptr<RemoteRecognizer> RemoteRecognizer::Create(const RemoteAsrConfig& config,
                                                           std::string* error) {
  if (std::string why = config.Validate(); !why.empty()) {
    *error = why;
    return nullptr;
  }
  if (config.base_url.empty()) {
    *error = "no transcription service is configured";
    return nullptr;
  }
  http::InitCurl();
  return std::make_unique<RemoteRecognizerImpl>(config);
}

}  // namespace parley::speech
