// AdamW over a flat float32 master shard (decoupled weight decay, as
// torch.optim.AdamW), and global-norm clipping.
#pragma once

#include <torch/types.h>

#include <utility>
#include <vector>

namespace shardtune {

struct AdamWOptions {
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double weight_decay = 0.0;
};

class FlatAdamW {
 public:
  // [begin, end) ranges of master where weight decay applies.
  using Ranges = std::vector<std::pair<int64_t, int64_t>>;

  // master: 1-D float32, updated in place. Weight decay applies inside
  // decay_ranges only (ranges, not a mask: a mask would cost bytes per
  // parameter, on the host with offload).
  FlatAdamW(torch::Tensor master, Ranges decay_ranges, const AdamWOptions& options);

  // One step with gradient grad (same length as master, any float dtype)
  // multiplied by grad_scale (the clipping coefficient).
  void step(const torch::Tensor& grad, double lr, double grad_scale = 1.0);

  // Replaces the state with a checkpoint's: master, moments (same length
  // as master, copied in) and the number of steps taken.
  void load_state(const torch::Tensor& master, const torch::Tensor& exp_avg, const torch::Tensor& exp_avg_sq,
                  int64_t steps);

  int64_t steps() const { return steps_; }
  const torch::Tensor& master() const { return master_; }
  const torch::Tensor& exp_avg() const { return m_; }
  const torch::Tensor& exp_avg_sq() const { return v_; }

 private:
  torch::Tensor master_, m_, v_;
  Ranges decay_;
  AdamWOptions o_;
  int64_t steps_ = 0;
};

// The factor gradients are scaled by so their global norm is at most
// max_norm: min(1, max_norm / (norm + 1e-6)), as torch's clip_grad_norm_;
// 1 when max_norm <= 0 (no clipping).
double clip_coefficient(double norm, double max_norm);

}  // namespace shardtune
