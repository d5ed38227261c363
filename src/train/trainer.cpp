#include "shardtune/train/trainer.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <ctime>
#include <cmath>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "model_setup.h"
#include "train_common.h"
#include "shardtune/ckpt/checkpoint.h"
#include "shardtune/comm/communicator.h"
#include "shardtune/core/error.h"
#include "shardtune/core/files.h"
#include "shardtune/core/strings.h"
#include "shardtune/data/loader.h"
#include "shardtune/data/torch_batch.h"
#include "shardtune/metrics/log.h"
#include "shardtune/metrics/metrics.h"
#include "shardtune/metrics/tensorboard.h"
#include "shardtune/model/gguf_model.h"
#include "shardtune/model/hf_checkpoint.h"
#include "shardtune/optim/schedule.h"
#include "shardtune/parallel/data_parallel.h"
#include "shardtune/train/plan.h"

namespace shardtune {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// CPU seconds used by every thread of this process so far.
double process_cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

// JSON has no NaN or Inf: those are written as the strings "NaN", "Infinity"
// and "-Infinity" (the names Python's json module reads them by).
nlohmann::json json_number(double x) {
  if (std::isfinite(x)) return x;
  return std::isnan(x) ? "NaN" : x > 0 ? "Infinity" : "-Infinity";
}

// ---------------------------------------------------------------- signals

// Set by SIGTERM / SIGUSR1; the ranks agree on it at each step boundary.
std::atomic<int> g_stop_signal{0};
// Whether catch_stop_signals() installed the handlers for the whole process.
std::atomic<bool> g_caught_for_process{false};

extern "C" void on_stop_signal(int sig) { g_stop_signal.store(sig); }

void install_stop_handlers(struct sigaction* old_term, struct sigaction* old_usr1) {
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGTERM, &sa, old_term);
  sigaction(SIGUSR1, &sa, old_usr1);
}

// Installs the handlers for the trainer's lifetime, unless they are the
// process's already (then a signal caught before this run is kept).
class StopSignals {
 public:
  StopSignals() : own_(!g_caught_for_process.load()) {
    if (!own_) return;
    g_stop_signal.store(0);
    install_stop_handlers(&old_term_, &old_usr1_);
  }
  ~StopSignals() {
    if (!own_) return;
    sigaction(SIGTERM, &old_term_, nullptr);
    sigaction(SIGUSR1, &old_usr1_, nullptr);
  }
  StopSignals(const StopSignals&) = delete;
  StopSignals& operator=(const StopSignals&) = delete;

 private:
  const bool own_;
  struct sigaction old_term_ {}, old_usr1_ {};
};

// ---------------------------------------------------------------- faults

// Fault injection for the tests, from SHARDTUNE_FAULT (never set in normal
// runs):
//   throw@RANK:STEP    rank RANK throws in the middle of step STEP
//   kill@RANK:STEP     rank RANK dies by SIGKILL in the middle of step STEP
//   nan@RANK:STEP:COUNT
//                      rank RANK's loss (and so every gradient) is NaN in
//                      steps STEP .. STEP+COUNT-1
//   stall_checkpoint@STEP:SECONDS
//                      rank 0 pauses before completing the checkpoint of
//                      step STEP, every file but DONE written (a test kills
//                      it there)
//   stall_prune@STEP:SECONDS
//                      rank 0 pauses in the middle of deleting an old
//                      checkpoint after completing the one of step STEP
//   slow@SECONDS       every step of every rank sleeps that long
// Anything else is refused like a bad setting.
struct Faults {
  enum Kind { kNone, kThrow, kKill, kNan, kStallCheckpoint, kStallPrune, kSlow } kind = kNone;
  int rank = -1;
  int64_t step = -1;
  int64_t count = 1;
  double seconds = 0.0;

  static Faults from_env() {
    Faults f;
    const char* env = std::getenv("SHARDTUNE_FAULT");
    if (env == nullptr || *env == '\0') return f;
    const std::string spec(env);
    const std::string usage = str_cat(
        "SHARDTUNE_FAULT: '", capped(spec, 80),
        "' is not throw@RANK:STEP, kill@RANK:STEP, nan@RANK:STEP:COUNT, stall_checkpoint@STEP:SECONDS, "
        "stall_prune@STEP:SECONDS or slow@SECONDS (whole numbers >= 0; COUNT >= 1; SECONDS a finite number >= 0)");
    const size_t at = spec.find('@');
    if (at == std::string::npos) throw InputError(usage);
    const std::string kind = spec.substr(0, at);
    const std::vector<std::string> parts = split(spec.substr(at + 1), ':');
    auto whole = [&](size_t i, int64_t min) {
      const std::string& t = parts[i];
      if (t.empty() || t.size() > 12 || t.find_first_not_of("0123456789") != std::string::npos) throw InputError(usage);
      const int64_t v = std::stoll(t);
      if (v < min) throw InputError(usage);
      return v;
    };
    auto secs = [&](size_t i) {
      char* end = nullptr;
      const double v = std::strtod(parts[i].c_str(), &end);
      if (parts[i].empty() || *end != '\0' || !std::isfinite(v) || v < 0) throw InputError(usage);
      return v;
    };
    auto want = [&](size_t n) {
      if (parts.size() != n) throw InputError(usage);
    };
    auto rank_at = [&](size_t i) {  // checked before it is narrowed to an int
      const int64_t v = whole(i, 0);
      if (v > 1000000) throw InputError(usage);
      return static_cast<int>(v);
    };
    if (kind == "throw" || kind == "kill") {
      want(2);
      f = {kind == "throw" ? kThrow : kKill, rank_at(0), whole(1, 0), 1, 0.0};
    } else if (kind == "nan") {
      want(3);
      f = {kNan, rank_at(0), whole(1, 0), whole(2, 1), 0.0};
    } else if (kind == "stall_checkpoint" || kind == "stall_prune") {
      want(2);
      f = {kind == "stall_checkpoint" ? kStallCheckpoint : kStallPrune, 0, whole(0, 0), 1, secs(1)};
    } else if (kind == "slow") {
      want(1);
      f = {kSlow, -1, -1, 1, secs(0)};
    } else {
      throw InputError(usage);
    }
    return f;
  }

  // Whether my_rank's loss is made NaN in my_step.
  bool nan_at(int my_rank, int64_t my_step) const {
    return kind == kNan && rank == my_rank && my_step >= step && my_step < step + count;
  }

  // Called mid-step (before the last micro-step's forward).
  void at_step(int my_rank, int64_t my_step) const {
    if (kind == kSlow) std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
    if (rank != my_rank || step != my_step) return;
    if (kind == kThrow) throw Error(str_cat("injected failure (SHARDTUNE_FAULT) on rank ", my_rank, " in step ", my_step));
    if (kind == kKill) std::raise(SIGKILL);
  }
  void before_checkpoint_done(int my_rank, int64_t my_step) const {
    if (kind == kStallCheckpoint && rank == my_rank && step == my_step) {
      std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
    }
  }
  void mid_prune(int my_rank, int64_t my_step) const {
    if (kind == kStallPrune && rank == my_rank && step == my_step) {
      std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
    }
  }
};

// ---------------------------------------------------------------- trainer

class Trainer {
 public:
  Trainer(const Config& config, DistContext& dist)
      : config_(config), dist_(dist), faults_(Faults::from_env()), rank_(dist.rank()), world_(dist.world_size()) {}

  TrainSummary run();

 private:
  void setup();
  void check_fit() const;
  void train_step();
  void log_step(double step_seconds);
  void start_interval();
  // Every rank sees the checkpoint folder rank 0 writes to, or InputError.
  void check_shared_checkpoint_dir();
  // One metrics record: to metrics.jsonl and, when on, TensorBoard (rank 0).
  void write_record(const nlohmann::json& record);
  void maybe_evaluate(bool force);
  void save_checkpoint();

  const Config config_;
  DistContext& dist_;
  const Faults faults_;
  const int rank_, world_;
  torch::Device device_ = torch::kCPU;
  std::unique_ptr<Communicator> comm_;
  std::shared_ptr<TokenDataset> train_data_, val_data_;
  std::shared_ptr<CausalLM> model_;
  std::unique_ptr<DataParallel> dp_;
  std::string layout_;  // layout_signature of the trainable parameters
  std::unique_ptr<DataLoader> loader_;
  std::unique_ptr<MetricsFile> metrics_;
  std::unique_ptr<TensorBoardWriter> tensorboard_;  // rank 0, unless log.tensorboard is false
  std::unique_ptr<ProgressBar> progress_;
  LrSchedule schedule_;
  int64_t accumulation_ = 1;
  double flops_per_token_ = 0.0, peak_flops_ = 0.0;

  // State.
  int64_t step_ = 0;
  int64_t tokens_seen_ = 0;
  bool stop_ = false;
  bool bad_step_ = false;      // this step's update was skipped (non-finite loss or gradient norm)
  int64_t bad_in_a_row_ = 0;   // such steps in a row
  int64_t bad_steps_ = 0;      // such steps in this attempt
  TrainSummary summary_;
  int64_t saved_step_ = -1;
  Clock::time_point start_;
  Clock::time_point steps_start_;  // after set-up: what the time left is estimated from

  // The last step's numbers.
  double loss_ = 0.0, grad_norm_ = 0.0, lr_ = 0.0;
  double t_data_ = 0.0, t_fwd_bwd_ = 0.0, t_comm_ = 0.0, t_optim_ = 0.0;
  int64_t step_tokens_ = 0;
  // Sums since the last log record (tokens/s over the interval).
  double interval_seconds_ = 0.0;
  int64_t interval_tokens_ = 0;
  // Wall and CPU clocks at the start of the interval (process, communication thread).
  Clock::time_point interval_start_;
  double interval_cpu_process_ = 0.0;
  double interval_cpu_comm_ = 0.0;
};

void Trainer::setup() {
  const DataSection& d = config_.data;
  schedule_.kind = config_.optim.schedule;
  schedule_.lr = config_.optim.lr;
  schedule_.warmup_steps = config_.optim.warmup_steps;
  schedule_.total_steps = config_.train.steps;
  schedule_.min_lr_ratio = config_.optim.min_lr_ratio;
  schedule_.decay_fraction = config_.optim.decay_fraction;
  (void)lr_at(schedule_, 0);  // validates the schedule before any work

  device_ = pick_device(config_.model, dist_.info());  // the NCCL communicator binds it
  comm_ = make_trainer_communicator(config_, dist_.info(), device_);

  if (d.train.empty()) throw InputError("data.train: no training shards given");
  train_data_ = std::make_shared<TokenDataset>(expand_data_paths(d.train, "data.train"), dataset_options(d));
  if (d.val.empty()) {
    // Evaluation settings with nothing to evaluate on would be dropped silently.
    const EvalSection& e = config_.eval;
    for (const auto& [key, set] : {std::pair<const char*, bool>{"eval.every", e.every > 0}, {"eval.at_start", e.at_start},
                                   {"eval.max_samples", e.max_samples > 0}, {"eval.micro_batch", e.micro_batch > 0}}) {
      if (set) throw InputError(str_cat(key, " is set but data.val is empty: give validation shards or drop ", key));
    }
  }
  if (!d.val.empty()) {
    val_data_ = std::make_shared<TokenDataset>(expand_data_paths(d.val, "data.val"), dataset_options(d));
    const ShardAttrs &v = val_data_->attrs(), &t = train_data_->attrs();
    if (v.tokenizer != t.tokenizer || v.chat_format != t.chat_format) {
      throw InputError(str_cat("data.val was made by tokenizer ", v.tokenizer_name, " (", v.tokenizer, ")",
                               v.chat_format.empty() ? "" : str_cat(" in chat format ", v.chat_format),
                               ", data.train by ", t.tokenizer_name, " (", t.tokenizer, ")",
                               t.chat_format.empty() ? "" : str_cat(" in chat format ", t.chat_format)));
    }
  }
  if (!config_.model.init.empty()) {  // a pretrained model: its tokenizer made the data
    if (auto tok = source_tokenizer(config_.model.init)) {
      check_data_tokenizer(train_data_->attrs(), "data.train", *tok, config_.model.init, "model.init",
                           d.allow_tokenizer_mismatch);
    } else if (rank_ == 0) {
      log::warn("model.init ", config_.model.init, " carries no tokenizer: data.train (made by ",
                train_data_->attrs().tokenizer_name, " ", train_data_->attrs().tokenizer, ") is taken on trust");
    }
  }
  accumulation_ = accumulation_steps(d, world_);
  check_shared_checkpoint_dir();

  // Resume?
  std::string resume_from;
  const std::string& r = config_.checkpoint.resume;
  if (r == "auto") {
    resume_from = latest_checkpoint(checkpoint_dir(config_));
  } else if (r != "never") {
    resume_from = r;
  } else if (const auto earlier = checkpoint_entries(checkpoint_dir(config_)); !earlier.empty()) {
    // A fresh start beside an earlier run's checkpoints would mix the two
    // (pruning, latest, a later resume: auto taking the other run's).
    if (!config_.checkpoint.overwrite) {
      throw InputError(str_cat("checkpoint.resume: never, but ", checkpoint_dir(config_), " already holds ",
                               earlier.size(), " checkpoint entr", earlier.size() == 1 ? "y" : "ies", " (",
                               fs::path(earlier.back()).filename().string(),
                               ", ...) of an earlier run: resume it (checkpoint.resume: auto), give another "
                               "checkpoint.dir or train.output_dir, or set checkpoint.overwrite: true to delete them"));
    }
    comm_->barrier()->wait();  // every rank has looked before rank 0 deletes
    if (rank_ == 0) {
      for (const auto& e : earlier) {
        if (fs::is_directory(e) && !fs::is_symlink(e)) {
          delete_checkpoint(e);
        } else {
          fs::remove(e);
        }
      }
      log::warn("checkpoint.overwrite: deleted ", earlier.size(), " earlier checkpoint entries in ",
                checkpoint_dir(config_));
    }
    comm_->barrier()->wait();
  }
  TrainerState state;
  if (!resume_from.empty()) state = validate_checkpoint(resume_from);

  if (config_.train.check_fit) check_fit();
  model_ = build_model(config_, train_data_->attrs(), resume_from, device_);
  if (d.seq_len > model_->config().max_positions && model_->config().family == Family::kGpt2) {
    throw InputError(str_cat("data.seq_len ", d.seq_len, " exceeds the model's ", model_->config().max_positions,
                             " positions"));
  }
  model_->train();

  DataParallelOptions o;
  o.zero_stage = static_cast<int>(config_.parallel.zero_stage);
  o.offload_optimizer = config_.optim.offload == "cpu";
  o.bucket_mb = config_.parallel.bucket_mb;
  o.first_bucket_mb = config_.parallel.first_bucket_mb;
  o.adamw.beta1 = config_.optim.beta1;
  o.adamw.beta2 = config_.optim.beta2;
  o.adamw.eps = config_.optim.eps;
  o.adamw.weight_decay = config_.optim.weight_decay;
  o.decay_all = config_.optim.decay_all;
  o.checkpoint_every = static_cast<int>(checkpoint_every(config_));
  dp_ = std::make_unique<DataParallel>(*model_, *comm_, o);
  layout_ = layout_signature(dp_->param_names(), dp_->param_numels());

  Sampler sampler(train_data_->num_samples(), d.global_batch, static_cast<uint64_t>(d.seed), d.shuffle);
  if (!resume_from.empty()) {
    if (state.layout != layout_ || state.num_params != dp_->num_params()) {
      throw InputError(str_cat("checkpoint ", resume_from, " holds optimizer state for other trainable parameters (",
                               state.num_params, " elements, layout ", state.layout, "; this model: ",
                               dp_->num_params(), ", ", layout_, "): the model or LoRA config changed"));
    }
    if (state.global_batch != d.global_batch) {
      log::warn("checkpoint ", resume_from, " was saved with data.global_batch ", state.global_batch, ", now ",
                d.global_batch, ": the sample order continues from the same position, in batches of the new size");
    }
    OptimStateReader reader(resume_from);
    dp_->load_state(
        [&](int64_t offset, int64_t length) {
          const auto range = reader.read(offset, length);
          return DataParallel::FlatState{offset, range.master, range.exp_avg, range.exp_avg_sq};
        },
        state.step);
    sampler.restore(state.sampler);
    step_ = state.step;
    tokens_seen_ = state.tokens_seen;
    saved_step_ = state.step;
    summary_.checkpoint = resume_from;
    log::info("resumed from ", resume_from, " at step ", step_, " (saved by ", state.world_size, " rank(s), ZeRO ",
              state.zero_stage, "; now ", world_, " rank(s), ZeRO ", o.zero_stage, ")");
  }
  loader_ = std::make_unique<DataLoader>(train_data_, sampler, rank_, world_, static_cast<int>(d.prefetch));

  flops_per_token_ = training_flops_per_token(model_->config(), d.seq_len);
  peak_flops_ = config_.log.peak_tflops * 1e12;
  if (peak_flops_ == 0.0 && device_.is_cuda()) {
    peak_flops_ = peak_flops_for_device(device_name(device_), config_.model.dtype == "bfloat16");
  }
  if (rank_ == 0) {
    metrics_ = std::make_unique<MetricsFile>(metrics_path(config_), /*append=*/!resume_from.empty());
    const std::string tb = tensorboard_dir(config_);
    if (!tb.empty()) {
      // A resumed run writes its steps after the checkpoint's again: the
      // earlier attempt's points from there on are dropped by readers.
      tensorboard_ = std::make_unique<TensorBoardWriter>(tb, resume_from.empty() ? 0 : step_ + 1);
      std::string yaml;
      for (const std::string& line : split(to_yaml(config_), '\n')) yaml += "    " + line + "\n";  // a code block
      tensorboard_->text("config", step_, yaml);
    }
    const bool tty = isatty(fileno(stderr)) != 0;
    const bool show = config_.log.progress == "on" || (config_.log.progress == "auto" && tty);
    progress_ = std::make_unique<ProgressBar>(config_.train.steps, show);
    log::info("training ", model_->config().model_type, " (", parameter_count(model_->config()), " parameters, ",
              dp_->num_params(), " trainable) on ", world_, " rank(s), ", device_.str(), ", ", config_.model.dtype,
              ", ZeRO ", o.zero_stage, o.offload_optimizer ? " + offload" : "",
              o.checkpoint_every > 0 ? str_cat(", activation checkpointing every ", o.checkpoint_every,
                                               o.checkpoint_every == 1 ? " block" : " blocks")
                                     : std::string(),
              "; global batch ", d.global_batch,
              " x ", d.seq_len, " tokens (micro-batch ", d.micro_batch, ", accumulation ", accumulation_, "); ",
              train_data_->num_samples(), " training samples");
  }
}

// The planner's memory for this run on this device; a rank that would not
// fit is refused before anything is allocated (train.check_fit=false
// starts anyway). Every rank computes the same verdict.
void Trainer::check_fit() const {
  PlanInput in;
  in.config = config_;
  in.ranks = world_;
  in.model = planned_model_config(config_, train_data_->attrs().vocab_size);
  if (device_.is_cuda()) {
    in.device.kind = "cuda";
    in.device.memory_bytes = device_memory_bytes(device_);
  } else {
    in.device = plan_device("cpu", world_);
    in.device.ranks_per_node = dist_.info().local_world_size;
  }
  const Plan::Memory m = plan_memory(in);
  const double have = rank_memory_bytes(in.device, world_);
  if (have <= 0 || m.total <= have) return;
  const double gib = 1073741824.0;
  char numbers[512];
  std::snprintf(numbers, sizeof numbers,
                "params %.2f, grads %.2f, optimizer %.2f%s, activations %.2f, buffers %.2f GiB", m.params / gib,
                m.grads / gib, m.optimizer / gib, m.optimizer_on_host > 0 ? " (on the host)" : "",
                m.activations / gib, m.buffers / gib);
  throw InputError(str_cat("the planner predicts ", std::round(m.total / gib * 100) / 100, " GiB per rank (", numbers,
                           ") but ", device_.is_cuda() ? device_name(device_) : "this node's memory over its ranks",
                           " has ", std::round(have / gib * 100) / 100,
                           " GiB: more ranks, a higher parallel.zero_stage, optim.offload=cpu, "
                           "train.activation_checkpointing=blocks or a smaller data.micro_batch would lower it "
                           "(shardtune plan CONFIG --ranks N shows each); train.check_fit=false starts anyway"));
}

void Trainer::train_step() {
  const DataSection& d = config_.data;
  const auto t_start = Clock::now();
  Batch batch = loader_->next();
  t_data_ = seconds_since(t_start);

  // Every rank learns the batch's target-token count first: the loss is
  // their mean over the whole global batch.
  torch::Tensor count = torch::tensor({batch.target_tokens()}, torch::kInt64);
  if (device_.is_cuda()) count = count.to(device_);
  comm_->all_reduce(count, ReduceOp::kSum)->wait();
  step_tokens_ = count.cpu().item<int64_t>();
  const double scale = static_cast<double>(world_) / static_cast<double>(std::max<int64_t>(1, step_tokens_));

  // Dropout masks depend on (seed, step, rank) alone, so a resumed run draws
  // the ones it would have drawn.
  torch::manual_seed(static_cast<uint64_t>(config_.train.seed) * 1000003ull + static_cast<uint64_t>(step_) * 7919ull +
                     static_cast<uint64_t>(rank_));

  const auto t_compute = Clock::now();
  torch::Tensor local_loss = torch::zeros({}, torch::TensorOptions().dtype(torch::kFloat64).device(device_));
  const int64_t rows = d.micro_batch;
  for (int64_t micro = 0; micro < accumulation_; ++micro) {
    if (micro == accumulation_ - 1) faults_.at_step(rank_, step_);
    const SampleRows mb = batch.slice(micro * rows, rows);
    dp_->begin_micro_step(micro == 0, micro == accumulation_ - 1);
    torch::Tensor loss = loss_sum(*model_, to_torch(mb, device_));
    if (micro == accumulation_ - 1 && faults_.nan_at(rank_, step_)) loss = loss * std::nan("");
    local_loss += loss.detach();
    (loss * scale).backward();
    const double norm = dp_->end_micro_step();
    if (micro == accumulation_ - 1) grad_norm_ = norm;
  }
  t_comm_ = dp_->exposed_comm_seconds();
  t_fwd_bwd_ = seconds_since(t_compute) - t_comm_;

  // The step's loss, and whether any rank was asked to stop: known on every
  // rank before the update, so that all of them skip a bad one alike.
  const float stop_requested = g_stop_signal.load() != 0 ? 1.0f : 0.0f;
  torch::Tensor sums = torch::tensor({static_cast<float>(local_loss.item<double>()), stop_requested});
  if (device_.is_cuda()) sums = sums.to(device_);
  comm_->all_reduce(sums, ReduceOp::kSum)->wait();
  sums = sums.cpu();
  loss_ = static_cast<double>(sums[0].item<float>()) / static_cast<double>(std::max<int64_t>(1, step_tokens_));
  stop_ = sums[1].item<float>() > 0.0f;

  // A non-finite loss or gradient norm (the same on every rank) would put
  // NaN or Inf into the weights: the update is skipped, and a run of such
  // steps stops the training before any checkpoint could hold them.
  bad_step_ = !std::isfinite(loss_) || !std::isfinite(grad_norm_);
  const auto t_opt = Clock::now();
  lr_ = lr_at(schedule_, step_);
  if (bad_step_) {
    ++bad_in_a_row_;
    ++bad_steps_;
    if (rank_ == 0) {
      log::warn("step ", step_ + 1, ": loss ", loss_, ", grad_norm ", grad_norm_, " is not finite: update skipped (",
                bad_in_a_row_, " in a row; train.max_bad_steps ", config_.train.max_bad_steps, ")");
    }
    if (bad_in_a_row_ >= config_.train.max_bad_steps) {
      throw Error(str_cat("train: ", bad_in_a_row_, " steps in a row (to step ", step_ + 1,
                          ") had a non-finite loss or gradient norm (last: loss ", loss_, ", grad_norm ", grad_norm_,
                          "); stopped without saving them. ",
                          saved_step_ >= 0 ? str_cat("The last checkpoint is of step ", saved_step_, ". ") : "",
                          "Lower optim.lr, check the data, or raise train.max_bad_steps"));
    }
  } else {
    bad_in_a_row_ = 0;
    dp_->step(lr_, config_.optim.max_grad_norm);
  }
  if (device_.is_cuda()) torch::cuda::synchronize(device_.index());
  t_optim_ = seconds_since(t_opt);

  ++step_;
  tokens_seen_ += step_tokens_;
  const double step_seconds = seconds_since(t_start);
  interval_seconds_ += step_seconds;
  interval_tokens_ += d.global_batch * d.seq_len;
  log_step(step_seconds);
}

void Trainer::log_step(double step_seconds) {
  const bool record = step_ % config_.log.every == 0 || step_ == config_.train.steps || stop_ || bad_step_;
  if (rank_ != 0) return;
  const double tokens_per_s = interval_seconds_ > 0 ? static_cast<double>(interval_tokens_) / interval_seconds_ : 0.0;
  const double util = mfu(flops_per_token_, tokens_per_s, world_, peak_flops_);
  // The time left at this attempt's mean step time so far (evaluations and
  // checkpoints included, as they will recur).
  const double elapsed = seconds_since(start_);
  const int64_t done_here = step_ - summary_.first_step;
  const double eta = done_here > 0 ? seconds_since(steps_start_) / static_cast<double>(done_here) *
                                         static_cast<double>(config_.train.steps - step_)
                                   : 0.0;
  char live[160];
  std::snprintf(live, sizeof(live), "loss %.4f %.0f tok/s elapsed %s", loss_, tokens_per_s,
                format_duration(elapsed).c_str());
  progress_->update(step_, live, eta);
  if (!record) return;
  const auto mem = dp_->memory();
  // CPU seconds per wall second over the interval: the whole process, and
  // the communication thread alone (busy waiting would show there).
  const double wall = std::max(1e-9, seconds_since(interval_start_));
  const double cpu_process = process_cpu_seconds() - interval_cpu_process_;
  const double comm_now = comm_->thread_cpu_seconds();
  const double cpu_comm = comm_now < 0 ? -1.0 : comm_now - interval_cpu_comm_;
  nlohmann::json j = {
      {"type", "train"},
      {"step", step_},
      {"loss", json_number(loss_)},
      {"lr", lr_},
      {"grad_norm", json_number(grad_norm_)},
      {"skipped", bad_step_},
      {"skipped_steps", bad_steps_},
      {"tokens_per_s", tokens_per_s},
      {"mfu", peak_flops_ > 0 ? nlohmann::json(util) : nlohmann::json(nullptr)},
      {"target_tokens", step_tokens_},
      {"tokens_seen", tokens_seen_},
      {"time", {{"step", step_seconds}, {"data", t_data_}, {"fwd_bwd", t_fwd_bwd_}, {"comm", t_comm_},
                {"optim", t_optim_}}},
      {"cpu", {{"process", cpu_process / wall},
               {"comm_thread", cpu_comm < 0 ? nlohmann::json(nullptr) : nlohmann::json(cpu_comm / wall)}}},
      {"memory", {{"params", mem.params}, {"grads", mem.grads}, {"optimizer", mem.optimizer},
                  {"peak_host", peak_host_memory_bytes()}, {"peak_device", peak_device_memory_bytes(device_)}}},
  };
  write_record(j);
  if (!progress_->enabled()) {
    char line[256];
    std::snprintf(line, sizeof(line), "step %lld/%lld loss %.4f lr %.3g grad_norm %.3f %.0f tok/s%s elapsed %s eta %s",
                  static_cast<long long>(step_), static_cast<long long>(config_.train.steps), loss_, lr_, grad_norm_,
                  tokens_per_s, peak_flops_ > 0 ? str_cat(" mfu ", util * 100, "%").c_str() : "",
                  format_duration(elapsed).c_str(), format_duration(eta).c_str());
    log::info(line);
  }
  start_interval();
}

void Trainer::check_shared_checkpoint_dir() {
  if (world_ == 1) return;
  // Rank 0 writes a token into the checkpoint folder; every rank must read
  // it back there. On node-local storage the ranks of other hosts see a
  // folder of their own, and a checkpoint would come out half-written.
  const std::string dir = checkpoint_dir(config_);
  const std::string marker = dir + "/.shared-check";
  std::string token;
  if (rank_ == 0) {
    // At most 20 + 1 + 10 + 1 + 20 characters: it fits the 64 broadcast.
    token = str_cat(dist_.info().hostname.substr(0, 20), ":", ::getpid(), ":",
                    std::chrono::steady_clock::now().time_since_epoch().count());
    fs::create_directories(dir);
    write_file_atomically(marker, token);
  }
  // The token to every rank, a character per element (zero after its end).
  std::vector<int64_t> chars(64, 0);
  std::copy(token.begin(), token.end(), chars.begin());
  torch::Tensor t = torch::tensor(chars, torch::kInt64).to(device_);
  comm_->broadcast(t, 0)->wait();
  t = t.cpu();
  std::string expected;
  for (const int64_t* c = t.data_ptr<int64_t>(); expected.size() < chars.size() && *c != 0; ++c) {
    expected += static_cast<char>(*c);
  }
  std::string seen;
  {
    std::ifstream in(marker, std::ios::binary);
    seen.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  // Which ranks saw something else: each sets its own element.
  std::vector<int64_t> mine(static_cast<size_t>(world_), 0);
  mine[static_cast<size_t>(rank_)] = seen != expected;
  torch::Tensor blind = torch::tensor(mine, torch::kInt64).to(device_);
  comm_->all_reduce(blind, ReduceOp::kSum)->wait();
  blind = blind.cpu();
  comm_->barrier()->wait();
  if (rank_ == 0) fs::remove(marker);
  std::vector<std::string> ranks;
  for (int r = 0; r < world_; ++r) {
    if (blind.data_ptr<int64_t>()[r] != 0) ranks.push_back(std::to_string(r));
  }
  if (!ranks.empty()) {
    throw InputError(str_cat("checkpoint.dir ", dir, " is not one folder for every rank: rank(s) ", join(ranks, ", "),
                             " do not see what rank 0 (host ", expected.substr(0, expected.find(':')),
                             ") wrote there (node-local storage?). Give a checkpoint.dir (or train.output_dir) on "
                             "storage every node mounts"));
  }
}

void Trainer::write_record(const nlohmann::json& record) {
  metrics_->write(record.dump());
  if (tensorboard_) tensorboard_->record(record);
}

void Trainer::start_interval() {
  interval_seconds_ = 0.0;
  interval_tokens_ = 0;
  interval_start_ = Clock::now();
  interval_cpu_process_ = process_cpu_seconds();
  interval_cpu_comm_ = comm_->thread_cpu_seconds();
}

void Trainer::maybe_evaluate(bool force) {
  if (!val_data_) return;
  if (!force && (config_.eval.every == 0 || step_ % config_.eval.every != 0 || step_ == config_.train.steps)) return;
  const int64_t mb = config_.eval.micro_batch > 0 ? config_.eval.micro_batch : config_.data.micro_batch;
  const EvalResult r = evaluate(*model_, dp_.get(), *val_data_, *comm_, mb, config_.eval.max_samples, device_);
  if (rank_ == 0) {
    write_record(eval_record(step_, r));
    progress_->finish();
    char line[160];
    std::snprintf(line, sizeof(line), "eval at step %lld: val_loss %.4f val_ppl %.3f (%lld tokens)",
                  static_cast<long long>(step_), r.loss, r.perplexity, static_cast<long long>(r.tokens));
    log::info(line);
  }
  if (step_ == summary_.first_step && std::isnan(summary_.val_loss_first)) summary_.val_loss_first = r.loss;
  summary_.val_loss_last = r.loss;
  summary_.val_step_last = step_;
}

void Trainer::save_checkpoint() {
  if (saved_step_ == step_) return;
  const auto piece = dp_->state_to_save();
  {
    // The trained weights (each rank's shard of them) must be finite before
    // anything is written.
    torch::Tensor bad = torch::logical_not(torch::isfinite(piece.master)).sum().to(torch::kFloat32).reshape({1});
    if (device_.is_cuda()) bad = bad.to(device_);
    comm_->all_reduce(bad, ReduceOp::kSum)->wait();
    if (bad.cpu().item<float>() > 0) {
      throw Error(str_cat("train: the weights of step ", step_, " hold ", static_cast<int64_t>(bad.cpu().item<float>()),
                          " non-finite numbers; no checkpoint written",
                          saved_step_ >= 0 ? str_cat(" (the last one is of step ", saved_step_, ")") : ""));
    }
  }
  const std::string dir = checkpoint_dir(config_);
  const std::string tmp = rank_ == 0 ? begin_checkpoint(dir, step_) : checkpoint_tmp_path(dir, step_);
  comm_->barrier()->wait();

  write_optim_piece(tmp, rank_, world_, piece.offset, piece.master, piece.exp_avg, piece.exp_avg_sq,
                    dp_->num_params(), layout_);

  dp_->gather_parameters();  // ZeRO-3: rank 0 needs every weight
  if (rank_ == 0) {
    write_hf_files(*model_, tmp);
    write_tokenizer_files(config_.model.init, tmp);  // so exports carry the tokenizer
    if (model_->has_lora()) {
      LoraSpec spec;
      spec.targets = lora_targets(config_.model.lora, model_->config());
      spec.rank = config_.model.lora.rank;
      spec.alpha = config_.model.lora.alpha;
      spec.dropout = config_.model.lora.dropout;
      write_peft_files(*model_, tmp, spec, config_.model.init);
    }
    TrainerState s;
    s.step = step_;
    s.sampler = loader_->state();
    s.tokens_seen = tokens_seen_;
    s.world_size = world_;
    s.zero_stage = config_.parallel.zero_stage;
    s.global_batch = config_.data.global_batch;
    s.seed = config_.train.seed;
    s.num_params = dp_->num_params();
    s.layout = layout_;
    s.lora = model_->has_lora();
    s.config_yaml = to_yaml(config_);
    write_trainer_state(tmp, s);
  }
  dp_->release_parameters();
  comm_->barrier()->wait();  // every rank's files are written
  if (rank_ == 0) {
    faults_.before_checkpoint_done(rank_, step_);
    summary_.checkpoint = finish_checkpoint(tmp, config_.checkpoint.keep,
                                            [this](const std::string&) { faults_.mid_prune(rank_, step_); });
    progress_->finish();
    log::info("checkpoint ", summary_.checkpoint);
  }
  saved_step_ = step_;
}

TrainSummary Trainer::run() {
  start_ = Clock::now();
  StopSignals signals;
  setup();
  summary_.first_step = step_;
  summary_.metrics_file = metrics_path(config_);
  if (config_.eval.at_start) maybe_evaluate(/*force=*/true);
  steps_start_ = Clock::now();
  start_interval();
  while (step_ < config_.train.steps && !stop_) {
    train_step();
    maybe_evaluate(/*force=*/false);
    const bool periodic = config_.checkpoint.every > 0 && step_ % config_.checkpoint.every == 0;
    if (periodic || stop_) save_checkpoint();
  }
  if (stop_) {
    summary_.preempted = true;
    log::info("stopped by signal at step ", step_, " after saving");
  } else {
    maybe_evaluate(/*force=*/true);
    if (config_.checkpoint.at_end) save_checkpoint();
  }
  if (progress_) progress_->finish();
  summary_.last_step = step_;
  summary_.seconds = seconds_since(start_);
  return summary_;
}

}  // namespace

TrainSummary train(const Config& config, DistContext& dist) { return Trainer(config, dist).run(); }

void catch_stop_signals() {
  if (g_caught_for_process.exchange(true)) return;
  install_stop_handlers(nullptr, nullptr);
}

}  // namespace shardtune
