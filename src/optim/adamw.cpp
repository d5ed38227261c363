#include "shardtune/optim/adamw.h"

#include <cmath>

#include "shardtune/core/error.h"

namespace shardtune {

FlatAdamW::FlatAdamW(torch::Tensor master, Ranges decay_ranges, const AdamWOptions& options)
    : master_(std::move(master)), decay_(std::move(decay_ranges)), o_(options) {
  ST_CHECK(master_.dim() == 1 && master_.scalar_type() == torch::kFloat32, "FlatAdamW needs a 1-D float32 master");
  for (const auto& [b, e] : decay_) {
    ST_CHECK(0 <= b && b <= e && e <= master_.numel(), "decay range [", b, ", ", e, ") outside the master");
  }
  m_ = torch::zeros_like(master_);
  v_ = torch::zeros_like(master_);
}

void FlatAdamW::step(const torch::Tensor& grad, double lr, double grad_scale) {
  torch::NoGradGuard no_grad;
  ST_CHECK(grad.numel() == master_.numel(), "gradient and master differ in length");
  ++steps_;
  torch::Tensor g = grad.to(torch::kFloat32);
  if (grad_scale != 1.0) g = g * grad_scale;
  // Decoupled weight decay first, as torch.optim.AdamW: p *= 1 - lr * wd.
  if (o_.weight_decay != 0.0) {
    for (const auto& [b, e] : decay_) master_.narrow(0, b, e - b).mul_(1.0 - lr * o_.weight_decay);
  }
  m_.mul_(o_.beta1).add_(g, 1.0 - o_.beta1);
  v_.mul_(o_.beta2).addcmul_(g, g, 1.0 - o_.beta2);
  const double bc1 = 1.0 - std::pow(o_.beta1, static_cast<double>(steps_));
  const double bc2 = 1.0 - std::pow(o_.beta2, static_cast<double>(steps_));
  torch::Tensor denom = (v_.sqrt() / std::sqrt(bc2)).add_(o_.eps);
  master_.addcdiv_(m_, denom, -lr / bc1);
}

void FlatAdamW::load_state(const torch::Tensor& master, const torch::Tensor& exp_avg,
                           const torch::Tensor& exp_avg_sq, int64_t steps) {
  torch::NoGradGuard no_grad;
  ST_CHECK(master.numel() == master_.numel() && exp_avg.numel() == m_.numel() && exp_avg_sq.numel() == v_.numel(),
           "optimizer state of ", master.numel(), " elements for a shard of ", master_.numel());
  ST_CHECK(steps >= 0, "negative step count");
  master_.copy_(master.reshape({-1}));
  m_.copy_(exp_avg.reshape({-1}));
  v_.copy_(exp_avg_sq.reshape({-1}));
  steps_ = steps;
}

double clip_coefficient(double norm, double max_norm) {
  if (max_norm <= 0.0) return 1.0;
  return std::min(1.0, max_norm / (norm + 1e-6));
}

}  // namespace shardtune
