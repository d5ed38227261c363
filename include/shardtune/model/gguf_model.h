// Models in and out of GGUF files (llama.cpp's format): llama, mistral and
// qwen2, with their tokenizer. Reading dequantizes every tensor to float32
// and undoes llama.cpp's rotary row order, so the model computes what the
// file's weights compute; writing stores 2-D weights as F32, F16, BF16 or
// Q8_0 (1-D norms and biases stay F32, as llama.cpp's converter keeps them).
#pragma once

#include <torch/types.h>

#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "shardtune/formats/gguf.h"
#include "shardtune/model/transformer.h"

namespace shardtune {

bool is_gguf_path(const std::string& path);

// The model config a GGUF file describes. Throws InputError naming the file.
ModelConfig gguf_model_config(const GgufFile& file);

// A model built from a GGUF file's metadata with its weights, in dtype on device.
std::shared_ptr<CausalLM> load_gguf_model(const std::string& path, torch::Dtype dtype = torch::kFloat32,
                                          torch::Device device = torch::kCPU);

// Loads the file's weights into model (whose config must match them).
void load_gguf_weights(CausalLM& model, const GgufFile& file);

struct GgufExportOptions {
  GgmlType type = GgmlType::kF32;  // for 2-D weights: F32, F16, BF16, Q8_0
  std::string name;                // general.name
  bool overwrite = false;
};

// Writes model (no LoRA adapters: merge them first) as a GGUF file with the
// tokenizer of tokenizer_json / tokenizer_config (as in an HF folder),
// atomically. Throws InputError for what GGUF cannot hold.
void save_gguf_model(CausalLM& model, const std::string& path, const nlohmann::json& tokenizer_json,
                     const nlohmann::json& tokenizer_config, const GgufExportOptions& options);

// A GGUF file as a Hugging Face folder dst: config.json, float32
// model.safetensors and the tokenizer files; atomically (a temporary folder
// renamed when complete).
void convert_gguf_to_hf(const std::string& src, const std::string& dst, bool overwrite);
// An HF folder (with its tokenizer.json) as a GGUF file.
void convert_hf_to_gguf(const std::string& src, const std::string& dst, const GgufExportOptions& options);

// As above, with the tokenizer files of a model folder (tokenizer.json,
// and tokenizer_config.json when present). InputError when the folder has
// no tokenizer.json.
void save_gguf_model(CausalLM& model, const std::string& path, const std::string& tokenizer_folder,
                     const GgufExportOptions& options);

// "f32", "f16", "bf16", "q8_0" -> the type; throws InputError otherwise.
GgmlType parse_gguf_type(const std::string& name);

// The tokenizer files of a model source into folder: from a GGUF file,
// tokenizer.json, tokenizer_config.json and generation_config.json made from
// its metadata; from an HF folder, copies of the tokenizer files it has
// (tokenizer.json, tokenizer_config.json, special_tokens_map.json,
// generation_config.json, vocab.json, merges.txt, tokenizer.model). Returns
// whether any was written.
bool write_tokenizer_files(const std::string& source, const std::string& folder);

}  // namespace shardtune
