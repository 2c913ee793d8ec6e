// A progress bar on stderr for the long commands (restore, blockrep-agent --once), drawn only when
// stderr is a terminal: "LABEL [##########          ]  50%  128/256 MiB". A log line written
// meanwhile (Log in blockrep/base/cli.h) erases the bar first, and the next update draws it again.
#pragma once

#include <cstdint>
#include <string>

namespace blockrep {

class ProgressBar {
 public:
  // `enabled` false: draws nothing (stderr is not a terminal, or --json).
  ProgressBar(std::string label, bool enabled);
  ~ProgressBar();
  ProgressBar(const ProgressBar&) = delete;
  ProgressBar& operator=(const ProgressBar&) = delete;

  // Redraws when the whole percentage changed (or after an erase); `total` may grow.
  void Update(uint64_t done, uint64_t total);
  // Ends the bar's line (at 100 % or where it stopped).
  void Finish();

  static bool StderrIsTerminal();

 private:
  std::string label_;
  bool enabled_;
  bool drawn_ = false;
  unsigned last_pct_ = 101;
};

// Called by Log before it writes a line: erases a drawn bar so the line starts clean.
void EraseProgressForLog();

}  // namespace blockrep
