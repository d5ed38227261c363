// Small file and process helpers shared by the commands that write reports.
#pragma once

#include <string>

namespace shardtune {

// Temporary names beside path for a file or folder written whole and then
// renamed into place: "<path>.tmp-<pid>-<random>", created exclusively (a
// file with O_EXCL, a folder with mkdir), so a temporary never replaces,
// reuses or later deletes anything the user had. Throws Error when the
// folder cannot be written.
std::string create_temp_file(const std::string& path);
std::string create_temp_dir(const std::string& path);

// Puts the finished temporary file or folder tmp in target's place. An
// existing target is first moved aside to a fresh temporary name and deleted
// only once tmp is in place: a crash in between loses neither.
void replace_with_temp(const std::string& tmp, const std::string& target);

// A temporary file beside path (create_temp_file) holding text; the caller removes it.
std::string write_temp_file(const std::string& path, const std::string& text);

// Writes text to path through a temporary file (create_temp_file), renamed
// at the end: never a partial file under path. Throws Error when it cannot write.
void write_file_atomically(const std::string& path, const std::string& text);

// Whether program is an executable on PATH.
bool program_on_path(const std::string& program);

// s as a single-quoted gnuplot string.
std::string gnuplot_quote(const std::string& s);

// Runs `gnuplot script` without a shell, its output discarded; true when it exits 0.
bool run_gnuplot(const std::string& script);

}  // namespace shardtune
