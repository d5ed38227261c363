// Model module tests that need no reference library: safetensors files and
// their bad cases, HF folders (round trip, sharding, every bad case), LoRA,
// the KV cache, attention paths, parameter and FLOP counts.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>

#include "shardtune/core/error.h"
#include "support/test_util.h"
#include "shardtune/model/generate.h"
#include "shardtune/model/hf_checkpoint.h"
#include "shardtune/model/loss.h"
#include "shardtune/model/safetensors.h"

namespace shardtune {
namespace {
namespace fs = std::filesystem;
namespace F = torch::nn::functional;

std::string temp_dir(const std::string& name) { return testing::temp_dir("shardtune_model_test", name); }
using testing::input_error;

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary) << bytes;
}

// A raw safetensors file: header JSON and data bytes.
std::string raw_file(const std::string& header, size_t data_bytes, uint64_t claimed = 0) {
  uint64_t len = claimed ? claimed : header.size();
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[static_cast<size_t>(i)] = static_cast<char>((len >> (8 * i)) & 0xff);
  return out + header + std::string(data_bytes, '\0');
}

ModelConfig tiny(const std::string& type) {
  nlohmann::json j = {{"model_type", type}, {"vocab_size", 61}};
  if (type == "gpt2") {
    j.update({{"n_embd", 16}, {"n_layer", 2}, {"n_head", 2}, {"n_positions", 32}});
  } else {
    j.update({{"hidden_size", 16}, {"intermediate_size", 24}, {"num_hidden_layers", 2},
              {"num_attention_heads", 4}, {"num_key_value_heads", 2}, {"max_position_embeddings", 32}});
  }
  return model_config_from_json(j, "tiny");
}

std::shared_ptr<CausalLM> tiny_model(const std::string& type, uint64_t seed = 1) {
  auto m = make_causal_lm(tiny(type));
  m->init_weights(seed);
  m->eval();
  return m;
}

// ---------------------------------------------------------------- safetensors

TEST(Safetensors, RoundTripsEveryDtypeAndMetadata) {
  const std::string path = temp_dir("st") + "/a.safetensors";
  std::vector<std::pair<std::string, torch::Tensor>> in = {
      {"f32", torch::randn({3, 4})},
      {"bf16", torch::randn({5}).to(torch::kBFloat16)},
      {"f16", torch::randn({2, 2}).to(torch::kFloat16)},
      {"i64", torch::arange(7)},
      {"empty", torch::zeros({0, 3})},
  };
  save_safetensors(path, in, {{"format", "pt"}, {"note", "x"}});
  SafetensorsFile f(path);
  EXPECT_EQ(f.metadata().at("note"), "x");
  ASSERT_EQ(f.entries().size(), in.size());
  for (const auto& [name, t] : in) {
    torch::Tensor back = f.tensor(name);
    EXPECT_EQ(back.scalar_type(), t.scalar_type()) << name;
    EXPECT_TRUE(torch::equal(back, t)) << name;
  }
  // Writing to a loaded tensor never changes the file.
  f.tensor("f32").fill_(7);
  EXPECT_TRUE(torch::equal(SafetensorsFile(path).tensor("f32"), in[0].second));
}

TEST(Safetensors, BadFilesNameThePathAndTheProblem) {
  const std::string d = temp_dir("bad");
  const std::string p = d + "/x.safetensors";
  const std::string good = R"({"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}})";
  struct Case {
    std::string bytes, expect;
  };
  const std::vector<Case> cases = {
      {"abc", "too short for the 8-byte header length"},
      {raw_file(good, 16, 100000), "the header says it is 100000 bytes but only"},
      {raw_file("{not json", 0), "the header is not valid JSON"},
      {raw_file("[1,2]", 0), "the header is not a JSON object"},
      {raw_file(R"({"w":{"dtype":"Q8","shape":[1],"data_offsets":[0,1]}})", 1), "tensor 'w': dtype Q8 is not supported"},
      {raw_file(good, 8), "tensor 'w': data_offsets [0, 16] lie outside the 8 data bytes"},
      {raw_file(R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,16]}})", 16),
       "tensor 'w': holds 16 bytes but shape [3] of F32 needs 12"},
      {raw_file(R"({"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", 4), "has a dimension that is not a size"},
      // 2^32 x 2^32 x 4 bytes wraps to 0 in 64 bits: refused, not read.
      {raw_file(R"({"w":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,0]}})", 0),
       "tensor 'w': shape [4294967296,4294967296] is larger than any file can hold"},
      {raw_file(R"({"w":{"dtype":"F32","shape":[0,9223372036854775808],"data_offsets":[0,0]}})", 0),
       "has a dimension that is not a size"},
      {raw_file(R"({"w":{"shape":[1],"data_offsets":[0,4]}})", 4), "tensor 'w': dtype is missing or not a string"},
      {raw_file(R"({"__metadata__":{"k":1}})", 0), "__metadata__.k is not a string"},
      {raw_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", 12),
       "tensors 'a' and 'b' overlap"},
  };
  for (const auto& c : cases) {
    write_bytes(p, c.bytes);
    const std::string e = input_error([&] { SafetensorsFile f(p); });
    EXPECT_NE(e.find(p), std::string::npos) << e;
    EXPECT_NE(e.find(c.expect), std::string::npos) << "got: " << e << "\nwant: " << c.expect;
  }
  EXPECT_NE(input_error([&] { SafetensorsFile f(d + "/missing.safetensors"); }).find("cannot open"),
            std::string::npos);
  // A truncated copy of a good file.
  save_safetensors(p, {{"w", torch::ones({64})}});
  const auto size = fs::file_size(p);
  fs::resize_file(p, size - 10);
  EXPECT_NE(input_error([&] { SafetensorsFile f(p); }).find("lie outside"), std::string::npos);
}

// ---------------------------------------------------------------- HF folders

class ModelFamilies : public ::testing::TestWithParam<std::string> {};

TEST_P(ModelFamilies, ExportThenImportIsBitIdentical) {
  auto a = tiny_model(GetParam());
  for (int64_t shard_bytes : {int64_t{1} << 30, int64_t{3000}}) {
    const std::string dir = temp_dir("export_" + GetParam()) + "/out";
    HfExportOptions o;
    o.max_shard_bytes = shard_bytes;
    save_hf_model(*a, dir, o);
    EXPECT_EQ(fs::exists(dir + "/model.safetensors.index.json"), shard_bytes < 10000);
    auto b = load_hf_model(dir);
    auto pa = a->named_parameters(), pb = b->named_parameters();
    ASSERT_EQ(pa.size(), pb.size());
    for (const auto& item : pa) {
      EXPECT_TRUE(torch::equal(item.value(), pb[item.key()])) << item.key();
    }
  }
}

TEST_P(ModelFamilies, SdpaAndReferenceAttentionAgree) {
  auto m = tiny_model(GetParam());
  torch::NoGradGuard g;
  torch::Tensor ids = torch::randint(0, 61, {2, 13});
  torch::Tensor a = m->forward(ids);
  m->set_attention(AttentionImpl::kReference);
  EXPECT_LT((m->forward(ids) - a).abs().max().item<double>(), 1e-5);
}

TEST_P(ModelFamilies, KvCacheGivesTheSameLogitsAndTokens) {
  auto m = tiny_model(GetParam());
  torch::NoGradGuard g;
  torch::Tensor ids = torch::randint(0, 61, {1, 12});
  torch::Tensor full = m->forward(ids);
  KVCache cache;
  torch::Tensor first = m->forward(ids.slice(1, 0, 7), &cache);
  torch::Tensor rest = m->forward(ids.slice(1, 7, 12), &cache);
  EXPECT_EQ(cache.length(), 12);
  EXPECT_LT((torch::cat({first, rest}, 1) - full).abs().max().item<double>(), 1e-5);

  SamplingOptions o;
  o.max_new_tokens = 10;
  const std::vector<int64_t> prompt{3, 14, 15, 9};
  const auto cached = generate(*m, prompt, o);
  o.use_cache = false;
  EXPECT_EQ(cached, generate(*m, prompt, o));
  EXPECT_EQ(cached.size(), prompt.size() + 10);
}

TEST_P(ModelFamilies, LoraMergedEqualsAdapterAndOnlyAdaptersTrain) {
  auto m = tiny_model(GetParam());
  const std::vector<std::string> targets =
      GetParam() == "gpt2" ? std::vector<std::string>{"c_attn", "c_proj"}
                           : std::vector<std::string>{"q_proj", "v_proj", "down_proj"};
  m->enable_lora(targets, 4, 8.0, 0.0);
  int64_t trainable = 0;
  for (const auto& p : m->named_parameters()) {
    const bool adapter = p.key().find(".lora_") != std::string::npos;
    EXPECT_EQ(p.value().requires_grad(), adapter) << p.key();
    trainable += p.value().requires_grad();
  }
  EXPECT_GT(trainable, 0);
  torch::NoGradGuard g;
  for (auto& p : m->named_parameters()) {
    if (p.key().find(".lora_B") != std::string::npos) p.value().normal_(0, 0.05);
  }
  torch::Tensor ids = torch::randint(0, 61, {2, 9});
  torch::Tensor with_adapter = m->forward(ids);
  m->merge_lora();
  EXPECT_FALSE(m->has_lora());
  EXPECT_LT((m->forward(ids) - with_adapter).abs().max().item<double>(), 1e-5);
  EXPECT_NE(input_error([&] { tiny_model(GetParam())->enable_lora({"nonexistent_proj"}, 4, 8, 0); })
                .find("LoRA target 'nonexistent_proj' names no layer"),
            std::string::npos);
}


// ---------------------------------------------------------------- loss

// torch's own: logits, then cross_entropy summed over rows not ignored.
torch::Tensor reference_loss(const torch::Tensor& logits, const torch::Tensor& labels) {
  return F::cross_entropy(logits, labels, F::CrossEntropyFuncOptions().ignore_index(-100).reduction(torch::kSum));
}

double max_diff(const torch::Tensor& a, const torch::Tensor& b) { return (a - b).abs().max().item<double>(); }

TEST(FusedLoss, MatchesTorchCrossEntropyOfTheLogitsAndItsGradients) {
  torch::manual_seed(3);
  struct Case {
    int64_t n, vocab, dim;
    double scale;  // of the weights: 30 gives logits in the hundreds
    int ignore_every;  // 0: none ignored; 1: all ignored
  };
  // 300 x 1000 spans two softmax slices; 1 x 61 and 0 rows are the edges.
  for (const Case& c : {Case{37, 61, 16, 0.3, 3}, Case{300, 1000, 24, 0.3, 4}, Case{300, 1000, 24, 30.0, 0},
                        Case{1, 61, 16, 0.3, 0}, Case{12, 61, 16, 0.3, 1}, Case{0, 61, 16, 0.3, 0}}) {
    SCOPED_TRACE(::testing::Message() << "n " << c.n << " vocab " << c.vocab << " scale " << c.scale
                                      << " ignore_every " << c.ignore_every);
    const torch::Tensor h0 = torch::randn({c.n, c.dim});
    const torch::Tensor w0 = torch::randn({c.vocab, c.dim}) * c.scale;
    torch::Tensor labels = torch::randint(0, c.vocab, {c.n});
    if (c.ignore_every > 0 && c.n > 0) labels.index_put_({torch::arange(0, c.n, c.ignore_every)}, -100);
    torch::Tensor h1 = h0.clone().requires_grad_(true), w1 = w0.clone().requires_grad_(true);
    torch::Tensor h2 = h0.clone().requires_grad_(true), w2 = w0.clone().requires_grad_(true);
    const torch::Tensor want = reference_loss(F::linear(h1, w1), labels);
    want.backward();
    const torch::Tensor got = projected_cross_entropy_sum(h2, w2, labels, -100);
    got.backward();
    EXPECT_EQ(got.dim(), 0);
    EXPECT_NEAR(got.item<double>(), want.item<double>(), 1e-5 * (1.0 + std::abs(want.item<double>())));
    if (c.n == 0) continue;
    const double grad_scale = 1.0 + w1.grad().abs().max().item<double>();
    EXPECT_LT(max_diff(h2.grad(), h1.grad()), 2e-5 * grad_scale);
    EXPECT_LT(max_diff(w2.grad(), w1.grad()), 2e-5 * grad_scale);
    if (c.ignore_every == 1) {
      EXPECT_EQ(got.item<double>(), 0.0);
      EXPECT_EQ(w2.grad().abs().max().item<double>(), 0.0);
    }
  }
}

TEST(FusedLoss, GivesGradientsOnlyWhereRequiredAndBackwardRunsOnce) {
  torch::manual_seed(4);
  const torch::Tensor labels = torch::randint(0, 61, {9});
  torch::Tensor frozen_w = torch::randn({61, 16});
  torch::Tensor h = torch::randn({9, 16}).requires_grad_(true);
  projected_cross_entropy_sum(h, frozen_w, labels, -100).backward();
  EXPECT_TRUE(h.grad().defined());
  EXPECT_FALSE(frozen_w.grad().defined());

  torch::Tensor w = torch::randn({61, 16}).requires_grad_(true);
  torch::Tensor frozen_h = torch::randn({9, 16});
  torch::Tensor loss = projected_cross_entropy_sum(frozen_h, w, labels, -100);
  loss.backward({}, /*retain_graph=*/true);
  EXPECT_TRUE(w.grad().defined());
  EXPECT_FALSE(frozen_h.grad().defined());
  EXPECT_THROW(loss.backward(), std::exception);
  // Without grad, the loss alone.
  torch::NoGradGuard no_grad;
  EXPECT_NEAR(projected_cross_entropy_sum(frozen_h, w, labels, -100).item<double>(),
              reference_loss(F::linear(frozen_h, w), labels).item<double>(), 1e-4);
}

// The model's loss equals torch's cross_entropy of its logits, with the same
// gradient in every parameter: tied (GPT-2) and untied (Llama) output
// weights, and LoRA on lm_head (no fusion).
TEST_P(ModelFamilies, CrossEntropySumEqualsTorchOnTheLogits) {
  for (const bool lora_head : {false, true}) {
    SCOPED_TRACE(lora_head ? "LoRA on lm_head" : "plain head");
    auto a = tiny_model(GetParam(), 5), b = tiny_model(GetParam(), 5);
    a->train();
    b->train();
    if (lora_head) {
      if (GetParam() == "gpt2") continue;  // tied: GPT-2 has no lm_head Linear
      for (auto* m : {a.get(), b.get()}) {
        m->enable_lora({"lm_head"}, 4, 8.0, 0.0);
        torch::NoGradGuard g;
        for (auto& p : m->named_parameters()) {
          if (p.key().find(".lora_B") != std::string::npos) p.value().fill_(0.01);
        }
      }
      torch::NoGradGuard g;
      auto from = a->named_parameters();
      for (auto& p : b->named_parameters()) p.value().copy_(from[p.key()]);  // the same adapter A
      EXPECT_FALSE(a->output_weight().defined());
    } else {
      EXPECT_TRUE(a->output_weight().defined());
    }
    torch::Tensor ids = torch::randint(0, 61, {3, 10});
    torch::Tensor labels = torch::randint(0, 61, {30});
    labels.index_put_({torch::arange(0, 30, 4)}, -100);
    torch::Tensor ha = a->hidden_states(ids);
    const torch::Tensor want = reference_loss(a->project(ha).reshape({-1, 61}), labels);
    want.backward();
    torch::Tensor hb = b->hidden_states(ids);
    const torch::Tensor got = cross_entropy_sum(*b, hb.reshape({-1, hb.size(-1)}), labels, -100);
    got.backward();
    EXPECT_NEAR(got.item<double>(), want.item<double>(), 1e-5 * want.item<double>());
    auto pa = a->named_parameters(), pb = b->named_parameters();
    for (const auto& p : pa) {
      if (!p.value().requires_grad()) continue;
      SCOPED_TRACE(p.key());
      ASSERT_TRUE(pb[p.key()].grad().defined());
      EXPECT_LT(max_diff(pb[p.key()].grad(), p.value().grad()), 1e-5);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Families, ModelFamilies, ::testing::Values("gpt2", "llama"));

TEST(HfFolder, BadFoldersNameTheFileTensorAndShapes) {
  auto m = tiny_model("llama");
  const std::string dir = temp_dir("badfolder") + "/m";
  save_hf_model(*m, dir);
  const std::string weights = dir + "/model.safetensors";
  auto tensors = hf_state_dict(*m);

  // A tensor of the wrong shape.
  auto wrong = tensors;
  wrong[1].second = torch::zeros({3, 3});
  save_safetensors(weights, wrong);
  std::string e = input_error([&] { load_hf_model(dir); });
  EXPECT_NE(e.find(str_cat(weights, ": tensor '", tensors[1].first, "' has shape [3, 3], config.json implies [")),
            std::string::npos) << e;

  // A missing tensor.
  auto missing = tensors;
  missing.erase(missing.begin() + 2);
  save_safetensors(weights, missing);
  e = input_error([&] { load_hf_model(dir); });
  EXPECT_NE(e.find(str_cat("tensor '", tensors[2].first, "' is missing")), std::string::npos) << e;

  // An unexpected tensor.
  auto extra = tensors;
  extra.emplace_back("model.layers.9.mlp.up_proj.weight", torch::zeros({2}));
  save_safetensors(weights, extra);
  e = input_error([&] { load_hf_model(dir); });
  EXPECT_NE(e.find("unexpected tensor 'model.layers.9.mlp.up_proj.weight'"), std::string::npos) << e;

  // No weights, only a .bin (never read).
  fs::remove(weights);
  write_bytes(dir + "/pytorch_model.bin", "pickle");
  e = input_error([&] { load_hf_model(dir); });
  EXPECT_NE(e.find("no model.safetensors"), std::string::npos) << e;

  // config.json problems.
  write_bytes(dir + "/config.json", R"({"model_type": "bert", "vocab_size": 3})");
  e = input_error([&] { load_hf_model(dir); });
  EXPECT_NE(e.find("model_type 'bert' is not supported"), std::string::npos) << e;
  write_bytes(dir + "/config.json", R"({"model_type": "llama", "vocab_size": 3})");
  EXPECT_NE(input_error([&] { load_hf_model(dir); }).find("config.json: missing key hidden_size"),
            std::string::npos);
  write_bytes(dir + "/config.json", R"({"model_type": "llama", "vocab_size": "many"})");
  EXPECT_NE(input_error([&] { load_hf_model(dir); }).find("vocab_size: expected an integer"),
            std::string::npos);
  write_bytes(dir + "/config.json", "{");
  EXPECT_NE(input_error([&] { load_hf_model(dir); }).find("not valid JSON"), std::string::npos);
  EXPECT_NE(input_error([&] { load_hf_model(dir + "/nope"); }).find("cannot open"), std::string::npos);
}

TEST(HfFolder, ExportRefusesToOverwriteAndLeavesNoPartialFolder) {
  auto m = tiny_model("gpt2");
  const std::string dir = temp_dir("overwrite") + "/m";
  save_hf_model(*m, dir);
  EXPECT_NE(input_error([&] { save_hf_model(*m, dir); }).find("exists already"), std::string::npos);
  // Nothing but the folder: no temporary left beside it.
  EXPECT_EQ(std::distance(fs::directory_iterator(fs::path(dir).parent_path()), fs::directory_iterator()), 1);
}

TEST(Generate, RejectsIdsOutsideTheVocabulary) {
  auto m = tiny_model("gpt2");
  EXPECT_NE(input_error([&] { generate(*m, {1, 61}, SamplingOptions{}); })
                .find("token id 61 is outside the vocabulary (size 61)"),
            std::string::npos);
}

TEST(Generate, SamplingFiltersAsDocumented) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(3);
  torch::Tensor logits = torch::tensor({1.0f, 5.0f, 4.9f, -2.0f});
  SamplingOptions greedy;
  EXPECT_EQ(sample_next(logits, greedy, gen), 1);
  SamplingOptions topk;
  topk.temperature = 1.0;
  topk.top_k = 2;
  for (int i = 0; i < 50; ++i) {
    const int64_t id = sample_next(logits, topk, gen);
    EXPECT_TRUE(id == 1 || id == 2);
  }
  SamplingOptions nucleus;
  nucleus.temperature = 1.0;
  nucleus.top_p = 0.3;  // token 1 alone holds more than 30% of the mass
  for (int i = 0; i < 50; ++i) EXPECT_EQ(sample_next(logits, nucleus, gen), 1);
}

// ---------------------------------------------------------------- sizes

TEST(ModelConfig, Gpt2SmallHasItsKnownParameterCount) {
  const ModelConfig c = model_config_from_json(
      {{"model_type", "gpt2"}, {"vocab_size", 50257}, {"n_embd", 768}, {"n_layer", 12},
       {"n_head", 12}, {"n_positions", 1024}},
      "gpt2");
  EXPECT_EQ(parameter_count(c), 124439808);  // GPT-2 small, as published
  auto m = make_causal_lm(tiny("gpt2"));
  int64_t n = 0;
  for (const auto& p : m->parameters()) n += p.numel();
  EXPECT_EQ(n, parameter_count(tiny("gpt2")));
  // 6 N (N without wpe) + 12 L T d: 6 * (124439808 - 786432) + 12 * 12 * 1024 * 768
  EXPECT_DOUBLE_EQ(training_flops_per_token(c, 1024), 6.0 * (124439808.0 - 786432.0) + 12.0 * 12 * 1024 * 768);
}

TEST(ModelConfig, LlamaParameterCountMatchesTheModule) {
  for (bool tied : {false, true}) {
    ModelConfig c = tiny("llama");
    c.tie_word_embeddings = tied;
    auto m = make_causal_lm(c);
    int64_t n = 0;
    for (const auto& p : m->parameters()) n += p.numel();
    EXPECT_EQ(n, parameter_count(c));
  }
}

}  // namespace
}  // namespace shardtune

#include "shardtune/data/torch_batch.h"

namespace shardtune {
namespace {

TEST(TorchBatch, GivesInt64InputsAndLabelsWithTheIgnoreIndex) {
  SampleRows b;
  b.rows = 2;
  b.seq_len = 3;
  b.inputs = {1, 2, 3, 4, 5, 6};
  b.targets = {2, 3, kIgnoreIndex, 5, kIgnoreIndex, 7};
  const TorchBatch t = to_torch(b);
  EXPECT_EQ(t.input_ids.sizes(), (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(t.input_ids.scalar_type(), torch::kInt64);
  EXPECT_EQ(t.labels[1][1].item<int64_t>(), -100);
  EXPECT_EQ(t.input_ids[1][2].item<int64_t>(), 6);
  // The cross-entropy the trainer uses skips ignored targets.
  torch::Tensor logits = torch::zeros({2, 3, 10});
  torch::Tensor loss = torch::nn::functional::cross_entropy(
      logits.view({-1, 10}), t.labels.view({-1}),
      torch::nn::functional::CrossEntropyFuncOptions().ignore_index(kIgnoreIndex));
  EXPECT_NEAR(loss.item<double>(), std::log(10.0), 1e-6);
}

}  // namespace
}  // namespace shardtune

namespace shardtune {
namespace {

TEST(Safetensors, AFlippedDataByteFailsTheChecksumNamingTheTensor) {
  const std::string path = temp_dir("crc") + "/a.safetensors";
  save_safetensors(path, {{"a", torch::randn({8})}, {"b", torch::randn({4, 4})}});
  EXPECT_EQ(SafetensorsFile(path).metadata().count("crc32c:b"), 1u);
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  f.seekg(-3, std::ios::end);
  char c = 0;
  f.read(&c, 1);
  c ^= 0x04;
  f.seekp(-3, std::ios::end);
  f.write(&c, 1);
  f.close();
  const SafetensorsFile file(path);
  EXPECT_NO_THROW(file.tensor("a"));
  try {
    file.tensor("b");
    FAIL() << "a flipped byte was not caught";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find(path + ": tensor 'b' fails its checksum"), std::string::npos) << e.what();
  }
}

// Every config key that changes the math is read, or refused by name.
TEST(ModelConfig, KeysEachArchitectureAcceptsOrRefuses) {
  struct Case {
    std::string type;
    nlohmann::json extra;
    std::string refused_key;  // empty: accepted
  };
  const std::vector<Case> cases = {
      {"gpt2", {{"tie_word_embeddings", false}}, ""},
      {"gpt2", {{"scale_attn_by_inverse_layer_idx", true}}, "scale_attn_by_inverse_layer_idx"},
      {"gpt2", {{"scale_attn_by_inverse_layer_idx", false}}, ""},
      {"gpt2", {{"reorder_and_upcast_attn", true}}, "reorder_and_upcast_attn"},
      {"gpt2", {{"scale_attn_weights", false}}, "scale_attn_weights"},
      {"gpt2", {{"add_cross_attention", true}}, "add_cross_attention"},
      {"gpt2", {{"activation_function", "relu"}}, "activation_function"},
      {"gpt2", {{"activation_function", "gelu_pytorch_tanh"}}, ""},
      {"llama", {{"hidden_act", "gelu"}}, "hidden_act"},
      {"llama", {{"rope_scaling", {{"rope_type", "yarn"}, {"factor", 4.0}}}}, "rope_scaling"},
      {"llama", {{"rope_scaling", {{"rope_type", "llama3"}, {"factor", 8.0}}}}, ""},
      {"llama", {{"rope_scaling", {{"factor", 8.0}}}}, "rope_scaling"},  // a factor, no type: not silently dropped
      {"llama", {{"attn_logit_softcapping", 50.0}}, "attn_logit_softcapping"},
      {"llama", {{"final_logit_softcapping", 30.0}}, "final_logit_softcapping"},
      {"llama", {{"final_logit_softcapping", nullptr}}, ""},
      {"llama", {{"partial_rotary_factor", 0.5}}, "partial_rotary_factor"},
      {"llama", {{"partial_rotary_factor", 1}}, ""},
      {"llama", {{"use_qk_norm", true}}, "use_qk_norm"},
      {"llama", {{"eos_token_id", {5, 7}}}, ""},
      {"llama", {{"eos_token_id", "x"}}, "eos_token_id"},
      {"qwen2", {{"use_sliding_window", true}, {"sliding_window", 4}, {"max_window_layers", 1}}, ""},
      {"qwen2", {{"use_sliding_window", true}, {"sliding_window", 4}, {"layer_types", {"full_attention", "x"}}},
       "layer_types"},
      {"qwen2", {{"use_sliding_window", true}, {"sliding_window", 4}, {"layer_types", {"full_attention"}}},
       "layer_types"},
      {"mistral", {{"sliding_window", 0}}, "sliding_window"},
      {"mistral", {{"sliding_window", nullptr}}, ""},
      // The other families: what each implements is accepted, the rest refused by name.
      {"qwen3", {{"head_dim", 12}}, ""},
      {"qwen3", {{"partial_rotary_factor", 0.5}}, "partial_rotary_factor"},
      {"qwen3", {{"rope_scaling", {{"rope_type", "yarn"}, {"factor", 4.0}}}}, "rope_scaling"},
      {"qwen3", {{"no_rope_layers", {1, 0}}}, "no_rope_layers"},
      {"gemma2", {{"sliding_window", 4}, {"attn_logit_softcapping", 50.0}, {"final_logit_softcapping", 30.0}}, ""},
      {"gemma2", {{"sliding_window", 4}, {"hidden_activation", "gelu"}}, "hidden_activation"},
      {"gemma2", {{"sliding_window", 4}, {"attn_logit_softcapping", 0}}, "attn_logit_softcapping"},
      {"gemma2", {{"sliding_window", 4}, {"final_logit_softcapping", nullptr}}, ""},
      {"gemma2", {{"sliding_window", 4}, {"layer_types", {"sliding_attention", "x"}}}, "layer_types"},
      {"gemma2", nlohmann::json::object(), "sliding_window"},
      {"gemma2", {{"sliding_window", 4}, {"query_pre_attn_scalar", 0}}, "query_pre_attn_scalar"},
      {"gemma3_text", {{"sliding_window", 4}, {"rope_scaling", {{"rope_type", "linear"}, {"factor", 8.0}}}}, ""},
      {"gemma3_text", {{"sliding_window", 4}, {"use_bidirectional_attention", true}}, "use_bidirectional_attention"},
      {"gemma3_text", {{"sliding_window", 4}, {"rope_scaling", {{"rope_type", "longrope"}}}}, "rope_scaling"},
      {"phi3", {{"partial_rotary_factor", 0.5}}, ""},
      {"phi3", {{"partial_rotary_factor", 0.3}}, "partial_rotary_factor"},  // 1.2 of 4 dims
      {"phi3", {{"attention_bias", true}}, "attention_bias"},
      {"phi3", {{"rope_scaling", {{"type", "longrope"}, {"short_factor", nlohmann::json::array({1.0})}, {"long_factor", {1.0, 2.0}}}},
                {"original_max_position_embeddings", 16}}, "longrope short_factor"},
      {"phi3", {{"rope_scaling", {{"type", "longrope"}, {"short_factor", {1.0, 1.0}}, {"long_factor", {1.0, 2.0}}}},
                {"original_max_position_embeddings", 16}}, ""},
      {"phi3", {{"rope_scaling", {{"type", "longrope"}, {"short_factor", {1.0, 0.0}}, {"long_factor", {1.0, 2.0}}}},
                {"original_max_position_embeddings", 16}}, "longrope short_factor and long_factor must be positive"},
      {"phi3", {{"rope_scaling", {{"type", "longrope"}, {"short_factor", {1.0, 1.0}}, {"long_factor", {1.0, 2.0}}}}},
       "original_max_position_embeddings"},
      {"olmo2", {{"mlp_bias", true}}, "mlp_bias"},
      {"olmo2", {{"use_qk_norm", true}}, ""},  // olmo2 always has them
      {"smollm3", {{"no_rope_layers", {1, 0}}}, ""},
      {"smollm3", {{"no_rope_layers", {1, 2}}}, "no_rope_layers"},
      {"smollm3", {{"no_rope_layers", {1}}}, "no_rope_layers"},
      {"gemma3", nlohmann::json::object(), "model_type"},            // the multimodal wrapper
      {"qwen3_moe", nlohmann::json::object(), "model_type"},         // mixture-of-experts
      {"llama", {{"rope_parameters", {{"full_attention", {{"rope_theta", 1e4}}}, {"sliding_attention", {{"rope_theta", 1e3}}}}}},
       "rope_parameters"},
  };
  for (const auto& k : cases) {
    nlohmann::json j = {{"model_type", k.type}, {"vocab_size", 61}};
    if (k.type == "gpt2") {
      j.update({{"n_embd", 16}, {"n_layer", 2}, {"n_head", 2}, {"n_positions", 32}});
    } else {
      j.update({{"hidden_size", 16}, {"intermediate_size", 24}, {"num_hidden_layers", 2},
                {"num_attention_heads", 4}, {"num_key_value_heads", 2}, {"max_position_embeddings", 32}});
    }
    j.update(k.extra);
    const std::string what = k.type + " " + k.extra.dump();
    if (k.refused_key.empty()) {
      EXPECT_NO_THROW(model_config_from_json(j, "c.json")) << what;
    } else {
      try {
        model_config_from_json(j, "c.json");
        ADD_FAILURE() << what << " was accepted";
      } catch (const InputError& e) {
        const std::string msg = e.what();
        EXPECT_TRUE(msg.find("c.json: " + k.refused_key) != std::string::npos ||
                    msg.find("c.json: " + k.refused_key.substr(0, k.refused_key.find(' '))) != std::string::npos ||
                    msg.find(k.refused_key) != std::string::npos)
            << what << ": " << msg;
      }
    }
  }
  // What the accepted ones mean.
  auto with = [](const std::string& type, const nlohmann::json& extra) {
    nlohmann::json j = {{"model_type", type}, {"vocab_size", 61}, {"hidden_size", 16}, {"intermediate_size", 24},
                        {"num_hidden_layers", 3}, {"num_attention_heads", 4}, {"max_position_embeddings", 32}};
    j.update(extra);
    return model_config_from_json(j, "c.json");
  };
  EXPECT_EQ(with("qwen2", {{"sliding_window", 4}}).sliding_window, 0);  // use_sliding_window defaults to false
  const ModelConfig q = with("qwen2", {{"use_sliding_window", true}, {"sliding_window", 4}, {"max_window_layers", 1}});
  EXPECT_EQ(q.sliding_window, 4);
  EXPECT_EQ(q.windowed_layers, (std::vector<bool>{false, true, true}));
  EXPECT_EQ(with("mistral", {{"sliding_window", 4}}).windowed_layers.size(), 0u);  // every layer
  EXPECT_EQ(with("llama", {{"sliding_window", 4}}).sliding_window, 0);             // llama has none
  EXPECT_EQ(with("llama", {{"eos_token_id", {5, 7}}}).eos_token_ids, (std::vector<int64_t>{5, 7}));
  // Windows and rotary embeddings per layer, from transformers 4's keys as Hub configs hold them.
  const ModelConfig g2 = with("gemma2", {{"sliding_window", 4}});
  EXPECT_EQ(g2.windowed_layers, (std::vector<bool>{true, false, true}));
  EXPECT_TRUE(g2.tie_word_embeddings);
  EXPECT_NEAR(g2.query_scale, 1.0 / 16.0, 1e-12);  // query_pre_attn_scalar's default, 256
  const ModelConfig g3 = with("gemma3_text", {{"sliding_window", 4}, {"sliding_window_pattern", 3},
                                              {"rope_theta", 1e6}, {"rope_local_base_freq", 1e4},
                                              {"rope_scaling", {{"rope_type", "linear"}, {"factor", 8.0}}}});
  EXPECT_EQ(g3.windowed_layers, (std::vector<bool>{true, true, false}));
  EXPECT_TRUE(g3.local_rope);
  EXPECT_EQ(g3.rope.kind, RopeSpec::Kind::kLinear);
  EXPECT_EQ(g3.rope.theta, 1e6);
  EXPECT_EQ(g3.rope_local.kind, RopeSpec::Kind::kDefault);
  EXPECT_EQ(g3.rope_local.theta, 1e4);
  const ModelConfig s3 = with("smollm3", {{"no_rope_layer_interval", 3}});
  EXPECT_EQ(s3.rope_layers, (std::vector<bool>{true, true, false}));
  const ModelConfig p3 = with("phi3", {{"partial_rotary_factor", 0.5}, {"original_max_position_embeddings", 16},
                                       {"rope_scaling", {{"type", "longrope"}, {"short_factor", nlohmann::json::array({1.0})},
                                                         {"long_factor", nlohmann::json::array({2.0})}}}});
  EXPECT_EQ(rotary_dim(p3), 2);
  EXPECT_NEAR(p3.rope.attention_factor, std::sqrt(1 + std::log(2.0) / std::log(16.0)), 1e-12);  // 32 / 16
}

TEST(Generate, StopsOnAnyOfSeveralEosIds) {
  auto m = tiny_model("llama");
  SamplingOptions o;
  o.max_new_tokens = 5;
  const auto free_run = generate(*m, {1, 2, 3}, o);
  ASSERT_EQ(free_run.size(), 8u);
  o.eos_token_ids = {60, free_run[4]};  // the second generated token ends it
  const auto stopped = generate(*m, {1, 2, 3}, o);
  EXPECT_EQ(stopped, std::vector<int64_t>(free_run.begin(), free_run.begin() + 5));
}

}  // namespace
}  // namespace shardtune
