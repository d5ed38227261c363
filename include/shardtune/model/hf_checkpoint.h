// Hugging Face model folders in and out: config.json plus model.safetensors,
// or HF-style shards with model.safetensors.index.json; LoRA adapters in
// PEFT's layout (adapter_config.json + adapter_model.safetensors).
//
// Loading is strict: every tensor the config implies must be there with its
// exact shape, and nothing else (buffers HF sometimes saves, such as GPT-2's
// attn.bias, are skipped). Errors are InputError naming the file, the tensor
// and both shapes. Only safetensors are read: loading never executes code.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "shardtune/model/transformer.h"

namespace shardtune {

// A model built from dir/config.json with dir's weights, in dtype on device;
// dir may also name a .gguf file (see gguf_model.h).
std::shared_ptr<CausalLM> load_hf_model(const std::string& dir, torch::Dtype dtype = torch::kFloat32,
                                        torch::Device device = torch::kCPU);

// Loads dir's weights into model (whose config must match them).
void load_hf_weights(CausalLM& model, const std::string& dir);

// The model's weights under their HF names and in HF layout (GPT-2's Conv1D
// weights transposed to [in, out]), LoRA adapters left out.
std::vector<std::pair<std::string, torch::Tensor>> hf_state_dict(CausalLM& model);

struct HfExportOptions {
  int64_t max_shard_bytes = int64_t{5} << 30;  // split into shards past this
  bool overwrite = false;                      // replace an existing folder
  std::string tokenizer_from;  // a model folder or .gguf whose tokenizer files go along (write_tokenizer_files)
};

// Writes config.json and the weights to dir, atomically (a temporary folder
// renamed when complete). Adapters, if any, must be merged first.
void save_hf_model(CausalLM& model, const std::string& dir, const HfExportOptions& options = {});

// Writes config.json and the weights (LoRA adapters left out) into the
// existing folder, not atomically: for callers that make a folder atomic
// themselves (checkpoints).
void write_hf_files(CausalLM& model, const std::string& folder, int64_t max_shard_bytes = int64_t{5} << 30);

struct LoraSpec {
  std::vector<std::string> targets;
  int64_t rank = 8;
  double alpha = 16.0;
  double dropout = 0.0;
};

// Writes the adapters of model as a PEFT LoRA adapter folder.
void save_peft_adapter(CausalLM& model, const std::string& dir, const LoraSpec& spec,
                       const std::string& base_model = "");
// As save_peft_adapter, into an existing folder, not atomically.
void write_peft_files(CausalLM& model, const std::string& folder, const LoraSpec& spec,
                      const std::string& base_model = "");

// Adds the adapters of a PEFT LoRA folder (adapter_config.json +
// adapter_model.safetensors, as save_peft_adapter writes) to model, which has
// none yet, and returns their spec. Throws InputError naming the file.
LoraSpec load_peft_adapter(CausalLM& model, const std::string& dir);

}  // namespace shardtune
