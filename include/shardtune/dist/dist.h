// Process placement: MPI start-up and shut-down, rank / world size / local
// rank / local world size, and the per-rank thread budget.
//
// Works under mpirun, under srun (with PMIx), and as a single process started
// without a launcher (MPI's singleton mode). torch-free.
#pragma once

#include <string>

namespace shardtune {

struct DistInfo {
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;        // rank among the processes on this node
  int local_world_size = 1;  // processes on this node
  std::string hostname;
};

// Owns MPI for the process: the constructor initialises it (if nothing has
// yet) and the destructor finalises it (if this object initialised it).
// Non-copyable; make exactly one, early in main().
//
// Thread level: MPI_THREAD_MULTIPLE. The MPI communicator runs collectives on
// its own thread so they overlap with compute on the main thread, and a rank
// that fails must be able to MPI_Abort from the main thread while that
// thread sits inside a collective; only THREAD_MULTIPLE makes both legal.
class DistContext {
 public:
  DistContext();
  ~DistContext();
  DistContext(const DistContext&) = delete;
  DistContext& operator=(const DistContext&) = delete;

  const DistInfo& info() const { return info_; }
  int rank() const { return info_.rank; }
  int world_size() const { return info_.world_size; }

  // Blocks until every rank arrives (MPI_Barrier on the world).
  void barrier() const;

  // Ends every rank of the job with exit code `code` (MPI_Abort). Safe to
  // call from any thread, also while another thread is inside MPI.
  [[noreturn]] static void abort_all(int code) noexcept;

 private:
  DistInfo info_;
  bool owns_mpi_ = false;
};

// Cores this process may run on (its CPU affinity), at least 1.
int cores_available();

// Cores online on this node, at least 1.
int cores_on_node();

// Makes the C library keep freed host memory for reuse instead of handing it
// back to the system: large blocks come from the heap rather than a mapping
// of their own each (glibc: M_MMAP_MAX 0), the heap's free top is kept up to
// 2 GiB (M_TRIM_THRESHOLD), and every thread allocates from that one heap
// (M_ARENA_MAX 1; a thread's own arena hands its large blocks back). A
// training step frees and allocates the same large temporaries (the logits:
// batch x sequence x vocabulary; MPI's reduction buffers on the
// communication thread) every step; without this each one is mapped, zeroed
// page by page and unmapped again. A variable the user set
// (MALLOC_MMAP_MAX_, MALLOC_TRIM_THRESHOLD_, MALLOC_ARENA_MAX) wins.
void retain_freed_host_memory();

// Intra-op threads for one rank: `configured` when > 0; otherwise the node's
// cores shared evenly among its ranks, capped by the cores the rank is bound
// to, and at least 1.
int intra_op_threads(int configured, int node_cores, int affinity_cores, int local_world_size);

}  // namespace shardtune
