#include "shardtune/optim/schedule.h"

#include <algorithm>
#include <cmath>

#include "shardtune/core/error.h"

namespace shardtune {

double lr_at(const LrSchedule& s, int64_t step) {
  if (s.total_steps <= 0 || s.warmup_steps < 0 || s.warmup_steps > s.total_steps) {
    throw InputError(str_cat("lr schedule: need 0 <= warmup_steps (", s.warmup_steps, ") <= total_steps (",
                             s.total_steps, ")"));
  }
  if (s.kind != "constant" && s.kind != "linear" && s.kind != "cosine" && s.kind != "wsd") {
    throw InputError(str_cat("lr schedule '", s.kind, "' is not one of constant, linear, cosine, wsd"));
  }
  if (step < s.warmup_steps) return s.lr * static_cast<double>(step + 1) / static_cast<double>(s.warmup_steps);
  const double min_lr = s.lr * s.min_lr_ratio;
  const double span = static_cast<double>(std::max<int64_t>(1, s.total_steps - s.warmup_steps));
  const double progress = std::min(1.0, static_cast<double>(step - s.warmup_steps) / span);
  if (s.kind == "constant") return s.lr;
  if (s.kind == "linear") return s.lr + (min_lr - s.lr) * progress;
  if (s.kind == "cosine") return min_lr + 0.5 * (s.lr - min_lr) * (1.0 + std::cos(M_PI * progress));
  if (s.kind == "wsd") {
    const int64_t decay_steps = std::max<int64_t>(1, static_cast<int64_t>(std::llround(s.decay_fraction * s.total_steps)));
    const int64_t decay_start = s.total_steps - decay_steps;
    if (step < decay_start) return s.lr;
    const double p = std::min(1.0, static_cast<double>(step - decay_start) / static_cast<double>(decay_steps));
    return s.lr + (min_lr - s.lr) * p;
  }
  throw InputError(str_cat("lr schedule '", s.kind, "' is not one of constant, linear, cosine, wsd"));
}

}  // namespace shardtune
