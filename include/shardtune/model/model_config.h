// Model architecture as read from (and written to) a Hugging Face config.json.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace shardtune {

enum class Family {
  kGpt2,   // learned positions, LayerNorm, tanh-GELU MLP, tied (or separate) output
  kLlama,  // llama, mistral, qwen2: RMSNorm, RoPE, SwiGLU, grouped-query attention
};

struct ModelConfig {
  std::string model_type;  // "gpt2", "llama", "mistral", "qwen2"
  Family family = Family::kLlama;
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t num_layers = 0;
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
  int64_t intermediate_size = 0;
  int64_t max_positions = 0;
  double norm_eps = 1e-5;
  double rope_theta = 10000.0;
  bool tie_word_embeddings = false;
  bool attention_bias = false;  // biases on q/k/v (qwen2), on q/k/v/o (llama's attention_bias)
  bool attention_out_bias = false;
  bool mlp_bias = false;
  int64_t sliding_window = 0;  // 0 = none
  // Which layers the window applies to (qwen2's layer_types /
  // max_window_layers); empty = every layer.
  std::vector<bool> windowed_layers;
  // llama3-style RoPE frequency scaling (rope_scaling.rope_type == "llama3")
  bool rope_llama3 = false;
  double rope_factor = 1.0;
  double rope_low_freq_factor = 1.0;
  double rope_high_freq_factor = 4.0;
  int64_t rope_original_max_positions = 0;
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

// Parameters of the model (embeddings counted once when tied).
int64_t parameter_count(const ModelConfig& config);

// Training FLOPs per token at sequence length seq_len: 6 N, N the weights in
// matrix products (all parameters but input embedding lookups; a tied
// embedding counts once, as the output projection), plus the attention
// scores and values, 12 * layers * seq_len * heads * head_dim (PaLM's MFU
// convention, no discount for the causal mask).
double training_flops_per_token(const ModelConfig& config, int64_t seq_len);

}  // namespace shardtune
