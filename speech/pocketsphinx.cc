// A pool of loaded PocketSphinx decoders (each ~90 MB, ~1 s to load) shared by all sessions;
// a caller checks one out for one utterance.
#include <pocketsphinx.h>
#include <sphinxbase/cmn.h>
#include <sphinxbase/fe.h>
#include <sphinxbase/feat.h>

#include <algorithm>
#include <deque>
#include <filesystem>
#include <future>
#include <mutex>
#include <stop_token>
#include <thread>

#include "speech/speech.h"

namespace parley::speech {
namespace {

struct DecoderDeleter {
  void operator()(ps_decoder_t* d) const { ps_free(d); }
};
struct FrontEndDeleter {
  void operator()(fe_t* fe) const { fe_free(fe); }
};
struct ConfigDeleter {
  void operator()(cmd_ln_t* c) const { cmd_ln_free_r(c); }
};
// A pooled recogniser: the decoder of final results; for partials a second, streaming decoder
// and a front end with its settings for that pass's starting mean (the decoder's own front end
// counts every frame it computes into the next utterance's word times).
struct Slot {
  std::unique_ptr<ps_decoder_t, DecoderDeleter> ps;
  std::unique_ptr<fe_t, FrontEndDeleter> fe;
  std::unique_ptr<ps_decoder_t, DecoderDeleter> live_ps;  // partials; null when they are off
  std::vector<mfcc_t> default_mean;                       // the model's -cmninit
};

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

// The live pass (partials) needs a starting cepstral mean. PocketSphinx's default (a fixed
// guess) costs ~8 WER points against normalising over the whole utterance; estimating it from
// the utterance's own first 1.5 s brings clean speech to within ~1-2 points, at the price of
// partials starting ~1 s into a turn. Carrying the estimate from a session's earlier turns was
// measured too: no gain on one speaker, and much worse when the channel changes.
constexpr size_t kPriorSamples = kSampleRate * 3 / 2;

// The decoders and who waits for them; streams keep it alive, so the pool's owner may go first.
struct Shared : std::enable_shared_from_this<Shared> {
  std::vector<std::unique_ptr<Slot>> decoders;  // grows while the pool loads
  std::mutex mu;
  std::vector<Slot*> free;
  std::deque<DecoderPool::Ready> waiters;
  bool partials = true;

  void Release(Slot* slot);
  // A newly loaded recogniser joins the pool (and serves a waiting turn at once).
  void Add(std::unique_ptr<Slot> slot) {
    Slot* s = slot.get();
    {
      const std::lock_guard lock(mu);
      decoders.push_back(std::move(slot));
    }
    Release(s);
  }
  std::unique_ptr<RecognitionStream> Lease(Slot* slot);
};

class StreamImpl final : public RecognitionStream {
 public:
  StreamImpl(std::shared_ptr<Shared> shared, Slot* slot, bool live)
      : shared_(std::move(shared)),
        slot_(slot),
        ps_(slot->ps.get()),
        live_ps_(slot->live_ps.get()),
        live_(live && live_ps_ != nullptr) {}
  ~StreamImpl() override {
    if (started_ && !finished_) ps_end_utt(live_ps_);
    shared_->Release(slot_);
  }
  StreamImpl(const StreamImpl&) = delete;
  StreamImpl& operator=(const StreamImpl&) = delete;

  bool Feed(std::span<const int16_t> pcm, std::string* error) override {
    if (finished_) {
      *error = "the utterance has ended";
      return false;
    }
    audio_.insert(audio_.end(), pcm.begin(), pcm.end());
    if (!live_) return true;
    if (!started_) {
      prefix_.insert(prefix_.end(), pcm.begin(), pcm.end());
      return prefix_.size() < kPriorSamples || Begin(error);
    }
    if (ps_process_raw(live_ps_, pcm.data(), pcm.size(), FALSE, FALSE) < 0) {
      *error = "the speech decoder rejected the audio";
      return false;
    }
    return true;
  }

  std::string Partial() override {
    if (!started_ || finished_) return {};
    int32 score = 0;
    const char* hyp = ps_get_hyp(live_ps_, &score);
    return hyp != nullptr ? hyp : "";
  }

  std::optional<Recognition> Finish(std::span<const int16_t> whole, std::string* error) override {
    if (finished_) {
      *error = "the utterance has ended";
      return std::nullopt;
    }
    finished_ = true;
    if (started_) ps_end_utt(live_ps_);  // the live pass only served partials
    // The final result decodes the whole utterance at once, normalised over all of it, on a
    // decoder that never streams: the live pass (normalised from its first 1.5 s) measured
    // 3-8 WER points worse on speech padded with room noise, which is what the endpointer
    // hands over, and a decoder that has streamed no longer decodes whole utterances like a
    // fresh one (measured; no public PocketSphinx call restores it).
    // (No ps_start_stream here: the front end's noise-floor estimate carries from utterance to
    // utterance, which measured 12 WER points better on prompts padded with room noise. It is
    // the one thing a pooled decoder carries between sessions: a noise level, no speech.)
    if (ps_start_utt(ps_) < 0) {
      *error = "the speech decoder could not start an utterance";
      return std::nullopt;
    }
    if (whole.empty()) whole = audio_;
    if (ps_process_raw(ps_, whole.data(), whole.size(), FALSE, TRUE) < 0) {
      ps_end_utt(ps_);
      *error = "the speech decoder rejected the audio";
      return std::nullopt;
    }
    if (ps_end_utt(ps_) < 0) {
      *error = "the speech decoder could not end the utterance";
      return std::nullopt;
    }
    return Collect();
  }

 private:
  // Sets the starting cepstral mean from the buffered audio (the model's default when it has
  // no voiced frame), then starts the utterance and decodes the buffer.
  bool Begin(std::string* error) {
    fe_t* fe = slot_->fe.get();
    cmn_t* cmn = ps_get_feat(live_ps_)->cmn_struct;
    std::vector<mfcc_t> mean = CepstralMean(fe, static_cast<size_t>(fe_get_output_size(fe)));
    cmn_live_set(cmn, mean.empty() ? slot_->default_mean.data() : mean.data());
    // A new "stream" per utterance: the front end's noise estimate and frame numbering start
    // afresh, so nothing carries from one utterance (or session) to the next.
    if (ps_start_stream(live_ps_) < 0 || ps_start_utt(live_ps_) < 0) {
      *error = "the speech decoder could not start an utterance";
      return false;
    }
    started_ = true;
    const bool ok = ps_process_raw(live_ps_, prefix_.data(), prefix_.size(), FALSE, FALSE) >= 0;
    prefix_ = {};
    if (!ok) *error = "the speech decoder rejected the audio";
    return ok;
  }

  // Mean of the buffered audio's cepstra by the decoder's own front end (frames with negative
  // energy skipped, as PocketSphinx's live normalisation does); empty when there are none.
  std::vector<mfcc_t> CepstralMean(fe_t* fe, size_t veclen) {
    const int16* samples = prefix_.data();
    size_t left = prefix_.size();
    int32 frames = 0;
    fe_process_frames(fe, nullptr, &left, nullptr, &frames, nullptr);
    std::vector<mfcc_t> cep((static_cast<size_t>(frames) + 2) * veclen);
    std::vector<mfcc_t*> rows(static_cast<size_t>(frames) + 2);
    for (size_t i = 0; i < rows.size(); ++i) rows[i] = cep.data() + i * veclen;
    int32 got = frames + 1;
    fe_start_stream(fe);  // a fresh noise estimate: nothing from earlier utterances
    fe_start_utt(fe);
    fe_process_frames(fe, &samples, &left, rows.data(), &got, nullptr);
    int32 extra = 0;
    fe_end_utt(fe, rows[static_cast<size_t>(got)], &extra);
    got += extra;
    std::vector<mfcc_t> mean(veclen, 0);
    int used = 0;
    for (int32 i = 0; i < got; ++i) {
      const mfcc_t* row = rows[static_cast<size_t>(i)];
      if (row[0] < 0) continue;
      for (size_t j = 0; j < veclen; ++j) mean[j] += row[j];
      ++used;
    }
    if (used == 0) return {};
    for (auto& m : mean) m /= static_cast<mfcc_t>(used);
    return mean;
  }

  Recognition Collect() {
    Recognition r;
    r.engine = "pocketsphinx";
    int32 score = 0;
    const char* hyp = ps_get_hyp(ps_, &score);
    logmath_t* lmath = ps_get_logmath(ps_);
    double confidence_sum = 0;
    for (ps_seg_t* seg = ps_seg_iter(ps_); seg != nullptr; seg = ps_seg_next(seg)) {
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

  std::shared_ptr<Shared> shared_;
  Slot* slot_;
  ps_decoder_t* ps_;             // the final pass
  ps_decoder_t* live_ps_;        // the live pass (null without partials)
  bool live_;                    // decode as it comes, for partials
  std::vector<int16_t> audio_;   // the whole utterance, for the final pass
  std::vector<int16_t> prefix_;  // audio before the live pass starts
  bool started_ = false, finished_ = false;
};

std::unique_ptr<RecognitionStream> Shared::Lease(Slot* slot) {
  return std::make_unique<StreamImpl>(shared_from_this(), slot, partials);
}

void Shared::Release(Slot* slot) {
  std::unique_lock lock(mu);
  if (waiters.empty()) {
    free.push_back(slot);
    return;
  }
  auto ready = std::move(waiters.front());
  waiters.pop_front();
  lock.unlock();
  // The next waiter gets the decoder on this thread (it may drop it at once: Release again).
  ready(Lease(slot));
}

// One recogniser: the final decoder, and with partials the live decoder and its front end.
std::unique_ptr<Slot> LoadSlot(const PocketSphinxConfig& config, std::string* error) {
  // ps_init keeps its own reference to the configuration. Cepstral mean normalisation is over
  // the whole utterance ("batch", as the model was trained) for the final pass; a streaming
  // pass normalises live whatever this says, from the mean each stream sets.
  std::unique_ptr<cmd_ln_t, ConfigDeleter> cfg(
      cmd_ln_init(nullptr, ps_args(), TRUE, "-hmm", config.model_dir.c_str(), "-lm",
                  config.language_model.c_str(), "-dict", config.dictionary.c_str(), "-cmn",
                  "batch", "-logfn", "/dev/null", nullptr));
  if (!cfg) {
    *error = "PocketSphinx rejected its configuration";
    return nullptr;
  }
  auto slot = std::make_unique<Slot>();
  slot->ps.reset(ps_init(cfg.get()));
  if (!slot->ps) {
    *error = "PocketSphinx could not load its model from " + config.model_dir;
    return nullptr;
  }
  if (config.partials) {
    slot->live_ps.reset(ps_init(cfg.get()));
    if (!slot->live_ps) {
      *error = "PocketSphinx could not load its model from " + config.model_dir;
      return nullptr;
    }
    // The live decoder's configuration now includes the model's feature parameters.
    slot->fe.reset(fe_init_auto_r(ps_get_config(slot->live_ps.get())));
    if (!slot->fe) {
      *error = "PocketSphinx's front end could not start";
      return nullptr;
    }
    cmn_t* cmn = ps_get_feat(slot->live_ps.get())->cmn_struct;
    slot->default_mean.resize(static_cast<size_t>(cmn->veclen));
    cmn_live_get(cmn, slot->default_mean.data());
  }
  return slot;
}

class DecoderPoolImpl final : public DecoderPool {
 public:
  DecoderPoolImpl(std::unique_ptr<Slot> first, const PocketSphinxConfig& config)
      : shared_(std::make_shared<Shared>()), size_(config.pool_size) {
    shared_->partials = config.partials;
    shared_->Add(std::move(first));
    if (size_ > 1)
      loader_ = std::jthread([shared = shared_, config](const std::stop_token& stop) {
        for (int i = 1; i < config.pool_size && !stop.stop_requested(); ++i) {
          std::string error;
          auto slot = LoadSlot(config, &error);
          if (!slot) return;  // the first loaded, so this is memory; the pool stays smaller
          shared->Add(std::move(slot));
        }
      });
  }
  ~DecoderPoolImpl() override {
    if (loader_.joinable()) {
      loader_.request_stop();
      loader_.join();
    }
  }
  DecoderPoolImpl(const DecoderPoolImpl&) = delete;
  DecoderPoolImpl& operator=(const DecoderPoolImpl&) = delete;

  void Acquire(Ready ready) override {
    std::unique_lock lock(shared_->mu);
    if (shared_->free.empty()) {
      shared_->waiters.push_back(std::move(ready));
      return;
    }
    Slot* slot = shared_->free.back();
    shared_->free.pop_back();
    lock.unlock();
    ready(shared_->Lease(slot));
  }

  int size() const override { return size_; }
  int loaded() const override {
    const std::lock_guard lock(shared_->mu);
    return static_cast<int>(shared_->decoders.size());
  }
  int busy() const override {
    const std::lock_guard lock(shared_->mu);
    return static_cast<int>(shared_->decoders.size() - shared_->free.size());
  }
  int waiting() const override {
    const std::lock_guard lock(shared_->mu);
    return static_cast<int>(shared_->waiters.size());
  }

 private:
  std::shared_ptr<Shared> shared_;
  const int size_;
  std::jthread loader_;  // loads the rest of the pool
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

std::shared_ptr<DecoderPool> DecoderPool::Create(const PocketSphinxConfig& config,
                                                 std::string* error) {
  if (std::string why = config.Validate(); !why.empty()) {
    *error = why;
    return nullptr;
  }
  // The first recogniser loads now (its failure is the caller's error); the others load one by
  // one on the pool's own thread, each serving waiting turns as soon as it is ready, so the
  // first transcript does not wait for the whole pool (~1 s per decoder, 8 with partials).
  auto first = LoadSlot(config, error);
  if (!first) return nullptr;
  return std::make_shared<DecoderPoolImpl>(std::move(first), config);
}

std::optional<Recognition> RecognizeUtterance(DecoderPool& pool, std::span<const int16_t> pcm,
                                              std::string* error) {
  std::promise<std::unique_ptr<RecognitionStream>> leased;
  auto stream_future = leased.get_future();
  pool.Acquire([&leased](std::unique_ptr<RecognitionStream> s) { leased.set_value(std::move(s)); });
  const auto stream = stream_future.get();
  if (!stream->Feed(pcm, error)) return std::nullopt;
  return stream->Finish({}, error);
}

}  // namespace parley::speech
