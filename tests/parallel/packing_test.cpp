// Packing without leaks: the loss and gradients of sft windows packed with
// document masking equal those of their examples run one by one, each alone
// in a plain forward and backward, on any number of ranks (each rank takes
// every world-th window through the data-parallel engine, with activation
// checkpointing, LoRA where the model has it). The same windows without the
// mask differ from the one-by-one run, so the comparison can fail.
#include <gtest/gtest.h>
#include <torch/torch.h>
#include <unistd.h>

#include <filesystem>
#include <random>

#include "shardtune/data/dataset.h"
#include "shardtune/data/token_shard.h"
#include "shardtune/data/torch_batch.h"
#include "shardtune/model/transformer.h"
#include "shardtune/parallel/data_parallel.h"
#include "support/mpi_env.h"
#include "train_common.h"  // the trainer's loss_sum

namespace shardtune {
namespace {

using shardtune::testing::comm;
namespace fs = std::filesystem;

constexpr int64_t kVocab = 37;
constexpr int64_t kSeq = 15;  // windows of 16 tokens

struct Example {
  std::vector<int32_t> ids;
  std::vector<uint8_t> mask;
};

// Examples of 2-9 tokens; the first token of each is never a target, the
// others are with probability 0.7.
std::vector<Example> make_examples() {
  std::mt19937 gen(5);
  std::vector<Example> out;
  for (int e = 0; e < 14; ++e) {
    Example x;
    const int len = 2 + static_cast<int>(gen() % 8);
    for (int i = 0; i < len; ++i) {
      x.ids.push_back(1 + static_cast<int32_t>(gen() % (kVocab - 1)));
      x.mask.push_back(i > 0 && gen() % 10 < 7);
    }
    out.push_back(x);
  }
  return out;
}

// The examples as one shard (pad id 0) in a folder of this process's own.
std::vector<std::string> write_shard(const std::vector<Example>& examples) {
  const std::string dir = (fs::temp_directory_path() / ("shardtune-packing-" + std::to_string(::getpid()))).string();
  fs::remove_all(dir);
  fs::create_directories(dir);
  TokenShardWriter w(dir + "/p-train-00000.h5", ShardAttrs{kVocab, -1, 1, 0, "test:v1", "", ""}, true);
  for (const Example& x : examples) w.add(x.ids.data(), x.mask.data(), x.ids.size());
  w.finish();
  return {dir + "/p-train-00000.h5"};
}

enum class Kind { kLlamaLora, kGemma2, kGpt2Lora };

std::shared_ptr<CausalLM> make_model(Kind kind) {
  nlohmann::json j = {{"vocab_size", kVocab}};
  if (kind == Kind::kGpt2Lora) {
    j.update({{"model_type", "gpt2"}, {"n_embd", 12}, {"n_layer", 2}, {"n_head", 2}, {"n_positions", 32}});
  } else {
    j.update({{"model_type", kind == Kind::kGemma2 ? "gemma2" : "llama"}, {"hidden_size", 12},
              {"intermediate_size", 20}, {"num_hidden_layers", 2}, {"num_attention_heads", 3},
              {"num_key_value_heads", 1}, {"max_position_embeddings", 32}});
  }
  if (kind == Kind::kGemma2) {  // a window shorter than the examples, and soft-caps
    j.update({{"head_dim", 6}, {"sliding_window", 4}, {"query_pre_attn_scalar", 5},
              {"attn_logit_softcapping", 2.0}, {"final_logit_softcapping", 4.0}});
  }
  torch::manual_seed(1);
  auto m = make_causal_lm(model_config_from_json(j, "test"));
  m->init_weights(7);
  torch::NoGradGuard g;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(3);
  // Weights wide enough that attention is far from uniform.
  for (auto& p : m->named_parameters()) {
    if (p.value().dim() == 2) p.value().copy_(at::normal(0.0, 0.3, p.value().sizes(), gen));
  }
  if (kind == Kind::kLlamaLora) m->enable_lora({"q_proj", "k_proj", "v_proj", "down_proj"}, 2, 4.0, 0.0);
  if (kind == Kind::kGpt2Lora) m->enable_lora({"c_attn", "c_fc"}, 2, 4.0, 0.0);
  for (auto& p : m->named_parameters()) {
    if (p.key().find("lora_B") != std::string::npos) p.value().copy_(at::normal(0.0, 0.3, p.value().sizes(), gen));
  }
  return m;
}

struct Result {
  double loss = 0;  // the mean over every target
  std::map<std::string, torch::Tensor> grads;
};

// Every example alone: one row of its own length, no padding, no mask.
Result one_by_one(Kind kind, const std::vector<Example>& examples) {
  auto model = make_model(kind);
  model->train();
  int64_t count = 0;
  for (const Example& x : examples) {
    for (size_t t = 1; t < x.ids.size(); ++t) count += x.mask[t];
  }
  double loss = 0;
  for (const Example& x : examples) {
    SampleRows r;
    r.rows = 1;
    r.seq_len = static_cast<int64_t>(x.ids.size()) - 1;
    for (size_t t = 0; t + 1 < x.ids.size(); ++t) {
      r.inputs.push_back(x.ids[t]);
      r.targets.push_back(x.mask[t + 1] ? x.ids[t + 1] : kIgnoreIndex);
    }
    torch::Tensor l = loss_sum(*model, to_torch(r)) / static_cast<double>(count);
    l.backward();
    loss += l.item<double>();
  }
  Result out{loss, {}};
  for (auto& p : model->named_parameters()) {
    if (p.value().requires_grad()) out.grads[p.key()] = p.value().grad().clone();
  }
  return out;
}

// The packed windows, this rank's share through the engine at stage 0 (whose
// gradients are the average over ranks), every block recomputed in backward.
Result packed(Kind kind, const std::vector<std::string>& shard, bool document_mask) {
  TokenDataset data(shard, DatasetOptions{kSeq, PackMode::kSft, 1, document_mask});
  const int world = comm().size(), rank = comm().rank();
  EXPECT_GE(data.num_samples(), 2 * world) << "too few windows to split";
  SampleRows rows;
  for (int64_t i = rank; i < data.num_samples(); i += world) data.read_sample(i, rows);
  torch::Tensor count = torch::tensor({rows.target_tokens()}, torch::kInt64);
  comm().all_reduce(count, ReduceOp::kSum)->wait();

  auto model = make_model(kind);
  model->train();
  DataParallelOptions o;
  o.checkpoint_every = 1;
  DataParallel engine(*model, comm(), o);
  engine.begin_micro_step(true, true);
  torch::Tensor local = loss_sum(*model, to_torch(rows)) / static_cast<double>(count.item<int64_t>());
  (local * static_cast<double>(world)).backward();
  engine.end_micro_step();
  torch::Tensor loss = local.detach().reshape({1}).clone();
  comm().all_reduce(loss, ReduceOp::kSum)->wait();
  Result out{loss.item<double>(), {}};
  for (auto& p : model->named_parameters()) {
    if (p.value().requires_grad()) out.grads[p.key()] = p.value().grad().clone();
  }
  return out;
}

double max_grad_diff(const Result& a, const Result& b) {
  double worst = 0;
  EXPECT_EQ(a.grads.size(), b.grads.size());
  for (const auto& [name, g] : a.grads) {
    worst = std::max(worst, (g - b.grads.at(name)).abs().max().item<double>());
  }
  return worst;
}

class PackedEqualsOneByOne : public ::testing::TestWithParam<Kind> {};

TEST_P(PackedEqualsOneByOne, LossAndGradients) {
  const auto examples = make_examples();
  const auto shard = write_shard(examples);
  const Result ref = one_by_one(GetParam(), examples);
  const Result got = packed(GetParam(), shard, true);
  EXPECT_NEAR(got.loss, ref.loss, 1e-5 * std::max(1.0, std::abs(ref.loss)));
  double scale = 0;
  for (const auto& [name, g] : ref.grads) scale = std::max(scale, g.abs().max().item<double>());
  ASSERT_GT(scale, 1e-3) << "gradients too small to compare";
  EXPECT_LE(max_grad_diff(got, ref), 1e-5) << "largest gradient " << scale;

  // Without the mask the windows' examples see each other: not the same.
  const Result leaky = packed(GetParam(), shard, false);
  EXPECT_GT(max_grad_diff(leaky, ref), 1e-3);
  if (comm().rank() == 0) {
    std::printf("loss %.8f (one by one %.8f); largest gradient %.3g, its difference %.3g masked, %.3g unmasked\n",
                got.loss, ref.loss, scale, max_grad_diff(got, ref), max_grad_diff(leaky, ref));
  }
  fs::remove_all(fs::path(shard[0]).parent_path());
}

INSTANTIATE_TEST_SUITE_P(Models, PackedEqualsOneByOne,
                         ::testing::Values(Kind::kLlamaLora, Kind::kGemma2, Kind::kGpt2Lora));

}  // namespace
}  // namespace shardtune
