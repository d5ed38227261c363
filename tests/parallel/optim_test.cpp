// Buckets, LR schedules, clipping and AdamW against hand-computed values.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>

#include "shardtune/core/error.h"
#include "shardtune/optim/adamw.h"
#include "shardtune/optim/schedule.h"
#include "shardtune/parallel/buckets.h"

namespace shardtune {
namespace {

TEST(Buckets, FirstBucketSmallThenCappedAndParamsNeverSplit) {
  // 4-byte elements; first cap 40 B (10 elements), then 80 B (20 elements).
  const auto b = assign_buckets({4, 4, 4, 30, 5, 5, 5, 5, 1}, 4, 40, 80);
  ASSERT_EQ(b.size(), 4u);
  EXPECT_EQ(b[0].params, (std::vector<size_t>{0, 1, 2}));  // 12 >= 10
  EXPECT_EQ(b[1].params, (std::vector<size_t>{3}));        // one large parameter alone
  EXPECT_EQ(b[2].params, (std::vector<size_t>{4, 5, 6, 7}));
  EXPECT_EQ(b[3].params, (std::vector<size_t>{8}));
  int64_t next = 0;
  for (const auto& x : b) {
    EXPECT_EQ(x.offset, next);
    next += x.length;
  }
  EXPECT_EQ(next, 63);
  EXPECT_TRUE(assign_buckets({}, 4, 40, 80).empty());
}

TEST(Schedule, EachKindMatchesHandComputedValues) {
  LrSchedule s;
  s.lr = 1.0;
  s.warmup_steps = 4;
  s.total_steps = 14;
  s.min_lr_ratio = 0.1;
  s.kind = "cosine";
  EXPECT_DOUBLE_EQ(lr_at(s, 0), 0.25);  // warm-up: (step + 1) / 4
  EXPECT_DOUBLE_EQ(lr_at(s, 3), 1.0);
  EXPECT_DOUBLE_EQ(lr_at(s, 4), 1.0);                                     // progress 0
  EXPECT_NEAR(lr_at(s, 9), 0.1 + 0.45 * (1 + std::cos(M_PI * 0.5)), 1e-12);  // progress 0.5 -> 0.55
  EXPECT_NEAR(lr_at(s, 14), 0.1, 1e-12);
  EXPECT_NEAR(lr_at(s, 99), 0.1, 1e-12);  // stays at the floor
  s.kind = "linear";
  EXPECT_NEAR(lr_at(s, 9), 1.0 - 0.9 * 0.5, 1e-12);
  s.kind = "constant";
  EXPECT_DOUBLE_EQ(lr_at(s, 9), 1.0);
  EXPECT_DOUBLE_EQ(lr_at(s, 1), 0.5);
  s.kind = "wsd";
  s.decay_fraction = 0.5;  // decay over the last 7 of 14 steps
  EXPECT_DOUBLE_EQ(lr_at(s, 6), 1.0);
  EXPECT_NEAR(lr_at(s, 7), 1.0, 1e-12);
  EXPECT_NEAR(lr_at(s, 10), 1.0 - 0.9 * 3.0 / 7.0, 1e-12);
  EXPECT_NEAR(lr_at(s, 14), 0.1, 1e-12);
  s.kind = "exponential";
  EXPECT_THROW(lr_at(s, 0), InputError);
  s.kind = "cosine";
  s.warmup_steps = 20;
  EXPECT_THROW(lr_at(s, 0), InputError);
}

TEST(Clip, CoefficientAsTorchComputesIt) {
  EXPECT_DOUBLE_EQ(clip_coefficient(0.5, 1.0), 1.0);
  EXPECT_NEAR(clip_coefficient(4.0, 1.0), 1.0 / (4.0 + 1e-6), 1e-15);
  EXPECT_DOUBLE_EQ(clip_coefficient(100.0, 0.0), 1.0);
  // Same as torch::nn::utils::clip_grad_norm_ on a gradient of norm 5.
  torch::Tensor p = torch::zeros({2}, torch::requires_grad());
  p.mutable_grad() = torch::tensor({3.0f, 4.0f});
  torch::nn::utils::clip_grad_norm_(std::vector<torch::Tensor>{p}, 1.0);
  EXPECT_NEAR(p.grad()[0].item<double>(), 3.0 * clip_coefficient(5.0, 1.0), 1e-7);
}

TEST(FlatAdamW, FirstStepsMatchTheFormula) {
  torch::Tensor master = torch::tensor({1.0f, -2.0f});
  AdamWOptions o;
  o.weight_decay = 0.1;
  FlatAdamW opt(master, {{0, 1}}, o);  // decay on the first element only
  opt.step(torch::tensor({0.5f, -0.25f}), 0.01);
  // Step 1: m_hat = g, v_hat = g^2, so the update is lr * sign(g) (eps aside),
  // after decay p *= 1 - lr * wd on the first element only.
  EXPECT_NEAR(opt.master()[0].item<double>(), 1.0 * (1 - 0.001) - 0.01 * 0.5 / (0.5 + 1e-8), 1e-6);
  EXPECT_NEAR(opt.master()[1].item<double>(), -2.0 + 0.01, 1e-6);
  // Step 2 by hand for the second element (no decay).
  const double g1 = -0.25, g2 = 0.75, b1 = 0.9, b2 = 0.95;
  const double m = b1 * (1 - b1) * g1 + (1 - b1) * g2;
  const double v = b2 * (1 - b2) * g1 * g1 + (1 - b2) * g2 * g2;
  const double want = -2.0 + 0.01 - 0.01 * (m / (1 - b1 * b1)) / (std::sqrt(v / (1 - b2 * b2)) + 1e-8);
  opt.step(torch::tensor({0.0f, 0.75f}), 0.01);
  EXPECT_NEAR(opt.master()[1].item<double>(), want, 1e-6);
}

}  // namespace
}  // namespace shardtune

#include "shardtune/core/strings.h"
#include "shardtune/parallel/data_parallel.h"

namespace shardtune {
namespace {

TEST(MemoryAccounting, PeakHostMemoryIsMeasuredAndGrows) {
  const int64_t before = peak_host_memory_bytes();
  EXPECT_GT(before, 0);
  torch::Tensor big = torch::ones({64 << 20}, torch::kUInt8);  // 64 MiB touched
  EXPECT_GE(peak_host_memory_bytes(), (64 << 20));
  EXPECT_GT(big.sum().item<int64_t>(), 0);
  EXPECT_EQ(peak_device_memory_bytes(torch::kCPU), 0);
}

}  // namespace
}  // namespace shardtune
