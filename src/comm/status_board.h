// Where each rank is, for the report of a collective that timed out: a
// thread per rank answers "how far are you?" on a communicator of its own
// (polling with a sleep, never spinning), and the rank whose collective
// timed out asks every other one and names those that never reached it,
// with their host and pid. Shared by the MPI and NCCL backends (NCCL ranks
// are MPI processes too).
//
// The same thread notices a rank that died: while this rank waits in a
// collective, a rank on the same host (and pid namespace) whose process is
// gone for 300 ms with the collective still pending is named in shardtune's
// own message ("rank 1 (host h, pid p) died ...") before every rank is
// ended. Ranks on other hosts are left to MPI and the launcher.
#pragma once

#include <mpi.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <string>
#include <thread>
#include <vector>

namespace shardtune::detail {

class StatusBoard {
 public:
  // Collective over world: every rank constructs its board together.
  StatusBoard(MPI_Comm world, int rank, int size);
  ~StatusBoard();
  StatusBoard(const StatusBoard&) = delete;
  StatusBoard& operator=(const StatusBoard&) = delete;

  // What this rank answers: the number of collectives it has issued and
  // completed. The backend keeps them current.
  std::atomic<int64_t> issued{0}, completed{0};

  // For collective number seq that timed out on this rank after waited_s:
  // which ranks have not reached it ("rank 1 (host h, pid p) has not
  // reached it (it has issued 21 collectives)", or does not answer within
  // 3 s: stopped, or dead) and which waited.
  std::string diagnose(uint64_t seq, double waited_s);

 private:
  struct Peer {
    std::string host;
    int64_t pid;
    int64_t pid_ns;  // the inode of its /proc/self/ns/pid
  };
  void serve();
  // While a collective is pending: ends every rank, naming a local peer
  // whose process is gone (see above).
  void watch_peers();

  const int rank_, size_;
  MPI_Comm comm_ = MPI_COMM_NULL;
  std::vector<Peer> peers_;
  std::atomic<bool> stop_{false};
  int64_t watched_seq_ = -1;  // the pending collective a dead peer was first seen in
  std::chrono::steady_clock::time_point dead_since_{};
  std::thread thread_;
};

}  // namespace shardtune::detail
