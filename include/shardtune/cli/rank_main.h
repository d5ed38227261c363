// The top of every shardtune process: the one place where errors become
// messages and exit codes.
#pragma once

#include <functional>

#include "shardtune/config/config.h"
#include "shardtune/dist/dist.h"

namespace shardtune {

// Exit codes of shardtune programs.
constexpr int kExitOk = 0;
constexpr int kExitFailure = 1;     // a runtime failure (I/O, communication, ...)
constexpr int kExitBadInput = 2;    // bad input: config, command line, data file

// Starts MPI (DistContext), runs body, and turns an exception escaping it
// into a message on stderr naming the rank, then an exit code. When the job
// has more than one rank, a failing rank (an exception, or a non-zero
// return) ends every rank at once through MPI_Abort, so no rank is left
// waiting in a collective for it.
int run_rank_main(const std::function<int(DistContext&)>& body);

// Per-rank set-up shared by the programs: the rank-prefixed logger and the
// intra-op thread budget. Returns the thread count set.
int setup_rank(const DistContext& dist, const Config& config);

}  // namespace shardtune
