// The decoder block every family of architecture.h shares: what differs
// between them (norm placement and kind, q/k norms, activation, fused
// projections, rotary variants, windows, soft-caps) is read from the
// architecture description and the config, never from the family's name.
#include <cmath>

#include "model_internal.h"
#include "shardtune/core/error.h"

namespace shardtune {
namespace {
namespace F = torch::nn::functional;

struct RmsNormImpl : torch::nn::Module {
  RmsNormImpl(int64_t d, double eps, bool offset) : eps(eps), offset(offset) {
    weight = register_parameter("weight", offset ? torch::zeros({d}) : torch::ones({d}));
  }
  // As transformers computes it, in float32: llama's casts back, then scales;
  // gemma's scales by (1 + w) in float32, then casts back.
  torch::Tensor forward(const torch::Tensor& x) {
    torch::Tensor h = x.to(torch::kFloat32);
    h = h * torch::rsqrt(h.pow(2).mean(-1, true) + eps);
    if (offset) return (h * (1.0 + weight.to(torch::kFloat32))).to(x.scalar_type());
    return weight * h.to(x.scalar_type());
  }
  double eps;
  bool offset;
  torch::Tensor weight;
};
TORCH_MODULE(RmsNorm);

RmsNorm make_norm(const ModelConfig& c, int64_t d) { return RmsNorm(d, c.norm_eps, c.arch->norm_offset); }

// cos and sin of the rotary embedding for positions, [T, rotary dims],
// float32; length is the sequence's (its last position + 1).
std::pair<torch::Tensor, torch::Tensor> rope_tables(const RopeSpec& r, int64_t dim, const torch::Tensor& positions,
                                                    int64_t length) {
  const auto f32 = torch::TensorOptions().dtype(torch::kFloat32).device(positions.device());
  torch::Tensor exponent = torch::arange(0, dim, 2, f32.dtype(torch::kInt64)).to(torch::kFloat32) / dim;
  torch::Tensor base = torch::pow(torch::tensor(r.theta, f32), exponent);
  torch::Tensor inv_freq = 1.0 / base;
  double scale = 1.0;
  switch (r.kind) {
    case RopeSpec::Kind::kDefault:
      break;
    case RopeSpec::Kind::kLinear:
      inv_freq = inv_freq / r.factor;
      break;
    case RopeSpec::Kind::kLlama3: {
      const double old_len = static_cast<double>(r.original_max_positions);
      const double low_wavelen = old_len / r.low_freq_factor;
      const double high_wavelen = old_len / r.high_freq_factor;
      torch::Tensor wavelen = 2.0 * M_PI / inv_freq;
      torch::Tensor scaled = torch::where(wavelen > low_wavelen, inv_freq / r.factor, inv_freq);
      torch::Tensor smooth = (old_len / wavelen - r.low_freq_factor) / (r.high_freq_factor - r.low_freq_factor);
      torch::Tensor smoothed = (1 - smooth) * scaled / r.factor + smooth * scaled;
      torch::Tensor medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen);
      inv_freq = torch::where(medium, smoothed, scaled);
      break;
    }
    case RopeSpec::Kind::kLongrope: {
      // The long factors once the sequence passes the original context, the
      // short ones before, as transformers picks them.
      const auto& ext = length > r.original_max_positions ? r.long_factor : r.short_factor;
      torch::Tensor factors = torch::tensor(std::vector<float>(ext.begin(), ext.end()), f32);
      inv_freq = 1.0 / (factors * base);
      scale = r.attention_factor;
      break;
    }
  }
  torch::Tensor freqs = positions.to(torch::kFloat32).unsqueeze(1) * inv_freq.unsqueeze(0);
  torch::Tensor emb = torch::cat({freqs, freqs}, -1);
  if (scale != 1.0) return {emb.cos() * scale, emb.sin() * scale};
  return {emb.cos(), emb.sin()};
}

torch::Tensor rotate_half(const torch::Tensor& x) {
  auto halves = x.chunk(2, -1);
  return torch::cat({-halves[1], halves[0]}, -1);
}

// x [.., rotary dims + rest]: the first dims turned, the rest passed through.
torch::Tensor apply_rope(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin) {
  const int64_t rot = cos.size(-1);
  if (rot == x.size(-1)) return x * cos + rotate_half(x) * sin;
  torch::Tensor r = x.narrow(-1, 0, rot);
  return torch::cat({r * cos + rotate_half(r) * sin, x.narrow(-1, rot, x.size(-1) - rot)}, -1);
}

struct Rope {
  torch::Tensor cos, sin;  // undefined: the layer has no rotary embedding
};

struct DecoderAttentionImpl : torch::nn::Module {
  DecoderAttentionImpl(const ModelConfig& c, int64_t layer)
      : arch(*c.arch),
        heads(c.num_heads),
        kv_heads(c.num_kv_heads),
        head_dim(c.head_dim),
        options{layer_windowed(c, layer) ? c.sliding_window : 0, c.query_scale, c.attn_softcap, {}, {}} {
    const int64_t q = heads * head_dim, kv = kv_heads * head_dim;
    if (arch.fused_qkv) {
      qkv_proj = register_module("qkv_proj", Linear(c.hidden_size, q + 2 * kv, c.attention_bias));
    } else {
      q_proj = register_module("q_proj", Linear(c.hidden_size, q, c.attention_bias));
      k_proj = register_module("k_proj", Linear(c.hidden_size, kv, c.attention_bias));
      v_proj = register_module("v_proj", Linear(c.hidden_size, kv, c.attention_bias));
    }
    o_proj = register_module("o_proj", Linear(q, c.hidden_size, c.attention_out_bias));
    if (arch.qk_norm == QkNorm::kPerHead) {
      q_norm = register_module("q_norm", make_norm(c, head_dim));
      k_norm = register_module("k_norm", make_norm(c, head_dim));
    } else if (arch.qk_norm == QkNorm::kFullWidth) {
      q_norm = register_module("q_norm", make_norm(c, q));
      k_norm = register_module("k_norm", make_norm(c, kv));
    }
  }
  torch::Tensor forward(const torch::Tensor& x, const Rope& rope, KVCache* cache, size_t layer, AttentionImpl impl,
                        const torch::Tensor& bias) {
    const int64_t b = x.size(0), t = x.size(1);
    const int64_t qw = heads * head_dim, kvw = kv_heads * head_dim;
    torch::Tensor q, k, v;
    if (qkv_proj) {
      torch::Tensor qkv = qkv_proj(x);
      q = qkv.narrow(-1, 0, qw);
      k = qkv.narrow(-1, qw, kvw);
      v = qkv.narrow(-1, qw + kvw, kvw);
    } else {
      q = q_proj(x);
      k = k_proj(x);
      v = v_proj(x);
    }
    if (arch.qk_norm == QkNorm::kFullWidth) {
      q = q_norm(q);
      k = k_norm(k);
    }
    q = q.reshape({b, t, heads, head_dim});
    k = k.reshape({b, t, kv_heads, head_dim});
    if (arch.qk_norm == QkNorm::kPerHead) {
      q = q_norm(q);
      k = k_norm(k);
    }
    q = q.transpose(1, 2);
    k = k.transpose(1, 2);
    v = v.reshape({b, t, kv_heads, head_dim}).transpose(1, 2);
    if (rope.cos.defined()) {
      q = apply_rope(q, rope.cos, rope.sin);
      k = apply_rope(k, rope.cos, rope.sin);
    }
    auto [kk, vv] = extend_cache(cache, layer, k, v);
    AttentionOptions o = options;
    if (cache != nullptr) o.pad = cache->pad;
    o.bias = bias;
    torch::Tensor y = causal_attention(q, kk, vv, impl, o);
    return o_proj(y.transpose(1, 2).reshape({b, t, qw}));
  }
  const Architecture& arch;
  int64_t heads, kv_heads, head_dim;
  AttentionOptions options;
  Linear q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, qkv_proj{nullptr}, o_proj{nullptr};
  RmsNorm q_norm{nullptr}, k_norm{nullptr};
};
TORCH_MODULE(DecoderAttention);

struct DecoderMlpImpl : torch::nn::Module {
  explicit DecoderMlpImpl(const ModelConfig& c) : gelu(c.arch->activation == Activation::kGeluTanh) {
    if (c.arch->fused_gate_up) {
      gate_up_proj = register_module("gate_up_proj", Linear(c.hidden_size, 2 * c.intermediate_size, c.mlp_bias));
    } else {
      gate_proj = register_module("gate_proj", Linear(c.hidden_size, c.intermediate_size, c.mlp_bias));
      up_proj = register_module("up_proj", Linear(c.hidden_size, c.intermediate_size, c.mlp_bias));
    }
    down_proj = register_module("down_proj", Linear(c.intermediate_size, c.hidden_size, c.mlp_bias));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    torch::Tensor gate, up;
    if (gate_up_proj) {
      auto halves = gate_up_proj(x).chunk(2, -1);
      gate = halves[0];
      up = halves[1];
    } else {
      gate = gate_proj(x);
      up = up_proj(x);
    }
    return down_proj((gelu ? torch::gelu(gate, "tanh") : torch::silu(gate)) * up);
  }
  bool gelu;
  Linear gate_proj{nullptr}, up_proj{nullptr}, gate_up_proj{nullptr}, down_proj{nullptr};
};
TORCH_MODULE(DecoderMlp);

struct DecoderBlockImpl : torch::nn::Module {
  DecoderBlockImpl(const ModelConfig& c, int64_t layer) : placement(c.arch->norms) {
    const int64_t d = c.hidden_size;
    // Registration order fixes the flat parameter layout (and so the
    // optimizer state a checkpoint holds): llama's is kept as it always was.
    if (placement != NormPlacement::kPost) input_layernorm = register_module("input_layernorm", make_norm(c, d));
    self_attn = register_module("self_attn", DecoderAttention(c, layer));
    post_attention_layernorm = register_module("post_attention_layernorm", make_norm(c, d));
    if (placement == NormPlacement::kSandwich) {
      pre_feedforward_layernorm = register_module("pre_feedforward_layernorm", make_norm(c, d));
    }
    mlp = register_module("mlp", DecoderMlp(c));
    if (placement != NormPlacement::kPre) {
      post_feedforward_layernorm = register_module("post_feedforward_layernorm", make_norm(c, d));
    }
  }
  torch::Tensor forward(torch::Tensor x, const Rope& rope, KVCache* cache, size_t layer, AttentionImpl impl,
                        const torch::Tensor& bias) {
    switch (placement) {
      case NormPlacement::kPre:
        x = x + self_attn(input_layernorm(x), rope, cache, layer, impl, bias);
        return x + mlp(post_attention_layernorm(x));
      case NormPlacement::kSandwich:
        x = x + post_attention_layernorm(self_attn(input_layernorm(x), rope, cache, layer, impl, bias));
        return x + post_feedforward_layernorm(mlp(pre_feedforward_layernorm(x)));
      case NormPlacement::kPost:
        x = x + post_attention_layernorm(self_attn(x, rope, cache, layer, impl, bias));
        return x + post_feedforward_layernorm(mlp(x));
    }
    return x;
  }
  NormPlacement placement;
  RmsNorm input_layernorm{nullptr}, post_attention_layernorm{nullptr}, pre_feedforward_layernorm{nullptr},
      post_feedforward_layernorm{nullptr};
  DecoderAttention self_attn{nullptr};
  DecoderMlp mlp{nullptr};
};
TORCH_MODULE(DecoderBlock);

struct DecoderBodyImpl : torch::nn::Module {
  explicit DecoderBodyImpl(const ModelConfig& c) {
    embed_tokens = register_module("embed_tokens", torch::nn::Embedding(c.vocab_size, c.hidden_size));
    layers = register_module("layers", torch::nn::ModuleList());
    for (int64_t i = 0; i < c.num_layers; ++i) layers->push_back(DecoderBlock(c, i));
    norm = register_module("norm", make_norm(c, c.hidden_size));
  }
  torch::nn::Embedding embed_tokens{nullptr};
  torch::nn::ModuleList layers{nullptr};
  RmsNorm norm{nullptr};
};
TORCH_MODULE(DecoderBody);

class DecoderLM final : public CausalLM {
 public:
  explicit DecoderLM(const ModelConfig& c) : CausalLM(c) {
    model = register_module("model", DecoderBody(c));
    if (!c.tie_word_embeddings) lm_head = register_module("lm_head", Linear(c.hidden_size, c.vocab_size, false));
  }

  torch::Tensor hidden_states(const torch::Tensor& ids, KVCache* cache, const Documents* docs) override {
    ST_CHECK(docs == nullptr || cache == nullptr, "packed documents with a KV cache");
    const ModelConfig& c = config_;
    const int64_t past = past_length(cache);
    const int64_t t = ids.size(1);
    torch::Tensor x = model->embed_tokens(ids);
    if (c.arch->embed_scale) {
      // sqrt(width) as a float32 number, rounded to the model's dtype (transformers' embed_scale).
      x = x * torch::scalar_tensor(std::sqrt(static_cast<double>(c.hidden_size)), torch::kFloat32)
                  .to(x.scalar_type())
                  .to(x.device());
    }
    torch::Tensor positions = torch::arange(past, past + t, ids.options().dtype(torch::kInt64));
    const bool padded = cache != nullptr && cache->pad.defined();
    if (padded) {  // [B, T]: each row's own positions (a padded token's clamped to 0)
      positions = (positions.unsqueeze(0) - cache->pad.to(positions.device()).unsqueeze(1)).clamp_min(0);
    }
    if (docs != nullptr) positions = docs->positions;  // [B, T]: from 0 in each document
    const bool per_row = padded || docs != nullptr;
    // With documents, one attention bias for the global layers and one for
    // the windowed ones, each made when a layer first needs it and shared.
    torch::Tensor biases[2];
    auto tables = [&](const RopeSpec& r) {
      auto [cos, sin] = rope_tables(r, rotary_dim(c), positions.reshape({-1}), past + t);
      if (per_row) {  // [B, 1, T, dims], against q and k [B, heads, T, head_dim]
        cos = cos.view({ids.size(0), 1, t, -1});
        sin = sin.view({ids.size(0), 1, t, -1});
      }
      return Rope{cos.to(x.scalar_type()), sin.to(x.scalar_type())};
    };
    const Rope global = tables(c.rope);
    const Rope local = c.local_rope ? tables(c.rope_local) : global;
    size_t layer = 0;
    for (auto& m : *model->layers) {
      auto* block = m->as<DecoderBlockImpl>();
      const size_t l = layer++;
      const int64_t li = static_cast<int64_t>(l);
      const bool windowed = layer_windowed(c, li);
      const Rope rope = !layer_has_rope(c, li) ? Rope{} : windowed ? local : global;
      const AttentionImpl impl = attention_;
      torch::Tensor& bias = biases[windowed ? 1 : 0];
      if (docs != nullptr && !bias.defined()) {
        bias = document_attention_bias(*docs, windowed ? c.sliding_window : 0, x.scalar_type());
      }
      // The tables and bias by value: a runner may call this again during backward.
      x = run_block(l, x, [block, rope, cache, l, impl, bias](const torch::Tensor& h) {
        return block->forward(h, rope, cache, l, impl, bias);
      });
    }
    return model->norm(x);
  }
  torch::Tensor project(const torch::Tensor& h) override {
    torch::Tensor logits = lm_head ? lm_head(h) : F::linear(h, model->embed_tokens->weight);
    if (config_.final_softcap > 0) logits = torch::tanh(logits / config_.final_softcap) * config_.final_softcap;
    return logits;
  }
  torch::Tensor output_weight() override {
    if (config_.final_softcap > 0) return torch::Tensor();  // the projection is more than h W^T
    return plain_output_weight(lm_head, model->embed_tokens->weight);
  }

  std::vector<std::shared_ptr<torch::nn::Module>> blocks() override {
    return std::vector<std::shared_ptr<torch::nn::Module>>(model->layers->begin(), model->layers->end());
  }

  DecoderBody model{nullptr};
  Linear lm_head{nullptr};
};

}  // namespace

std::shared_ptr<CausalLM> make_decoder_lm(const ModelConfig& config) { return std::make_shared<DecoderLM>(config); }

}  // namespace shardtune
