// Pieces the trainer, the evaluation and the export share.
#include "train_common.h"

#include <cmath>
#include <nlohmann/json.hpp>

#include "shardtune/core/error.h"
#include "shardtune/data/torch_batch.h"
#include "shardtune/model/loss.h"

namespace shardtune {
std::string checkpoint_dir(const Config& c) {
  return c.checkpoint.dir.empty() ? c.train.output_dir + "/checkpoints" : c.checkpoint.dir;
}

std::string metrics_path(const Config& c) {
  return c.log.metrics_file.empty() ? c.train.output_dir + "/metrics.jsonl" : c.log.metrics_file;
}

std::string tensorboard_dir(const Config& c) {
  if (c.log.tensorboard == "false") return "";
  return c.log.tensorboard == "true" ? c.train.output_dir + "/tensorboard" : c.log.tensorboard;
}

DatasetOptions dataset_options(const DataSection& d) {
  DatasetOptions o;
  o.seq_len = d.seq_len;
  o.mode = parse_pack_mode(d.mode);
  o.document_mask = d.document_mask == "auto" ? o.mode == PackMode::kSft : d.document_mask == "true";
  return o;
}

torch::Tensor loss_sum(CausalLM& model, const TorchBatch& b) {
  torch::Tensor h = model.hidden_states(b.input_ids, nullptr, b.documents ? &*b.documents : nullptr);
  h = h.reshape({-1, h.size(-1)});
  torch::Tensor labels = b.labels.reshape({-1});
  // Only positions with a target reach the output projection: in SFT data
  // most are prompt or padding, and the projection to the vocabulary is the
  // largest matrix product of a small model. The loss is the same sum.
  if (b.scored_rows.defined()) {
    h = h.index_select(0, b.scored_rows);
    labels = labels.index_select(0, b.scored_rows);
  }
  return cross_entropy_sum(model, h, labels, kIgnoreIndex);
}

EvalResult evaluate(CausalLM& model, DataParallel* dp, TokenDataset& data, Communicator& comm, int64_t micro_batch,
                    int64_t max_samples, torch::Device device) {
  const int64_t n = max_samples > 0 ? std::min(max_samples, data.num_samples()) : data.num_samples();
  const int world = comm.size();
  const int64_t per_round = micro_batch * world;
  const int64_t rounds = (n + per_round - 1) / per_round;
  torch::NoGradGuard no_grad;
  const bool was_training = model.is_training();
  model.eval();
  if (dp != nullptr) dp->begin_eval();
  double local_loss = 0.0;
  int64_t local_tokens = 0;
  for (int64_t round = 0; round < rounds; ++round) {
    SampleRows b;
    for (int64_t j = 0; j < micro_batch; ++j) {
      const int64_t i = round * per_round + comm.rank() * micro_batch + j;
      if (i >= n) break;
      data.read_sample(i, b);
    }
    if (b.rows == 0) {  // nothing left for this rank: a forward that counts for nothing
      data.read_sample(0, b);
      std::fill(b.targets.begin(), b.targets.end(), kIgnoreIndex);
    }
    local_tokens += b.target_tokens();
    local_loss += loss_sum(model, to_torch(b, device)).item<double>();
  }
  if (dp != nullptr) dp->end_eval();
  if (was_training) model.train();
  torch::Tensor tokens = torch::tensor({local_tokens}, torch::kInt64);
  torch::Tensor loss = torch::tensor({static_cast<float>(local_loss)}, torch::kFloat32);
  if (device.is_cuda()) {
    tokens = tokens.to(device);
    loss = loss.to(device);
  }
  comm.all_reduce(tokens, ReduceOp::kSum)->wait();
  comm.all_reduce(loss, ReduceOp::kSum)->wait();
  EvalResult r;
  r.tokens = tokens.cpu().item<int64_t>();
  r.samples = n;
  r.loss = r.tokens > 0 ? static_cast<double>(loss.cpu().item<float>()) / static_cast<double>(r.tokens) : 0.0;
  r.perplexity = std::exp(r.loss);
  return r;
}

nlohmann::json eval_record(int64_t step, const EvalResult& r) {
  nlohmann::json j = {{"type", "eval"},        {"step", step},         {"val_loss", r.loss},
                      {"val_ppl", r.perplexity}, {"val_tokens", r.tokens}, {"val_samples", r.samples}};
  return j;
}

std::unique_ptr<Communicator> make_trainer_communicator(const Config& config, const DistInfo& dist,
                                                        torch::Device device) {
  CommConfig c = config.comm;
  if (c.backend == "auto") c.backend = device.is_cuda() ? "nccl" : "mpi";
  if (c.backend == "nccl" && !device.is_cuda()) {
    throw InputError("comm.backend: nccl needs model.device cuda (the model is on the CPU)");
  }
  if (c.backend == "mpi" && device.is_cuda()) {
    throw InputError("comm.backend: mpi carries CPU tensors; the model is on a GPU (use nccl or auto)");
  }
  return make_communicator(c, dist);
}

}  // namespace shardtune
