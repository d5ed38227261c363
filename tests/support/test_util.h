// Small helpers shared by the single-process tests.
#pragma once

#include <gtest/gtest.h>

#include <filesystem>
#include <string>

#include "shardtune/core/error.h"

namespace shardtune::testing {

// A fresh, empty folder under the test temp dir.
inline std::string temp_dir(const std::string& suite, const std::string& name) {
  const std::string d = ::testing::TempDir() + "/" + suite + "/" + name;
  std::filesystem::remove_all(d);
  std::filesystem::create_directories(d);
  return d;
}

// The message of the InputError f() throws, or "" if it throws none.
template <class F>
std::string input_error(F&& f) {
  try {
    f();
  } catch (const InputError& e) {
    return e.what();
  }
  return "";
}

}  // namespace shardtune::testing
