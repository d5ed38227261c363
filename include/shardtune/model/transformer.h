// GPT-2 and the decoder families of architecture.h (llama, mistral, qwen2,
// qwen3, gemma2, gemma3, phi3, olmo2, smollm3) as torch::nn modules.
//
// Module and parameter names are Hugging Face's, so named_parameters() gives
// the names an HF checkpoint uses ("transformer.h.0.attn.c_attn.weight",
// "model.layers.0.self_attn.q_proj.weight"). Every Linear layer stores its
// weight as [out, in]; GPT-2's Conv1D layout is a matter of import/export
// (hf_checkpoint.h). The transformer blocks are separate modules (blocks()),
// so a wrapper can gather and free parameters block by block.
#pragma once

#include <torch/torch.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "shardtune/model/model_config.h"

namespace shardtune {

// A linear layer y = x W^T + b with an optional LoRA adapter:
// y += dropout(x) A^T B^T * (alpha / r).
class LinearImpl : public torch::nn::Module {
 public:
  LinearImpl(int64_t in, int64_t out, bool bias);
  torch::Tensor forward(const torch::Tensor& x);

  // Adds the adapter (A ~ kaiming-uniform, B = 0, so the output is unchanged).
  void enable_lora(int64_t rank, double alpha, double dropout);
  bool has_lora() const { return lora_a.defined(); }
  // W += B A * scaling, then removes the adapter.
  void merge_lora();

  torch::Tensor weight, bias, lora_a, lora_b;
  double lora_scaling = 0.0;
  double lora_dropout = 0.0;
};
TORCH_MODULE(Linear);

enum class AttentionImpl {
  kSdpa,       // torch's scaled_dot_product_attention (flash / memory-efficient on GPU)
  kReference,  // plain softmax(QK^T / sqrt(d)) V in float32, for tests
};

// Keys and values of earlier positions, per layer: [batch, kv_heads, len, head_dim].
struct KVCache {
  std::vector<torch::Tensor> keys;
  std::vector<torch::Tensor> values;
  // Batched generation (decoder families): int64 [batch], the left padding
  // of each row. Row b's tokens sit at positions p - pad[b]; its queries see
  // no padded key (a padded query sees itself only). Undefined: no padding.
  torch::Tensor pad;
  int64_t length() const { return keys.empty() || !keys[0].defined() ? 0 : keys[0].size(2); }
};

// Several documents packed into each row (training): int64 [batch, seq].
// ids: each position's document in its row (0, 1, ...), -1 for padding;
// positions: its position in its document (0 where a document starts).
// A position attends only to earlier positions of its own document; a padded
// position to itself only, and no other position to it.
struct Documents {
  torch::Tensor ids;
  torch::Tensor positions;
};

// The attention bias of `docs`: [batch, 1, seq, seq] of dtype, 0 where query
// i may see key j, -inf elsewhere; with window > 0, a query also sees only
// the last `window` positions. Made once per forward and shared by the
// layers, so attention saves no copy of its own.
torch::Tensor document_attention_bias(const Documents& docs, int64_t window, torch::ScalarType dtype);

class CausalLM : public torch::nn::Module {
 public:
  explicit CausalLM(ModelConfig config) : config_(std::move(config)) {}
  ~CausalLM() override = default;

  // Logits [batch, seq, vocab] for input ids [batch, seq]. With a cache, ids
  // continue the cached sequence and the cache is extended.
  torch::Tensor forward(const torch::Tensor& ids, KVCache* cache = nullptr, const Documents* docs = nullptr) {
    return project(hidden_states(ids, cache, docs));
  }
  // The final hidden states [batch, seq, hidden] (after the last norm), and
  // the output projection of any [..., hidden] to logits [..., vocab]:
  // forward in two parts, so a loss can project only the positions it scores.
  // With docs (no cache), the rows hold packed documents that cannot see each
  // other, each with positions from 0.
  virtual torch::Tensor hidden_states(const torch::Tensor& ids, KVCache* cache = nullptr,
                                      const Documents* docs = nullptr) = 0;
  virtual torch::Tensor project(const torch::Tensor& hidden) = 0;
  // The weight W [vocab, hidden] when project(h) is exactly h W^T, so a loss
  // may fuse the projection (loss.h); undefined when the projection is more
  // (a LoRA adapter on lm_head).
  virtual torch::Tensor output_weight() = 0;

  // The transformer blocks, in order.
  virtual std::vector<std::shared_ptr<torch::nn::Module>> blocks() = 0;

  const ModelConfig& config() const { return config_; }
  void set_attention(AttentionImpl impl) { attention_ = impl; }

  // Block i's forward, as a function of its input (the other arguments bound).
  using BlockFn = std::function<torch::Tensor(const torch::Tensor&)>;
  // Called for every block in forward instead of running it directly: a
  // parallel engine uses it to gather the block's parameters, run it (and
  // recompute it in backward) and free them. Empty: blocks run as they are.
  using BlockRunner = std::function<torch::Tensor(size_t block, const torch::Tensor& x, BlockFn fn)>;
  void set_block_runner(BlockRunner runner) { runner_ = std::move(runner); }
  AttentionImpl attention() const { return attention_; }

  // Random init for training from scratch: normal(0, 0.02) weights, zero
  // biases, unit norms; the projections into the residual stream (GPT-2's
  // c_proj, Llama's o_proj and down_proj) get std 0.02 / sqrt(2 layers).
  void init_weights(uint64_t seed);

  // LoRA on every Linear whose name (the last component, e.g. "q_proj") is in
  // targets; then only adapter parameters require grad. Throws InputError if a
  // target matches no layer.
  void enable_lora(const std::vector<std::string>& targets, int64_t rank, double alpha,
                   double dropout);
  // Folds every adapter into its base weight.
  void merge_lora();
  bool has_lora();

 protected:
  // output_weight() of an output layer `head`, or of the embedding it is
  // tied to when head is empty.
  static torch::Tensor plain_output_weight(const Linear& head, const torch::Tensor& embedding) {
    if (!head) return embedding;
    return head->has_lora() || head->bias.defined() ? torch::Tensor() : head->weight;
  }
  torch::Tensor run_block(size_t block, const torch::Tensor& x, BlockFn fn) {
    return runner_ ? runner_(block, x, std::move(fn)) : fn(x);
  }

  ModelConfig config_;
  AttentionImpl attention_ = AttentionImpl::kSdpa;
  BlockRunner runner_;
};

// A model of config's architecture, parameters uninitialised (call
// init_weights, or load a checkpoint).
std::shared_ptr<CausalLM> make_causal_lm(const ModelConfig& config);

struct AttentionOptions {
  int64_t window = 0;   // a query sees the last `window` positions only; 0 = all
  double scale = 0.0;   // scores times this; 0 = 1/sqrt(head_dim)
  double softcap = 0.0; // scores -> c tanh(scores / c) before the mask; 0 = none
  torch::Tensor pad;    // int64 [B]: keys before pad[b] are padding in row b (KVCache::pad)
  torch::Tensor bias;   // [B, 1, T, T] in place of the causal mask and window (document_attention_bias)
};

// Attention of q [B, H, Tq, D] over k, v [B, Hkv, Tk, D], the queries being
// the last Tq of Tk positions; causal, with the options above.
torch::Tensor causal_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                               AttentionImpl impl, const AttentionOptions& options);

}  // namespace shardtune
