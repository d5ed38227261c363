// The training loss: summed next-token cross-entropy of hidden states through
// a model's output projection.
#pragma once

#include <torch/torch.h>

#include "shardtune/model/transformer.h"

namespace shardtune {

// sum over rows i with labels[i] != ignore_index of
//   logsumexp(project(hidden[i])) - project(hidden[i])[labels[i]]
// for hidden [n, hidden_size] and labels [n] (int64), as a 0-dim float32
// tensor that backpropagates into hidden and the model's parameters.
//
// Where the projection is a plain float32 matrix on the CPU
// (CausalLM::output_weight), this runs as projected_cross_entropy_sum below;
// otherwise as logits, then torch's cross_entropy in float32.
torch::Tensor cross_entropy_sum(CausalLM& model, const torch::Tensor& hidden, const torch::Tensor& labels,
                                int64_t ignore_index);

// The same sum for logits = hidden weight^T, weight [vocab, hidden_size],
// without the logits' own tensor, log-softmax and gradient: the logits are
// made transposed, [vocab, n] (on the CPU the faster layout of that matrix
// product), turned into softmax in place in cache-sized slices, and backward
// turns that buffer into the logits' gradient in place. One [vocab, n]
// buffer lives from forward to backward, where the unfused loss keeps
// logits, log-softmax and gradient. Backward runs once (it consumes the
// buffer); a second call throws. Gradients flow into hidden and weight only
// where they require one.
torch::Tensor projected_cross_entropy_sum(const torch::Tensor& hidden, const torch::Tensor& weight,
                                          const torch::Tensor& labels, int64_t ignore_index);

}  // namespace shardtune
