// Typed configuration: one small struct per module, loaded from YAML once.
//
// Each struct lists its fields in visit(); the loader, the validator, the
// `key=value` override parser and the YAML printer are all driven by that one
// list, so a field is declared in exactly one place. This header does not
// include yaml-cpp: modules read their struct without paying for the parser.
//
// Errors (all shardtune::InputError) name where the bad value came from (the
// file and line, or the command-line override), the key path and what was
// expected, e.g.
//   configs/x.yaml:4: comm.timeout_s: expected a positive number, got "fast"
// Unknown keys are rejected with a did-you-mean suggestion.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace shardtune {

// Rules a field's value must satisfy.
struct AnyValue {};
struct Positive {};     // > 0
struct NonNegative {};  // >= 0
struct OneOf {          // a string from a fixed set
  std::vector<std::string> choices;
};
struct InRange {        // lo <= value <= hi
  double lo, hi;
};
struct SwitchOrPath {};  // true, false or a path (not another YAML boolean spelling, not empty)

// dist: how ranks map onto the node.
struct DistConfig {
  int64_t intra_op_threads = 0;
  bool retain_host_memory = true;

  template <class V>
  void visit(V& v) {
    v.field("intra_op_threads", intra_op_threads, NonNegative{},
            "torch intra-op threads per rank; 0 = cores on the node / ranks on the node");
    v.field("retain_host_memory", retain_host_memory, AnyValue{},
            "keep freed host memory for reuse (no mapping and unmapping of each step's large temporaries); "
            "false = the C library's defaults");
  }
};

// comm: the collective backend.
struct CommConfig {
  std::string backend = "auto";
  double timeout_s = 600.0;
  bool check_collectives = false;

  template <class V>
  void visit(V& v) {
    v.field("backend", backend, OneOf{{"auto", "mpi", "nccl"}},
            "collective backend: mpi (CPU tensors), nccl (CUDA tensors), auto = mpi");
    v.field("timeout_s", timeout_s, Positive{},
            "a collective not finished after this many seconds fails every rank");
    v.field("check_collectives", check_collectives, AnyValue{},
            "ranks compare (op, dtype, count, sequence) before each collective");
  }
};

// log: the rank-aware logger, the metrics file and the progress bar.
struct LogConfig {
  std::string level = "info";
  std::string other_ranks_level = "warn";
  int64_t every = 10;
  std::string metrics_file;
  std::string progress = "auto";
  std::string tensorboard = "true";
  double peak_tflops = 0.0;

  template <class V>
  void visit(V& v) {
    static const OneOf kLevels{{"trace", "debug", "info", "warn", "error", "off"}};
    v.field("level", level, kLevels, "log level of rank 0");
    v.field("other_ranks_level", other_ranks_level, kLevels, "log level of ranks other than 0");
    v.field("every", every, Positive{}, "training steps between metrics records and log lines");
    v.field("metrics_file", metrics_file, AnyValue{},
            "JSONL file rank 0 appends metrics to; empty = <train.output_dir>/metrics.jsonl");
    v.field("progress", progress, OneOf{{"auto", "on", "off"}},
            "progress bar on stderr: auto = only when stderr is a terminal");
    v.field("tensorboard", tensorboard, SwitchOrPath{},
            "TensorBoard event files of rank 0's metrics and the config: true = in <train.output_dir>/tensorboard, "
            "false = none, or a folder");
    v.field("peak_tflops", peak_tflops, NonNegative{},
            "peak dense TFLOP/s of one device for MFU; 0 = from the table of known GPUs (none on CPUs)");
  }
};

// model.lora: low-rank adapters; rank 0 = full fine-tuning.
struct LoraConfig {
  int64_t rank = 0;
  double alpha = 16.0;
  double dropout = 0.0;
  std::vector<std::string> targets;

  template <class V>
  void visit(V& v) {
    v.field("rank", rank, NonNegative{}, "adapter rank; 0 = no LoRA: every weight trains");
    v.field("alpha", alpha, Positive{}, "the adapter's output is scaled by alpha / rank");
    v.field("dropout", dropout, InRange{0, 0.95}, "dropout on the adapter's input");
    v.field("targets", targets, AnyValue{},
            "layer names to adapt; empty = [c_attn] for gpt2, [q_proj, v_proj] for the llama family");
  }
};

// model: where the weights come from and how they are held.
struct ModelSection {
  std::string init;
  std::string config;
  std::string arch = "gpt2";
  int64_t vocab_size = 0;
  int64_t hidden_size = 256;
  int64_t num_layers = 4;
  int64_t num_heads = 4;
  int64_t num_kv_heads = 0;
  int64_t intermediate_size = 0;
  int64_t max_positions = 1024;
  bool tie_word_embeddings = true;
  std::string dtype = "float32";
  std::string device = "auto";
  LoraConfig lora;

  template <class V>
  void visit(V& v) {
    v.field("init", init, AnyValue{},
            "Hugging Face model folder (config.json + safetensors) or GGUF file (.gguf) of a family shardtune "
            "reads (README, Models) to start from; empty = random init from the fields below");
    v.field("config", config, AnyValue{},
            "random init with the architecture of this HF config.json (or a folder holding one); empty = the "
            "fields below");
    v.field("arch", arch, OneOf{{"gpt2", "llama"}}, "random init: architecture");
    v.field("vocab_size", vocab_size, NonNegative{}, "random init: 0 = the training data's vocabulary");
    v.field("hidden_size", hidden_size, Positive{}, "random init: width");
    v.field("num_layers", num_layers, Positive{}, "random init: transformer blocks");
    v.field("num_heads", num_heads, Positive{}, "random init: attention heads");
    v.field("num_kv_heads", num_kv_heads, NonNegative{}, "random init (llama): key/value heads; 0 = num_heads");
    v.field("intermediate_size", intermediate_size, NonNegative{},
            "random init: MLP width; 0 = 4 x hidden (gpt2), 8/3 x hidden rounded up to 64 (llama)");
    v.field("max_positions", max_positions, Positive{}, "random init: longest sequence");
    v.field("tie_word_embeddings", tie_word_embeddings, AnyValue{}, "random init: output layer shares the embedding");
    v.field("dtype", dtype, OneOf{{"float32", "bfloat16"}},
            "parameter and activation dtype; the optimizer keeps float32 master weights either way");
    v.field("device", device, OneOf{{"auto", "cpu", "cuda"}},
            "auto = this rank's GPU (cuda:<local rank>, NCCL) when there is one, else the CPU (MPI)");
    v.section("lora", lora);
  }
};

// data: token shards (made by `shardtune prep`) and batching.
struct DataSection {
  std::vector<std::string> train;
  std::vector<std::string> val;
  int64_t seq_len = 1024;
  std::string mode = "pack";
  std::string document_mask = "auto";
  int64_t micro_batch = 1;
  int64_t global_batch = 8;
  bool shuffle = true;
  int64_t seed = 1234;
  int64_t prefetch = 4;
  bool allow_tokenizer_mismatch = false;

  template <class V>
  void visit(V& v) {
    v.field("train", train, AnyValue{}, "training shards: paths or glob patterns (data/x-train-*.h5)");
    v.field("val", val, AnyValue{}, "validation shards: paths or glob patterns; empty = no evaluation");
    v.field("seq_len", seq_len, Positive{}, "tokens per sample");
    v.field("mode", mode, OneOf{{"pack", "sft"}},
            "pack = documents back to back (pretraining); sft = whole examples per window, padded");
    v.field("document_mask", document_mask, OneOf{{"auto", "true", "false"}},
            "true = each document (sft: example) in a window attends only to itself, its positions from 0, and "
            "padding to nothing; auto = true in sft, false in pack (documents see the ones before them, as in "
            "GPT-2, Megatron and nanoGPT pretraining)");
    v.field("micro_batch", micro_batch, Positive{}, "samples per rank per forward/backward");
    v.field("global_batch", global_batch, Positive{},
            "samples per optimizer step over all ranks; accumulation = global_batch / (micro_batch x ranks)");
    v.field("shuffle", shuffle, AnyValue{}, "visit the samples in a fresh random order each epoch");
    v.field("seed", seed, NonNegative{}, "seed of the sample order");
    v.field("prefetch", prefetch, Positive{}, "steps of batches read ahead on a background thread");
    v.field("allow_tokenizer_mismatch", allow_tokenizer_mismatch, AnyValue{},
            "train (or eval) on shards made by another tokenizer than model.init's (or in another chat format "
            "than its template's), with a warning; false refuses them");
  }
};

// optim: AdamW, its schedule and clipping.
struct OptimSection {
  double lr = 3e-4;
  std::string schedule = "cosine";
  int64_t warmup_steps = 0;
  double min_lr_ratio = 0.1;
  double decay_fraction = 0.2;
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double weight_decay = 0.1;
  bool decay_all = false;
  double max_grad_norm = 1.0;
  std::string offload = "none";

  template <class V>
  void visit(V& v) {
    v.field("lr", lr, Positive{}, "peak learning rate");
    v.field("schedule", schedule, OneOf{{"constant", "linear", "cosine", "wsd"}},
            "learning-rate schedule after warm-up (wsd = warm-up, stable, decay)");
    v.field("warmup_steps", warmup_steps, NonNegative{}, "linear warm-up steps");
    v.field("min_lr_ratio", min_lr_ratio, InRange{0, 1}, "linear, cosine and wsd end at lr x this");
    v.field("decay_fraction", decay_fraction, InRange{1e-9, 1}, "wsd: the last fraction of the steps that decays");
    v.field("beta1", beta1, InRange{0, 0.99999}, "AdamW beta1");
    v.field("beta2", beta2, InRange{0, 0.99999}, "AdamW beta2");
    v.field("eps", eps, Positive{}, "AdamW epsilon");
    v.field("weight_decay", weight_decay, NonNegative{}, "decoupled weight decay (matrices only unless decay_all)");
    v.field("decay_all", decay_all, AnyValue{}, "decay biases, norm scales and embeddings too");
    v.field("max_grad_norm", max_grad_norm, NonNegative{}, "clip the global gradient norm to this; 0 = no clipping");
    v.field("offload", offload, OneOf{{"none", "cpu"}},
            "cpu = master weights and moments in host memory (pinned on GPUs), the step on the CPU");
  }
};

// parallel: data parallelism and ZeRO.
struct ParallelSection {
  int64_t zero_stage = 0;
  double bucket_mb = 25.0;
  double first_bucket_mb = 1.0;

  template <class V>
  void visit(V& v) {
    v.field("zero_stage", zero_stage, InRange{0, 3}, "0 = DDP; 1 = sharded optimizer state; 2 = + sharded gradients; "
            "3 = + sharded parameters");
    v.field("bucket_mb", bucket_mb, Positive{}, "gradient bucket size (MiB)");
    v.field("first_bucket_mb", first_bucket_mb, Positive{}, "the first bucket, smaller so communication starts sooner");
  }
};

// train: the run.
struct TrainSection {
  int64_t steps = 1000;
  int64_t seed = 1234;
  std::string output_dir = "runs/shardtune";
  std::string activation_checkpointing = "auto";
  int64_t checkpoint_every = 1;
  bool check_fit = true;
  int64_t max_bad_steps = 3;

  template <class V>
  void visit(V& v) {
    v.field("steps", steps, Positive{}, "optimizer steps of the whole run (a resumed run continues to it)");
    v.field("seed", seed, NonNegative{}, "random init, LoRA init and dropout");
    v.field("output_dir", output_dir, AnyValue{}, "where metrics and (by default) checkpoints go");
    v.field("activation_checkpointing", activation_checkpointing, OneOf{{"auto", "none", "blocks"}},
            "blocks = keep only transformer blocks' inputs and recompute the blocks in backward (less memory, "
            "about a third more compute); none; auto = blocks at ZeRO 3 (which always recomputes), else none");
    v.field("checkpoint_every", checkpoint_every, Positive{},
            "with blocks: recompute every n-th block (1 = all; 2 = half of them); ZeRO 3 needs 1");
    v.field("check_fit", check_fit, AnyValue{},
            "refuse to start when the planner (shardtune plan) predicts a rank's memory exceeds its device's");
    v.field("max_bad_steps", max_bad_steps, Positive{},
            "a step whose loss or gradient norm is not finite skips its update (counted in the metrics); this "
            "many in a row stop the run, before any checkpoint of them");
  }
};

// eval: validation loss on data.val.
struct EvalSection {
  int64_t every = 0;
  int64_t max_samples = 0;
  int64_t micro_batch = 0;
  bool at_start = false;

  template <class V>
  void visit(V& v) {
    v.field("every", every, NonNegative{}, "steps between evaluations; 0 = only at the end");
    v.field("max_samples", max_samples, NonNegative{}, "validation samples per evaluation; 0 = all");
    v.field("micro_batch", micro_batch, NonNegative{}, "samples per rank per forward; 0 = data.micro_batch");
    v.field("at_start", at_start, AnyValue{}, "evaluate once before the first step too");
  }
};

// checkpoint: sharded, atomic, reshardable.
struct CheckpointSection {
  std::string dir;
  int64_t every = 0;
  int64_t keep = 2;
  std::string resume = "auto";
  bool at_end = true;
  bool overwrite = false;

  template <class V>
  void visit(V& v) {
    v.field("dir", dir, AnyValue{}, "checkpoint folder; empty = <train.output_dir>/checkpoints");
    v.field("every", every, NonNegative{}, "steps between checkpoints; 0 = none during the run");
    v.field("keep", keep, Positive{},
            "complete checkpoints kept: each new one deletes all but the keep - 1 newest older than itself");
    v.field("resume", resume, AnyValue{},
            "auto = from the newest complete checkpoint in dir, if any; never; or a checkpoint path");
    v.field("at_end", at_end, AnyValue{}, "save once the last step is done");
    v.field("overwrite", overwrite, AnyValue{},
            "with resume: never, delete the checkpoints dir already holds (else such a start is refused)");
  }
};

struct Config {
  ModelSection model;
  DataSection data;
  OptimSection optim;
  ParallelSection parallel;
  TrainSection train;
  EvalSection eval;
  CheckpointSection checkpoint;
  DistConfig dist;
  CommConfig comm;
  LogConfig log;

  template <class V>
  void visit(V& v) {
    v.section("model", model);
    v.section("data", data);
    v.section("optim", optim);
    v.section("parallel", parallel);
    v.section("train", train);
    v.section("eval", eval);
    v.section("checkpoint", checkpoint);
    v.section("dist", dist);
    v.section("comm", comm);
    v.section("log", log);
  }
};

// Reads the YAML file at path, applies the overrides in order and validates
// the result. Throws InputError on any problem.
Config load_config(const std::string& path, const std::vector<std::string>& overrides = {});

// As load_config, from text; source_name stands for the file in messages.
Config parse_config(const std::string& yaml_text, const std::string& source_name,
                    const std::vector<std::string>& overrides = {});

// The defaults with the overrides applied (no file).
Config default_config(const std::vector<std::string>& overrides = {});

// The resolved config as YAML, every field present, with its help as a comment.
std::string to_yaml(const Config& config);

// Micro-steps per optimizer step on `ranks` ranks: global_batch /
// (micro_batch x ranks). Throws InputError when that does not divide.
int64_t accumulation_steps(const DataSection& data, int ranks);

// Activation checkpointing as the engine takes it: 0 = keep activations, n =
// recompute every n-th block. Throws InputError for what ZeRO 3 cannot do
// (it always recomputes every block).
int64_t checkpoint_every(const Config& config);

// True for a command-line argument of the form key.path=value.
bool is_override(std::string_view arg);

}  // namespace shardtune
