// Pieces the model files share (not part of the public interface).
#pragma once

#include <torch/torch.h>

#include <memory>
#include <utility>

#include "shardtune/model/transformer.h"

namespace shardtune {

// Appends k, v to layer's cache entry and returns the full keys and values.
std::pair<torch::Tensor, torch::Tensor> extend_cache(KVCache* cache, size_t layer, torch::Tensor k, torch::Tensor v);

// Cache length before this forward (layer 0's entry; all layers agree).
int64_t past_length(const KVCache* cache);

// The decoder of config.arch (decoder.cpp).
std::shared_ptr<CausalLM> make_decoder_lm(const ModelConfig& config);

}  // namespace shardtune
