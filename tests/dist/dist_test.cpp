// dist as a single process started without mpirun (MPI's singleton mode).
#include <gtest/gtest.h>

#include "shardtune/dist/dist.h"

namespace shardtune {
namespace {

TEST(Dist, SingleProcessWithoutLauncher) {
  DistContext dist;
  EXPECT_EQ(dist.rank(), 0);
  EXPECT_EQ(dist.world_size(), 1);
  EXPECT_EQ(dist.info().local_rank, 0);
  EXPECT_EQ(dist.info().local_world_size, 1);
  EXPECT_FALSE(dist.info().hostname.empty());
  dist.barrier();
}

TEST(Dist, IntraOpThreadsShareTheNode) {
  // configured wins
  EXPECT_EQ(intra_op_threads(5, 2, 2, 4), 5);
  // node cores split among the node's ranks
  EXPECT_EQ(intra_op_threads(0, 16, 16, 4), 4);
  EXPECT_EQ(intra_op_threads(0, 16, 16, 3), 5);
  // never below one thread, even oversubscribed
  EXPECT_EQ(intra_op_threads(0, 2, 2, 4), 1);
  // never more than the cores the rank is bound to
  EXPECT_EQ(intra_op_threads(0, 64, 8, 2), 8);
  EXPECT_EQ(intra_op_threads(0, 0, 0, 0), 1);
}

TEST(Dist, CoreCountsArePositive) {
  EXPECT_GE(cores_on_node(), 1);
  EXPECT_GE(cores_available(), 1);
  EXPECT_LE(cores_available(), cores_on_node());
}

}  // namespace
}  // namespace shardtune
