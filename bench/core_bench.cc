// Kernels on the per-message path of the server core.
#include <benchmark/benchmark.h>

#include <random>

#include "core/core.h"
#include "signaling/signaling.h"

namespace {

std::string ControlMessage() { return R"({"type":"ping","id":123456789})"; }

void BM_ParseControlMessage(benchmark::State& state) {
  const std::string msg = ControlMessage();
  for (auto _ : state) {
    auto v = parley::core::ParseJson(msg);
    benchmark::DoNotOptimize(v);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_ParseControlMessage);

void BM_CounterAdd(benchmark::State& state) {
  parley::core::Metrics m;
  auto& c = m.GetCounter("x_total", "x", {{"endpoint", "practice"}});
  for (auto _ : state) c.Add();
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_CounterAdd);

void BM_CounterLookupAndAdd(benchmark::State& state) {
  parley::core::Metrics m;
  for (auto _ : state)
    m.GetCounter("parley_ws_messages_total", "x", {{"endpoint", "practice"}, {"direction", "in"}})
        .Add();
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_CounterLookupAndAdd);

void BM_SerializeEvent(benchmark::State& state) {
  Json::Value e(Json::objectValue);
  e["type"] = "scores";
  e["t"] = 123456;
  e["gaze"] = 0.93;
  e["blink_rate"] = 17.5;
  for (auto _ : state) benchmark::DoNotOptimize(parley::core::ToJson(e));
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_SerializeEvent);

}  // namespace
