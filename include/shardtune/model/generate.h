// Autoregressive generation from a CausalLM, token ids in and out.
#pragma once

#include <cstdint>
#include <vector>

#include "shardtune/model/transformer.h"

namespace shardtune {

struct SamplingOptions {
  int64_t max_new_tokens = 64;
  double temperature = 0.0;  // 0 = greedy (argmax)
  int64_t top_k = 0;         // 0 = no top-k filter
  double top_p = 1.0;        // 1 = no nucleus filter
  std::vector<int64_t> eos_token_ids;  // stop after generating any of them; empty = never
  uint64_t seed = 0;
  bool use_cache = true;     // KV cache; false recomputes the whole sequence each step
};

// The prompt followed by the generated ids.
std::vector<int64_t> generate(CausalLM& model, const std::vector<int64_t>& prompt,
                              const SamplingOptions& options);

// The next token from logits [vocab] under options (greedy, or temperature
// with top-k and top-p filtering, as Hugging Face applies them).
int64_t sample_next(const torch::Tensor& logits, const SamplingOptions& options,
                    at::Generator& generator);

}  // namespace shardtune
