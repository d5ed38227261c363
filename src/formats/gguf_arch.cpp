// The model half of GGUF <-> Hugging Face: tensor names, the rotary row
// order, and the config.json a file's metadata describes, for every family
// of architecture.h that llama.cpp writes.
#include <algorithm>
#include <cmath>

#include "shardtune/core/error.h"
#include "shardtune/formats/gguf_llama.h"

namespace shardtune {
namespace {

using json = nlohmann::json;

const std::vector<std::pair<std::string, std::string>>& global_names() {
  static const std::vector<std::pair<std::string, std::string>> names = {
      {"token_embd.weight", "model.embed_tokens.weight"},
      {"output_norm.weight", "model.norm.weight"},
      {"output.weight", "lm_head.weight"},
  };
  return names;
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// Row r of head h: HF order is (half, i) with r = half * d/2 + i; GGUF order is
// (i, half) with r = 2 i + half.
void reorder_rows(float* data, int64_t rows, int64_t cols, int64_t heads, bool to_hf) {
  ST_CHECK(heads > 0 && rows % heads == 0 && (rows / heads) % 2 == 0, "rotary reorder: ", rows, " rows, ", heads,
           " heads");
  const int64_t d = rows / heads, half = d / 2;
  std::vector<float> tmp(static_cast<size_t>(d * cols));
  for (int64_t h = 0; h < heads; ++h) {
    float* head = data + h * d * cols;
    for (int64_t i = 0; i < half; ++i) {
      for (int64_t s = 0; s < 2; ++s) {
        const int64_t hf_row = s * half + i, gguf_row = 2 * i + s;
        const int64_t from = to_hf ? gguf_row : hf_row, to = to_hf ? hf_row : gguf_row;
        std::copy(head + from * cols, head + (from + 1) * cols, tmp.begin() + to * cols);
      }
    }
    std::copy(tmp.begin(), tmp.end(), head);
  }
}

}  // namespace

std::string gguf_to_hf_name(const Architecture& a, const std::string& name) {
  for (const auto& [g, h] : global_names()) {
    if (name == g) return h;
  }
  if (name.rfind("blk.", 0) != 0) return "";
  const size_t dot = name.find('.', 4);
  if (dot == std::string::npos || dot == 4) return "";
  const std::string layer = name.substr(4, dot - 4);
  if (!std::all_of(layer.begin(), layer.end(), ::isdigit)) return "";
  const std::string rest = name.substr(dot + 1);
  for (const auto& [h, g] : gguf_block_names(a)) {
    if (rest == g) return str_cat("model.layers.", layer, ".", h);
  }
  return "";
}

std::string hf_to_gguf_name(const Architecture& a, const std::string& name) {
  for (const auto& [g, h] : global_names()) {
    if (name == h) return g;
  }
  const std::string prefix = "model.layers.";
  if (name.rfind(prefix, 0) != 0) return "";
  const size_t dot = name.find('.', prefix.size());
  if (dot == std::string::npos) return "";
  const std::string layer = name.substr(prefix.size(), dot - prefix.size());
  const std::string rest = name.substr(dot + 1);
  for (const auto& [h, g] : gguf_block_names(a)) {
    if (rest == h) return str_cat("blk.", layer, ".", g);
  }
  return "";
}

bool gguf_rope_permuted(const Architecture& a, const std::string& hf_name) {
  if (!a.gguf_rope_permuted) return false;  // the others use the neox rotation, stored as is
  return ends_with(hf_name, "self_attn.q_proj.weight") || ends_with(hf_name, "self_attn.k_proj.weight") ||
         ends_with(hf_name, "self_attn.q_proj.bias") || ends_with(hf_name, "self_attn.k_proj.bias");
}

bool gguf_norm_offset(const Architecture& a, const std::string& hf_name) {
  return a.norm_offset && ends_with(hf_name, "norm.weight");
}

void gguf_unpermute_rows(float* data, int64_t rows, int64_t cols, int64_t heads) {
  reorder_rows(data, rows, cols, heads, true);
}
void gguf_permute_rows(float* data, int64_t rows, int64_t cols, int64_t heads) {
  reorder_rows(data, rows, cols, heads, false);
}

std::vector<double> llama3_rope_factors(int64_t dim, double theta, double factor, double low, double high,
                                        double old_len) {
  // As llama.cpp's converter computes them, in double.
  std::vector<double> out;
  for (int64_t i = 0; i < dim; i += 2) {
    const double freq = 1.0 / std::pow(theta, static_cast<double>(static_cast<float>(i) / static_cast<float>(dim)));
    const double wavelen = 2 * M_PI / freq;
    if (wavelen < old_len / high) {
      out.push_back(1.0);
    } else if (wavelen > old_len / low) {
      out.push_back(factor);
    } else {
      const double smooth = (old_len / wavelen - low) / (high - low);
      out.push_back(1.0 / ((1 - smooth) / factor + smooth));
    }
  }
  return out;
}

namespace {

// The llama3 rope_scaling that gives a rope_freqs tensor: Llama 3's low and
// high frequency factors (1 and 4), the factor its longest wavelengths get,
// and the original context its in-between ones (or 8192) imply; checked
// against every factor in the tensor.
json llama3_scaling_from_factors(const GgufFile& f, const GgufTensorInfo& t, int64_t dim, double theta) {
  const std::vector<float> got = f.dequantized(t);
  if (static_cast<int64_t>(got.size()) != dim / 2) {
    throw InputError(str_cat(f.path(), ": tensor 'rope_freqs.weight' holds ", got.size(), " factors; the rotary ",
                             "embedding has ", dim / 2, " frequencies"));
  }
  const double factor = *std::max_element(got.begin(), got.end());
  const double low = 1.0, high = 4.0;
  double old_len = 8192;
  for (int64_t k = 0; k < dim / 2; ++k) {
    const double g = got[static_cast<size_t>(k)];
    if (g <= 1.0 + 1e-6 || g >= factor - 1e-6 * factor) continue;
    // smooth from 1 / ((1 - s) / factor + s) = g, then old_len from s.
    const double s = (1.0 / g - 1.0 / factor) / (1.0 - 1.0 / factor);
    const double wavelen = 2 * M_PI * std::pow(theta, static_cast<double>(static_cast<float>(2 * k) /
                                                                          static_cast<float>(dim)));
    old_len = std::round((s * (high - low) + low) * wavelen);
    break;
  }
  const std::vector<double> want = llama3_rope_factors(dim, theta, factor, low, high, old_len);
  for (size_t k = 0; k < want.size(); ++k) {
    if (std::abs(want[k] - got[k]) > 1e-5 * std::max(1.0, want[k])) {
      throw InputError(str_cat(f.path(), ": tensor 'rope_freqs.weight' is not Llama 3's rope scaling (factor ", factor,
                               ", low/high frequency factors 1 and 4): factor ", k, " is ", got[k], ", expected ",
                               want[k], " (only llama3 rope_freqs are supported)"));
    }
  }
  return {{"rope_type", "llama3"}, {"factor", factor}, {"low_freq_factor", low}, {"high_freq_factor", high},
          {"original_max_position_embeddings", static_cast<int64_t>(old_len)}};
}

}  // namespace

json gguf_hf_config(const GgufFile& f) {
  const std::string arch_name = f.get_string("general.architecture");
  const Architecture* arch = find_gguf_architecture(arch_name);
  if (arch == nullptr || !arch->gguf_supported) {
    throw InputError(str_cat(f.path(), ": architecture '", arch_name, "' is not supported (", architecture_names(true),
                             "; mistral models use llama)"));
  }
  const Architecture& a = *arch;
  const std::string p = arch_name + ".";
  if (f.get_int(p + "expert_count", 0) > 0) {
    throw InputError(str_cat(f.path(), ": ", p, "expert_count = ", f.get_int(p + "expert_count"),
                             ": mixture-of-experts models are not supported"));
  }
  const std::string scaling = f.get_string(p + "rope.scaling.type", "none");
  const bool gemma3 = arch_name == "gemma3", gemma2 = arch_name == "gemma2";
  if (scaling != "none" && !(gemma3 && scaling == "linear")) {
    throw InputError(str_cat(f.path(), ": ", p, "rope.scaling.type '", scaling, "' is not supported (none",
                             gemma3 ? ", linear" : "", ")"));
  }
  const bool windowed = a.windows == WindowRule::kLayerPattern;
  const bool every_layer = a.windows == WindowRule::kEveryLayer;  // phi3: one window for all layers, 0 for none
  if (!windowed && !every_layer && f.get_int(p + "attention.sliding_window", 0) > 0) {
    throw InputError(str_cat(f.path(), ": ", p, "attention.sliding_window is not supported for ", arch_name));
  }
  for (const char* key : {"attn_logit_softcapping", "final_logit_softcapping"}) {
    if (!gemma2 && f.find(p + key) != nullptr) {
      throw InputError(str_cat(f.path(), ": ", p, key, " is not supported for ", arch_name));
    }
  }
  const int64_t hidden = f.get_int(p + "embedding_length");
  const int64_t heads = f.get_int(p + "attention.head_count");
  const int64_t kv_heads = f.get_int(p + "attention.head_count_kv", heads);
  const int64_t layers = f.get_int(p + "block_count");
  if (hidden <= 0 || heads <= 0 || kv_heads <= 0 || layers <= 0) {
    throw InputError(str_cat(f.path(), ": ", p, "embedding_length, block_count and attention.head_count(_kv) must be ",
                             "positive"));
  }
  const int64_t head_dim = f.get_int(p + "attention.key_length", hidden / heads);
  if (f.get_int(p + "attention.value_length", head_dim) != head_dim) {
    throw InputError(str_cat(f.path(), ": ", p, "attention.value_length differs from key_length (not supported)"));
  }
  const int64_t rotary = f.get_int(p + "rope.dimension_count", head_dim);
  const bool partial = rotary != head_dim;
  if (partial && (!a.partial_rotary || rotary <= 0 || rotary > head_dim || rotary % 2 != 0 ||
                  static_cast<int64_t>(static_cast<double>(head_dim) *
                                       (static_cast<double>(rotary) / static_cast<double>(head_dim))) != rotary)) {
    throw InputError(str_cat(f.path(), ": ", p, "rope.dimension_count ", rotary, " is not the head size ", head_dim,
                             a.partial_rotary ? " nor an even part of it" : " (partial rotary embeddings are not supported for ",
                             a.partial_rotary ? "" : arch_name, a.partial_rotary ? "" : ")"));
  }
  const GgufTensorInfo* embd = f.find_tensor("token_embd.weight");
  if (embd == nullptr) throw InputError(str_cat(f.path(), ": tensor 'token_embd.weight' is missing"));
  int64_t vocab = f.get_int(p + "vocab_size", -1);
  if (vocab < 0) vocab = embd->dims.size() == 2 ? embd->dims[1] : 0;
  const bool has_bias = f.find_tensor("blk.0.attn_q.bias") != nullptr;
  const bool has_out_bias = f.find_tensor("blk.0.attn_output.bias") != nullptr;
  json c = {
      {"architectures", {a.hf_class}},
      {"model_type", a.model_type},
      {"vocab_size", vocab},
      {"hidden_size", hidden},
      {"num_hidden_layers", layers},
      {"num_attention_heads", heads},
      {"num_key_value_heads", kv_heads},
      {"head_dim", head_dim},
      {"intermediate_size", f.get_int(p + "feed_forward_length")},
      {"max_position_embeddings", f.get_int(p + "context_length")},
      {"rms_norm_eps", f.get_float(p + "attention.layer_norm_rms_epsilon", 1e-5)},
      {a.activation_key, a.activation == Activation::kSilu ? "silu" : "gelu_pytorch_tanh"},
      {"tie_word_embeddings", f.find_tensor("output.weight") == nullptr},
      {"torch_dtype", "float32"},
  };
  // Without the key, the family's default base (model_config.cpp) applies.
  if (f.find(p + "rope.freq_base") != nullptr) c["rope_theta"] = f.get_float(p + "rope.freq_base", 0.0);
  if (a.mlp_bias_key) c["mlp_bias"] = false;
  if (a.qkv_bias) {
    if (!has_bias || has_out_bias) {
      throw InputError(str_cat(f.path(), ": a ", arch_name, " model has q/k/v biases and no output bias; this file ",
                               has_bias ? "has an output bias" : "has no q bias"));
    }
  } else if (a.attention_bias_key) {
    if (has_bias != has_out_bias) {
      throw InputError(str_cat(f.path(), ": ", arch_name, " attention biases must be on q, k, v and output together"));
    }
    c["attention_bias"] = has_bias;
  }
  if (a.windows == WindowRule::kWhenEnabled) c["use_sliding_window"] = false;
  if (partial) c["partial_rotary_factor"] = static_cast<double>(rotary) / static_cast<double>(head_dim);
  if (every_layer) {
    const int64_t window = f.get_int(p + "attention.sliding_window", 0);
    c["sliding_window"] = window > 0 ? json(window) : json(nullptr);
  }
  if (a.longrope) {
    // Phi-3's longrope: its two factor tensors, the original context and the attention factor.
    const GgufTensorInfo* lf = f.find_tensor("rope_factors_long.weight");
    const GgufTensorInfo* sf = f.find_tensor("rope_factors_short.weight");
    const int64_t ctx = f.get_int(p + "context_length");
    const int64_t orig = f.get_int(p + "rope.scaling.original_context_length", ctx);
    if (orig <= 0) throw InputError(str_cat(f.path(), ": ", p, "rope.scaling.original_context_length must be positive"));
    c["original_max_position_embeddings"] = orig;
    if ((lf == nullptr) != (sf == nullptr)) {
      throw InputError(str_cat(f.path(), ": tensor '", lf ? "rope_factors_short.weight" : "rope_factors_long.weight",
                               "' is missing (longrope needs both factor tensors)"));
    }
    const double scale = static_cast<double>(ctx) / static_cast<double>(orig);
    const double want_attn =
        scale > 1.0 ? std::sqrt(1.0 + std::log(scale) / std::log(static_cast<double>(orig))) : 1.0;
    const double attn = f.get_float(p + "rope.scaling.attn_factor", lf ? want_attn : 1.0);
    if (lf == nullptr) {
      if (attn != 1.0) {
        throw InputError(str_cat(f.path(), ": ", p, "rope.scaling.attn_factor = ", attn,
                                 " without rope factor tensors (not supported)"));
      }
    } else {
      json rs = {{"rope_type", "longrope"}, {"original_max_position_embeddings", orig}};
      for (const auto& [t, key] : {std::pair{lf, "long_factor"}, std::pair{sf, "short_factor"}}) {
        if (t->dims.size() != 1 || t->dims[0] != rotary / 2) {
          throw InputError(str_cat(f.path(), ": tensor '", t->name, "' must hold ", rotary / 2,
                                   " factors (rotary dimensions / 2)"));
        }
        const std::vector<float> v = f.dequantized(*t);
        rs[key] = std::vector<double>(v.begin(), v.end());
      }
      // Stored as float32: the default (from the two lengths) unless it differs by more than rounding.
      if (std::abs(attn - want_attn) > 1e-6 * want_attn) rs["attention_factor"] = attn;
      c["rope_scaling"] = rs;
    }
  } else {
    for (const char* t : {"rope_factors_long.weight", "rope_factors_short.weight"}) {
      if (f.find_tensor(t) != nullptr) {
        throw InputError(str_cat(f.path(), ": tensor '", t, "' is not supported for ", arch_name, " (phi3 only)"));
      }
    }
  }
  if (a.no_rope_layers) c["no_rope_layer_interval"] = 4;  // llama.cpp's fixed step: every 4th layer has none
  if (const GgufTensorInfo* rf = f.find_tensor("rope_freqs.weight")) {
    if (!a.gguf_rope_freqs) {
      throw InputError(str_cat(f.path(), ": tensor 'rope_freqs.weight' is not supported for ", arch_name));
    }
    c["rope_scaling"] = llama3_scaling_from_factors(f, *rf, head_dim, f.get_float(p + "rope.freq_base", 10000.0));
  }
  if (windowed) {
    const int64_t window = f.get_int(p + "attention.sliding_window", 0);
    if (window <= 0) throw InputError(str_cat(f.path(), ": ", p, "attention.sliding_window is missing"));
    c["sliding_window"] = window;
    // llama.cpp scales queries by 1/sqrt(hidden / heads) for the 27B models
    // (46 blocks in Gemma 2, 62 in Gemma 3), by 1/sqrt(head_dim) otherwise.
    const bool big = (gemma2 && layers == 46) || (gemma3 && layers == 62);
    c["query_pre_attn_scalar"] = big ? hidden / heads : head_dim;
    json types = json::array();
    const int64_t pattern = f.get_int(p + "attention.sliding_window_pattern", a.window_pattern);
    if (pattern <= 0) throw InputError(str_cat(f.path(), ": ", p, "attention.sliding_window_pattern must be positive"));
    for (int64_t i = 0; i < layers; ++i) {
      types.push_back((i + 1) % pattern != 0 ? "sliding_attention" : "full_attention");
    }
    c["layer_types"] = types;
  }
  if (gemma2) {
    const double attn_cap = f.get_float(p + "attn_logit_softcapping", 0.0);
    const double final_cap = f.get_float(p + "final_logit_softcapping", 0.0);
    c["attn_logit_softcapping"] = attn_cap > 0 ? json(attn_cap) : json(nullptr);
    c["final_logit_softcapping"] = final_cap > 0 ? json(final_cap) : json(nullptr);
  }
  if (gemma3) {
    c["rope_local_base_freq"] = f.get_float(p + "rope.freq_base_swa", 10000.0);
    if (scaling == "linear") {
      c["rope_scaling"] = {{"rope_type", "linear"}, {"factor", f.get_float(p + "rope.scaling.factor", 1.0)}};
    }
  }
  const int64_t bos = f.get_int("tokenizer.ggml.bos_token_id", -1);
  const int64_t eos = f.get_int("tokenizer.ggml.eos_token_id", -1);
  c["bos_token_id"] = bos >= 0 ? json(bos) : json(nullptr);
  c["eos_token_id"] = eos >= 0 ? json(eos) : json(nullptr);
  // null, not absent: some families' default (smollm3's 128004) lies outside a small vocabulary.
  const int64_t pad = f.get_int("tokenizer.ggml.padding_token_id", -1);
  c["pad_token_id"] = pad >= 0 && pad < vocab ? json(pad) : json(nullptr);
  return c;
}

}  // namespace shardtune
