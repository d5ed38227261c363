// Communication benchmark, printed like nccl-tests.
//
//   mpirun -np 2 shardtune_bench_comm -b 1K -e 64M -f 2 -o all_reduce --baseline
//
// For each size (bytes of the full buffer: the all_reduce / broadcast tensor,
// the reduce_scatter input, the all_gather output) it runs shardtune's
// collective once on known data and counts wrong elements (#wrong), then
// times `iters` back-to-back collectives (issued, then waited for, as
// nccl-tests does; --blocking waits for each) in --rounds rounds. time is
// the slowest rank's time per collective in the median round. Each round
// pays once for waking the communicator's thread and the waiting caller
// (tens of microseconds on a loaded machine), so a round should hold enough
// collectives to amortize it, as a backward pass's buckets do: the defaults
// time 2 rounds of 50.
//   algbw = size / time
//   busbw = algbw * 2(n-1)/n (all_reduce), * (n-1)/n (reduce_scatter,
//           all_gather), * 1 (broadcast)
// --baseline also times the raw MPI call that the MPI backend makes, on the
// same buffers, in alternating rounds with shardtune's (so drift in machine
// load hits both alike), and prints busbw(shardtune) / busbw(raw). MPI has no
// bfloat16 type, so bfloat16 rows have no baseline.
#include <mpi.h>
#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "shardtune/cli/rank_main.h"
#include "shardtune/comm/communicator.h"
#include "shardtune/core/error.h"

namespace shardtune {
namespace {

struct Options {
  int64_t min_bytes = 8;
  int64_t max_bytes = 64 << 20;
  double factor = 2.0;
  std::vector<CollectiveOp> ops{CollectiveOp::kAllReduce};
  ReduceOp reduce = ReduceOp::kSum;
  std::vector<torch::Dtype> dtypes{torch::kFloat32};
  int iters = 100;
  int warmup = 20;
  int rounds = 2;
  bool baseline = false;
  bool blocking = false;
  std::string json_path;
};

const char* kUsage = R"(usage: shardtune_bench_comm [options] [key=value config overrides]
  -b, --minbytes SIZE   smallest buffer (bytes; K, M, G suffixes)      [8]
  -e, --maxbytes SIZE   largest buffer                                 [64M]
  -f, --stepfactor F    multiply the size by F each row                [2]
  -o, --op OP           all_reduce, reduce_scatter, all_gather,
                        broadcast, or all                              [all_reduce]
  -r, --redop OP        sum, avg, max                                  [sum]
  -d, --datatype T      float32, bfloat16, int64, or all               [float32]
  -n, --iters N         timed collectives per size                     [100]
  -w, --warmup_iters N  untimed collectives per size first             [20]
      --rounds R        alternating shardtune/raw rounds (iters split)  [2]
      --baseline        also time the raw MPI call; print the ratio
      --blocking        wait for each collective before the next
      --json FILE       write the rows as JSON
Exit status 1 if any row has wrong elements.
)";

int64_t parse_size(const std::string& s) {
  if (s.empty()) throw InputError("empty size");
  char* end = nullptr;
  double v = std::strtod(s.c_str(), &end);
  std::string unit(end);
  double mult = 1;
  if (unit == "K" || unit == "k") mult = 1024.0;
  else if (unit == "M" || unit == "m") mult = 1024.0 * 1024;
  else if (unit == "G" || unit == "g") mult = 1024.0 * 1024 * 1024;
  else if (!unit.empty()) throw InputError(str_cat("bad size '", s, "' (use e.g. 8, 1K, 64M)"));
  if (!(v > 0)) throw InputError(str_cat("bad size '", s, "': must be positive"));
  return static_cast<int64_t>(v * mult);
}

CollectiveOp parse_op(const std::string& s) {
  for (auto op : {CollectiveOp::kAllReduce, CollectiveOp::kReduceScatter, CollectiveOp::kAllGather,
                  CollectiveOp::kBroadcast}) {
    if (s == to_string(op)) return op;
  }
  throw InputError(str_cat("unknown op '", s, "'\n", kUsage));
}

torch::Dtype parse_dtype(const std::string& s) {
  if (s == "float32") return torch::kFloat32;
  if (s == "bfloat16") return torch::kBFloat16;
  if (s == "int64") return torch::kInt64;
  throw InputError(str_cat("unknown datatype '", s, "'\n", kUsage));
}

Options parse_args(const std::vector<std::string>& args, std::vector<std::string>& overrides) {
  Options o;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= args.size()) throw InputError(str_cat(a, " needs a value\n", kUsage));
      return args[++i];
    };
    if (a == "-b" || a == "--minbytes") o.min_bytes = parse_size(next());
    else if (a == "-e" || a == "--maxbytes") o.max_bytes = parse_size(next());
    else if (a == "-f" || a == "--stepfactor") o.factor = std::stod(next());
    else if (a == "-o" || a == "--op") {
      const std::string v = next();
      o.ops = v == "all" ? std::vector<CollectiveOp>{CollectiveOp::kAllReduce,
                                                     CollectiveOp::kReduceScatter,
                                                     CollectiveOp::kAllGather,
                                                     CollectiveOp::kBroadcast}
                         : std::vector<CollectiveOp>{parse_op(v)};
    } else if (a == "-r" || a == "--redop") {
      const std::string v = next();
      if (v == "sum") o.reduce = ReduceOp::kSum;
      else if (v == "avg") o.reduce = ReduceOp::kAvg;
      else if (v == "max") o.reduce = ReduceOp::kMax;
      else throw InputError(str_cat("unknown reduce op '", v, "'"));
    } else if (a == "-d" || a == "--datatype") {
      const std::string v = next();
      o.dtypes = v == "all" ? std::vector<torch::Dtype>{torch::kFloat32, torch::kBFloat16,
                                                        torch::kInt64}
                            : std::vector<torch::Dtype>{parse_dtype(v)};
    } else if (a == "-n" || a == "--iters") o.iters = std::stoi(next());
    else if (a == "-w" || a == "--warmup_iters") o.warmup = std::stoi(next());
    else if (a == "--rounds") o.rounds = std::stoi(next());
    else if (a == "--baseline") o.baseline = true;
    else if (a == "--blocking") o.blocking = true;
    else if (a == "--json") o.json_path = next();
    else if (a == "-h" || a == "--help") throw InputError(kUsage);
    else if (is_override(a)) overrides.push_back(a);
    else throw InputError(str_cat("unknown argument '", a, "'\n", kUsage));
  }
  if (o.min_bytes > o.max_bytes) throw InputError("--minbytes is larger than --maxbytes");
  if (!(o.factor > 1.0)) throw InputError("--stepfactor must be > 1");
  if (o.iters < 1 || o.warmup < 0 || o.rounds < 1) {
    throw InputError("--iters and --rounds must be >= 1, --warmup_iters >= 0");
  }
  o.rounds = std::min(o.rounds, o.iters);
  return o;
}

double bus_factor(CollectiveOp op, int n) {
  switch (op) {
    case CollectiveOp::kAllReduce:
      return 2.0 * (n - 1) / n;
    case CollectiveOp::kReduceScatter:
    case CollectiveOp::kAllGather:
      return static_cast<double>(n - 1) / n;
    default:
      return 1.0;
  }
}

// Buffers of one row, and the collective on them through either path.
class Row {
 public:
  Row(Communicator& comm, MPI_Comm raw_comm, CollectiveOp op, ReduceOp reduce, torch::Dtype dtype,
      int64_t count)
      : comm_(comm), raw_(raw_comm), op_(op), reduce_(reduce), count_(count) {
    const int world = comm.size();
    const ShardRange own = shard_range(count, world, comm.rank());
    even_ = count % world == 0;
    // Distinct small integers per rank: exact in every dtype.
    full_ = (torch::arange(count, torch::kInt64) % 13 + comm.rank()).to(dtype);
    shard_ = torch::empty({own.length}, dtype);
    if (op == CollectiveOp::kAllGather) shard_ = full_.narrow(0, own.offset, own.length).clone();
    counts_.resize(static_cast<size_t>(world));
    displs_.resize(static_cast<size_t>(world));
    for (int r = 0; r < world; ++r) {
      const ShardRange s = shard_range(count, world, r);
      counts_[static_cast<size_t>(r)] = static_cast<int>(s.length);
      displs_[static_cast<size_t>(r)] = static_cast<int>(s.offset);
    }
  }

  // Runs shardtune's collective once and returns the number of wrong elements.
  int64_t check() {
    const int world = comm_.size();
    launch()->wait();
    torch::Tensor base = torch::arange(count_, torch::kInt64) % 13;
    torch::Tensor want;
    torch::Tensor got;
    switch (op_) {
      case CollectiveOp::kAllReduce:
      case CollectiveOp::kReduceScatter: {
        torch::Tensor sum = base * world + world * (world - 1) / 2;
        if (reduce_ == ReduceOp::kMax) want = base + (world - 1);
        else if (reduce_ == ReduceOp::kAvg) want = sum.to(torch::kFloat64) / world;
        else want = sum;
        if (op_ == CollectiveOp::kReduceScatter) {
          const ShardRange own = shard_range(count_, world, comm_.rank());
          want = want.narrow(0, own.offset, own.length);
          got = shard_;
        } else {
          got = full_;
        }
        if (reduce_ == ReduceOp::kAvg && full_.scalar_type() == torch::kInt64) {
          want = torch::trunc(want);
        }
        break;
      }
      case CollectiveOp::kAllGather: {
        want = base.clone();
        for (int r = 0; r < world; ++r) {
          want.narrow(0, displs_[static_cast<size_t>(r)], counts_[static_cast<size_t>(r)]) += r;
        }
        got = full_;
        break;
      }
      default:
        want = base;  // from root 0
        got = full_;
    }
    return (got.to(torch::kFloat64) != want.to(torch::kFloat64)).sum().item<int64_t>();
  }

  WorkPtr launch() {
    switch (op_) {
      case CollectiveOp::kAllReduce:
        return comm_.all_reduce(full_, reduce_);
      case CollectiveOp::kReduceScatter:
        return comm_.reduce_scatter(full_, shard_, reduce_);
      case CollectiveOp::kAllGather:
        return comm_.all_gather(shard_, full_);
      default:
        return comm_.broadcast(full_, 0);
    }
  }

  bool has_raw() const { return full_.scalar_type() != torch::kBFloat16; }

  // The MPI call the MPI backend makes for this collective (sum for avg).
  void raw() {
    const MPI_Datatype type = full_.scalar_type() == torch::kInt64 ? MPI_INT64_T : MPI_FLOAT;
    const MPI_Op op = reduce_ == ReduceOp::kMax ? MPI_MAX : MPI_SUM;
    const int n = static_cast<int>(count_);
    const int world = comm_.size();
    switch (op_) {
      case CollectiveOp::kAllReduce:
        MPI_Allreduce(MPI_IN_PLACE, full_.data_ptr(), n, type, op, raw_);
        break;
      case CollectiveOp::kReduceScatter:
        if (even_) {
          MPI_Reduce_scatter_block(full_.data_ptr(), shard_.data_ptr(), n / world, type, op, raw_);
        } else {
          MPI_Reduce_scatter(full_.data_ptr(), shard_.data_ptr(), counts_.data(), type, op, raw_);
        }
        break;
      case CollectiveOp::kAllGather:
        if (even_) {
          MPI_Allgather(shard_.data_ptr(), n / world, type, full_.data_ptr(), n / world, type, raw_);
        } else {
          MPI_Allgatherv(shard_.data_ptr(), counts_[static_cast<size_t>(comm_.rank())], type,
                         full_.data_ptr(), counts_.data(), displs_.data(), type, raw_);
        }
        break;
      default:
        MPI_Bcast(full_.data_ptr(), n, type, 0, raw_);
    }
  }

 private:
  Communicator& comm_;
  MPI_Comm raw_;
  CollectiveOp op_;
  ReduceOp reduce_;
  int64_t count_;
  bool even_ = true;
  torch::Tensor full_;
  torch::Tensor shard_;
  std::vector<int> counts_;
  std::vector<int> displs_;
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 == 1 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// Seconds for `iters` collectives on the slowest rank.
double time_shardtune(Row& row, int iters, bool blocking, MPI_Comm world) {
  MPI_Barrier(world);
  const double t0 = MPI_Wtime();
  std::vector<WorkPtr> works;
  for (int i = 0; i < iters; ++i) {
    works.push_back(row.launch());
    if (blocking) works.back()->wait();
  }
  // Collectives complete in issue order: waiting for the last one first
  // costs one wake-up, as nccl-tests' single stream synchronisation does.
  for (auto it = works.rbegin(); it != works.rend(); ++it) (*it)->wait();
  double dt = MPI_Wtime() - t0;
  MPI_Allreduce(MPI_IN_PLACE, &dt, 1, MPI_DOUBLE, MPI_MAX, world);
  return dt;
}

double time_raw(Row& row, int iters, MPI_Comm world) {
  MPI_Barrier(world);
  const double t0 = MPI_Wtime();
  for (int i = 0; i < iters; ++i) row.raw();
  double dt = MPI_Wtime() - t0;
  MPI_Allreduce(MPI_IN_PLACE, &dt, 1, MPI_DOUBLE, MPI_MAX, world);
  return dt;
}

int run(DistContext& dist, const std::vector<std::string>& args) {
  std::vector<std::string> overrides;
  const Options o = parse_args(args, overrides);
  const Config config = default_config(overrides);
  const int threads = setup_rank(dist, config);
  auto comm = make_communicator(config.comm, dist.info());
  MPI_Comm raw_comm;
  MPI_Comm_dup(MPI_COMM_WORLD, &raw_comm);
  const int world = comm->size();
  const bool root = dist.rank() == 0;

  if (root) {
    std::printf("# shardtune comm benchmark: %d ranks, backend %s, %d intra-op thread(s)/rank, "
                "iters %d, warmup %d, %s\n",
                world, comm->backend().c_str(), threads, o.iters, o.warmup,
                o.blocking ? "each collective waited for" : "issued back to back, then waited");
    std::printf("#\n# %10s %12s %9s %15s %6s %11s %11s %11s %7s", "size(B)", "count", "type", "op",
                "redop", "time(us)", "algbw(GB/s)", "busbw(GB/s)", "#wrong");
    if (o.baseline) std::printf("  | %11s %11s %9s", "raw(us)", "raw busbw", "st/raw");
    std::printf("\n");
  }

  nlohmann::json rows = nlohmann::json::array();
  double sum_busbw = 0, sum_raw_busbw = 0;
  int n_rows = 0, n_raw_rows = 0;
  int64_t total_wrong = 0;
  for (const torch::Dtype dtype : o.dtypes) {
    const int64_t elem = torch::elementSize(dtype);
    for (const CollectiveOp op : o.ops) {
      for (double bytes = static_cast<double>(o.min_bytes); bytes <= o.max_bytes * 1.0000001;
           bytes *= o.factor) {
        const int64_t count = std::max<int64_t>(1, static_cast<int64_t>(bytes) / elem);
        const int64_t size = count * elem;
        Row row(*comm, raw_comm, op, o.reduce, dtype, count);
        const int64_t wrong = row.check();
        total_wrong += wrong;
        const bool with_raw = o.baseline && row.has_raw();

        time_shardtune(row, o.warmup, o.blocking, raw_comm);
        if (with_raw) time_raw(row, o.warmup, raw_comm);
        std::vector<double> t_st, t_raw;  // seconds per round
        const int per_round = std::max(1, o.iters / o.rounds);
        for (int r = 0; r < o.rounds; ++r) {
          // Alternate which path goes first, so neither always runs warm.
          if (with_raw && r % 2 == 1) t_raw.push_back(time_raw(row, per_round, raw_comm));
          t_st.push_back(time_shardtune(row, per_round, o.blocking, raw_comm));
          if (with_raw && r % 2 == 0) t_raw.push_back(time_raw(row, per_round, raw_comm));
        }
        // The median round: a burst of other load on the host spoils a round
        // or two, not the figure.
        const double us = median(t_st) / per_round * 1e6;
        const double algbw = static_cast<double>(size) / (us * 1e-6) / 1e9;
        const double busbw = algbw * bus_factor(op, world);
        sum_busbw += busbw;
        ++n_rows;
        nlohmann::json j = {{"size", size},
                            {"count", count},
                            {"type", dtype_name(dtype)},
                            {"op", to_string(op)},
                            {"redop", to_string(o.reduce)},
                            {"time_us", us},
                            {"algbw_gbps", algbw},
                            {"busbw_gbps", busbw},
                            {"wrong", wrong},
                            {"ranks", world}};
        if (root) {
          std::printf("  %10ld %12ld %9s %15s %6s %11.2f %11.3f %11.3f %7ld", static_cast<long>(size),
                      static_cast<long>(count), dtype_name(dtype).c_str(), to_string(op),
                      op == CollectiveOp::kAllReduce || op == CollectiveOp::kReduceScatter
                          ? to_string(o.reduce)
                          : "-",
                      us, algbw, busbw, static_cast<long>(wrong));
        }
        if (with_raw) {
          const double raw_us = median(t_raw) / per_round * 1e6;
          const double raw_busbw =
              static_cast<double>(size) / (raw_us * 1e-6) / 1e9 * bus_factor(op, world);
          sum_raw_busbw += raw_busbw;
          ++n_raw_rows;
          j["raw_time_us"] = raw_us;
          j["raw_busbw_gbps"] = raw_busbw;
          j["ratio"] = busbw / raw_busbw;
          if (root) std::printf("  | %11.2f %11.3f %9.3f", raw_us, raw_busbw, busbw / raw_busbw);
        } else if (o.baseline && root) {
          std::printf("  | %11s %11s %9s", "n/a", "n/a", "n/a");
        }
        if (root) std::printf("\n");
        rows.push_back(j);
      }
    }
  }
  if (root) {
    std::printf("# Out of bounds values : %ld %s\n", static_cast<long>(total_wrong),
                total_wrong == 0 ? "OK" : "WRONG");
    std::printf("# Avg bus bandwidth    : %.4f GB/s (shardtune)\n", sum_busbw / std::max(1, n_rows));
    if (n_raw_rows > 0) {
      std::printf("# Avg bus bandwidth    : %.4f GB/s (raw MPI)\n",
                  sum_raw_busbw / n_raw_rows);
    }
    std::fflush(stdout);
    if (!o.json_path.empty()) {
      std::ofstream out(o.json_path);
      if (!out) throw InputError(str_cat(o.json_path, ": cannot write the JSON output"));
      out << nlohmann::json{{"benchmark", "comm"}, {"ranks", world}, {"rows", rows}}.dump(2)
          << "\n";
    }
  }
  comm.reset();
  MPI_Comm_free(&raw_comm);
  return total_wrong == 0 ? kExitOk : kExitFailure;
}

}  // namespace
}  // namespace shardtune

int main(int argc, char** argv) {
  const std::vector<std::string> args(argv + 1, argv + argc);
  return shardtune::run_rank_main(
      [&](shardtune::DistContext& dist) { return shardtune::run(dist, args); });
}
