#include "tests/support/flite_voice.h"

extern "C" {
#include <flite/flite.h>
cst_voice* register_cmu_us_slt(const char* voxdir);
cst_voice* register_cmu_us_kal16(const char* voxdir);
cst_voice* register_cmu_us_rms(const char* voxdir);
cst_voice* register_cmu_us_awb(const char* voxdir);
}

#include <map>
#include <mutex>
#include <optional>

namespace parley::testing {

std::vector<int16_t> FliteSpeak(const std::string& voice, const std::string& text,
                                double duration_stretch, double pitch_stddev_hz) {
  // Flite keeps global state (its init, the registered voices): one caller at a time.
  static std::mutex mu;
  const std::lock_guard lock(mu);
  static const bool ready = [] {
    flite_init();
    return true;
  }();
  (void)ready;
  cst_voice* v = nullptr;
  if (voice == "slt") v = register_cmu_us_slt(nullptr);
  if (voice == "kal16") v = register_cmu_us_kal16(nullptr);
  if (voice == "rms") v = register_cmu_us_rms(nullptr);
  if (voice == "awb") v = register_cmu_us_awb(nullptr);
  if (v == nullptr) return {};
  feat_set_float(v->features, "duration_stretch", static_cast<float>(duration_stretch));
  // A registered voice is one object: what it had of its own is put back (or the feature
  // removed again when it had none, its intonation model's default then applying).
  static std::map<cst_voice*, std::optional<float>> own_spread;
  if (!own_spread.contains(v))
    own_spread[v] = feat_present(v->features, "int_f0_target_stddev")
                        ? std::optional<float>(feat_float(v->features, "int_f0_target_stddev"))
                        : std::nullopt;
  if (pitch_stddev_hz >= 0)
    feat_set_float(v->features, "int_f0_target_stddev", static_cast<float>(pitch_stddev_hz));
  else if (own_spread[v])
    feat_set_float(v->features, "int_f0_target_stddev", *own_spread[v]);
  else
    feat_remove(v->features, "int_f0_target_stddev");
  cst_wave* w = flite_text_to_wave(text.c_str(), v);
  std::vector<int16_t> out;
  if (w != nullptr && w->sample_rate == 16000 && w->num_channels == 1)
    out.assign(w->samples, w->samples + w->num_samples);
  if (w != nullptr) delete_wave(w);
  return out;
}

}  // namespace parley::testing
