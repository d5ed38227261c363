// Where the trainer's model comes from: a checkpoint, an HF folder, or a
// random init from the config; and the data paths.
#include "model_setup.h"

#include <glob.h>

#include <algorithm>
#include <filesystem>

#include "shardtune/ckpt/checkpoint.h"
#include "shardtune/core/error.h"
#include "shardtune/metrics/log.h"
#include "shardtune/model/gguf_model.h"
#include "shardtune/model/hf_checkpoint.h"
#include "shardtune/tokenize/chat.h"
#include "shardtune/train/trainer.h"
#include "shardtune/version.h"

#if SHARDTUNE_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
#endif

namespace shardtune {

std::vector<std::string> expand_data_paths(const std::vector<std::string>& patterns, const std::string& key) {
  std::vector<std::string> out;
  for (const auto& pattern : patterns) {
    glob_t g{};
    const int rc = ::glob(pattern.c_str(), 0, nullptr, &g);
    std::vector<std::string> found;
    if (rc == 0) {
      for (size_t i = 0; i < g.gl_pathc; ++i) found.emplace_back(g.gl_pathv[i]);
    }
    globfree(&g);
    if (found.empty()) throw InputError(str_cat(key, ": '", pattern, "' matches no file"));
    std::sort(found.begin(), found.end());
    out.insert(out.end(), found.begin(), found.end());
  }
  return out;
}

torch::Device pick_device(const ModelSection& m, const DistInfo& dist) {
  const bool have_gpu = torch::cuda::is_available() && torch::cuda::device_count() > dist.local_rank;
  if (m.device == "cuda" || (m.device == "auto" && have_gpu)) {
    if (!have_gpu) {
      throw InputError(str_cat("model.device: cuda asked for, but local rank ", dist.local_rank, " has no GPU (",
                               static_cast<int>(torch::cuda::device_count()), " visible)"));
    }
    return torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(dist.local_rank));
  }
  return torch::kCPU;
}

double device_memory_bytes(const torch::Device& device) {
#if SHARDTUNE_WITH_CUDA
  if (device.is_cuda()) return static_cast<double>(at::cuda::getDeviceProperties(device.index())->totalGlobalMem);
#endif
  (void)device;
  return 0;
}

std::string device_name(const torch::Device& device) {
#if SHARDTUNE_WITH_CUDA
  if (device.is_cuda()) return at::cuda::getDeviceProperties(device.index())->name;
#endif
  return device.str();
}

torch::Dtype parse_dtype(const std::string& name) {
  return name == "bfloat16" ? torch::kBFloat16 : torch::kFloat32;
}

ModelConfig random_model_config(const ModelSection& m, int64_t data_vocab, int64_t bos, int64_t eos) {
  ModelConfig c;
  const bool gpt2 = m.arch == "gpt2";
  c.model_type = m.arch;
  c.family = gpt2 ? Family::kGpt2 : Family::kLlama;
  c.arch = gpt2 ? nullptr : find_architecture(m.arch);
  c.vocab_size = m.vocab_size > 0 ? m.vocab_size : data_vocab;
  c.hidden_size = m.hidden_size;
  c.num_layers = m.num_layers;
  c.num_heads = m.num_heads;
  c.num_kv_heads = gpt2 || m.num_kv_heads == 0 ? m.num_heads : m.num_kv_heads;
  c.head_dim = m.num_heads > 0 ? m.hidden_size / m.num_heads : 0;
  if (m.intermediate_size > 0) {
    c.intermediate_size = m.intermediate_size;
  } else if (gpt2) {
    c.intermediate_size = 4 * m.hidden_size;
  } else {
    c.intermediate_size = (8 * m.hidden_size / 3 + 63) / 64 * 64;
  }
  c.max_positions = m.max_positions;
  c.norm_eps = 1e-5;
  c.tie_word_embeddings = m.tie_word_embeddings;
  c.bos_token_id = bos;
  if (eos >= 0) c.eos_token_ids = {eos};
  if (m.hidden_size % m.num_heads != 0) {
    throw InputError(str_cat("model.hidden_size ", m.hidden_size, " is not divisible by model.num_heads ",
                             m.num_heads));
  }
  validate(c, "model (random init)");
  return c;
}

void check_seq_len(const Config& config, const ModelConfig& c) {
  const ModelSection& m = config.model;
  if (config.data.seq_len <= c.max_positions) return;
  const std::string source = !m.init.empty()     ? str_cat("the max_position_embeddings of model.init ", m.init)
                             : !m.config.empty() ? str_cat("the max_position_embeddings of model.config ", m.config)
                                                 : std::string("model.max_positions");
  throw InputError(str_cat("data.seq_len ", config.data.seq_len, " is past the model's ", c.max_positions,
                           " positions (", source, "): lower data.seq_len"));
}

std::vector<std::string> lora_targets(const LoraConfig& lora, const ModelConfig& c) {
  if (!lora.targets.empty()) return lora.targets;
  if (c.family == Family::kGpt2) return {"c_attn"};
  if (c.arch->fused_qkv) return {"qkv_proj"};
  return {"q_proj", "v_proj"};
}

std::shared_ptr<CausalLM> load_checkpoint_model(const std::string& checkpoint, torch::Dtype dtype,
                                                torch::Device device) {
  auto model = load_hf_model(checkpoint);  // float32 on the CPU, where the adapter is added
  if (std::filesystem::exists(checkpoint + "/adapter_config.json")) load_peft_adapter(*model, checkpoint);
  model->to(device, dtype);
  return model;
}

void check_data_tokenizer(const ShardAttrs& data, const std::string& data_key, const Tokenizer& tok,
                          const std::string& source, const std::string& source_key, bool allow) {
  const std::string made_by = str_cat(data.tokenizer_name.empty() ? "?" : data.tokenizer_name, " (", data.tokenizer, ")");
  std::string fingerprint = data.tokenizer;
  if (fingerprint == "byte:v1") fingerprint = make_byte_tokenizer()->fingerprint();  // older shards' name for it
  if (fingerprint.rfind("tok2:", 0) != 0) {
    log::warn(data_key, " was made by tokenizer ", data.tokenizer,
              " before shards recorded a tokenizer fingerprint: it cannot be checked against ", source_key, " ", source,
              "'s; prep it again to have it checked");
    return;
  }
  auto refuse = [&](const std::string& what) {
    if (!allow) {
      throw InputError(str_cat(what, ". Prep the data again with --tokenizer ", source,
                               ", or set data.allow_tokenizer_mismatch: true to train on it anyway"));
    }
    log::warn(what, " (data.allow_tokenizer_mismatch: true, training anyway)");
  };
  const std::string model_fingerprint = tok.fingerprint();
  if (fingerprint != model_fingerprint) {
    refuse(str_cat(data_key, " was made by tokenizer ", made_by, ", vocabulary ", data.vocab_size, ", but ", source_key,
                   " ", source, " has tokenizer ", tok.name(), " (", model_fingerprint, "), vocabulary ",
                   tok.vocab_size()));
    return;
  }
  if (data.chat_format.empty() || tok.chat_template().empty()) return;
  std::optional<ChatFormat> own;
  try {
    own = recognize_chat_template(tok.chat_template());
  } catch (const InputError&) {  // a template shardtune does not render: the data's was chosen by name
  }
  if (own && chat_format_id(*own) != data.chat_format) {
    refuse(str_cat(data_key, "'s chat examples were rendered as ", data.chat_format, ", but the chat template of ",
                   source_key, " ", source, " is ", chat_format_id(*own),
                   ": the model would be trained in one format and prompted in another"));
  }
}

std::shared_ptr<CausalLM> build_model(const Config& config, const ShardAttrs& data, const std::string& checkpoint,
                                      torch::Device device) {
  const ModelSection& m = config.model;
  const torch::Dtype dtype = parse_dtype(m.dtype);
  std::shared_ptr<CausalLM> model;
  if (!checkpoint.empty()) {
    // Everything, adapters included, is in the checkpoint.
    model = load_checkpoint_model(checkpoint, dtype, device);
    const bool has_lora = model->has_lora();
    if (has_lora != (m.lora.rank > 0)) {
      throw InputError(str_cat("checkpoint ", checkpoint, " was ", has_lora ? "a LoRA" : "a full fine-tuning",
                               " run but model.lora.rank is ", m.lora.rank,
                               "; resume with the config it was saved with"));
    }
  } else {
    if (!m.init.empty() && !m.config.empty()) {
      throw InputError("model.init and model.config are both set: init loads weights, config a random init; give one");
    }
    if (is_gguf_path(m.init)) {
      model = load_gguf_model(m.init);  // float32 on the CPU; moved below
      model->train();
    } else if (!m.init.empty()) {
      model = make_causal_lm(load_model_config(m.init));
      load_hf_weights(*model, m.init);
    } else {
      model = make_causal_lm(m.config.empty() ? random_model_config(m, data.vocab_size, data.bos_id, data.eos_id)
                                              : load_model_config(m.config));
      model->init_weights(static_cast<uint64_t>(config.train.seed));
    }
    if (m.lora.rank > 0) {
      torch::manual_seed(static_cast<uint64_t>(config.train.seed));  // the adapters' A matrices
      model->enable_lora(lora_targets(m.lora, model->config()), m.lora.rank, m.lora.alpha, m.lora.dropout);
    }
    model->to(device, dtype);
  }
  check_seq_len(config, model->config());
  if (data.vocab_size > model->config().vocab_size) {
    throw InputError(str_cat("the data's tokenizer has ", data.vocab_size, " token ids but the model's vocabulary only ",
                             model->config().vocab_size, " (model.", m.init.empty() ? "vocab_size" : "init",
                             "): token ids past the vocabulary"));
  }
  return model;
}

}  // namespace shardtune
