/* Adversarial C test of rm_config.spill and rm_drops.unsaved with tiny
 * rings and buffers (run by tests/c/run.sh).
 *
 * usage: attack_spill DSN PREFIX
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ringmetrics.h"
#include "check.h"

static const int64_t T0 = 1772409600LL;
static const int64_t NS = 1000000000LL;
static const char *NOWHERE = "host=127.0.0.1 port=1 connect_timeout=1";

static rm_aggregator *tiny(size_t depth, size_t spill) {
  rm_config c;
  rm_aggregator *a = NULL;
  EXPECT(rm_config_default(&c), RM_OK);
  c.capacity = 4;
  for (int i = 0; i < 4; i++) c.buckets[i] = depth;
  c.spill = spill;
  EXPECT(rm_aggregator_new_manual_clock(&c, T0 * NS, &a), RM_OK);
  return a;
}

/* Stored 1min total of `key` (every worker). */
static double stored(const char *dsn, const char *prefix, const char *key, size_t *points) {
  rm_read_result *r = NULL;
  double total = 0;
  *points = 0;
  if (rm_read_metrics(dsn, prefix, key, NULL, RM_1MIN, T0, T0 + 7200, &r) != RM_OK) return -1;
  for (size_t i = 0; i < rm_read_result_len(r); i++) {
    rm_read_series s;
    rm_read_result_series(r, i, &s);
    for (size_t p = 0; p < s.points_len; p++) {
      rm_read_point pt;
      rm_read_result_point(r, i, p, &pt);
      total += pt.sum;
      (*points)++;
    }
  }
  rm_read_result_free(r);
  return total;
}

/* 10 minutes, 2 observations each, ring depth 2, spill `spill`, the
 * database unreachable; then a real syncer saves. Minutes 0..6 left the
 * 1min ring (7 buckets, 14 observations): min(spill, 7) kept, the rest
 * counted in rm_drops.unsaved[0]; stored + dropped == 20. */
static void run(const char *dsn, const char *prefix, size_t spill, int flush_midway, const char *key) {
  rm_aggregator *a = tiny(2, spill);
  rm_syncer *down = NULL;
  EXPECT(rm_syncer_start(a, NOWHERE, prefix, "c-spill", 1e12, &down), RM_OK);
  for (int m = 0; m < 10; m++) {
    EXPECT(rm_aggregator_set_time(a, (T0 + 60 * m + 1) * NS), RM_OK);
    EXPECT(rm_record_key(a, RM_COUNTER, key, strlen(key), NULL, 0, 1.0), RM_OK);
    EXPECT(rm_record_key(a, RM_COUNTER, key, strlen(key), NULL, 0, 1.0), RM_OK);
    if (flush_midway && m % 3 == 2) CHECK(rm_syncer_flush(down, 5.0, NULL) != RM_OK);
  }
  rm_drops d;
  size_t n = 0;
  EXPECT(rm_drops_read(a, &d, &n), RM_OK);
  size_t left = 7, kept = spill < left ? spill : left;
  if (!flush_midway) {
    CHECK(d.unsaved[0] == 2 * (left - kept));
    if (d.unsaved[0] != 2 * (left - kept))
      fprintf(stderr, "  spill=%zu: unsaved[0]=%llu want %zu\n", spill, (unsigned long long)d.unsaved[0], 2 * (left - kept));
  }
  CHECK(d.unsaved[1] == 0 && d.unsaved[2] == 0 && d.unsaved[3] == 0);
  rm_syncer_free(down); /* its final flush fails */
  rm_syncer *up = NULL;
  EXPECT(rm_syncer_start(a, dsn, prefix, "c-spill", 1e12, &up), RM_OK);
  EXPECT(rm_syncer_flush(up, 30.0, NULL), RM_OK);
  rm_syncer_free(up);
  EXPECT(rm_drops_read(a, &d, &n), RM_OK);
  size_t points = 0;
  double total = stored(dsn, prefix, key, &points);
  uint64_t lost = d.unsaved[0] + d.stale[0];
  CHECK(total + (double)lost == 20.0);
  if (total + (double)lost != 20.0)
    fprintf(stderr, "  spill=%zu midway=%d: stored %.0f (%zu points) + lost %llu != 20\n", spill, flush_midway, total,
            points, (unsigned long long)lost);
  rm_aggregator_free(a);
}

int main(int argc, char **argv) {
  if (argc < 3) return 2;
  const char *dsn = argv[1], *prefix = argv[2];
  /* The first syncer creates the schema. */
  {
    rm_aggregator *a = tiny(2, 1);
    rm_syncer *s = NULL;
    EXPECT(rm_syncer_start(a, dsn, prefix, "init", 1e12, &s), RM_OK);
    EXPECT(rm_record_key(a, RM_COUNTER, "init", 4, NULL, 0, 1.0), RM_OK);
    EXPECT(rm_syncer_flush(s, 30.0, NULL), RM_OK);
    rm_syncer_free(s);
    rm_aggregator_free(a);
  }
  run(dsn, prefix, 0, 0, "s0");
  run(dsn, prefix, 1, 0, "s1");
  run(dsn, prefix, 2, 0, "s2");
  run(dsn, prefix, 3, 0, "s3");
  run(dsn, prefix, 100, 0, "s100");
  run(dsn, prefix, 0, 1, "m0");
  run(dsn, prefix, 1, 1, "m1");
  run(dsn, prefix, 3, 1, "m3");
  /* Over the cap: refused, not an abort. */
  {
    rm_config c;
    rm_aggregator *a = NULL;
    rm_config_default(&c);
    c.spill = SIZE_MAX;
    CHECK(rm_aggregator_new(&c, &a) == RM_INVALID_CONFIG && a == NULL);
    c.spill = ((size_t)1 << 26) + 1;
    CHECK(rm_aggregator_new(&c, &a) == RM_INVALID_CONFIG && a == NULL);
    c.spill = 0;
    for (int i = 0; i < 4; i++) c.buckets[i] = 1;
    CHECK(rm_aggregator_new(&c, &a) == RM_OK);
    rm_aggregator_free(a);
  }
  printf("attack_spill: %d passed, %d failed\n", passed, failed);
  return failed ? 1 : 0;
}
