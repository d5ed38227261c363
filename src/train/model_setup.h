// The trainer's model and device set-up (internal to the train module).
#pragma once

#include <torch/torch.h>

#include <memory>
#include <string>
#include <vector>

#include "shardtune/config/config.h"
#include "shardtune/data/token_shard.h"
#include "shardtune/dist/dist.h"
#include "shardtune/model/transformer.h"
#include "shardtune/tokenize/tokenizer.h"

namespace shardtune {

// cuda:<local rank> or the CPU, as model.device says.
torch::Device pick_device(const ModelSection& m, const DistInfo& dist);
torch::Dtype parse_dtype(const std::string& name);
// A GPU's memory in bytes (0 for the CPU).
double device_memory_bytes(const torch::Device& device);
// The GPU's name as CUDA reports it ("NVIDIA H100 80GB HBM3"); device.str() otherwise.
std::string device_name(const torch::Device& device);

// The architecture a random init builds (vocab 0 = the data's).
// Throws InputError when config's data.seq_len is past the model's positions
// (naming where that limit comes from): every family, train and plan alike.
void check_seq_len(const Config& config, const ModelConfig& model);

ModelConfig random_model_config(const ModelSection& m, int64_t data_vocab, int64_t bos, int64_t eos);

// LoRA targets: the config's, or the family's default.
std::vector<std::string> lora_targets(const LoraConfig& lora, const ModelConfig& c);

// Data and model that do not belong together: throws InputError when the
// shards (data_key) were made by another tokenizer than `tok`, the one
// `source` (source_key: model.init, a checkpoint) carries, or their chat
// examples rendered in another format than its chat template's, naming
// both; with allow (data.allow_tokenizer_mismatch) a warning instead.
// Shards made before the fingerprint was recorded are named in a warning.
void check_data_tokenizer(const ShardAttrs& data, const std::string& data_key, const Tokenizer& tok,
                          const std::string& source, const std::string& source_key, bool allow);

// The model to train, in model.dtype on device: from checkpoint when given
// (adapters included), else from model.init or a seeded random init, with
// LoRA added as configured. Checks the data's vocabulary fits the model.
std::shared_ptr<CausalLM> build_model(const Config& config, const ShardAttrs& data, const std::string& checkpoint,
                                      torch::Device device);

}  // namespace shardtune
