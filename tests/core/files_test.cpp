// Temporary names: unique, created exclusively, never anything the user had.
#include "shardtune/core/files.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <string>

namespace fs = std::filesystem;
using shardtune::create_temp_dir;
using shardtune::create_temp_file;
using shardtune::replace_with_temp;
using shardtune::write_file_atomically;

namespace {

std::string fresh_dir(const std::string& name) {
  const fs::path d = fs::temp_directory_path() / ("shardtune_files_test_" + std::to_string(getpid())) / name;
  fs::remove_all(d);
  fs::create_directories(d);
  return d.string();
}

std::string read(const std::string& p) {
  std::ifstream in(p);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void write(const std::string& p, const std::string& text) { std::ofstream(p) << text; }

std::set<std::string> entries(const std::string& dir) {
  std::set<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) out.insert(e.path().filename().string());
  return out;
}

}  // namespace

TEST(TempNames, AreNewEveryTimeAndBesideThePath) {
  const std::string d = fresh_dir("new");
  std::set<std::string> seen;
  for (int i = 0; i < 50; ++i) {
    const std::string f = create_temp_file(d + "/out.bin");
    const std::string g = create_temp_dir(d + "/out.bin");
    EXPECT_EQ(fs::path(f).parent_path(), fs::path(d));
    EXPECT_EQ(fs::path(f).filename().string().rfind("out.bin.tmp-", 0), 0u) << f;
    EXPECT_TRUE(fs::is_regular_file(f));
    EXPECT_TRUE(fs::is_directory(g));
    EXPECT_TRUE(seen.insert(f).second);
    EXPECT_TRUE(seen.insert(g).second);
  }
}

TEST(TempNames, WritingAndReplacingKeepTheUsersOwnFiles) {
  const std::string d = fresh_dir("keep");
  // Files a user might have under the names a fixed scheme would take.
  for (const char* n : {"model.tmp", "model.old", "report.md.tmp", "report.md.old"}) write(d + "/" + n, n);
  fs::create_directories(d + "/model");
  write(d + "/model/config.json", "old");

  write_file_atomically(d + "/report.md", "new report");
  EXPECT_EQ(read(d + "/report.md"), "new report");
  write_file_atomically(d + "/report.md", "newer report");  // over an existing file
  EXPECT_EQ(read(d + "/report.md"), "newer report");

  const std::string tmp = create_temp_dir(d + "/model");
  write(tmp + "/config.json", "new");
  replace_with_temp(tmp, d + "/model");
  EXPECT_EQ(read(d + "/model/config.json"), "new");

  EXPECT_EQ(entries(d), (std::set<std::string>{"model", "model.tmp", "model.old", "report.md", "report.md.tmp",
                                               "report.md.old"}));
  for (const char* n : {"model.tmp", "model.old", "report.md.tmp", "report.md.old"}) EXPECT_EQ(read(d + "/" + n), n);
}

TEST(TempNames, AnUnwritableFolderIsAnError) {
  if (geteuid() == 0) GTEST_SKIP() << "root writes anywhere";
  EXPECT_THROW(create_temp_file("/proc/nope/x"), std::exception);
}
