#include "shardtune/model/loss.h"

#include <algorithm>
#include <stdexcept>

namespace shardtune {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Rows of the [vocab, n] logits taken at once by the softmax: about 1 MiB,
// so each slice is shifted, exponentiated and summed while in cache.
int64_t slice_rows(int64_t n) { return std::max<int64_t>(1, (int64_t{1} << 18) / std::max<int64_t>(1, n)); }

struct ProjectedCrossEntropy : torch::autograd::Function<ProjectedCrossEntropy> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& hidden, const torch::Tensor& weight,
                               const torch::Tensor& labels, int64_t ignore_index) {
    torch::Tensor z = torch::mm(weight, hidden.t());  // logits^T, [vocab, n]
    const torch::Tensor valid = labels.ne(ignore_index);
    const torch::Tensor target = torch::where(valid, labels, torch::zeros_like(labels)).unsqueeze(0);
    const torch::Tensor target_logit = z.gather(0, target).squeeze(0);
    const torch::Tensor max = z.amax(0);
    torch::Tensor sum = torch::zeros_like(max);
    const int64_t vocab = z.size(0), step = slice_rows(z.size(1));
    for (int64_t a = 0; a < vocab; a += step) {
      torch::Tensor slice = z.narrow(0, a, std::min(step, vocab - a));
      slice.sub_(max).exp_();  // z becomes exp(logit - max)
      sum.add_(slice.sum(0));
    }
    const torch::Tensor per_row = max + sum.log() - target_logit;
    torch::Tensor loss = torch::where(valid, per_row, torch::zeros_like(per_row)).sum();
    ctx->save_for_backward({hidden, weight});
    ctx->saved_data["exp"] = z;
    ctx->saved_data["sum"] = sum;
    ctx->saved_data["target"] = target;
    ctx->saved_data["valid"] = valid;
    return loss;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_out) {
    auto found = ctx->saved_data.find("exp");
    if (found == ctx->saved_data.end()) {
      throw std::logic_error("projected_cross_entropy_sum: backward runs once (its buffer became the gradient)");
    }
    torch::Tensor g = found->second.toTensor();
    ctx->saved_data.erase(found);
    const torch::Tensor sum = ctx->saved_data["sum"].toTensor();
    const torch::Tensor target = ctx->saved_data["target"].toTensor();
    const torch::Tensor valid = ctx->saved_data["valid"].toTensor();
    const auto saved = ctx->get_saved_variables();
    const torch::Tensor& hidden = saved[0];
    const torch::Tensor& weight = saved[1];
    const torch::Tensor go = grad_out[0].to(g.scalar_type());
    const torch::Tensor zero = torch::zeros({}, g.options());
    // d loss / d logit[v, i] = go * (softmax[v, i] - [v == label i]) on scored rows, 0 elsewhere.
    g.mul_(torch::where(valid, go / sum, zero).unsqueeze(0));
    g.scatter_add_(0, target, torch::where(valid, -go, zero).unsqueeze(0));
    torch::Tensor d_hidden, d_weight;
    if (ctx->needs_input_grad(0)) d_hidden = torch::mm(weight.t(), g).t().contiguous();
    if (ctx->needs_input_grad(1)) d_weight = torch::mm(g, hidden);
    return {d_hidden, d_weight, torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

torch::Tensor projected_cross_entropy_sum(const torch::Tensor& hidden, const torch::Tensor& weight,
                                          const torch::Tensor& labels, int64_t ignore_index) {
  return ProjectedCrossEntropy::apply(hidden, weight, labels, ignore_index);
}

torch::Tensor cross_entropy_sum(CausalLM& model, const torch::Tensor& hidden, const torch::Tensor& labels,
                                int64_t ignore_index) {
  const torch::Tensor weight = model.output_weight();
  if (weight.defined() && weight.device().is_cpu() && weight.scalar_type() == torch::kFloat32 &&
      hidden.scalar_type() == torch::kFloat32) {
    return projected_cross_entropy_sum(hidden, weight, labels, ignore_index);
  }
  return torch::nn::functional::cross_entropy(
      model.project(hidden).to(torch::kFloat32), labels,
      torch::nn::functional::CrossEntropyFuncOptions().ignore_index(ignore_index).reduction(torch::kSum));
}

}  // namespace shardtune
