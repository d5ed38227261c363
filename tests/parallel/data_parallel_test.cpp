// Data parallelism against single-process training: k optimizer steps on W
// ranks with micro-batch b end with the parameters of k steps on one process
// with micro-batch W * b over the same samples, for ZeRO stages 0 and 1,
// accumulation 1 and 3, and three models: a Llama-family model, a GPT-2 with
// frozen base weights and LoRA adapters, and a model with a parameter that
// some ranks (and some steps) do not use. The reference is libtorch's own
// AdamW and clip_grad_norm_. Collectives run through the checking wrapper, so
// ranks that issued buckets in different orders would fail.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <tuple>

#include "shardtune/model/transformer.h"
#include "shardtune/optim/schedule.h"
#include "shardtune/parallel/data_parallel.h"
#include "support/mpi_env.h"

namespace shardtune {
namespace {

using shardtune::testing::dist;
namespace F = torch::nn::functional;

constexpr int kSteps = 5;
constexpr int64_t kRowsPerRank = 2;
constexpr int64_t kSeq = 9;
constexpr double kMaxNorm = 0.5;

// A model with a parameter `b` used only for the rows given, and an odd-sized `c`.
struct Toy : torch::nn::Module {
  Toy() {
    a = register_module("a", torch::nn::Linear(8, 8));
    b = register_module("b", torch::nn::Linear(8, 8));
    c = register_parameter("c", torch::randn({7}));
  }
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& rows_using_b) {
    torch::Tensor y = a(x) * (1.0 + c.mean());
    if (rows_using_b.numel() > 0) y = y.index_add(0, rows_using_b, b(x.index_select(0, rows_using_b)));
    return y;
  }
  torch::nn::Linear a{nullptr}, b{nullptr};
  torch::Tensor c;
};

// Llama; GPT-2 with LoRA; a module with an unused parameter; Gemma 2 (norms
// around attention and MLP scaling by 1 + w, GeGLU, soft-caps, windows,
// head_dim of its own); Phi-3 with LoRA on its fused projections and a
// partial rotary embedding.
enum class Kind { kLlama, kGpt2Lora, kToy, kGemma2, kPhi3Lora };

struct Models {
  std::shared_ptr<torch::nn::Module> module;
  std::shared_ptr<CausalLM> lm;
  std::shared_ptr<Toy> toy;
};

Models make(Kind kind, double lora_dropout = 0.0) {
  torch::manual_seed(1);
  Models m;
  if (kind == Kind::kToy) {
    m.toy = std::make_shared<Toy>();
    m.module = m.toy;
    return m;
  }
  const char* type = kind == Kind::kLlama ? "llama" : kind == Kind::kGemma2 ? "gemma2" : kind == Kind::kPhi3Lora ? "phi3" : "gpt2";
  nlohmann::json j = {{"model_type", type}, {"vocab_size", 37}};
  if (kind == Kind::kGemma2) {
    j.update({{"hidden_size", 12}, {"intermediate_size", 20}, {"num_hidden_layers", 2}, {"num_attention_heads", 3},
              {"num_key_value_heads", 1}, {"head_dim", 6}, {"max_position_embeddings", 32}, {"sliding_window", 3},
              {"query_pre_attn_scalar", 5}, {"attn_logit_softcapping", 2.0}, {"final_logit_softcapping", 4.0}});
  } else if (kind == Kind::kPhi3Lora) {
    j.update({{"hidden_size", 12}, {"intermediate_size", 20}, {"num_hidden_layers", 2}, {"num_attention_heads", 3},
              {"num_key_value_heads", 1}, {"max_position_embeddings", 32}, {"partial_rotary_factor", 0.5}});
  } else if (kind == Kind::kLlama) {
    j.update({{"hidden_size", 12}, {"intermediate_size", 20}, {"num_hidden_layers", 2}, {"num_attention_heads", 3},
              {"num_key_value_heads", 1}, {"max_position_embeddings", 32}});
  } else {
    j.update({{"n_embd", 12}, {"n_layer", 2}, {"n_head", 2}, {"n_positions", 32}});
  }
  m.lm = make_causal_lm(model_config_from_json(j, "test"));
  m.lm->init_weights(7);
  if (kind == Kind::kGemma2) {  // norms away from their init, so (1 + w) matters
    torch::NoGradGuard g;
    for (auto& p : m.lm->named_parameters()) {
      if (p.value().dim() == 1) p.value().uniform_(-0.3, 0.3);
    }
  }
  if (kind == Kind::kGpt2Lora || kind == Kind::kPhi3Lora) {
    if (kind == Kind::kGpt2Lora) m.lm->enable_lora({"c_attn", "c_fc"}, 2, 4.0, lora_dropout);
    if (kind == Kind::kPhi3Lora) m.lm->enable_lora({"qkv_proj", "gate_up_proj"}, 2, 4.0, lora_dropout);
    torch::NoGradGuard g;
    auto gen = at::make_generator<at::CPUGeneratorImpl>(3);
    for (auto& p : m.lm->named_parameters()) {
      if (p.key().find("lora_B") != std::string::npos) p.value().copy_(at::normal(0.0, 0.1, p.value().sizes(), gen));
    }
  }
  m.module = m.lm;
  return m;
}

// The loss of `rows` (global row indices) of micro-step (step, micro), divided by `accum`.
torch::Tensor loss_of(const Models& m, Kind kind, int step, int micro, int64_t first_row, int64_t rows,
                      int64_t global_rows, int accum) {
  torch::manual_seed(1000 + step * 16 + micro);
  if (kind == Kind::kToy) {
    torch::Tensor x = torch::randn({global_rows, 8}).narrow(0, first_row, rows);
    // b is used by rank 0's rows on even steps only.
    std::vector<int64_t> use;
    for (int64_t r = first_row; r < first_row + rows; ++r) {
      if (step % 2 == 0 && r < kRowsPerRank) use.push_back(r - first_row);
    }
    torch::Tensor y = m.toy->forward(x, torch::tensor(use, torch::kInt64));
    return y.pow(2).mean() / accum;
  }
  torch::Tensor ids = torch::randint(0, 37, {global_rows, kSeq + 1}).narrow(0, first_row, rows);
  torch::Tensor logits = m.lm->forward(ids.slice(1, 0, kSeq));
  return F::cross_entropy(logits.reshape({-1, 37}), ids.slice(1, 1).reshape({-1})) / accum;
}

LrSchedule schedule() {
  LrSchedule s;
  s.kind = "cosine";
  s.lr = 3e-3;
  s.warmup_steps = 2;
  s.total_steps = kSteps;
  s.min_lr_ratio = 0.1;
  return s;
}

// Single-process training with libtorch's AdamW over all W * b rows.
void train_reference(const Models& m, Kind kind, int accum, int world) {
  std::vector<torch::Tensor> decay, no_decay, all;
  for (const auto& p : m.module->named_parameters()) {
    if (!p.value().requires_grad()) continue;
    const bool nd = p.value().dim() < 2 || p.key().find("embed") != std::string::npos ||
                    p.key().find(".wte.") != std::string::npos || p.key().find(".wpe.") != std::string::npos;
    (nd ? no_decay : decay).push_back(p.value());
    all.push_back(p.value());
  }
  auto opts = torch::optim::AdamWOptions(1.0).betas({0.9, 0.95}).eps(1e-8);
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(decay, std::make_unique<torch::optim::AdamWOptions>(opts.weight_decay(0.1)));
  groups.emplace_back(no_decay, std::make_unique<torch::optim::AdamWOptions>(opts.weight_decay(0.0)));
  torch::optim::AdamW adam(std::move(groups), opts);
  const int64_t rows = kRowsPerRank * world;
  for (int step = 0; step < kSteps; ++step) {
    adam.zero_grad();
    for (int a = 0; a < accum; ++a) loss_of(m, kind, step, a, 0, rows, rows, accum).backward();
    // The engine's documented semantics: a parameter that got no gradient
    // this step has a zero gradient (torch's AdamW would skip it instead).
    for (auto& p : all) {
      if (!p.grad().defined()) p.mutable_grad() = torch::zeros_like(p);
    }
    torch::nn::utils::clip_grad_norm_(all, kMaxNorm);
    for (auto& g : adam.param_groups()) static_cast<torch::optim::AdamWOptions&>(g.options()).lr(lr_at(schedule(), step));
    adam.step();
  }
}

// Returns each micro-step's loss.
std::vector<double> train_data_parallel(const Models& m, Kind kind, int accum, int stage, bool offload,
                                        Communicator& comm, int checkpoint_every = 0) {
  DataParallelOptions o;
  o.zero_stage = stage;
  o.offload_optimizer = offload;
  o.checkpoint_every = checkpoint_every;
  o.first_bucket_mb = 128.0 / (1 << 20);  // 128 B, then 512 B buckets: many buckets for tiny models
  o.bucket_mb = 512.0 / (1 << 20);
  o.adamw.beta2 = 0.95;
  o.adamw.weight_decay = 0.1;
  DataParallel dp(*m.module, comm, o);
  EXPECT_GT(dp.buckets().size(), 1u);
  const int64_t global_rows = kRowsPerRank * comm.size();
  std::vector<double> losses;
  for (int step = 0; step < kSteps; ++step) {
    for (int a = 0; a < accum; ++a) {
      dp.begin_micro_step(a == 0, a == accum - 1);
      torch::Tensor loss = loss_of(m, kind, step, a, comm.rank() * kRowsPerRank, kRowsPerRank, global_rows, accum);
      losses.push_back(loss.item<double>());
      loss.backward();
      dp.end_micro_step();
    }
    dp.step(lr_at(schedule(), step), kMaxNorm);
  }
  dp.gather_parameters();  // stage 3: full parameters back in the model
  return losses;
}

double max_relative_difference(torch::nn::Module& a, torch::nn::Module& b) {
  auto pa = a.named_parameters(), pb = b.named_parameters();
  double diff = 0, scale = 0;
  for (const auto& item : pa) {
    diff = std::max(diff, (item.value() - pb[item.key()]).abs().max().item<double>());
    scale = std::max(scale, pb[item.key()].abs().max().item<double>());
  }
  return diff / scale;
}

using Case = std::tuple<Kind, int, int, bool>;  // model, stage, accumulation, offload

class DataParallelMatchesOneProcess : public ::testing::TestWithParam<Case> {};

TEST_P(DataParallelMatchesOneProcess, AfterFiveSteps) {
  const auto [kind, stage, accum, offload] = GetParam();
  CommOptions co;
  co.timeout = std::chrono::seconds(60);
  auto comm = make_checking_communicator(make_mpi_communicator(co));

  const Models reference = make(kind);
  train_reference(reference, kind, accum, comm->size());
  const Models parallel = make(kind);
  train_data_parallel(parallel, kind, accum, stage, offload, *comm);

  const double rel = max_relative_difference(*parallel.module, *reference.module);
  EXPECT_LE(rel, 1e-5) << "world " << comm->size() << ", stage " << stage << ", accumulation " << accum;
  // It trained: the parameters moved.
  const Models start = make(kind);
  EXPECT_GT(max_relative_difference(*parallel.module, *start.module), 1e-3);
  if (kind == Kind::kGpt2Lora || kind == Kind::kPhi3Lora) {  // frozen base weights stay where they were
    auto p = parallel.module->named_parameters(), s = start.module->named_parameters();
    for (const auto& item : p) {
      if (item.key().find("lora_") == std::string::npos) {
        EXPECT_TRUE(torch::equal(item.value(), s[item.key()])) << item.key();
      }
    }
  }
}

std::string name(const ::testing::TestParamInfo<Case>& info) {
  const char* kinds[] = {"llama", "gpt2_lora", "unused_param", "gemma2", "phi3_lora"};
  return str_cat(kinds[static_cast<int>(std::get<0>(info.param))], "_stage", std::get<1>(info.param), "_accum",
                 std::get<2>(info.param), std::get<3>(info.param) ? "_offload" : "");
}

INSTANTIATE_TEST_SUITE_P(ModelsStagesAccumulation, DataParallelMatchesOneProcess,
                         ::testing::Combine(::testing::Values(Kind::kLlama, Kind::kGpt2Lora, Kind::kToy),
                                            ::testing::Values(0, 1, 2), ::testing::Values(1, 3),
                                            ::testing::Values(false)),
                         name);

INSTANTIATE_TEST_SUITE_P(Stage3, DataParallelMatchesOneProcess,
                         ::testing::Combine(::testing::Values(Kind::kLlama, Kind::kGpt2Lora), ::testing::Values(3),
                                            ::testing::Values(1, 3), ::testing::Values(false)),
                         name);

INSTANTIATE_TEST_SUITE_P(Families, DataParallelMatchesOneProcess,
                         ::testing::Combine(::testing::Values(Kind::kGemma2, Kind::kPhi3Lora), ::testing::Values(0, 3),
                                            ::testing::Values(1), ::testing::Values(false)),
                         name);

INSTANTIATE_TEST_SUITE_P(Offload, DataParallelMatchesOneProcess,
                         ::testing::Combine(::testing::Values(Kind::kLlama), ::testing::Values(0, 2, 3),
                                            ::testing::Values(3), ::testing::Values(true)),
                         name);

// Activation checkpointing: recomputing blocks in backward (all of them, or
// every second one) ends with bitwise the parameters, and gives bitwise the
// losses, of keeping the activations, at stages 0-2; LoRA dropout draws the
// same masks in the recomputation. Stage 3 always recomputes: it matches
// stage 2 keeping activations, dropout included.
using CheckpointCase = std::tuple<Kind, int, int>;  // model, stage, checkpoint every

class CheckpointingMatchesKeepingActivations : public ::testing::TestWithParam<CheckpointCase> {};

TEST_P(CheckpointingMatchesKeepingActivations, AfterFiveSteps) {
  const auto [kind, stage, every] = GetParam();
  CommOptions co;
  co.timeout = std::chrono::seconds(60);
  auto comm = make_checking_communicator(make_mpi_communicator(co));
  const double dropout = kind == Kind::kGpt2Lora ? 0.3 : 0.0;
  const int accum = 2;

  const Models kept = make(kind, dropout);
  const std::vector<double> kept_losses =
      train_data_parallel(kept, kind, accum, stage == 3 ? 2 : stage, false, *comm, 0);
  const Models recomputed = make(kind, dropout);
  const std::vector<double> losses = train_data_parallel(recomputed, kind, accum, stage, false, *comm, every);

  ASSERT_EQ(losses.size(), kept_losses.size());
  auto p = recomputed.module->named_parameters(), k = kept.module->named_parameters();
  if (stage < 3) {
    for (size_t i = 0; i < losses.size(); ++i) EXPECT_EQ(losses[i], kept_losses[i]) << "micro-step " << i;
    for (const auto& item : p) EXPECT_TRUE(torch::equal(item.value(), k[item.key()])) << item.key();
  } else {
    for (size_t i = 0; i < losses.size(); ++i) EXPECT_NEAR(losses[i], kept_losses[i], 1e-6) << "micro-step " << i;
    EXPECT_LE(max_relative_difference(*recomputed.module, *kept.module), 1e-6);
  }
  EXPECT_GT(max_relative_difference(*recomputed.module, *make(kind, dropout).module), 1e-3);  // it trained
}

std::string checkpoint_name(const ::testing::TestParamInfo<CheckpointCase>& info) {
  const char* kinds[] = {"llama", "gpt2_lora_dropout", "unused_param"};
  return str_cat(kinds[static_cast<int>(std::get<0>(info.param))], "_stage", std::get<1>(info.param), "_every",
                 std::get<2>(info.param));
}

INSTANTIATE_TEST_SUITE_P(Stages, CheckpointingMatchesKeepingActivations,
                         ::testing::Combine(::testing::Values(Kind::kLlama, Kind::kGpt2Lora),
                                            ::testing::Values(0, 1, 2), ::testing::Values(1, 2)),
                         checkpoint_name);
INSTANTIATE_TEST_SUITE_P(Stage3, CheckpointingMatchesKeepingActivations,
                         ::testing::Combine(::testing::Values(Kind::kLlama, Kind::kGpt2Lora), ::testing::Values(3),
                                            ::testing::Values(1)),
                         checkpoint_name);

TEST(DataParallel, CheckpointingRefusesWhatItCannotDo) {
  CommOptions co;
  auto comm = make_mpi_communicator(co);
  const Models toy = make(Kind::kToy);
  DataParallelOptions o;
  o.checkpoint_every = 1;
  EXPECT_THROW(DataParallel(*toy.module, *comm, o), InputError);  // no blocks to recompute
  const Models lm = make(Kind::kLlama);
  o.zero_stage = 3;
  o.checkpoint_every = 2;
  EXPECT_THROW(DataParallel(*lm.module, *comm, o), InputError);
}

TEST(DataParallel, ShardsCoverTheFlatBufferAndStateShrinksWithStage) {
  CommOptions co;
  auto comm = make_mpi_communicator(co);
  const Models m0 = make(Kind::kToy), m1 = make(Kind::kToy);
  DataParallelOptions o;
  DataParallel stage0(*m0.module, *comm, o);
  o.zero_stage = 1;
  DataParallel stage1(*m1.module, *comm, o);
  EXPECT_EQ(stage0.num_params(), 8 * 8 * 2 + 8 * 2 + 7);  // 151: not divisible by 2 or 4
  const int64_t padded = (151 + comm->size() - 1) / comm->size() * comm->size();
  EXPECT_EQ(stage0.memory().optimizer, padded * 12);
  EXPECT_EQ(stage1.memory().optimizer, padded / comm->size() * 12);
  EXPECT_EQ(stage1.shard().length, padded / comm->size());
  EXPECT_EQ(stage1.memory().grads, padded * 4);
  const Models m2 = make(Kind::kToy);
  o.zero_stage = 2;
  DataParallel stage2(*m2.module, *comm, o);
  EXPECT_EQ(stage2.memory().grads, padded / comm->size() * 4);
  EXPECT_EQ(stage2.memory().params, padded * 4);
  // Flat order is reverse registration order (a module's own parameters come first).
  EXPECT_EQ(stage0.param_names().front(), "b.bias");
  EXPECT_EQ(stage0.param_names().back(), "c");
  EXPECT_THROW(([&] {
                 DataParallelOptions bad;
                 bad.zero_stage = 3;  // the toy is no CausalLM: it has no blocks
                 DataParallel x(*make(Kind::kToy).module, *comm, bad);
               }()),
               InputError);
}

}  // namespace
}  // namespace shardtune

namespace shardtune {
namespace {

TEST(DataParallel, ModelStateBytesMatchTheAnalyticExpectation) {
  CommOptions co;
  auto comm = make_mpi_communicator(co);
  const double w = comm->size();
  for (int stage : {0, 1, 2, 3}) {
    const Models m = make(Kind::kLlama);
    m.lm->to(torch::kBFloat16);
    DataParallelOptions o;
    o.zero_stage = stage;
    DataParallel dp(*m.module, *comm, o);
    const double per_param = static_cast<double>(dp.memory().total()) / static_cast<double>(dp.num_params());
    // bf16 parameters and gradients, fp32 master weights and two moments.
    const double expect = stage == 0 ? 16.0 : stage == 1 ? 4.0 + 12.0 / w : stage == 2 ? 2.0 + 14.0 / w : 16.0 / w;
    EXPECT_NEAR(per_param / expect, 1.0, 0.05) << "stage " << stage << ": " << per_param << " bytes/param";
  }
}

}  // namespace
}  // namespace shardtune
