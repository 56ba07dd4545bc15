// A C++ worker joining a Chancy 0.25 fleet: records job metrics as a 0.25
// worker does (counters job:{func}:{state}, global:status:{state},
// queue:{q}:throughput, histograms of execution time in seconds, a gauge)
// and syncs them into 0.25's schema-1 table (rm_syncer_start_v1), where
// Chancy 0.25's get_metrics reads them.
//
// usage: worker025 DSN PREFIX WORKER_ID
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "ringmetrics.h"

namespace {

struct Aggregator {
  rm_aggregator *ptr = nullptr;
  Aggregator() {
    if (rm_aggregator_new(nullptr, &ptr) != RM_OK) throw std::runtime_error("rm_aggregator_new");
  }
  ~Aggregator() { rm_aggregator_free(ptr); }
  rm_series series(rm_kind kind, const std::string &key, const char *unit) {
    rm_series s{};
    rm_result r = rm_register(ptr, kind, key.data(), key.size(), unit, unit ? std::strlen(unit) : 0, &s);
    if (r != RM_OK) throw std::runtime_error(rm_result_message(r));
    return s;
  }
};

void check(rm_result r, const char *what) {
  if (r != RM_OK) {
    char detail[512];
    size_t n = 0;
    rm_last_error_detail(detail, sizeof detail, &n);
    std::fprintf(stderr, "%s: %s (%s)\n", what, rm_result_message(r), detail);
    std::exit(1);
  }
}

}  // namespace

int main(int argc, char **argv) {
  if (argc < 4) {
    std::fprintf(stderr, "usage: %s DSN PREFIX WORKER_ID\n", argv[0]);
    return 2;
  }
  Aggregator agg;
  rm_syncer *syncer = nullptr;
  // A zero max_points is refused up front.
  const size_t bad[4] = {60, 0, 168, 90};
  if (rm_syncer_start_v1(agg.ptr, argv[1], argv[2], argv[3], 60.0, bad, &syncer) != RM_INVALID_CONFIG) {
    std::fprintf(stderr, "a zero max_points was accepted\n");
    return 1;
  }
  // 0.25's defaults (60, 288, 168, 90 buckets).
  check(rm_syncer_start_v1(agg.ptr, argv[1], argv[2], argv[3], 60.0, nullptr, &syncer), "rm_syncer_start_v1");

  const rm_series succeeded = agg.series(RM_COUNTER, "job:resize:succeeded", "count");
  const rm_series status = agg.series(RM_COUNTER, "global:status:succeeded", "count");
  const rm_series throughput = agg.series(RM_COUNTER, "queue:images:throughput", "count");
  const rm_series runtime = agg.series(RM_HISTOGRAM, "job:resize:execution_time", "seconds");

  std::vector<std::thread> threads;
  for (int t = 0; t < 4; t++) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 250; i++) {
        check(rm_record(agg.ptr, succeeded, 1), "record");
        check(rm_record(agg.ptr, status, 1), "record");
        check(rm_record(agg.ptr, throughput, 1), "record");
        check(rm_record(agg.ptr, runtime, 0.25 * (1 + (i + t) % 4)), "record");
      }
    });
  }
  for (auto &th : threads) th.join();
  const std::string failed = "job:resize:failed";
  check(rm_record_key(agg.ptr, RM_COUNTER, failed.data(), failed.size(), nullptr, 0, 3), "record_key");
  check(rm_record_key(agg.ptr, RM_GAUGE, "queue:images:depth", 18, "items", 5, 42), "record_key");

  rm_flush_report report{};
  check(rm_syncer_flush(syncer, 30.0, &report), "rm_syncer_flush");
  std::printf("c++ worker (schema 1): %llu rows written\n", static_cast<unsigned long long>(report.rows_written));
  // A second flush with nothing new writes nothing; the rows stay.
  check(rm_syncer_flush(syncer, 30.0, &report), "rm_syncer_flush");
  if (report.rows_written != 0) {
    std::fprintf(stderr, "an unchanged flush wrote %llu rows\n", static_cast<unsigned long long>(report.rows_written));
    return 1;
  }
  check(rm_syncer_stop(syncer, 30.0, nullptr), "rm_syncer_stop");
  rm_syncer_free(syncer);
  return 0;
}
