// Gradient buckets: a pure function of parameter sizes, testable without ranks.
#pragma once

#include <cstdint>
#include <vector>

namespace shardtune {

// A contiguous range [offset, offset + length) of the flat gradient buffer
// and the parameters (indices into the flat order) it holds.
struct BucketSpec {
  int64_t offset = 0;
  int64_t length = 0;
  std::vector<size_t> params;
};

// Packs parameters, given in flat order with their element counts, into
// consecutive buckets: the first closes once it reaches first_bucket_bytes,
// each later one once it reaches bucket_bytes. A parameter is never split, so
// a bucket may exceed its cap by one parameter. Every parameter is in exactly
// one bucket; buckets cover [0, sum of numels) in order.
std::vector<BucketSpec> assign_buckets(const std::vector<int64_t>& numels, int64_t element_bytes,
                                       int64_t first_bucket_bytes, int64_t bucket_bytes);

}  // namespace shardtune
