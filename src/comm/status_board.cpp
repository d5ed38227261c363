#include "status_board.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>

#include "shardtune/comm/communicator.h"
#include "shardtune/dist/dist.h"
#include "shardtune/core/strings.h"
#include "mpi_check.h"

namespace shardtune::detail {
namespace {

using Clock = std::chrono::steady_clock;

// Tags on the board's own communicator.
constexpr int kAskTag = 1, kAnswerTag = 2;
constexpr int kHostBytes = 64;
constexpr int kEntryBytes = kHostBytes + 16;  // host, pid, pid namespace

int64_t own_pid_ns() {
  struct stat st {};
  return ::stat("/proc/self/ns/pid", &st) == 0 ? static_cast<int64_t>(st.st_ino) : -1;
}

// Whether pid names a process that has not ended (a zombie has ended).
bool process_alive(int64_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string text;
  if (!in || !std::getline(in, text)) return false;
  const size_t close = text.rfind(')');
  return close != std::string::npos && close + 2 < text.size() && text[close + 2] != 'Z' && text[close + 2] != 'X';
}

}  // namespace

StatusBoard::StatusBoard(MPI_Comm world, int rank, int size) : rank_(rank), size_(size) {
  check_mpi(MPI_Comm_dup(world, &comm_), "MPI_Comm_dup");
  // Host, pid and pid namespace, exchanged once.
  char mine[kEntryBytes] = {};
  gethostname(mine, kHostBytes - 1);
  const int64_t pid = ::getpid(), ns = own_pid_ns();
  std::memcpy(mine + kHostBytes, &pid, 8);
  std::memcpy(mine + kHostBytes + 8, &ns, 8);
  std::vector<char> all(static_cast<size_t>(size) * kEntryBytes);
  check_mpi(MPI_Allgather(mine, kEntryBytes, MPI_BYTE, all.data(), kEntryBytes, MPI_BYTE, comm_), "MPI_Allgather");
  for (int r = 0; r < size; ++r) {
    const char* p = all.data() + static_cast<size_t>(r) * kEntryBytes;
    int64_t peer_pid = 0, peer_ns = 0;
    std::memcpy(&peer_pid, p + kHostBytes, 8);
    std::memcpy(&peer_ns, p + kHostBytes + 8, 8);
    peers_.push_back({std::string(p, strnlen(p, kHostBytes)), peer_pid, peer_ns});
  }
  thread_ = std::thread([this] { serve(); });
}

StatusBoard::~StatusBoard() {
  stop_.store(true);
  thread_.join();
  // The board's communicator is left to MPI_Finalize: a peer may still
  // have a question in flight to us.
}

std::string StatusBoard::diagnose(uint64_t seq, double waited_s) {
  struct Ask {
    int64_t question = 0;
    int64_t answer[2] = {-1, -1};
    MPI_Request send = MPI_REQUEST_NULL, recv = MPI_REQUEST_NULL;
    bool answered = false;
  };
  std::vector<Ask> asks(static_cast<size_t>(size_));
  for (int r = 0; r < size_; ++r) {
    if (r == rank_) continue;
    Ask& a = asks[static_cast<size_t>(r)];
    a.question = static_cast<int64_t>(seq);
    MPI_Irecv(a.answer, 2, MPI_INT64_T, r, kAnswerTag, comm_, &a.recv);
    MPI_Isend(&a.question, 1, MPI_INT64_T, r, kAskTag, comm_, &a.send);
  }
  // A bounded wait: a stopped process cannot answer.
  const auto deadline = Clock::now() + std::chrono::seconds(3);
  bool all = false;
  while (!all && Clock::now() < deadline) {
    all = true;
    for (int r = 0; r < size_; ++r) {
      Ask& a = asks[static_cast<size_t>(r)];
      if (r == rank_ || a.answered) continue;
      int flag = 0;
      MPI_Test(&a.recv, &flag, MPI_STATUS_IGNORE);
      a.answered = flag != 0;
      all = all && a.answered;
    }
    if (!all) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  std::vector<std::string> stuck;
  std::vector<int> waiting{rank_};
  for (int r = 0; r < size_; ++r) {
    if (r == rank_) continue;
    const Ask& a = asks[static_cast<size_t>(r)];
    const std::string who = str_cat("rank ", r, " (host ", peers_[static_cast<size_t>(r)].host, ", pid ",
                                    peers_[static_cast<size_t>(r)].pid, ")");
    if (!a.answered) {
      stuck.push_back(str_cat(who, " does not answer (stopped, or dead)"));
    } else if (a.answer[0] < static_cast<int64_t>(seq)) {
      stuck.push_back(str_cat(who, " has not reached it (it has issued ", a.answer[0], " collective",
                              a.answer[0] == 1 ? "" : "s", ")"));
    } else {
      waiting.push_back(r);
    }
  }
  if (stuck.empty()) return "every rank has issued it; they may have issued different collectives";
  std::string out;
  for (const auto& s : stuck) out += (out.empty() ? "" : "; ") + s;
  std::sort(waiting.begin(), waiting.end());
  std::string ranks;
  for (int r : waiting) ranks += (ranks.empty() ? "" : ",") + std::to_string(r);
  return str_cat(out, "; rank", waiting.size() > 1 ? "s " : " ", ranks, " waited ", waited_s, " s");
}

void StatusBoard::watch_peers() {
  const int64_t pending = issued.load();
  if (pending <= completed.load()) {
    watched_seq_ = -1;
    return;
  }
  const Peer& me = peers_[static_cast<size_t>(rank_)];
  for (int r = 0; r < size_; ++r) {
    const Peer& p = peers_[static_cast<size_t>(r)];
    if (r == rank_ || p.host != me.host || p.pid_ns != me.pid_ns || me.pid_ns < 0 || process_alive(p.pid)) continue;
    // Dead, and the collective pending: name it once it has stayed so for
    // 300 ms (a peer that finished its part of the last collective and
    // exited would have let this rank's part complete by then).
    const auto now = Clock::now();
    if (watched_seq_ != pending) {
      watched_seq_ = pending;
      dead_since_ = now;
      return;
    }
    if (now - dead_since_ < std::chrono::milliseconds(300)) return;
    std::fprintf(stderr,
                 "shardtune: error on rank %d of %d: rank %d (host %s, pid %lld) died: its process ended while "
                 "every rank needed it in collective #%lld; ending every rank\n",
                 rank_, size_, r, p.host.c_str(), static_cast<long long>(p.pid), static_cast<long long>(pending));
    std::fflush(stderr);
    DistContext::abort_all(1);
  }
  watched_seq_ = -1;
}

// Answers each question with (collectives issued, completed).
void StatusBoard::serve() {
  int64_t question = 0;
  MPI_Request req = MPI_REQUEST_NULL;
  MPI_Irecv(&question, 1, MPI_INT64_T, MPI_ANY_SOURCE, kAskTag, comm_, &req);
  int polls = 0;
  while (!stop_.load()) {
    int flag = 0;
    MPI_Status st;
    MPI_Test(&req, &flag, &st);
    if (!flag) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      if (++polls % 5 == 0) watch_peers();
      continue;
    }
    const int64_t answer[2] = {issued.load(), completed.load()};
    MPI_Send(answer, 2, MPI_INT64_T, st.MPI_SOURCE, kAnswerTag, comm_);
    MPI_Irecv(&question, 1, MPI_INT64_T, MPI_ANY_SOURCE, kAskTag, comm_, &req);
  }
  MPI_Cancel(&req);
  MPI_Request_free(&req);
}

}  // namespace shardtune::detail
