// Learning-rate schedules. torch-free.
#pragma once

#include <cstdint>
#include <string>

namespace shardtune {

struct LrSchedule {
  std::string kind = "cosine";  // constant, linear, cosine, wsd (warm-up, stable, decay)
  double lr = 3e-4;             // peak
  int64_t warmup_steps = 0;     // linear from lr / warmup_steps at step 0 to lr
  int64_t total_steps = 1;
  double min_lr_ratio = 0.0;    // linear, cosine, wsd end at lr * min_lr_ratio
  double decay_fraction = 0.2;  // wsd: the last fraction of total_steps decays linearly
};

// The learning rate of optimizer step `step` (0-based). Throws InputError for
// an unknown kind or inconsistent numbers.
double lr_at(const LrSchedule& s, int64_t step);

}  // namespace shardtune
