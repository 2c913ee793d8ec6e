// Prometheus text exposition (blockrep/metrics/exposition.h).
#include "blockrep/metrics/exposition.h"

#include <gtest/gtest.h>

#include <cmath>

namespace blockrep::metrics {
namespace {

// A family writes HELP and TYPE once, then one line per sample with its labels.
TEST(ExpositionTest, FamilyThenSamples) {
  Exposition e;
  e.Family("blockrep_retained_points", Type::kGauge, "Recovery points the chain holds.");
  e.Sample(3, "web1");
  e.Sample(0, "db1");
  EXPECT_EQ(e.text(),
            "# HELP blockrep_retained_points Recovery points the chain holds.\n"
            "# TYPE blockrep_retained_points gauge\n"
            "blockrep_retained_points{server=\"web1\"} 3\n"
            "blockrep_retained_points{server=\"db1\"} 0\n");
}

// Label values escape backslash, double quote and newline; HELP escapes backslash and newline.
TEST(ExpositionTest, EscapesLabelValuesAndHelp) {
  Exposition e;
  e.Family("blockrep_stored_bytes", Type::kGauge, "a\\b\nc");
  e.Sample(1, "we\"b\\1\n", "0");
  EXPECT_EQ(e.text(),
            "# HELP blockrep_stored_bytes a\\\\b\\nc\n"
            "# TYPE blockrep_stored_bytes gauge\n"
            "blockrep_stored_bytes{server=\"we\\\"b\\\\1\\n\",volume=\"0\"} 1\n");
}

// Histogram buckets are cumulative, end in +Inf, and come with _sum and _count.
TEST(ExpositionTest, HistogramBucketsAreCumulative) {
  Histogram h({0.01, 0.1});
  h.Observe(0.005);
  h.Observe(0.05);
  h.Observe(0.07);
  h.Observe(3);
  Exposition e;
  e.Family("blockrep_pack_commit_seconds", Type::kHistogram, "Commit time.");
  e.Sample(h);
  EXPECT_NE(e.text().find("blockrep_pack_commit_seconds_bucket{le=\"0.01\"} 1\n"
                          "blockrep_pack_commit_seconds_bucket{le=\"0.1\"} 3\n"
                          "blockrep_pack_commit_seconds_bucket{le=\"+Inf\"} 4\n"
                          "blockrep_pack_commit_seconds_sum 3.125\n"
                          "blockrep_pack_commit_seconds_count 4\n"),
            std::string::npos)
      << e.text();
}

// Values: the shortest text that reads back the same (a UTC time keeps its microseconds),
// integers without a fraction, specials by name.
TEST(ExpositionTest, FormatsValues) {
  EXPECT_EQ(FormatValue(1790000000), "1790000000");
  EXPECT_EQ(FormatValue(1795808510.123456), "1795808510.123456");
  EXPECT_EQ(FormatValue(0.25), "0.25");
  EXPECT_EQ(FormatValue(0.1), "0.1");
  EXPECT_EQ(FormatValue(std::nan("")), "NaN");
  EXPECT_EQ(FormatValue(INFINITY), "+Inf");
}

// A counter's name must end in _total, and a gauge's must not: a misnamed family is a bug.
TEST(ExpositionDeathTest, CounterNamesEndInTotal) {
  EXPECT_DEATH(
      {
        Exposition e;
        e.Family("blockrep_ingested_bytes", Type::kCounter, "x");
      },
      "_total");
}

}  // namespace
}  // namespace blockrep::metrics
