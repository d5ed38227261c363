#include "shardtune/parallel/buckets.h"

#include "shardtune/core/error.h"

namespace shardtune {

std::vector<BucketSpec> assign_buckets(const std::vector<int64_t>& numels, int64_t element_bytes,
                                       int64_t first_bucket_bytes, int64_t bucket_bytes) {
  ST_CHECK(element_bytes > 0 && first_bucket_bytes > 0 && bucket_bytes > 0, "bad bucket sizes");
  std::vector<BucketSpec> buckets;
  BucketSpec cur;
  int64_t offset = 0;
  for (size_t i = 0; i < numels.size(); ++i) {
    cur.params.push_back(i);
    cur.length += numels[i];
    offset += numels[i];
    const int64_t cap = buckets.empty() ? first_bucket_bytes : bucket_bytes;
    if (cur.length * element_bytes >= cap) {
      buckets.push_back(cur);
      cur = BucketSpec{offset, 0, {}};
    }
  }
  if (!cur.params.empty()) buckets.push_back(cur);
  return buckets;
}

}  // namespace shardtune
