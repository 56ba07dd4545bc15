/* Adversarial C test of rm_read_metrics on a catalog not made by Chancy's
 * migrations and on odd stored rows (the C ABI has no hold_connection
 * knob, so the held-connection retry is not reachable from C).
 *
 * usage: attack_catalog DSN PREFIX   (needs psql on PATH; run by
 *   tests/c/run.sh, which drops the PREFIX tables afterwards)
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ringmetrics.h"
#include "check.h"

static const int64_t T0 = 1772409600LL;
static const int64_t NS = 1000000000LL;

static int psql(const char *dsn, const char *sql) {
  char cmd[8192];
  snprintf(cmd, sizeof cmd, "psql \"%s\" -qAt -v ON_ERROR_STOP=1 -c \"%s\" >/dev/null", dsn, sql);
  return system(cmd);
}

/* Tables holding counter "c" = 1 at T0, written through the C syncer. */
static void tables(const char *dsn, const char *prefix) {
  rm_config c;
  rm_aggregator *a = NULL;
  rm_syncer *s = NULL;
  EXPECT(rm_config_default(&c), RM_OK);
  c.capacity = 8;
  EXPECT(rm_aggregator_new_manual_clock(&c, (T0 + 5) * NS, &a), RM_OK);
  EXPECT(rm_syncer_start(a, dsn, prefix, "w", 3600, &s), RM_OK);
  EXPECT(rm_record_key(a, RM_COUNTER, "c", 1, "", 0, 1.0), RM_OK);
  EXPECT(rm_syncer_flush(s, 30, NULL), RM_OK);
  EXPECT(rm_syncer_stop(s, 30, NULL), RM_OK);
  rm_syncer_free(s);
  rm_aggregator_free(a);
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: %s DSN PREFIX\n", argv[0]);
    return 2;
  }
  const char *dsn = argv[1];
  char p[256], sql[4096];

  /* Odd rows: unequal arrays, NULLs, empty arrays, an unknown type. */
  snprintf(p, sizeof p, "%sodd_", argv[2]);
  tables(dsn, p);
  snprintf(sql, sizeof sql,
           "ALTER TABLE %smetric_definitions DROP CONSTRAINT %smetric_definitions_metric_type_check; "
           "INSERT INTO %smetric_definitions (key, metric_type, unit) VALUES "
           "('uneven', 'histogram', 's'), ('odd', 'timer', ''), ('none', 'gauge', ''); "
           "INSERT INTO %smetrics SELECT id, 60, to_timestamp(%lld), gen_random_uuid(), 'x', "
           "ARRAY[to_timestamp(%lld), to_timestamp(%lld)], ARRAY[4]::int8[], ARRAY[8, NULL, 9]::float8[], "
           "NULL, ARRAY[3]::float8[], NULL, ARRAY[to_timestamp(%lld)] FROM %smetric_definitions WHERE key = 'uneven'; "
           "INSERT INTO %smetrics SELECT id, 60, to_timestamp(%lld), gen_random_uuid(), 'x', '{}', '{}', '{}', "
           "NULL, NULL, '{}', '{}' FROM %smetric_definitions WHERE key = 'odd'",
           p, p, p, p, (long long)T0, (long long)T0, (long long)(T0 + 60), (long long)T0, p, p, (long long)T0,
           p);
  CHECK(psql(dsn, sql) == 0);
  rm_read_result *r = NULL;
  EXPECT(rm_read_metrics(dsn, p, NULL, NULL, RM_1MIN, T0, T0 + 120, &r), RM_OK);
  CHECK(rm_read_result_len(r) == 4); /* c, none, odd, uneven */
  for (size_t i = 0; i < rm_read_result_len(r); i++) {
    rm_read_series s;
    EXPECT(rm_read_result_series(r, i, &s), RM_OK);
    if (s.key_len == 6 && memcmp(s.key, "uneven", 6) == 0) {
      rm_read_point a, b;
      CHECK(s.kind == RM_HISTOGRAM && s.points_len == 2);
      EXPECT(rm_read_result_point(r, i, 0, &a), RM_OK);
      EXPECT(rm_read_result_point(r, i, 1, &b), RM_OK);
      CHECK(a.start == T0 && a.count == 4 && a.sum == 8.0 && a.value == 2.0 && a.max == 3.0 && isnan(a.min));
      CHECK(b.start == T0 + 60 && b.count == 0 && b.sum == 0.0);
    } else if (s.key_len == 1 && s.key[0] == 'c') {
      rm_read_point a;
      CHECK(s.points_len == 1);
      EXPECT(rm_read_result_point(r, i, 0, &a), RM_OK);
      CHECK(a.start == T0 && a.sum == 1.0 && a.value == 1.0);
    } else {
      CHECK(s.points_len == 0); /* 'none' has no rows, 'odd' only empty arrays */
      CHECK(s.kind == RM_COUNTER || s.kind == RM_GAUGE);
    }
  }
  rm_read_result_free(r);
  snprintf(sql, sizeof sql, "DROP TABLE IF EXISTS %smetrics, %smetric_definitions, %sschema_version CASCADE", p, p,
           p);
  psql(dsn, sql);

  /* A NULL metric_type: a clear RM_DATABASE, not RM_PANIC (found by the
   * sixth adversarial review: the catalog was read with `Row::get`, which
   * panics on a NULL). */
  snprintf(p, sizeof p, "%snull_", argv[2]);
  tables(dsn, p);
  snprintf(sql, sizeof sql,
           "ALTER TABLE %smetric_definitions ALTER COLUMN metric_type DROP NOT NULL; "
           "UPDATE %smetric_definitions SET metric_type = NULL",
           p, p);
  CHECK(psql(dsn, sql) == 0);
  r = NULL;
  rm_result got = rm_read_metrics(dsn, p, NULL, NULL, RM_1MIN, T0, T0 + 120, &r);
  if (got != RM_DATABASE) fprintf(stderr, "NULL metric_type: rm_read_metrics returned %d\n", (int)got);
  EXPECT(got, RM_DATABASE);
  rm_read_result_free(r);
  snprintf(sql, sizeof sql, "DROP TABLE IF EXISTS %smetrics, %smetric_definitions, %sschema_version CASCADE", p, p,
           p);
  psql(dsn, sql);

  printf("attack_catalog: %d passed, %d failed\n", passed, failed);
  return failed == 0 ? 0 : 1;
}
