// Shared state of the multi-rank test programs (see mpi_gtest_main.cpp).
#pragma once

#include "shardtune/comm/communicator.h"
#include "shardtune/dist/dist.h"

namespace shardtune::testing {

// The process's DistContext; valid for the whole test run.
DistContext& dist();

// A communicator (MPI backend, 60 s timeout) shared by the tests.
Communicator& comm();

// The NCCL communicator (60 s timeout) when this build has NCCL and every
// rank has a GPU; nullptr otherwise, on every rank alike.
Communicator* nccl_comm();

}  // namespace shardtune::testing
