// `shardtune eval` and `shardtune export`: a checkpoint's validation loss,
// and a checkpoint as an HF folder.
#include <filesystem>

#include "model_setup.h"
#include "shardtune/ckpt/checkpoint.h"
#include "shardtune/core/error.h"
#include "shardtune/core/files.h"
#include "shardtune/metrics/metrics.h"
#include "shardtune/model/gguf_model.h"
#include "shardtune/model/hf_checkpoint.h"
#include "shardtune/train/trainer.h"
#include "train_common.h"

namespace shardtune {

namespace fs = std::filesystem;

EvalResult evaluate_checkpoint(const Config& config, DistContext& dist, const std::string& checkpoint) {
  const TrainerState state = validate_checkpoint(checkpoint);
  const torch::Device device = pick_device(config.model, dist.info());
  auto comm = make_trainer_communicator(config, dist.info(), device);
  if (config.data.val.empty()) throw InputError("data.val: no validation shards to evaluate on");
  TokenDataset val(expand_data_paths(config.data.val, "data.val"), dataset_options(config.data));
  // A checkpoint carries model.init's tokenizer, when it had one.
  if (auto tok = source_tokenizer(checkpoint)) {
    check_data_tokenizer(val.attrs(), "data.val", *tok, checkpoint, "checkpoint", config.data.allow_tokenizer_mismatch);
  }
  auto model = load_checkpoint_model(checkpoint, parse_dtype(config.model.dtype), device);
  if (val.attrs().vocab_size > model->config().vocab_size) {
    throw InputError(str_cat("data.val has ", val.attrs().vocab_size, " token ids, the model of ", checkpoint,
                             " only ", model->config().vocab_size));
  }
  const int64_t mb = config.eval.micro_batch > 0 ? config.eval.micro_batch : config.data.micro_batch;
  const EvalResult r = evaluate(*model, nullptr, val, *comm, mb, config.eval.max_samples, device);
  if (dist.rank() == 0) {
    MetricsFile metrics(metrics_path(config), /*append=*/true);
    metrics.write(eval_record(state.step, r).dump());
  }
  return r;
}

void export_checkpoint(const std::string& checkpoint, const std::string& output, bool adapter,
                       const std::string& dtype, bool overwrite, const std::string& gguf_type) {
  const TrainerState state = validate_checkpoint(checkpoint);
  if (is_gguf_path(output)) {
    if (adapter) throw InputError("export: --adapter writes a PEFT folder, not a .gguf file");
    if (!dtype.empty()) throw InputError("export: --dtype is for HF folders; a .gguf output takes --gguf-type");
    if (fs::exists(output) && !overwrite) throw InputError(str_cat(output, ": exists already (--overwrite)"));
    GgufExportOptions o;
    o.type = parse_gguf_type(gguf_type.empty() ? "f32" : gguf_type);
    o.overwrite = overwrite;
    auto model = load_checkpoint_model(checkpoint);
    if (model->has_lora()) model->merge_lora();
    save_gguf_model(*model, output, checkpoint, o);  // the checkpoint carries model.init's tokenizer
    return;
  }
  if (!gguf_type.empty()) throw InputError("export: --gguf-type needs an --output ending in .gguf");
  if (adapter) {
    // The checkpoint holds the adapter in PEFT's layout already.
    if (!state.lora) throw InputError(str_cat("checkpoint ", checkpoint, " has no LoRA adapter to export"));
    if (fs::exists(output) && !overwrite) throw InputError(str_cat(output, ": exists already (--overwrite)"));
    if (!fs::path(output).parent_path().empty()) fs::create_directories(fs::path(output).parent_path());
    const std::string tmp = create_temp_dir(output);
    try {
      for (const char* name : {"adapter_config.json", "adapter_model.safetensors"}) {
        fs::copy_file(fs::path(checkpoint) / name, fs::path(tmp) / name);
      }
      write_tokenizer_files(checkpoint, tmp);
    } catch (...) {
      fs::remove_all(tmp);  // nothing partial left behind
      throw;
    }
    replace_with_temp(tmp, output);
    return;
  }
  auto model = load_checkpoint_model(checkpoint);
  if (model->has_lora()) model->merge_lora();
  const std::string want = dtype.empty() ? load_model_config(checkpoint).source.value("torch_dtype", "float32") : dtype;
  model->to(parse_dtype(want));
  HfExportOptions o;
  o.overwrite = overwrite;
  o.tokenizer_from = checkpoint;
  save_hf_model(*model, output, o);
}

}  // namespace shardtune
