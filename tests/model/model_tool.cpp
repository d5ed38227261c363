// Helper for tests/model/hf_parity.py: runs shardtune's side of the parity
// checks against Hugging Face transformers and peft.
//
//   model_tool logits  MODEL IDS.safetensors OUT.safetensors [--device D] [--dtype T] [--attention reference]
//   model_tool export  MODEL OUT_DIR [--shard-bytes N]
//   model_tool lora    MODEL IDS.safetensors OUT.safetensors ADAPTER_DIR TARGETS RANK ALPHA
//   model_tool generate MODEL IDS.safetensors N      (greedy, with and without the KV cache)
#include <torch/torch.h>

#include <cstdio>
#include <string>
#include <vector>

#include "shardtune/core/strings.h"
#include "shardtune/model/generate.h"
#include "shardtune/model/hf_checkpoint.h"
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
  torch::NoGradGuard no_grad;
  auto model = load_hf_model(args[1], dtype, device);
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
