#include "shardtune/dist/dist.h"

#include <mpi.h>
#include <malloc.h>
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <thread>
#include <cstdlib>

#include "shardtune/core/error.h"

namespace shardtune {
namespace {

void check_mpi(int code, const char* what) {
  if (code == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(code, text, &len);
  throw Error(str_cat(what, " failed: ", std::string(text, static_cast<size_t>(len))));
}

}  // namespace

DistContext::DistContext() {
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (!initialized) {
    // Started without a launcher, Open MPI spawns a helper (a singleton)
    // that authenticates to this process with PMIx's security plugins, munge
    // first: where munge is installed but its daemon is not running, that
    // retries for over 2 s on every command. The two are one user on one
    // host, which the native plugin covers. A launcher's environment, or the
    // user's own PMIX_MCA_psec, is left as it is.
    const bool launched = std::getenv("PMIX_RANK") != nullptr || std::getenv("OMPI_COMM_WORLD_SIZE") != nullptr;
    if (!launched) setenv("PMIX_MCA_psec", "native", /*overwrite=*/0);
    int provided = MPI_THREAD_SINGLE;
    check_mpi(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_MULTIPLE, &provided),
              "MPI_Init_thread");
    owns_mpi_ = true;
    if (provided < MPI_THREAD_MULTIPLE) {
      throw Error(str_cat("MPI provides thread level ", provided,
                          " but shardtune needs MPI_THREAD_MULTIPLE (", MPI_THREAD_MULTIPLE,
                          "); use an MPI built with thread support"));
    }
  }
  // Errors come back as codes and become exceptions instead of killing the job
  // without a message.
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  check_mpi(MPI_Comm_rank(MPI_COMM_WORLD, &info_.rank), "MPI_Comm_rank");
  check_mpi(MPI_Comm_size(MPI_COMM_WORLD, &info_.world_size), "MPI_Comm_size");

  MPI_Comm node_comm = MPI_COMM_NULL;
  check_mpi(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, info_.rank, MPI_INFO_NULL,
                                &node_comm),
            "MPI_Comm_split_type");
  check_mpi(MPI_Comm_rank(node_comm, &info_.local_rank), "MPI_Comm_rank(node)");
  check_mpi(MPI_Comm_size(node_comm, &info_.local_world_size), "MPI_Comm_size(node)");
  MPI_Comm_free(&node_comm);

  char host[MPI_MAX_PROCESSOR_NAME];
  int len = 0;
  MPI_Get_processor_name(host, &len);
  info_.hostname.assign(host, static_cast<size_t>(len));
}

DistContext::~DistContext() {
  if (!owns_mpi_) return;
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) MPI_Finalize();
}

void DistContext::barrier() const { check_mpi(MPI_Barrier(MPI_COMM_WORLD), "MPI_Barrier"); }

void DistContext::abort_all(int code) noexcept {
  // MPI_Abort asks the launcher to end every rank; when the launcher cannot
  // be reached (its host lost), it may wait. This process ends regardless.
  try {
    std::thread([code] {
      std::this_thread::sleep_for(std::chrono::seconds(2));
      _exit(code);
    }).detach();
  } catch (...) {
  }
  int initialized = 0;
  MPI_Initialized(&initialized);
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (initialized && !finalized) MPI_Abort(MPI_COMM_WORLD, code);
  _exit(code);
}

int cores_available() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) != 0) return cores_on_node();
  return std::max(1, CPU_COUNT(&set));
}

int cores_on_node() {
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  return n > 0 ? static_cast<int>(n) : 1;
}

void retain_freed_host_memory() {
  if (std::getenv("MALLOC_MMAP_MAX_") == nullptr) mallopt(M_MMAP_MAX, 0);
  if (std::getenv("MALLOC_TRIM_THRESHOLD_") == nullptr) mallopt(M_TRIM_THRESHOLD, INT_MAX);
  if (std::getenv("MALLOC_ARENA_MAX") == nullptr) mallopt(M_ARENA_MAX, 1);
}

int intra_op_threads(int configured, int node_cores, int affinity_cores, int local_world_size) {
  if (configured > 0) return configured;
  int share = node_cores / std::max(1, local_world_size);
  return std::max(1, std::min(share, affinity_cores));
}

}  // namespace shardtune
