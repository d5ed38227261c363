#include "shardtune/core/files.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <filesystem>
#include <fstream>

#include "shardtune/core/error.h"
#include "shardtune/core/strings.h"

namespace shardtune {
namespace fs = std::filesystem;

namespace {

// "<path>.tmp-<pid>-<8 hex digits>": the process and a random part, so
// ranks and hosts sharing a folder draw different names.
std::string temp_candidate(const std::string& path) {
  static std::atomic<uint64_t> counter{std::random_device{}()};
  const uint64_t r = counter.fetch_add(0x9e3779b97f4a7c15ull) * 0xbf58476d1ce4e5b9ull;
  char tail[32];
  std::snprintf(tail, sizeof(tail), ".tmp-%ld-%08x", static_cast<long>(getpid()), static_cast<unsigned>(r >> 32));
  return path + tail;
}

template <class Create>
std::string create_temp(const std::string& path, Create create) {
  for (int attempt = 0; attempt < 100; ++attempt) {
    const std::string name = temp_candidate(path);
    if (create(name)) return name;
    if (errno != EEXIST) throw Error(str_cat(name, ": cannot create: ", std::strerror(errno)));
  }
  throw Error(str_cat(path, ": no free temporary name beside it"));
}

}  // namespace

std::string create_temp_file(const std::string& path) {
  return create_temp(path, [](const std::string& name) {
    const int fd = ::open(name.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0) return false;
    ::close(fd);
    return true;
  });
}

std::string create_temp_dir(const std::string& path) {
  return create_temp(path, [](const std::string& name) { return ::mkdir(name.c_str(), 0755) == 0; });
}

void replace_with_temp(const std::string& tmp, const std::string& target) {
  std::error_code ec;
  if (!fs::exists(fs::symlink_status(target, ec))) {
    fs::rename(tmp, target);
    return;
  }
  // A fresh folder to move the old target into: its name is ours alone.
  const std::string aside = create_temp_dir(target);
  const fs::path old = fs::path(aside) / "old";
  fs::rename(target, old);
  fs::rename(tmp, target);
  fs::remove_all(aside);
}

std::string write_temp_file(const std::string& path, const std::string& text) {
  const std::string tmp = create_temp_file(path);
  try {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << text;
    out.flush();
    if (!out) throw Error(str_cat(tmp, ": cannot write"));
  } catch (...) {
    std::remove(tmp.c_str());
    throw;
  }
  return tmp;
}

void write_file_atomically(const std::string& path, const std::string& text) {
  fs::rename(write_temp_file(path, text), path);
}

bool program_on_path(const std::string& program) {
  const char* path = std::getenv("PATH");
  if (path == nullptr) return false;
  for (const auto& dir : split(path, ':')) {
    if (!dir.empty() && access((fs::path(dir) / program).c_str(), X_OK) == 0) return true;
  }
  return false;
}

std::string gnuplot_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("''") : std::string(1, c);
  return out + "'";
}

bool run_gnuplot(const std::string& script) {
  std::fflush(nullptr);  // nothing buffered is written twice
  const pid_t pid = fork();
  if (pid < 0) return false;
  if (pid == 0) {
    const int null = open("/dev/null", O_WRONLY);
    if (null >= 0) {
      dup2(null, STDOUT_FILENO);
      dup2(null, STDERR_FILENO);
    }
    execlp("gnuplot", "gnuplot", script.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  int status = 0;
  return waitpid(pid, &status, 0) >= 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

}  // namespace shardtune
