// Helper for tests/model/hf_parity.py: runs shardtune's side of the parity
// checks against Hugging Face transformers and peft.
//
//   model_tool logits  MODEL IDS.safetensors OUT.safetensors [--device D] [--dtype T] [--attention reference]
//   model_tool export  MODEL OUT_DIR [--shard-bytes N]
//   model_tool lora    MODEL IDS.safetensors OUT.safetensors ADAPTER_DIR TARGETS RANK ALPHA
//   model_tool generate MODEL IDS.safetensors N      (greedy, with and without the KV cache; the rows
//                                                     cut to different lengths, batched vs one at a time)
//   model_tool params  MODEL -                       (parameter_count of the config, and of the module)
//   model_tool train   MODEL IDS.safetensors OUT.safetensors STEPS LR [TARGETS RANK ALPHA] [--zero S]
//       STEPS AdamW steps (betas 0.9/0.999, eps 1e-6, weight decay 0.1 on every
//       trainable tensor) of the mean next-token loss on IDS through the
//       data-parallel engine at ZeRO stage S, with shardtune's training loss
//       (loss.h) and every block recomputed in backward; under mpirun the
//       rows of IDS split over the ranks. With TARGETS, LoRA on those layers,
//       A and B from OUT's "init.<name>" tensors. Rank 0 writes loss.<step>
//       (the mean over all rows) and every trainable tensor after the last step.
#include <torch/torch.h>

#include <cstdio>
#include <string>
#include <vector>

#include "shardtune/core/error.h"
#include "shardtune/core/strings.h"
#include "shardtune/model/generate.h"
#include "shardtune/model/hf_checkpoint.h"
#include "shardtune/model/loss.h"
#include "shardtune/comm/communicator.h"
#include "shardtune/dist/dist.h"
#include "shardtune/parallel/data_parallel.h"
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

// Trains model through the data-parallel engine (DataParallel), as `train`
// does: rank r of W takes rows [r n / W, (r + 1) n / W) of the ids.
int train(CausalLM& model, const std::vector<std::string>& args, int zero_stage) {
  DistContext dist;
  CommOptions co;
  co.timeout = std::chrono::seconds(120);
  auto comm = make_mpi_communicator(co);
  const torch::Tensor all_ids = read_ids(args[2]);
  const int64_t steps = std::stoll(args[4]);
  const double lr = std::stod(args[5]);
  const int64_t world = comm->size(), rows = all_ids.size(0);
  if (rows % world != 0) throw InputError(str_cat(rows, " rows of ids do not split over ", world, " ranks"));
  const torch::Tensor ids = all_ids.narrow(0, comm->rank() * rows / world, rows / world);
  if (args.size() == 9) {
    model.enable_lora(split(args[6], ','), std::stoll(args[7]), std::stod(args[8]), 0.0);
    // A and B from the reference's initial values (OUT's "init.<name>").
    SafetensorsFile init(args[3]);
    torch::NoGradGuard no_grad;
    for (auto& p : model.named_parameters()) {
      if (init.find("init." + p.key()) != nullptr) p.value().copy_(init.tensor("init." + p.key()));
    }
  }
  model.train();
  DataParallelOptions o;
  o.zero_stage = zero_stage;
  o.checkpoint_every = 1;  // every block recomputed in backward
  o.decay_all = true;      // torch.optim.AdamW decays every tensor it is given
  o.adamw.beta2 = 0.999;
  o.adamw.eps = 1e-6;
  o.adamw.weight_decay = 0.1;
  DataParallel engine(model, *comm, o);
  const torch::Tensor inputs = ids.narrow(1, 0, ids.size(1) - 1);
  const torch::Tensor labels = ids.narrow(1, 1, ids.size(1) - 1).reshape({-1});
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (int64_t step = 0; step < steps; ++step) {
    engine.begin_micro_step(true, true);
    torch::Tensor hidden = model.hidden_states(inputs);
    torch::Tensor loss = cross_entropy_sum(model, hidden.reshape({-1, hidden.size(-1)}), labels, -100) /
                         static_cast<double>(labels.numel());
    loss.backward();
    engine.end_micro_step();
    engine.step(lr, 0.0);
    torch::Tensor global = loss.detach().reshape({1}).clone();
    comm->all_reduce(global, ReduceOp::kAvg)->wait();  // equal token counts: the mean over all rows
    out.emplace_back(str_cat("loss.", step), global);
  }
  engine.gather_parameters();
  for (auto& p : model.named_parameters()) {
    if (p.value().requires_grad()) out.emplace_back(p.key(), p.value().detach().clone());
  }
  if (comm->rank() == 0) save_safetensors(args[3], out);
  comm->barrier()->wait();
  return 0;
}

int run(std::vector<std::string> args) {
  const std::string device_name = flag(args, "--device", "cpu");
  const std::string dtype_name = flag(args, "--dtype", "float32");
  const std::string attention = flag(args, "--attention", "sdpa");
  const int64_t shard_bytes = std::stoll(flag(args, "--shard-bytes", "5368709120"));
  const int zero_stage = std::stoi(flag(args, "--zero", "0"));
  const torch::Device device(device_name);
  const torch::Dtype dtype = dtype_name == "bfloat16" ? torch::kBFloat16 : torch::kFloat32;
  if (args.size() < 3) {
    std::fprintf(stderr, "usage: model_tool logits|export|lora|generate ...\n");
    return 2;
  }
  const std::string cmd = args[0];
  auto model = load_hf_model(args[1], dtype, device);
  if (cmd == "train" && (args.size() == 6 || args.size() == 9)) return train(*model, args, zero_stage);
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
    if (with_cache != without) return 3;
    // Batched: every row of IDS, row r cut by 3 r tokens (left padding), against each alone.
    const torch::Tensor all = read_ids(args[2]);
    std::vector<std::vector<int64_t>> prompts;
    for (int64_t r = 0; r < all.size(0); ++r) {
      const int64_t len = std::max<int64_t>(1, all.size(1) - 3 * r);
      const torch::Tensor row = all[r].narrow(0, 0, len).contiguous();
      prompts.emplace_back(row.data_ptr<int64_t>(), row.data_ptr<int64_t>() + len);
    }
    o.use_cache = true;
    const auto batched = generate_batch(*model, prompts, o);
    for (size_t r = 0; r < prompts.size(); ++r) {
      const auto alone = generate(*model, prompts[r], o);
      if (std::vector<int64_t>(alone.begin() + static_cast<long>(prompts[r].size()), alone.end()) != batched[r]) {
        std::fprintf(stderr, "model_tool: batched generation differs from one prompt at a time on row %zu\n", r);
        return 4;
      }
    }
    return 0;
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
