// The world-size-independent sampler.
//
// Samples are numbered [0, num_samples). Each epoch visits them in a
// permutation drawn from (seed, epoch); a step consumes the next global_batch
// of it, and rank r of W takes the r-th contiguous slice. The state is just
// (epoch, cursor), counted globally, so a run saved on W ranks resumes on W'
// ranks with the same sample order. An epoch's last partial batch is skipped:
// no sample repeats inside an epoch.
//
// The permutation is a keyed Feistel network with cycle walking: a bijection
// on [0, num_samples) computed per index, in O(1) memory.
#pragma once

#include <cstdint>
#include <vector>

namespace shardtune {

struct SamplerState {
  int64_t epoch = 0;
  int64_t cursor = 0;  // position in this epoch's permutation
};

class Sampler {
 public:
  // Throws InputError if global_batch is not positive or exceeds num_samples.
  Sampler(int64_t num_samples, int64_t global_batch, uint64_t seed, bool shuffle = true);

  // The global sample ids of the next step, advancing the state.
  std::vector<int64_t> next_global_batch();

  // This rank's part of a global batch: the r-th of W contiguous slices
  // (global_batch must be divisible by world).
  static std::vector<int64_t> rank_slice(const std::vector<int64_t>& global, int rank, int world);

  // The sample at position i of epoch's order.
  int64_t sample_at(int64_t epoch, int64_t i) const;

  SamplerState state() const { return state_; }
  void restore(const SamplerState& s);

  int64_t num_samples() const { return num_samples_; }
  int64_t global_batch() const { return global_batch_; }
  int64_t steps_per_epoch() const { return num_samples_ / global_batch_; }

 private:
  int64_t num_samples_;
  int64_t global_batch_;
  uint64_t seed_;
  bool shuffle_;
  int half_bits_ = 1;
  SamplerState state_;
};

}  // namespace shardtune
