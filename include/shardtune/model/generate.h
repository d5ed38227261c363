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

// Several prompts at once: left-padded into one batch with a KV cache (the
// rows' own positions, no attention to padding), each row stopping at its
// first EOS, a row leaving the batch when it stops. Returns each prompt's
// generated ids (the stopping EOS included). Greedy ids equal generate()'s
// up to float rounding of the batched products. GPT-2 models, and a batch of
// one, run one prompt at a time.
std::vector<std::vector<int64_t>> generate_batch(CausalLM& model, const std::vector<std::vector<int64_t>>& prompts,
                                                 const SamplingOptions& options);

// The next token from logits [vocab] under options (greedy, or temperature
// with top-k and top-p filtering, as Hugging Face applies them).
int64_t sample_next(const torch::Tensor& logits, const SamplingOptions& options,
                    at::Generator& generator);

}  // namespace shardtune
