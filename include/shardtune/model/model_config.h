// Model architecture as read from (and written to) a Hugging Face config.json.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "shardtune/model/architecture.h"

namespace shardtune {

enum class Family {
  kGpt2,   // learned positions, LayerNorm, tanh-GELU MLP, tied (or separate) output
  kLlama,  // the decoder families of architecture.h: RMSNorm, RoPE, gated MLP, grouped-query attention
};

// A rotary embedding's frequencies, as transformers computes them
// (modeling_rope_utils): default, linear, llama3 or longrope scaling.
struct RopeSpec {
  enum class Kind { kDefault, kLinear, kLlama3, kLongrope };
  Kind kind = Kind::kDefault;
  double theta = 10000.0;
  double factor = 1.0;              // linear, llama3
  double low_freq_factor = 1.0;     // llama3
  double high_freq_factor = 4.0;    // llama3
  int64_t original_max_positions = 0;  // llama3, longrope
  std::vector<double> short_factor, long_factor;  // longrope, rotary_dim / 2 each
  double attention_factor = 1.0;    // longrope: cos and sin scaled by it
  bool operator==(const RopeSpec& o) const;
};

struct ModelConfig {
  std::string model_type;  // "gpt2", or an architecture.h model_type
  Family family = Family::kLlama;
  const Architecture* arch = nullptr;  // the decoder's description; null for gpt2
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t num_layers = 0;
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
  int64_t intermediate_size = 0;
  int64_t max_positions = 0;
  double norm_eps = 1e-5;
  bool tie_word_embeddings = false;
  bool attention_bias = false;  // biases on q/k/v (qwen2), on q/k/v/o (llama's attention_bias)
  bool attention_out_bias = false;
  bool mlp_bias = false;
  int64_t sliding_window = 0;  // 0 = none
  // Which layers the window applies to (qwen2's layer_types /
  // max_window_layers); empty = every layer.
  std::vector<bool> windowed_layers;
  // Rotary embedding of the full-attention layers, and of the windowed ones
  // when they differ (gemma3's rope_local_base_freq).
  RopeSpec rope;
  bool local_rope = false;
  RopeSpec rope_local;
  int64_t rotary_dim = 0;        // dims of a head the rotation turns (partial_rotary_factor); 0 = head_dim
  std::vector<bool> rope_layers; // false: the layer has no rotary embedding (smollm3); empty = every layer
  double query_scale = 0.0;      // attention scores times this; 0 = 1/sqrt(head_dim) (gemma: query_pre_attn_scalar)
  double attn_softcap = 0.0;     // scores -> c tanh(scores / c) before the mask; 0 = none (gemma2)
  double final_softcap = 0.0;    // logits -> c tanh(logits / c); 0 = none (gemma2)
  int64_t bos_token_id = -1;
  std::vector<int64_t> eos_token_ids;  // end-of-sequence ids (config.json may list several)

  // The config.json this came from (kept so an export writes it back with the
  // keys shardtune does not interpret); empty for configs built in code.
  nlohmann::json source;
  std::string origin;  // where it was read from, for error messages; empty when built in code
};

// j[key] as token ids: one id, or a list of them (llama 3's eos_token_id);
// empty when absent or null. Anything else throws InputError
// "where: key: expected a token id or a list of them".
std::vector<int64_t> token_ids_from_json(const nlohmann::json& j, const char* key, const std::string& where);

// Parses an HF config.json object; `where` names it in errors (InputError).
// Accepts exactly what the models implement: a key whose value would change
// the math in a way they do not reproduce is refused by name.
ModelConfig model_config_from_json(const nlohmann::json& j, const std::string& where);

// Reads dir/config.json (or dir itself when it names a .json file).
ModelConfig load_model_config(const std::string& dir);

// The config.json that describes config (the source's other keys kept).
nlohmann::json model_config_to_json(const ModelConfig& config, const std::string& torch_dtype);

// Checks the sizes fit together (heads divide the width, ...); throws InputError.
void validate(const ModelConfig& config, const std::string& where);

// Whether layer has a window (windowed_layers, sliding_window) and rotary embedding.
bool layer_windowed(const ModelConfig& config, int64_t layer);
bool layer_has_rope(const ModelConfig& config, int64_t layer);
int64_t rotary_dim(const ModelConfig& config);

// Parameters of the model (embeddings counted once when tied).
int64_t parameter_count(const ModelConfig& config);

// Training FLOPs per token at sequence length seq_len: 6 N, N the weights in
// matrix products (all parameters but input embedding lookups; a tied
// embedding counts once, as the output projection), plus the attention
// scores and values, 12 * layers * seq_len * heads * head_dim (PaLM's MFU
// convention, no discount for the causal mask).
double training_flops_per_token(const ModelConfig& config, int64_t seq_len);

}  // namespace shardtune
