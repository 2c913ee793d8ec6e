#include "blockrep/base/progress.h"

#include <unistd.h>

#include <cstdio>

namespace blockrep {
namespace {

ProgressBar* g_drawn = nullptr;  // the bar whose line is on the terminal now (one process, one bar)
bool g_erased = false;

}  // namespace

ProgressBar::ProgressBar(std::string label, bool enabled) : label_(std::move(label)), enabled_(enabled) {}

ProgressBar::~ProgressBar() {
  if (g_drawn == this) g_drawn = nullptr;
}

bool ProgressBar::StderrIsTerminal() { return isatty(STDERR_FILENO) != 0; }

void ProgressBar::Update(uint64_t done, uint64_t total) {
  if (!enabled_ || total == 0) return;
  if (done > total) done = total;
  unsigned pct = static_cast<unsigned>(done * 100 / total);
  bool redraw = g_drawn == this && g_erased;
  if (pct == last_pct_ && !redraw) return;
  last_pct_ = pct;
  constexpr int kWidth = 30;
  std::fprintf(stderr, "\r%s [%-*.*s] %3u%%  %.0f/%.0f MiB", label_.c_str(), kWidth, static_cast<int>(pct * kWidth / 100),
               "##############################", pct, static_cast<double>(done) / 1048576.0,
               static_cast<double>(total) / 1048576.0);
  std::fflush(stderr);
  g_drawn = this;
  g_erased = false;
  drawn_ = true;
}

void ProgressBar::Finish() {
  if (!enabled_ || !drawn_) return;
  if (g_drawn == this && !g_erased) std::fprintf(stderr, "\n");
  if (g_drawn == this) g_drawn = nullptr;
  drawn_ = false;
}

void EraseProgressForLog() {
  if (g_drawn == nullptr || g_erased) return;
  std::fprintf(stderr, "\r\033[K");
  g_erased = true;
}

}  // namespace blockrep
