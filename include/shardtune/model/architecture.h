// One description per decoder architecture: what differs between the
// families the decoder block implements (llama, mistral, qwen2, qwen3,
// gemma2, gemma3, phi3, olmo2, smollm3), as data. The block
// (transformer.cpp), the config reader (model_config.cpp) and the GGUF
// mapping (gguf_llama.cpp) read it; a new family is an entry here, its
// config keys, and a parity test. torch-free.
//
// GPT-2 (learned positions, LayerNorm, Conv1D) is a model of its own and has
// no entry.
#pragma once

#include <string>
#include <utility>
#include <vector>

namespace shardtune {

// Where a block's RMSNorms sit (HF module names in brackets).
enum class NormPlacement {
  // x += attn(n1(x)); x += mlp(n2(x))  [input_layernorm, post_attention_layernorm]      llama, qwen, phi3
  kPre,
  // x += n2(attn(n1(x))); x += n4(mlp(n3(x)))  [input_layernorm, post_attention_layernorm,
  //                                             pre_feedforward_layernorm, post_feedforward_layernorm]  gemma
  kSandwich,
  // x += n2(attn(x)); x += n4(mlp(x))  [post_attention_layernorm, post_feedforward_layernorm]          olmo2
  kPost,
};

enum class QkNorm {
  kNone,
  kPerHead,    // RMSNorm over each head's head_dim, before the rotary embedding (qwen3, gemma3)
  kFullWidth,  // RMSNorm over all heads' q (k) together, before the heads are split (olmo2)
};

enum class Activation { kSilu, kGeluTanh };

// Which layers config.json's sliding_window applies to, as transformers reads it.
enum class WindowRule {
  kNone,          // the key is ignored (llama, olmo2)
  kEveryLayer,    // every layer (mistral, phi3)
  kWhenEnabled,   // only with use_sliding_window: layer_types, else from max_window_layers on (qwen2, qwen3, smollm3)
  kLayerPattern,  // always, required: layer_types, else all but every window_pattern-th layer (gemma2, gemma3)
};

struct Architecture {
  std::string model_type;  // config.json model_type
  std::string hf_class;    // config.json architectures[0]
  std::string gguf_arch;   // llama.cpp's general.architecture
  bool gguf_supported = true;  // shardtune reads and writes it in GGUF files
  NormPlacement norms = NormPlacement::kPre;
  bool norm_offset = false;  // RMSNorm scales by (1 + w) (gemma); GGUF stores 1 + w
  QkNorm qk_norm = QkNorm::kNone;
  Activation activation = Activation::kSilu;
  const char* activation_key = "hidden_act";  // the config key naming it
  bool embed_scale = false;     // embeddings times sqrt(hidden_size), rounded to the dtype (gemma)
  bool fused_qkv = false;       // one qkv_proj [q | k | v] (phi3)
  bool fused_gate_up = false;   // one gate_up_proj [gate | up] (phi3)
  bool qkv_bias = false;        // q, k, v carry biases, o none, whatever attention_bias says (qwen2)
  bool attention_bias_key = true;  // attention_bias in config.json puts biases on q, k, v and o
  bool mlp_bias_key = false;    // mlp_bias in config.json puts biases on the MLP
  bool gguf_rope_permuted = false;  // llama.cpp's converter interleaves q/k rows (the llama layout)
  bool gguf_rope_freqs = false;     // llama.cpp reads llama3 rope scaling as a rope_freqs tensor
  bool tie_default = false;     // tie_word_embeddings when config.json does not say
  double norm_eps_default = 1e-6;
  double rope_theta_default = 10000.0;
  WindowRule windows = WindowRule::kNone;
  int64_t window_pattern = 0;   // kLayerPattern: every window_pattern-th layer sees everything
  // Gemma's attention: query_pre_attn_scalar, attention and final soft-caps.
  bool gemma_attention = false;
  bool local_rope = false;      // the windowed layers have a rotary embedding of their own (gemma3)
  bool partial_rotary = false;  // partial_rotary_factor (phi3)
  bool longrope = false;        // longrope scaling (phi3)
  bool no_rope_layers = false;  // no_rope_layers / no_rope_layer_interval (smollm3)
};

// The description of model_type, or nullptr (gpt2, or a type not implemented).
const Architecture* find_architecture(const std::string& model_type);
// The description whose gguf_arch is arch, or nullptr.
const Architecture* find_gguf_architecture(const std::string& arch);
// "llama, mistral, ..." for messages.
std::string architecture_names(bool gguf);

// A block tensor's name under its HF module path ("self_attn.q_proj.weight")
// and under llama.cpp's ("attn_q.weight"), for arch's norm placement and fusions.
std::vector<std::pair<std::string, std::string>> gguf_block_names(const Architecture& arch);

}  // namespace shardtune
