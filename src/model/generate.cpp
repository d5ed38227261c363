#include "shardtune/model/generate.h"

#include <algorithm>

#include "shardtune/core/error.h"

namespace shardtune {

namespace {

// A prompt must have tokens, all in the vocabulary, and leave room in the
// context to generate; `which` names it in the error ("the prompt").
void check_prompt(const CausalLM& model, const std::vector<int64_t>& prompt, const char* which) {
  if (prompt.empty()) throw InputError(str_cat("generate: ", which, " has no tokens"));
  const int64_t vocab = model.config().vocab_size;
  for (int64_t id : prompt) {
    if (id < 0 || id >= vocab) {
      throw InputError(str_cat("generate: token id ", id, " is outside the vocabulary (size ", vocab, ")"));
    }
  }
  if (static_cast<int64_t>(prompt.size()) >= model.config().max_positions) {
    throw InputError(str_cat("generate: ", which, " has ", prompt.size(), " tokens; the model's context is ",
                             model.config().max_positions, " positions, which leaves none to generate"));
  }
}

}  // namespace

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
  check_prompt(model, prompt, "the prompt");
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

std::vector<std::vector<int64_t>> generate_batch(CausalLM& model, const std::vector<std::vector<int64_t>>& prompts,
                                                 const SamplingOptions& o) {
  std::vector<std::vector<int64_t>> out(prompts.size());
  if (prompts.size() <= 1 || model.config().family == Family::kGpt2 || !o.use_cache) {
    for (size_t i = 0; i < prompts.size(); ++i) {
      const auto all = generate(model, prompts[i], o);
      out[i].assign(all.begin() + static_cast<long>(prompts[i].size()), all.end());
    }
    return out;
  }
  size_t longest = 0;
  for (const auto& p : prompts) {
    check_prompt(model, p, "a prompt");
    longest = std::max(longest, p.size());
  }
  torch::NoGradGuard no_grad;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(o.seed);
  const auto device = model.parameters()[0].device();
  const auto b = static_cast<int64_t>(prompts.size());
  std::vector<int64_t> flat, pads;
  for (const auto& p : prompts) {
    const size_t pad = longest - p.size();
    pads.push_back(static_cast<int64_t>(pad));
    flat.insert(flat.end(), pad, p[0]);  // any id: padding is never attended to
    flat.insert(flat.end(), p.begin(), p.end());
  }
  KVCache cache;
  cache.pad = torch::tensor(pads, torch::kInt64).to(device);
  torch::Tensor input = torch::tensor(flat, torch::kInt64).view({b, static_cast<int64_t>(longest)}).to(device);
  std::vector<int64_t> rows(prompts.size());  // batch row -> prompt
  for (size_t i = 0; i < rows.size(); ++i) rows[i] = static_cast<int64_t>(i);
  std::vector<int64_t> length(prompts.size());
  for (size_t i = 0; i < prompts.size(); ++i) length[i] = static_cast<int64_t>(prompts[i].size());
  for (int64_t step = 0; step < o.max_new_tokens && !rows.empty(); ++step) {
    const torch::Tensor logits = model.forward(input, &cache).select(1, -1).to(torch::kCPU);  // [rows, vocab]
    std::vector<int64_t> next, keep;
    for (size_t r = 0; r < rows.size(); ++r) {
      const int64_t i = rows[r];
      if (length[static_cast<size_t>(i)] >= model.config().max_positions) continue;  // as generate(): no room
      const int64_t id = sample_next(logits[static_cast<int64_t>(r)], o, gen);
      out[static_cast<size_t>(i)].push_back(id);
      ++length[static_cast<size_t>(i)];
      if (std::find(o.eos_token_ids.begin(), o.eos_token_ids.end(), id) != o.eos_token_ids.end()) continue;
      if (length[static_cast<size_t>(i)] >= model.config().max_positions) continue;
      keep.push_back(static_cast<int64_t>(r));
      next.push_back(id);
    }
    if (keep.size() != rows.size()) {  // stopped rows leave the batch
      if (keep.empty()) break;
      const torch::Tensor idx = torch::tensor(keep, torch::kInt64).to(device);
      for (size_t l = 0; l < cache.keys.size(); ++l) {
        cache.keys[l] = cache.keys[l].index_select(0, idx);
        cache.values[l] = cache.values[l].index_select(0, idx);
      }
      cache.pad = cache.pad.index_select(0, idx);
      std::vector<int64_t> kept_rows;
      for (int64_t r : keep) kept_rows.push_back(rows[static_cast<size_t>(r)]);
      rows = std::move(kept_rows);
    }
    input = torch::tensor(next, torch::kInt64).view({static_cast<int64_t>(next.size()), 1}).to(device);
  }
  return out;
}

}  // namespace shardtune
