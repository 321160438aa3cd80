// A pool of loaded PocketSphinx decoders (each ~100 MB, ~1 s to load) shared by all sessions;
// a caller checks one out for one utterance.
#include <pocketsphinx.h>

#include <algorithm>
#include <condition_variable>
#include <filesystem>
#include <mutex>

#include "speech/speech.h"

namespace parley::speech {
namespace {

struct DecoderDeleter {
  void operator()(ps_decoder_t* d) const { ps_free(d); }
};
struct ConfigDeleter {
  void operator()(cmd_ln_t* c) const { cmd_ln_free_r(c); }
};
using Decoder = std::unique_ptr<ps_decoder_t, DecoderDeleter>;

constexpr int kFramesPerSecond = 100;  // PocketSphinx's default frame rate

// "word(2)" is the dictionary's second pronunciation of "word".
std::string BaseWord(const char* w) {
  std::string s(w);
  const auto paren = s.find('(');
  if (paren != std::string::npos && paren > 0) s.resize(paren);
  return s;
}

bool IsFiller(const std::string& w) {
  return w.empty() || w == "<s>" || w == "</s>" || w == "<sil>" || w.front() == '[' ||
         w.front() == '+';
}

class DecoderPoolImpl final : public DecoderPool {
 public:
  explicit DecoderPoolImpl(std::vector<Decoder> decoders) : decoders_(std::move(decoders)) {
    for (auto& d : decoders_) free_.push_back(d.get());
  }

  std::optional<Recognition> Recognize(std::span<const int16_t> pcm, std::chrono::milliseconds wait,
                                       std::string* error) override {
    ps_decoder_t* ps = nullptr;
    {
      std::unique_lock lock(mu_);
      ++waiting_;
      const bool got = cv_.wait_for(lock, wait, [&] { return !free_.empty(); });
      --waiting_;
      if (!got) {
        *error = "every speech decoder is busy";
        return std::nullopt;
      }
      ps = free_.back();
      free_.pop_back();
    }
    auto result = Decode(ps, pcm, error);
    {
      const std::lock_guard lock(mu_);
      free_.push_back(ps);
    }
    cv_.notify_one();
    return result;
  }

  int size() const override { return static_cast<int>(decoders_.size()); }
  int busy() const override {
    const std::lock_guard lock(mu_);
    return static_cast<int>(decoders_.size() - free_.size());
  }
  int waiting() const override {
    const std::lock_guard lock(mu_);
    return waiting_;
  }

 private:
  static std::optional<Recognition> Decode(ps_decoder_t* ps, std::span<const int16_t> pcm,
                                           std::string* error) {
    if (ps_start_utt(ps) < 0) {
      *error = "the speech decoder could not start an utterance";
      return std::nullopt;
    }
    if (ps_process_raw(ps, pcm.data(), pcm.size(), FALSE, TRUE) < 0) {
      ps_end_utt(ps);
      *error = "the speech decoder rejected the audio";
      return std::nullopt;
    }
    ps_end_utt(ps);
    Recognition r;
    r.engine = "pocketsphinx";
    int32 score = 0;
    const char* hyp = ps_get_hyp(ps, &score);
    logmath_t* lmath = ps_get_logmath(ps);
    double confidence_sum = 0;
    for (ps_seg_t* seg = ps_seg_iter(ps); seg != nullptr; seg = ps_seg_next(seg)) {
      const std::string w = BaseWord(ps_seg_word(seg));
      if (IsFiller(w)) continue;
      int sf = 0, ef = 0;
      ps_seg_frames(seg, &sf, &ef);
      int32 ascr = 0, lscr = 0, lback = 0;
      const double posterior = logmath_exp(lmath, ps_seg_prob(seg, &ascr, &lscr, &lback));
      Word word{w, int64_t{sf} * 1000 / kFramesPerSecond, int64_t{ef + 1} * 1000 / kFramesPerSecond,
                std::clamp(posterior, 0.0, 1.0)};
      confidence_sum += word.confidence;
      r.words.push_back(std::move(word));
    }
    if (hyp != nullptr) r.text = hyp;
    r.confidence = r.words.empty() ? 0 : confidence_sum / static_cast<double>(r.words.size());
    return r;
  }

  std::vector<Decoder> decoders_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<ps_decoder_t*> free_;
  int waiting_ = 0;
};

}  // namespace

std::string PocketSphinxConfig::Validate() const {
  if (pool_size < 1 || pool_size > 64) return "the speech decoder pool must hold 1..64 decoders";
  std::error_code ec;
  if (!std::filesystem::is_directory(model_dir, ec))
    return "PocketSphinx acoustic model not found at " + model_dir +
           " (Debian package pocketsphinx-en-us)";
  for (const std::string& f : {dictionary, language_model})
    if (!std::filesystem::is_regular_file(f, ec))
      return "PocketSphinx model file not found: " + f + " (Debian package pocketsphinx-en-us)";
  return {};
}

std::unique_ptr<DecoderPool> DecoderPool::Create(const PocketSphinxConfig& config,
                                                 std::string* error) {
  if (std::string why = config.Validate(); !why.empty()) {
    *error = why;
    return nullptr;
  }
  std::vector<Decoder> decoders;
  for (int i = 0; i < config.pool_size; ++i) {
    // ps_init keeps its own reference to the configuration. Cepstral mean normalisation is
    // per utterance ("batch": we always decode whole utterances): with the default "live" CMN
    // a decoder carries the last speaker's channel estimate into the next utterance, which in
    // a shared pool is another session's.
    std::unique_ptr<cmd_ln_t, ConfigDeleter> cfg(
        cmd_ln_init(nullptr, ps_args(), TRUE, "-hmm", config.model_dir.c_str(), "-lm",
                    config.language_model.c_str(), "-dict", config.dictionary.c_str(), "-cmn",
                    "batch", "-logfn", "/dev/null", nullptr));
    if (!cfg) {
      *error = "PocketSphinx rejected its configuration";
      return nullptr;
    }
    Decoder d(ps_init(cfg.get()));
    if (!d) {
      *error = "PocketSphinx could not load its model from " + config.model_dir;
      return nullptr;
    }
    decoders.push_back(std::move(d));
  }
  return std::make_unique<DecoderPoolImpl>(std::move(decoders));
}

}  // namespace parley::speech
