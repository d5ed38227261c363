// Helper for tests/model/hf_parity.py: runs shardtune's side of the parity
// checks against Hugging Face transformers and peft.
//
//   model_tool logits  MODEL IDS.safetensors OUT.safetensors [--device D] [--dtype T] [--attention reference]
//   model_tool export  MODEL OUT_DIR [--shard-bytes N]
//   model_tool lora    MODEL IDS.safetensors OUT.safetensors ADAPTER_DIR TARGETS RANK ALPHA
//   model_tool generate MODEL IDS.safetensors N      (greedy, with and without the KV cache)
//   model_tool params  MODEL -                       (parameter_count of the config, and of the module)
//   model_tool train   MODEL IDS.safetensors OUT.safetensors STEPS LR [TARGETS RANK ALPHA]
//       STEPS AdamW steps (betas 0.9/0.999, eps 1e-6, weight decay 0.1 on every
//       trainable tensor) of the mean next-token loss on IDS, through
//       shardtune's training loss (loss.h) with every block recomputed in
//       backward (activation checkpointing); with TARGETS, LoRA on those layers
//       with B initialised from OUT's "init.<name>" tensors when present.
//       Writes loss.<step> and every trainable tensor after the last step.
#include <torch/torch.h>

#include <cstdio>
#include <string>
#include <vector>

#include "shardtune/core/error.h"
#include "shardtune/core/strings.h"
#include "shardtune/model/generate.h"
#include "shardtune/model/hf_checkpoint.h"
#include "shardtune/model/loss.h"
#include "shardtune/optim/adamw.h"
#include "shardtune/model/safetensors.h"

using namespace shardtune;

namespace {

std::string flag(std::vector<std::string>& args, const std::string& name, const std::string& dflt) {
  for (size_t i = 0; i + 1 < args.size(); ++i) {
    if (args[i] == name) {
      std::string v = args[i + 1];
      args.erase(args.begin() + static_cast<long>(i), args.begin() + static_cast<long>(i) + 2);
      return v;
    }
  }
  return dflt;
}

torch::Tensor read_ids(const std::string& path) {
  SafetensorsFile f(path);
  return f.tensor("input_ids").clone();
}

// Recomputes a block in backward from its input, as the engine's activation
// checkpointing does: forward without a graph, then again with one.
struct Recompute : torch::autograd::Function<Recompute> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, torch::Tensor x, CausalLM::BlockFn* fn) {
    ctx->saved_data["fn"] = reinterpret_cast<int64_t>(fn);
    ctx->save_for_backward({x});
    torch::NoGradGuard no_grad;
    return (*fn)(x);
  }
  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx, torch::autograd::tensor_list g) {
    auto* fn = reinterpret_cast<CausalLM::BlockFn*>(ctx->saved_data["fn"].toInt());
    torch::Tensor x = ctx->get_saved_variables()[0].detach().requires_grad_(true);
    torch::Tensor y;
    {
      torch::AutoGradMode on(true);
      y = (*fn)(x);
    }
    torch::autograd::backward({y}, {g[0]});
    return {x.grad(), torch::Tensor()};
  }
};

int train(CausalLM& model, const std::vector<std::string>& args) {
  const torch::Tensor ids = read_ids(args[2]);
  const int64_t steps = std::stoll(args[4]);
  const double lr = std::stod(args[5]);
  std::vector<std::pair<std::string, torch::Tensor>> out;
  if (args.size() == 9) {
    model.enable_lora(split(args[6], ','), std::stoll(args[7]), std::stod(args[8]), 0.0);
    // B from the reference's initial values, so the adapter starts non-zero.
    SafetensorsFile init(args[3]);
    torch::NoGradGuard no_grad;
    for (auto& p : model.named_parameters()) {
      if (init.find("init." + p.key()) != nullptr) p.value().copy_(init.tensor("init." + p.key()));
    }
  }
  model.train();
  std::vector<std::pair<std::string, torch::Tensor>> params;
  for (auto& p : model.named_parameters()) {
    if (p.value().requires_grad()) params.emplace_back(p.key(), p.value());
  }
  std::vector<std::unique_ptr<FlatAdamW>> opt;
  AdamWOptions o;
  o.beta2 = 0.999;
  o.eps = 1e-6;
  o.weight_decay = 0.1;
  for (auto& [name, p] : params) {
    torch::Tensor master = p.detach().reshape({-1}).clone();
    opt.push_back(std::make_unique<FlatAdamW>(master, FlatAdamW::Ranges{{0, master.numel()}}, o));
  }
  std::vector<CausalLM::BlockFn> fns(model.blocks().size());
  model.set_block_runner([&fns](size_t block, const torch::Tensor& x, CausalLM::BlockFn fn) {
    fns[block] = std::move(fn);
    // The first block's input needs a graph even when the embedding is frozen (LoRA).
    return Recompute::apply(x.requires_grad() ? x : x.detach().requires_grad_(true), &fns[block]);
  });
  const torch::Tensor inputs = ids.narrow(1, 0, ids.size(1) - 1);
  const torch::Tensor labels = ids.narrow(1, 1, ids.size(1) - 1).reshape({-1});
  for (int64_t step = 0; step < steps; ++step) {
    for (auto& [name, p] : params) p.mutable_grad() = torch::Tensor();
    torch::Tensor hidden = model.hidden_states(inputs);
    torch::Tensor loss = cross_entropy_sum(model, hidden.reshape({-1, hidden.size(-1)}), labels, -100) /
                         static_cast<double>(labels.numel());
    loss.backward();
    out.emplace_back(str_cat("loss.", step), loss.detach().reshape({1}).clone());
    torch::NoGradGuard no_grad;
    for (size_t i = 0; i < params.size(); ++i) {
      opt[i]->step(params[i].second.grad().reshape({-1}), lr);
      params[i].second.copy_(opt[i]->master().view(params[i].second.sizes()));
    }
  }
  for (auto& [name, p] : params) out.emplace_back(name, p.detach().clone());
  save_safetensors(args[3], out);
  return 0;
}

int run(std::vector<std::string> args) {
  const std::string device_name = flag(args, "--device", "cpu");
  const std::string dtype_name = flag(args, "--dtype", "float32");
  const std::string attention = flag(args, "--attention", "sdpa");
  const int64_t shard_bytes = std::stoll(flag(args, "--shard-bytes", "5368709120"));
  const torch::Device device(device_name);
  const torch::Dtype dtype = dtype_name == "bfloat16" ? torch::kBFloat16 : torch::kFloat32;
  if (args.size() < 3) {
    std::fprintf(stderr, "usage: model_tool logits|export|lora|generate ...\n");
    return 2;
  }
  const std::string cmd = args[0];
  auto model = load_hf_model(args[1], dtype, device);
  if (cmd == "train" && (args.size() == 6 || args.size() == 9)) return train(*model, args);
  if (cmd == "params" && args.size() == 3) {  // the planner's count, and the module's
    int64_t n = 0;
    for (const auto& p : model->parameters()) n += p.numel();
    std::printf("%lld %lld\n", static_cast<long long>(parameter_count(model->config())), static_cast<long long>(n));
    return 0;
  }
  torch::NoGradGuard no_grad;
  if (attention == "reference") model->set_attention(AttentionImpl::kReference);

  if (cmd == "logits" && args.size() == 4) {
    torch::Tensor logits = model->forward(read_ids(args[2]).to(device));
    save_safetensors(args[3], {{"logits", logits.to(torch::kFloat32).cpu()}});
    return 0;
  }
  if (cmd == "export" && args.size() == 3) {
    HfExportOptions options;
    options.max_shard_bytes = shard_bytes;
    options.overwrite = true;
    save_hf_model(*model, args[2], options);
    return 0;
  }
  if (cmd == "lora" && args.size() == 8) {
    LoraSpec spec;
    spec.targets = split(args[5], ',');
    spec.rank = std::stoll(args[6]);
    spec.alpha = std::stod(args[7]);
    model->enable_lora(spec.targets, spec.rank, spec.alpha, 0.0);
    // B starts at zero; make it non-zero so the adapter changes the output.
    auto gen = at::make_generator<at::CPUGeneratorImpl>(7);
    for (auto& p : model->named_parameters()) {
      if (p.key().size() > 7 && p.key().substr(p.key().size() - 7) == ".lora_B") {
        p.value().copy_(at::normal(0.0, 0.05, p.value().sizes(), gen));
      }
    }
    torch::Tensor logits = model->forward(read_ids(args[2]).to(device));
    save_safetensors(args[3], {{"logits", logits.to(torch::kFloat32).cpu()}});
    save_peft_adapter(*model, args[4], spec, args[1]);
    return 0;
  }
  if (cmd == "generate" && args.size() == 4) {
    torch::Tensor ids = read_ids(args[2])[0];
    std::vector<int64_t> prompt(ids.data_ptr<int64_t>(), ids.data_ptr<int64_t>() + ids.numel());
    SamplingOptions o;
    o.max_new_tokens = std::stoll(args[3]);
    const auto with_cache = generate(*model, prompt, o);
    o.use_cache = false;
    const auto without = generate(*model, prompt, o);
    for (size_t i = prompt.size(); i < with_cache.size(); ++i) std::printf("%ld ", static_cast<long>(with_cache[i]));
    std::printf("\n");
    return with_cache == without ? 0 : 3;
  }
  std::fprintf(stderr, "model_tool: bad arguments\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(std::vector<std::string>(argv + 1, argv + argc));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "model_tool: %s\n", e.what());
    return 1;
  }
}
