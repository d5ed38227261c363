#include "shardtune/model/architecture.h"

namespace shardtune {
namespace {

std::vector<Architecture> make_table() {
  std::vector<Architecture> t;
  Architecture llama;
  llama.model_type = "llama";
  llama.hf_class = "LlamaForCausalLM";
  llama.gguf_arch = "llama";
  llama.mlp_bias_key = true;
  llama.gguf_rope_permuted = true;
  llama.gguf_rope_freqs = true;
  t.push_back(llama);

  Architecture mistral = llama;  // llama.cpp writes mistral as llama
  mistral.model_type = "mistral";
  mistral.hf_class = "MistralForCausalLM";
  mistral.mlp_bias_key = false;
  mistral.windows = WindowRule::kEveryLayer;
  t.push_back(mistral);

  Architecture qwen2;
  qwen2.model_type = "qwen2";
  qwen2.hf_class = "Qwen2ForCausalLM";
  qwen2.gguf_arch = "qwen2";
  qwen2.qkv_bias = true;
  qwen2.attention_bias_key = false;
  qwen2.windows = WindowRule::kWhenEnabled;
  t.push_back(qwen2);

  Architecture qwen3;
  qwen3.model_type = "qwen3";
  qwen3.hf_class = "Qwen3ForCausalLM";
  qwen3.gguf_arch = "qwen3";
  qwen3.qk_norm = QkNorm::kPerHead;
  qwen3.gguf_rope_freqs = true;
  qwen3.windows = WindowRule::kWhenEnabled;
  t.push_back(qwen3);

  Architecture gemma2;
  gemma2.model_type = "gemma2";
  gemma2.hf_class = "Gemma2ForCausalLM";
  gemma2.gguf_arch = "gemma2";
  gemma2.norms = NormPlacement::kSandwich;
  gemma2.norm_offset = true;
  gemma2.activation = Activation::kGeluTanh;
  gemma2.activation_key = "hidden_activation";
  gemma2.embed_scale = true;
  gemma2.tie_default = true;
  gemma2.windows = WindowRule::kLayerPattern;
  gemma2.window_pattern = 2;
  gemma2.gemma_attention = true;
  t.push_back(gemma2);

  Architecture gemma3 = gemma2;
  gemma3.model_type = "gemma3_text";
  gemma3.hf_class = "Gemma3ForCausalLM";
  gemma3.gguf_arch = "gemma3";
  gemma3.qk_norm = QkNorm::kPerHead;
  gemma3.window_pattern = 6;  // sliding_window_pattern's default
  gemma3.local_rope = true;
  gemma3.rope_theta_default = 1000000.0;
  t.push_back(gemma3);

  Architecture phi3;
  phi3.model_type = "phi3";
  phi3.hf_class = "Phi3ForCausalLM";
  phi3.gguf_arch = "phi3";
  phi3.fused_qkv = true;
  phi3.fused_gate_up = true;
  phi3.attention_bias_key = false;
  phi3.norm_eps_default = 1e-5;
  phi3.windows = WindowRule::kEveryLayer;
  phi3.partial_rotary = true;
  phi3.longrope = true;
  t.push_back(phi3);

  Architecture olmo2;
  olmo2.model_type = "olmo2";
  olmo2.hf_class = "Olmo2ForCausalLM";
  olmo2.gguf_arch = "olmo2";
  olmo2.norms = NormPlacement::kPost;
  olmo2.qk_norm = QkNorm::kFullWidth;
  olmo2.norm_eps_default = 1e-5;
  t.push_back(olmo2);

  Architecture smollm3;
  smollm3.model_type = "smollm3";
  smollm3.hf_class = "SmolLM3ForCausalLM";
  smollm3.gguf_arch = "smollm3";
  smollm3.mlp_bias_key = true;
  smollm3.gguf_rope_permuted = true;  // llama.cpp converts it as a llama
  smollm3.gguf_rope_freqs = true;
  smollm3.tie_default = true;
  smollm3.rope_theta_default = 2000000.0;
  smollm3.windows = WindowRule::kWhenEnabled;
  smollm3.no_rope_layers = true;
  t.push_back(smollm3);
  return t;
}

const std::vector<Architecture>& table() {
  static const std::vector<Architecture> t = make_table();
  return t;
}

}  // namespace

const Architecture* find_architecture(const std::string& model_type) {
  for (const auto& a : table()) {
    if (a.model_type == model_type) return &a;
  }
  return nullptr;
}

const Architecture* find_gguf_architecture(const std::string& arch) {
  for (const auto& a : table()) {
    if (a.gguf_arch == arch) return &a;  // the first: llama, not mistral
  }
  return nullptr;
}

std::string architecture_names(bool gguf) {
  std::string out = gguf ? "" : "gpt2";
  for (const auto& a : table()) {
    const std::string& n = gguf ? a.gguf_arch : a.model_type;
    if (gguf && (!a.gguf_supported || a.model_type == "mistral")) continue;  // mistral files are llama ones
    out += (out.empty() ? "" : ", ") + n;
  }
  return out;
}

std::vector<std::pair<std::string, std::string>> gguf_block_names(const Architecture& a) {
  std::vector<std::pair<std::string, std::string>> n;  // HF suffix, GGUF suffix
  if (a.fused_qkv) {
    n.push_back({"self_attn.qkv_proj.weight", "attn_qkv.weight"});
    n.push_back({"self_attn.qkv_proj.bias", "attn_qkv.bias"});
  } else {
    for (const char* p : {"q", "k", "v"}) {
      n.push_back({std::string("self_attn.") + p + "_proj.weight", std::string("attn_") + p + ".weight"});
      n.push_back({std::string("self_attn.") + p + "_proj.bias", std::string("attn_") + p + ".bias"});
    }
  }
  n.push_back({"self_attn.o_proj.weight", "attn_output.weight"});
  n.push_back({"self_attn.o_proj.bias", "attn_output.bias"});
  if (a.qk_norm != QkNorm::kNone) {
    n.push_back({"self_attn.q_norm.weight", "attn_q_norm.weight"});
    n.push_back({"self_attn.k_norm.weight", "attn_k_norm.weight"});
  }
  switch (a.norms) {
    case NormPlacement::kPre:
      n.push_back({"input_layernorm.weight", "attn_norm.weight"});
      n.push_back({"post_attention_layernorm.weight", "ffn_norm.weight"});
      break;
    case NormPlacement::kSandwich:
      n.push_back({"input_layernorm.weight", "attn_norm.weight"});
      n.push_back({"post_attention_layernorm.weight", "post_attention_norm.weight"});
      n.push_back({"pre_feedforward_layernorm.weight", "ffn_norm.weight"});
      n.push_back({"post_feedforward_layernorm.weight", "post_ffw_norm.weight"});
      break;
    case NormPlacement::kPost:
      n.push_back({"post_attention_layernorm.weight", "post_attention_norm.weight"});
      n.push_back({"post_feedforward_layernorm.weight", "post_ffw_norm.weight"});
      break;
  }
  if (a.fused_gate_up) {
    n.push_back({"mlp.gate_up_proj.weight", "ffn_up.weight"});
  } else {
    n.push_back({"mlp.gate_proj.weight", "ffn_gate.weight"});
    n.push_back({"mlp.gate_proj.bias", "ffn_gate.bias"});
    n.push_back({"mlp.up_proj.weight", "ffn_up.weight"});
    n.push_back({"mlp.up_proj.bias", "ffn_up.bias"});
  }
  n.push_back({"mlp.down_proj.weight", "ffn_down.weight"});
  n.push_back({"mlp.down_proj.bias", "ffn_down.bias"});
  return n;
}

}  // namespace shardtune
