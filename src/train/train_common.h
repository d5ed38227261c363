// Pieces the trainer, `eval` and `export` share (internal to the train module).
#pragma once

#include <torch/torch.h>

#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "shardtune/comm/communicator.h"
#include "shardtune/config/config.h"
#include "shardtune/data/dataset.h"
#include "shardtune/data/torch_batch.h"
#include "shardtune/dist/dist.h"
#include "shardtune/model/transformer.h"
#include "shardtune/parallel/data_parallel.h"
#include "shardtune/train/trainer.h"

namespace shardtune {

// checkpoint.dir, or <train.output_dir>/checkpoints.
std::string checkpoint_dir(const Config& c);
// log.metrics_file, or <train.output_dir>/metrics.jsonl.
std::string metrics_path(const Config& c);
// log.tensorboard's folder; empty when it is false.
std::string tensorboard_dir(const Config& c);
DatasetOptions dataset_options(const DataSection& d);

// The sum of the token losses of a batch (targets -100 ignored), in float32.
torch::Tensor loss_sum(CausalLM& model, const TorchBatch& b);

// The validation loss over the first max_samples (0 = all) samples of data.
// The samples are dealt out in rounds of ranks x micro_batch; every rank
// runs the same number of forwards (a rank with no sample left runs one
// whose targets are all ignored), which ZeRO-3's gathers need. dp: the
// engine when the model is trained by one (ZeRO-3 gathers), else nullptr.
// A collective.
EvalResult evaluate(CausalLM& model, DataParallel* dp, TokenDataset& data, Communicator& comm, int64_t micro_batch,
                    int64_t max_samples, torch::Device device);

// The metrics record of an evaluation.
nlohmann::json eval_record(int64_t step, const EvalResult& r);

// MPI for CPU models, NCCL for GPU models (comm.backend auto), checked
// against the device.
std::unique_ptr<Communicator> make_trainer_communicator(const Config& config, const DistInfo& dist,
                                                        torch::Device device);

}  // namespace shardtune
