#include "shardtune/model/generate.h"

#include <algorithm>

#include "shardtune/core/error.h"

namespace shardtune {

int64_t sample_next(const torch::Tensor& logits, const SamplingOptions& o, at::Generator& gen) {
  torch::Tensor l = logits.to(torch::kFloat32).to(torch::kCPU);
  if (o.temperature <= 0.0) return l.argmax().item<int64_t>();
  l = l / o.temperature;
  const float neg_inf = -std::numeric_limits<float>::infinity();
  if (o.top_k > 0 && o.top_k < l.size(0)) {
    const float kth = std::get<0>(l.topk(o.top_k)).min().item<float>();
    l = l.masked_fill(l < kth, neg_inf);
  }
  if (o.top_p < 1.0) {
    auto [sorted, order] = l.sort(/*dim=*/-1, /*descending=*/true);
    torch::Tensor cumulative = sorted.softmax(-1).cumsum(-1);
    // Drop tokens once the mass before them reaches top_p; the first stays.
    torch::Tensor drop = (cumulative - sorted.softmax(-1)) >= o.top_p;
    l = l.index_put({order.masked_select(drop)}, torch::tensor(neg_inf));
  }
  torch::Tensor probs = l.softmax(-1);
  return torch::multinomial(probs, 1, /*replacement=*/false, gen).item<int64_t>();
}

std::vector<int64_t> generate(CausalLM& model, const std::vector<int64_t>& prompt,
                              const SamplingOptions& o) {
  if (prompt.empty()) throw InputError("generate: the prompt has no tokens");
  for (int64_t id : prompt) {
    if (id < 0 || id >= model.config().vocab_size) {
      throw InputError(str_cat("generate: token id ", id, " is outside the vocabulary (size ",
                               model.config().vocab_size, ")"));
    }
  }
  torch::NoGradGuard no_grad;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(o.seed);
  const auto device = model.parameters()[0].device();
  std::vector<int64_t> ids = prompt;
  KVCache cache;
  torch::Tensor next_input = torch::tensor(ids, torch::kInt64).unsqueeze(0).to(device);
  for (int64_t step = 0; step < o.max_new_tokens; ++step) {
    if (static_cast<int64_t>(ids.size()) >= model.config().max_positions) break;
    torch::Tensor logits = o.use_cache ? model.forward(next_input, &cache)
                                       : model.forward(torch::tensor(ids, torch::kInt64).unsqueeze(0).to(device));
    const int64_t id = sample_next(logits[0][-1], o, gen);
    ids.push_back(id);
    if (std::find(o.eos_token_ids.begin(), o.eos_token_ids.end(), id) != o.eos_token_ids.end()) break;
    next_input = torch::tensor({id}, torch::kInt64).unsqueeze(0).to(device);
  }
  return ids;
}

}  // namespace shardtune
