#include "shardtune/model/transformer.h"

#include <unistd.h>

#include <cmath>
#include <set>

#include "shardtune/core/error.h"
#include "model_internal.h"

namespace shardtune {
namespace F = torch::nn::functional;

// ---------------------------------------------------------------- Linear

LinearImpl::LinearImpl(int64_t in, int64_t out, bool has_bias) {
  weight = register_parameter("weight", torch::empty({out, in}));
  if (has_bias) bias = register_parameter("bias", torch::zeros({out}));
}

torch::Tensor LinearImpl::forward(const torch::Tensor& x) {
  torch::Tensor y = F::linear(x, weight, bias.defined() ? bias : torch::Tensor());
  if (lora_a.defined()) {
    torch::Tensor h = lora_dropout > 0.0 && is_training() ? torch::dropout(x, lora_dropout, true) : x;
    y = y + F::linear(F::linear(h, lora_a), lora_b) * lora_scaling;
  }
  return y;
}

void LinearImpl::enable_lora(int64_t rank, double alpha, double dropout) {
  ST_CHECK(rank > 0, "LoRA rank must be positive");
  const auto opts = weight.options();
  torch::Tensor a = torch::empty({rank, weight.size(1)}, opts);
  // A as nn.Linear initialises its weight (kaiming-uniform, a = sqrt(5)); B = 0.
  torch::nn::init::kaiming_uniform_(a, std::sqrt(5.0));
  lora_a = register_parameter("lora_A", a);
  lora_b = register_parameter("lora_B", torch::zeros({weight.size(0), rank}, opts));
  lora_scaling = alpha / static_cast<double>(rank);
  lora_dropout = dropout;
}

void LinearImpl::merge_lora() {
  if (!lora_a.defined()) return;
  torch::NoGradGuard no_grad;
  weight.add_(torch::matmul(lora_b.to(torch::kFloat32), lora_a.to(torch::kFloat32))
                  .mul_(lora_scaling)
                  .to(weight.scalar_type()));
  lora_a = lora_b = torch::Tensor();
  // The parameters leave the module (unregister keeps names of the others).
  parameters_.erase("lora_A");
  parameters_.erase("lora_B");
}

// ---------------------------------------------------------------- attention

torch::Tensor causal_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                               AttentionImpl impl, const AttentionOptions& o) {
  const int64_t tq = q.size(2);
  const int64_t tk = k.size(2);
  const int64_t rep = q.size(1) / k.size(1);
  torch::Tensor kk = rep > 1 ? k.repeat_interleave(rep, 1) : k;
  torch::Tensor vv = rep > 1 ? v.repeat_interleave(rep, 1) : v;
  const int64_t window = o.window;
  const bool windowed = window > 0 && tk > window;
  const double scale = o.scale > 0 ? o.scale : 1.0 / std::sqrt(static_cast<double>(q.size(-1)));
  // Query i sits at absolute position tk - tq + i and sees keys j <= it (and,
  // with a window, j > it - window).
  // With padding ([B, 1, Tq, Tk]), a row's queries see none of its padded
  // keys, and a padded query sees itself only (no row without a key).
  // With documents (o.bias), their bias replaces the causal mask and window.
  const bool padded = o.pad.defined();
  const bool documents = o.bias.defined();
  auto mask = [&] {
    auto opts = torch::TensorOptions().dtype(torch::kInt64).device(q.device());
    torch::Tensor qpos = torch::arange(tk - tq, tk, opts).unsqueeze(1);
    torch::Tensor kpos = torch::arange(0, tk, opts).unsqueeze(0);
    torch::Tensor m = kpos <= qpos;
    if (windowed) m = m & (kpos > qpos - window);
    if (padded) {
      torch::Tensor real = kpos.unsqueeze(0) >= o.pad.to(q.device()).view({-1, 1, 1});  // [B, 1, Tk]
      m = (m.unsqueeze(0) & real) | (kpos == qpos).unsqueeze(0);
      m = m.unsqueeze(1);
    }
    return m;
  };
  const float neg_inf = -std::numeric_limits<float>::infinity();
  if (impl == AttentionImpl::kReference) {
    torch::Tensor s = torch::matmul(q.to(torch::kFloat32), kk.to(torch::kFloat32).transpose(-2, -1)) * scale;
    if (o.softcap > 0) s = torch::tanh(s / o.softcap) * o.softcap;
    s = documents ? s + o.bias.to(torch::kFloat32) : s.masked_fill(mask().logical_not(), neg_inf);
    return torch::matmul(torch::softmax(s, -1), vv.to(torch::kFloat32)).to(q.scalar_type());
  }
  if (o.softcap > 0) {
    // Soft-capped scores (no fused kernel takes them): as transformers'
    // eager attention computes them, the softmax in float32. In place where
    // autograd keeps nothing (the product's output, the capped scores), so
    // a layer holds three seq x seq tensors (tanh's output, the capped
    // scores, the softmax) rather than one per operation.
    torch::Tensor s = torch::matmul(q, kk.transpose(-2, -1));
    s.mul_(scale / o.softcap).tanh_();
    torch::Tensor capped = s * o.softcap;
    if (documents) {
      capped.add_(o.bias);
    } else {
      capped.masked_fill_(mask().logical_not(), neg_inf);
    }
    return torch::matmul(torch::softmax(capped, -1, torch::kFloat32).to(q.scalar_type()), vv);
  }
  const std::optional<double> sdpa_scale = o.scale > 0 ? std::optional<double>(o.scale) : std::nullopt;
  const bool plain = !windowed && !padded && !documents;
  if (plain && tq == tk) return at::scaled_dot_product_attention(q, kk, vv, {}, 0.0, /*is_causal=*/true, sdpa_scale);
  if (plain && tq == 1) return at::scaled_dot_product_attention(q, kk, vv, {}, 0.0, false, sdpa_scale);
  return at::scaled_dot_product_attention(q, kk, vv, documents ? o.bias : mask(), 0.0, false, sdpa_scale);
}

torch::Tensor document_attention_bias(const Documents& docs, int64_t window, torch::ScalarType dtype) {
  const torch::Tensor& d = docs.ids;
  const int64_t t = d.size(1);
  auto opts = torch::TensorOptions().dtype(torch::kInt64).device(d.device());
  torch::Tensor qpos = torch::arange(t, opts).unsqueeze(1);
  torch::Tensor kpos = torch::arange(t, opts).unsqueeze(0);
  torch::Tensor seen = kpos <= qpos;
  if (window > 0) seen = seen & (kpos > qpos - window);
  torch::Tensor same = (d.unsqueeze(2) == d.unsqueeze(1)) & (d >= 0).unsqueeze(1);  // [B, Tq, Tk]
  torch::Tensor visible = ((same & seen) | (kpos == qpos)).unsqueeze(1);
  return torch::zeros(visible.sizes(), torch::TensorOptions().dtype(dtype).device(d.device()))
      .masked_fill_(visible.logical_not(), -std::numeric_limits<float>::infinity());
}

// Appends k, v to layer's cache entry and returns the full keys and values.
std::pair<torch::Tensor, torch::Tensor> extend_cache(KVCache* cache, size_t layer, torch::Tensor k, torch::Tensor v) {
  if (cache == nullptr) return {k, v};
  if (cache->keys.size() <= layer) {
    cache->keys.resize(layer + 1);
    cache->values.resize(layer + 1);
  }
  if (cache->keys[layer].defined()) {
    k = torch::cat({cache->keys[layer], k}, 2);
    v = torch::cat({cache->values[layer], v}, 2);
  }
  cache->keys[layer] = k;
  cache->values[layer] = v;
  return {k, v};
}

int64_t past_length(const KVCache* cache) { return cache == nullptr ? 0 : cache->length(); }

namespace {

// ---------------------------------------------------------------- GPT-2

struct Gpt2AttentionImpl : torch::nn::Module {
  Gpt2AttentionImpl(const ModelConfig& c) : heads(c.num_heads), head_dim(c.head_dim) {
    c_attn = register_module("c_attn", Linear(c.hidden_size, 3 * c.hidden_size, true));
    c_proj = register_module("c_proj", Linear(c.hidden_size, c.hidden_size, true));
  }
  torch::Tensor forward(const torch::Tensor& x, KVCache* cache, size_t layer, AttentionImpl impl,
                        const AttentionOptions& options) {
    const int64_t b = x.size(0), t = x.size(1);
    auto qkv = c_attn(x).split(x.size(2), 2);
    auto shape = [&](const torch::Tensor& y) {
      return y.view({b, t, heads, head_dim}).transpose(1, 2);
    };
    auto [k, v] = extend_cache(cache, layer, shape(qkv[1]), shape(qkv[2]));
    torch::Tensor y = causal_attention(shape(qkv[0]), k, v, impl, options);
    return c_proj(y.transpose(1, 2).reshape({b, t, heads * head_dim}));
  }
  int64_t heads, head_dim;
  Linear c_attn{nullptr}, c_proj{nullptr};
};
TORCH_MODULE(Gpt2Attention);

struct Gpt2MlpImpl : torch::nn::Module {
  Gpt2MlpImpl(const ModelConfig& c) {
    c_fc = register_module("c_fc", Linear(c.hidden_size, c.intermediate_size, true));
    c_proj = register_module("c_proj", Linear(c.intermediate_size, c.hidden_size, true));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    return c_proj(torch::gelu(c_fc(x), "tanh"));
  }
  Linear c_fc{nullptr}, c_proj{nullptr};
};
TORCH_MODULE(Gpt2Mlp);

struct Gpt2BlockImpl : torch::nn::Module {
  Gpt2BlockImpl(const ModelConfig& c) {
    auto ln = torch::nn::LayerNormOptions({c.hidden_size}).eps(c.norm_eps);
    ln_1 = register_module("ln_1", torch::nn::LayerNorm(ln));
    attn = register_module("attn", Gpt2Attention(c));
    ln_2 = register_module("ln_2", torch::nn::LayerNorm(ln));
    mlp = register_module("mlp", Gpt2Mlp(c));
  }
  torch::Tensor forward(torch::Tensor x, KVCache* cache, size_t layer, AttentionImpl impl,
                        const AttentionOptions& options) {
    x = x + attn(ln_1(x), cache, layer, impl, options);
    return x + mlp(ln_2(x));
  }
  torch::nn::LayerNorm ln_1{nullptr}, ln_2{nullptr};
  Gpt2Attention attn{nullptr};
  Gpt2Mlp mlp{nullptr};
};
TORCH_MODULE(Gpt2Block);

struct Gpt2BodyImpl : torch::nn::Module {
  Gpt2BodyImpl(const ModelConfig& c) {
    wte = register_module("wte", torch::nn::Embedding(c.vocab_size, c.hidden_size));
    wpe = register_module("wpe", torch::nn::Embedding(c.max_positions, c.hidden_size));
    h = register_module("h", torch::nn::ModuleList());
    for (int64_t i = 0; i < c.num_layers; ++i) h->push_back(Gpt2Block(c));
    ln_f = register_module("ln_f", torch::nn::LayerNorm(
                                       torch::nn::LayerNormOptions({c.hidden_size}).eps(c.norm_eps)));
  }
  torch::nn::Embedding wte{nullptr}, wpe{nullptr};
  torch::nn::ModuleList h{nullptr};
  torch::nn::LayerNorm ln_f{nullptr};
};
TORCH_MODULE(Gpt2Body);

class Gpt2LM final : public CausalLM {
 public:
  explicit Gpt2LM(const ModelConfig& c) : CausalLM(c) {
    transformer = register_module("transformer", Gpt2Body(c));
    if (!c.tie_word_embeddings) lm_head = register_module("lm_head", Linear(c.hidden_size, c.vocab_size, false));
  }

  torch::Tensor hidden_states(const torch::Tensor& ids, KVCache* cache, const Documents* docs) override {
    ST_CHECK(docs == nullptr || cache == nullptr, "packed documents with a KV cache");
    const int64_t past = past_length(cache);
    const int64_t t = ids.size(1);
    if (past + t > config_.max_positions) {
      throw InputError(str_cat("sequence of ", past + t, " tokens is longer than n_positions (",
                               config_.max_positions, ")"));
    }
    torch::Tensor pos = docs != nullptr ? docs->positions
                                        : torch::arange(past, past + t, ids.options().dtype(torch::kInt64));
    torch::Tensor x = transformer->wte(ids) + transformer->wpe(pos);
    AttentionOptions options;
    if (docs != nullptr) options.bias = document_attention_bias(*docs, 0, x.scalar_type());
    size_t layer = 0;
    for (auto& m : *transformer->h) {
      auto* block = m->as<Gpt2BlockImpl>();
      const size_t l = layer++;
      const AttentionImpl impl = attention_;
      x = run_block(l, x, [block, cache, l, impl, options](const torch::Tensor& h) {
        return block->forward(h, cache, l, impl, options);
      });
    }
    return transformer->ln_f(x);
  }
  torch::Tensor project(const torch::Tensor& h) override {
    return lm_head ? lm_head(h) : F::linear(h, transformer->wte->weight);
  }
  torch::Tensor output_weight() override { return plain_output_weight(lm_head, transformer->wte->weight); }

  std::vector<std::shared_ptr<torch::nn::Module>> blocks() override {
    return std::vector<std::shared_ptr<torch::nn::Module>>(transformer->h->begin(),
                                                           transformer->h->end());
  }

  Gpt2Body transformer{nullptr};
  Linear lm_head{nullptr};
};

std::string last_component(const std::string& name) {
  const size_t dot = name.rfind('.');
  return dot == std::string::npos ? name : name.substr(dot + 1);
}

}  // namespace

// ---------------------------------------------------------------- CausalLM

void CausalLM::init_weights(uint64_t seed) {
  torch::NoGradGuard no_grad;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  const double residual_std = 0.02 / std::sqrt(2.0 * static_cast<double>(config_.num_layers));
  for (auto& item : named_parameters()) {
    const std::string& name = item.key();
    torch::Tensor p = item.value();
    const std::string leaf = last_component(name);
    torch::Tensor init;
    if (leaf == "bias") {
      init = torch::zeros(p.sizes());
    } else if (p.dim() == 1) {  // norm scales: 1, stored as 0 where the norm scales by 1 + w (gemma)
      init = config_.arch != nullptr && config_.arch->norm_offset ? torch::zeros(p.sizes()) : torch::ones(p.sizes());
    } else if (leaf == "lora_B") {
      init = torch::zeros(p.sizes());
    } else {
      const bool residual = name.find("c_proj.weight") != std::string::npos ||
                            name.find("o_proj.weight") != std::string::npos ||
                            name.find("down_proj.weight") != std::string::npos;
      init = at::normal(0.0, residual ? residual_std : 0.02, p.sizes(), gen);
    }
    p.copy_(init);
  }
}

void CausalLM::enable_lora(const std::vector<std::string>& targets, int64_t rank, double alpha,
                           double dropout) {
  std::set<std::string> unmatched(targets.begin(), targets.end());
  for (auto& item : named_modules()) {
    auto* linear = dynamic_cast<LinearImpl*>(item.value().get());
    if (linear == nullptr) continue;
    const std::string leaf = last_component(item.key());
    if (std::find(targets.begin(), targets.end(), leaf) == targets.end()) continue;
    linear->enable_lora(rank, alpha, dropout);
    unmatched.erase(leaf);
  }
  if (!unmatched.empty()) {
    throw InputError(str_cat("LoRA target '", *unmatched.begin(), "' names no layer of this ",
                             config_.model_type, " model"));
  }
  for (auto& item : named_parameters()) {
    const std::string leaf = last_component(item.key());
    item.value().set_requires_grad(leaf == "lora_A" || leaf == "lora_B");
  }
}

void CausalLM::merge_lora() {
  for (auto& item : named_modules()) {
    if (auto* linear = dynamic_cast<LinearImpl*>(item.value().get())) linear->merge_lora();
  }
}

bool CausalLM::has_lora() {
  for (auto& item : named_modules()) {
    auto* linear = dynamic_cast<LinearImpl*>(item.value().get());
    if (linear != nullptr && linear->has_lora()) return true;
  }
  return false;
}

std::shared_ptr<CausalLM> make_causal_lm(const ModelConfig& config) {
  // The whole model is made in float32 in host memory first: refuse one that
  // cannot fit before asking the allocator (whose failure is a stack trace).
  const double bytes = 4.0 * static_cast<double>(parameter_count(config));
  const double host = static_cast<double>(::sysconf(_SC_PHYS_PAGES)) * static_cast<double>(::sysconf(_SC_PAGE_SIZE));
  if (host > 0 && bytes > host) {
    throw InputError(str_cat(config.origin.empty() ? "" : config.origin + ": ", "a ", config.model_type, " model of ",
                             parameter_count(config), " parameters needs ",
                             bytes / (1 << 30), " GiB in float32, more than this machine's ", host / (1 << 30),
                             " GiB of memory (hidden_size ", config.hidden_size, ", layers ", config.num_layers,
                             ", vocab_size ", config.vocab_size, ")"));
  }
  if (config.family == Family::kGpt2) return std::make_shared<Gpt2LM>(config);
  ST_CHECK(config.arch != nullptr, "make_causal_lm: a ", config.model_type, " config without its architecture");
  return make_decoder_lm(config);
}

}  // namespace shardtune
