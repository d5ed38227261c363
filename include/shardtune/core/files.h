// Small file and process helpers shared by the commands that write reports.
#pragma once

#include <string>

namespace shardtune {

// Writes text to path through path + ".tmp", renamed at the end (never a
// partial file under path). Throws Error when it cannot write.
void write_file_atomically(const std::string& path, const std::string& text);

// Whether program is an executable on PATH.
bool program_on_path(const std::string& program);

// s as a single-quoted gnuplot string.
std::string gnuplot_quote(const std::string& s);

// Runs `gnuplot script` without a shell, its output discarded; true when it exits 0.
bool run_gnuplot(const std::string& script);

}  // namespace shardtune
