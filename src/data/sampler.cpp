#include "shardtune/data/sampler.h"

#include "shardtune/core/error.h"

namespace shardtune {
namespace {

uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

}  // namespace

Sampler::Sampler(int64_t num_samples, int64_t global_batch, uint64_t seed, bool shuffle)
    : num_samples_(num_samples), global_batch_(global_batch), seed_(seed), shuffle_(shuffle) {
  if (global_batch <= 0) throw InputError(str_cat("global batch ", global_batch, " is not positive"));
  if (num_samples < global_batch) {
    throw InputError(str_cat("the data holds ", num_samples, " samples, fewer than one global batch (",
                             global_batch, "): use more data, a shorter sequence or a smaller batch"));
  }
  // Feistel halves: 2 * half_bits >= bits of num_samples - 1.
  while ((int64_t{1} << (2 * half_bits_)) < num_samples_) ++half_bits_;
}

int64_t Sampler::sample_at(int64_t epoch, int64_t i) const {
  if (!shuffle_) return i;
  const uint64_t mask = (uint64_t{1} << half_bits_) - 1;
  const uint64_t key = splitmix64(seed_ ^ splitmix64(static_cast<uint64_t>(epoch) + 0x5bd1e995ull));
  uint64_t x = static_cast<uint64_t>(i);
  // Cycle walking: the network permutes [0, 4^half_bits); repeat until the
  // value falls inside [0, num_samples). Expected < 4 rounds.
  do {
    uint64_t left = x >> half_bits_, right = x & mask;
    for (uint64_t round = 0; round < 4; ++round) {
      const uint64_t f = splitmix64(right ^ splitmix64(key + round)) & mask;
      const uint64_t next = left ^ f;
      left = right;
      right = next;
    }
    x = (left << half_bits_) | right;
  } while (x >= static_cast<uint64_t>(num_samples_));
  return static_cast<int64_t>(x);
}

std::vector<int64_t> Sampler::next_global_batch() {
  if (state_.cursor + global_batch_ > num_samples_) {
    ++state_.epoch;  // the partial batch at the end of an epoch is skipped
    state_.cursor = 0;
  }
  std::vector<int64_t> out(static_cast<size_t>(global_batch_));
  for (int64_t i = 0; i < global_batch_; ++i) out[static_cast<size_t>(i)] = sample_at(state_.epoch, state_.cursor + i);
  state_.cursor += global_batch_;
  return out;
}

std::vector<int64_t> Sampler::rank_slice(const std::vector<int64_t>& global, int rank, int world) {
  const int64_t n = static_cast<int64_t>(global.size());
  if (world <= 0 || n % world != 0) {
    throw InputError(str_cat("the global batch (", n, ") must be divisible by the world size (", world, ")"));
  }
  const int64_t per = n / world;
  return std::vector<int64_t>(global.begin() + rank * per, global.begin() + (rank + 1) * per);
}

void Sampler::restore(const SamplerState& s) {
  if (s.epoch < 0 || s.cursor < 0 || s.cursor > num_samples_) {
    throw InputError(str_cat("sampler state (epoch ", s.epoch, ", cursor ", s.cursor,
                             ") does not fit this data (", num_samples_, " samples)"));
  }
  state_ = s;
}

}  // namespace shardtune
