// A pool of loaded PocketSphinx decoders (each ~90 MB, ~1 s to load) shared by all sessions;
// a caller checks one out for one utterance.
#include <pocketsphinx.h>
#include <sphinxbase/cmn.h>
#include <sphinxbase/fe.h>
#include <sphinxbase/feat.h>

#include <algorithm>
#include <condition_variable>
#include <cstdlib>
#include <deque>
#include <filesystem>
#include <future>
#include <mutex>
#include <set>
#include <sstream>
#include <stop_token>
#include <thread>

#include "core/core.h"
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
// A pooled recogniser: one decoder, which decodes each utterance as it is spoken, and a front
// end with its settings for each utterance's starting mean (the decoder's own front end counts
// every frame it computes into its frame numbering and noise estimate).
struct Slot {
  std::unique_ptr<ps_decoder_t, DecoderDeleter> ps;
  std::unique_ptr<fe_t, FrontEndDeleter> fe;
  std::vector<mfcc_t> default_mean;  // the model's -cmninit
};

// Live normalisation needs a starting cepstral mean. PocketSphinx's default (a fixed guess) or
// the decoder's last utterance's (another session, another channel) measured 14-38 WER points
// worse than normalising over the whole utterance, and the same speaker's previous utterance
// 8 points worse on telephone prompts. It is estimated from the utterance's own first 1.5 s
// of speech (after the lead-in: with the endpointer's pre-roll of room noise in it, short
// prompts measured 13-22 points worse); decoding starts then, while the person is still
// speaking, so the final result is not delayed.
constexpr size_t kPriorSamples = kSampleRate * 3 / 2;

constexpr int kFramesPerSecond = 100;               // PocketSphinx's default frame rate
constexpr size_t kPieceSamples = kSampleRate / 50;  // 20 ms: the media pipeline's step

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

// The decoders and who waits for them; streams keep it alive, so the pool's owner may go first.
struct Shared : std::enable_shared_from_this<Shared> {
  std::vector<std::unique_ptr<Slot>> decoders;  // grows while the pool loads
  std::mutex mu;
  std::vector<Slot*> free;
  std::deque<DecoderPool::Ready> waiters;
  std::condition_variable_any more_wanted;  // a turn waits with every decoder held
  std::string load_error;                   // a later decoder failed to load: growth stopped
  int lead_in_ms = 0;

  void Release(Slot* slot);
  // A newly loaded recogniser joins the pool and serves a waiting turn at once. Otherwise it
  // goes to the bottom of the free stack: free decoders are taken last-returned first, so a
  // lightly loaded server keeps using the few whose noise-floor estimates have settled.
  void Add(std::unique_ptr<Slot> slot) {
    Slot* s = slot.get();
    std::unique_lock lock(mu);
    decoders.push_back(std::move(slot));
    if (waiters.empty()) {
      free.insert(free.begin(), s);
      return;
    }
    lock.unlock();
    Release(s);
  }
  std::unique_ptr<RecognitionStream> Lease(Slot* slot);
};

// The utterance is decoded as it arrives (first search pass only, live cepstral mean), so the
// final result needs only the end of the search once the person stops: ~7 ms instead of
// decoding the whole turn again (~0.2 CPU-s per second of speech), at ~80 % of that CPU.
// Measured through the server against the bare decoder on the files (tests/speech_test.cc):
// 16 kHz speech 4.2 WER points worse (3 words of 71), 8 kHz telephone prompts 0.8 worse, the
// same on a quiet and on a saturated machine once the decoder's calls stopped following the
// audio's arrival (see Decode); decoding each turn whole after its end, with batch
// normalisation and the second pass, measured 0-3 and 6-9 worse.
// No ps_start_stream per utterance: the front end's noise-floor estimate carries from one
// utterance to the next. A fresh estimate per turn measured the same WER but 13-15 % more CPU
// (ws_load --speech N=8: 1.16-1.17x the bare decoder instead of 1.02-1.03x) and twice the p95
// latency. That noise level is all a pooled decoder carries between sessions: no speech.
class StreamImpl final : public RecognitionStream {
 public:
  StreamImpl(std::shared_ptr<Shared> shared, Slot* slot)
      : shared_(std::move(shared)),
        slot_(slot),
        ps_(slot->ps.get()),
        lead_in_(static_cast<size_t>(shared_->lead_in_ms) * kSampleRate / 1000) {}
  ~StreamImpl() override {
    if (started_ && !finished_) ps_end_utt(ps_);  // abandoned: the decoder is clean for the next
    shared_->Release(slot_);
  }
  StreamImpl(const StreamImpl&) = delete;
  StreamImpl& operator=(const StreamImpl&) = delete;

  bool Feed(std::span<const int16_t> pcm, std::string* error) override {
    if (finished_) {
      *error = "the utterance has ended";
      return false;
    }
    fed_ += pcm.size();
    if (!started_) {
      prefix_.insert(prefix_.end(), pcm.begin(), pcm.end());
      return prefix_.size() < lead_in_ + kPriorSamples || Begin(error);
    }
    return Decode(pcm, error);
  }

  std::string Partial() override {
    if (!started_ || finished_) return {};
    int32 score = 0;
    const char* hyp = ps_get_hyp(ps_, &score);
    return hyp != nullptr ? hyp : "";
  }

  std::optional<Recognition> Finish(std::span<const int16_t> whole, std::string* error) override {
    if (finished_) {
      *error = "the utterance has ended";
      return std::nullopt;
    }
    // Nothing streamed (a turn handed over whole, e.g. after the remote engine failed).
    if (fed_ == 0 && !Feed(whole, error)) return std::nullopt;
    if (!started_ && !Begin(error)) return std::nullopt;  // shorter than the mean's 1.5 s
    finished_ = true;
    if (!carry_.empty() && ps_process_raw(ps_, carry_.data(), carry_.size(), FALSE, FALSE) < 0) {
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
    std::vector<mfcc_t> mean = CepstralMean(fe, static_cast<size_t>(fe_get_output_size(fe)));
    cmn_live_set(ps_get_feat(ps_)->cmn_struct,
                 mean.empty() ? slot_->default_mean.data() : mean.data());
    if (ps_start_utt(ps_) < 0) {
      *error = "the speech decoder could not start an utterance";
      return false;
    }
    started_ = true;
    const bool ok = Decode(prefix_, error);
    prefix_ = {};
    return ok;
  }

  // Hands the audio to the decoder in pieces of one fixed size, whatever size it arrived in:
  // live normalisation updates its mean only between calls, so call sizes that followed the
  // arrival (bigger when the server is busy) made the words depend on the server's load.
  bool Decode(std::span<const int16_t> pcm, std::string* error) {
    const auto process = [&](const int16_t* piece) {
      if (ps_process_raw(ps_, piece, kPieceSamples, FALSE, FALSE) >= 0) return true;
      *error = "the speech decoder rejected the audio";
      return false;
    };
    if (!carry_.empty()) {
      const size_t take = std::min(pcm.size(), kPieceSamples - carry_.size());
      carry_.insert(carry_.end(), pcm.begin(), pcm.begin() + static_cast<long>(take));
      pcm = pcm.subspan(take);
      if (carry_.size() < kPieceSamples) return true;
      if (!process(carry_.data())) return false;
      carry_.clear();
    }
    for (; pcm.size() >= kPieceSamples; pcm = pcm.subspan(kPieceSamples))
      if (!process(pcm.data())) return false;
    carry_.assign(pcm.begin(), pcm.end());
    return true;
  }

  // Mean of the buffered audio's cepstra by the decoder's own front-end settings (frames with
  // negative energy skipped, as PocketSphinx's live normalisation does); empty when none.
  std::vector<mfcc_t> CepstralMean(fe_t* fe, size_t veclen) {
    // The lead-in is left out unless it is all there is; the next 1.5 s exactly (the buffer
    // holds more when audio arrived in big pieces, and the mean must not depend on that).
    const size_t skip = prefix_.size() > lead_in_ + kSampleRate / 4 ? lead_in_ : 0;
    const int16* samples = prefix_.data() + skip;
    size_t left = std::min(prefix_.size() - skip, kPriorSamples);
    int32 frames = 0;
    fe_process_frames(fe, nullptr, &left, nullptr, &frames, nullptr);
    std::vector<mfcc_t> cep((static_cast<size_t>(frames) + 2) * veclen);
    std::vector<mfcc_t*> rows(static_cast<size_t>(frames) + 2);
    for (size_t i = 0; i < rows.size(); ++i) rows[i] = cep.data() + i * veclen;
    int32 got = frames + 1;
    fe_start_stream(fe);
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
    // PocketSphinx numbers frames from the stream's start; the best path begins (with <s> or
    // silence) at the utterance's first frame.
    std::optional<int> first_frame;
    for (ps_seg_t* seg = ps_seg_iter(ps_); seg != nullptr; seg = ps_seg_next(seg)) {
      int sf = 0, ef = 0;
      ps_seg_frames(seg, &sf, &ef);
      if (!first_frame) first_frame = sf;

      const std::string w = BaseWord(ps_seg_word(seg));
      if (IsFiller(w)) continue;
      sf -= *first_frame;
      ef -= *first_frame;
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
  ps_decoder_t* ps_;
  const size_t lead_in_;         // samples before the speech, left out of the starting mean
  size_t fed_ = 0;               // samples handed over
  std::vector<int16_t> prefix_;  // audio before decoding starts (for the starting mean)
  std::vector<int16_t> carry_;   // less than a piece, for the next call
  bool started_ = false, finished_ = false;
};

std::unique_ptr<RecognitionStream> Shared::Lease(Slot* slot) {
  return std::make_unique<StreamImpl>(shared_from_this(), slot);
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

std::unique_ptr<Slot> LoadSlot(const PocketSphinxConfig& config, std::string* error) {
  const std::vector<std::string> args = config.DecoderArguments();
  std::vector<const char*> argv;
  for (const auto& a : args) argv.push_back(a.c_str());
  // ps_init keeps its own reference to the configuration.
  std::unique_ptr<cmd_ln_t, ConfigDeleter> cfg(cmd_ln_parse_r(
      nullptr, ps_args(), static_cast<int32>(argv.size()), const_cast<char**>(argv.data()), TRUE));
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
  // The decoder's configuration now includes the model's feature parameters.
  slot->fe.reset(fe_init_auto_r(ps_get_config(slot->ps.get())));
  if (!slot->fe) {
    *error = "PocketSphinx's front end could not start";
    return nullptr;
  }
  cmn_t* cmn = ps_get_feat(slot->ps.get())->cmn_struct;
  slot->default_mean.resize(static_cast<size_t>(cmn->veclen));
  cmn_live_get(cmn, slot->default_mean.data());
  return slot;
}

class DecoderPoolImpl final : public DecoderPool {
 public:
  // Loads `pool_size` decoders ahead, one by one, then one more whenever a turn waits with
  // every decoder held, up to `max_pool_size` (a burst of speakers past the usual load is
  // heard ~1 s late rather than queued for the whole of someone else's turn).
  DecoderPoolImpl(std::unique_ptr<Slot> first, const PocketSphinxConfig& config)
      : shared_(std::make_shared<Shared>()),
        size_(config.pool_size),
        max_size_(std::max(config.pool_size, config.max_pool_size)) {
    shared_->lead_in_ms = config.lead_in_ms;
    shared_->Add(std::move(first));
    if (max_size_ > 1)
      loader_ = std::jthread(
          [shared = shared_, config, ahead = size_, most = max_size_](const std::stop_token& stop) {
            core::NameThisThread("decoder-loader");
            for (;;) {
              {
                std::unique_lock lock(shared->mu);
                const auto wanted = [&] {
                  const auto loaded = static_cast<int>(shared->decoders.size());
                  return loaded < ahead || (loaded < most && !shared->waiters.empty());
                };
                if (!shared->more_wanted.wait(lock, stop, wanted)) return;  // stopping
              }
              std::string error;
              auto slot = LoadSlot(config, &error);
              if (!slot) {  // the first loaded, so this is memory or the model's files
                const std::lock_guard lock(shared->mu);
                shared->load_error = error;
                return;
              }
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
      lock.unlock();
      shared_->more_wanted.notify_one();
      return;
    }
    Slot* slot = shared_->free.back();
    shared_->free.pop_back();
    lock.unlock();
    ready(shared_->Lease(slot));
  }

  int size() const override { return size_; }
  int max_size() const override { return max_size_; }
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
  std::string load_error() const override {
    const std::lock_guard lock(shared_->mu);
    return shared_->load_error;
  }

 private:
  std::shared_ptr<Shared> shared_;
  const int size_, max_size_;
  std::jthread loader_;  // loads the rest of the pool
};

}  // namespace

std::vector<std::pair<std::string, std::string>> PocketSphinxConfig::SearchFlags(
    std::string* error) const {
  static const std::set<std::string, std::less<>> kAllowed = {
      "-beam", "-wbeam",     "-pbeam",   "-lpbeam",   "-lponlybeam", "-pl_window", "-pl_beam",
      "-pl_pbeam", "-ds",    "-topn",    "-maxhmmpf", "-maxwpf",     "-fwdtree",   "-lw",
      "-wip"};
  const std::string_view text = search == "fast"   ? std::string_view(kFastSearch)
                                : search == "full" ? std::string_view()
                                                   : std::string_view(search);
  std::istringstream in{std::string(text)};
  std::vector<std::pair<std::string, std::string>> flags;
  std::string name, value;
  while (in >> name) {
    if (!kAllowed.contains(name)) {
      *error = "--asr-search: '" + name + "' is not a search setting (presets: fast, full)";
      return {};
    }
    if (!(in >> value)) {
      *error = "--asr-search: " + name + " has no value";
      return {};
    }
    if (value != "yes" && value != "no") {
      char* end = nullptr;
      std::strtod(value.c_str(), &end);
      if (end == value.c_str() || *end != '\0') {
        *error = "--asr-search: " + name + " takes a number, not '" + value + "'";
        return {};
      }
    }
    flags.emplace_back(name, value);
  }
  error->clear();
  return flags;
}

std::vector<std::string> PocketSphinxConfig::DecoderArguments() const {
  std::string error;
  std::vector<std::string> args = {"parley",
          "-hmm",
          model_dir,
          "-lm",
          language_model,
          "-dict",
          dictionary,
          "-cmn",
          "live",
          "-fwdflat",
          second_pass ? "yes" : "no",
          "-logfn",
          "/dev/null"};
  for (auto& [flag, value] : SearchFlags(&error)) {
    args.push_back(flag);
    args.push_back(value);
  }
  return args;
}

std::string PocketSphinxConfig::Validate() const {
  if (pool_size < 1 || pool_size > 64) return "the speech decoder pool must hold 1..64 decoders";
  if (max_pool_size < 0 || max_pool_size > 64)
    return "--asr-max-decoders must be 0 (the session capacity) or 1..64";
  if (lead_in_ms < 0 || lead_in_ms > 5000) return "the utterance lead-in must be 0..5000 ms";
  std::string search_error;
  SearchFlags(&search_error);
  if (!search_error.empty()) return search_error;
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
