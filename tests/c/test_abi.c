/* C tests of the ringmetrics ABI: every function, every error path, handles
 * shared between threads. Built with -Wall -Wextra -Wpedantic -Werror and
 * AddressSanitizer + UndefinedBehaviorSanitizer by tests/c/run.sh.
 *
 * usage: test_abi DSN   (a live PostgreSQL for the syncer tests)
 */
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ringmetrics.h"
#include "check.h"

static const int64_t T0 = 1767225600LL; /* 2026-01-01T00:00:00Z */
static const int64_t NS = 1000000000LL;

static rm_aggregator *manual(size_t capacity) {
  rm_config c;
  rm_aggregator *a = NULL;
  EXPECT(rm_config_default(&c), RM_OK);
  c.capacity = capacity;
  EXPECT(rm_aggregator_new_manual_clock(&c, T0 * NS, &a), RM_OK);
  return a;
}

static void test_messages(void) {
  EXPECT(strcmp(rm_result_message(RM_OK), "ok"), 0);
  for (int r = 0; r <= 19; r++) CHECK(rm_result_message((rm_result)r) != NULL);
  CHECK(strstr(rm_result_message(RM_PANIC), "panic") != NULL);
  char buf[256];
  size_t n = 0;
  EXPECT(rm_last_error_detail(NULL, 0, &n), RM_NULL_POINTER);
  EXPECT(rm_last_error_detail(buf, sizeof buf, &n), RM_OK);
}

static void test_config_and_lifecycle(void) {
  rm_config c;
  rm_aggregator *a = NULL;
  EXPECT(rm_config_default(NULL), RM_NULL_POINTER);
  EXPECT(rm_config_default(&c), RM_OK);
  CHECK(c.capacity == 4096 && c.buckets[0] == 60 && c.buckets[1] == 288 && c.buckets[2] == 168 && c.buckets[3] == 90);
  CHECK(c.writers == 8);
  EXPECT(rm_aggregator_new(NULL, NULL), RM_NULL_POINTER);
  /* More writer stripes than the core allows: refused, and the detail says which field. */
  c.writers = 65;
  EXPECT(rm_aggregator_new(&c, &a), RM_INVALID_CONFIG);
  CHECK(a == NULL);
  {
    char detail[256];
    size_t len = 0;
    EXPECT(rm_last_error_detail(detail, sizeof detail, &len), RM_OK);
    CHECK(strstr(detail, "writers") != NULL);
  }
  /* No stripes at all: every thread records through the shared accumulator. */
  c.writers = 0;
  {
    rm_series s;
    rm_bucket b[4];
    size_t got = 0;
    EXPECT(rm_aggregator_new(&c, &a), RM_OK);
    EXPECT(rm_register(a, RM_COUNTER, "shared", 6, NULL, 0, &s), RM_OK);
    EXPECT(rm_record(a, s, 2.0), RM_OK);
    EXPECT(rm_record(a, s, 3.0), RM_OK);
    EXPECT(rm_snapshot(a, s, RM_1DAY, 0, INT64_MAX / 2, b, 4, &got), RM_OK);
    CHECK(got == 1 && b[0].count == 2 && b[0].sum == 5.0);
    rm_aggregator_free(a);
    a = NULL;
  }
  c.writers = 8;
  c.capacity = 0;
  EXPECT(rm_aggregator_new(&c, &a), RM_INVALID_CONFIG);
  CHECK(a == NULL); /* no partial success */
  char buf[256];
  size_t n = 0;
  EXPECT(rm_last_error_detail(buf, sizeof buf, &n), RM_OK);
  CHECK(strstr(buf, "capacity") != NULL);
  EXPECT(rm_aggregator_new(NULL, &a), RM_OK);
  CHECK(a != NULL);
  EXPECT(rm_aggregator_set_time(a, 0), RM_NOT_MANUAL_CLOCK);
  EXPECT(rm_aggregator_advance_time(NULL, 0), RM_NULL_POINTER);
  rm_aggregator_free(a);
  rm_aggregator_free(NULL);
}

static void test_record_and_snapshot(void) {
  rm_aggregator *a = manual(16);
  rm_series s, g, h;
  EXPECT(rm_register(a, RM_COUNTER, "jobs:done", 9, NULL, 0, &s), RM_OK);
  EXPECT(rm_register(a, RM_GAUGE, "queue:depth", 11, "items", 5, &g), RM_OK);
  EXPECT(rm_register(a, RM_HISTOGRAM, "job:x:execution_time", 20, "seconds", 7, &h), RM_OK);
  EXPECT(rm_record(a, s, 1.0), RM_OK);
  EXPECT(rm_record(a, s, 2.5), RM_OK);
  EXPECT(rm_record(a, g, 5.0), RM_OK);
  EXPECT(rm_record(a, h, 0.5), RM_OK);
  EXPECT(rm_aggregator_advance_time(a, 60 * NS), RM_OK);
  EXPECT(rm_record(a, s, 4.0), RM_OK);
  EXPECT(rm_record(a, g, 3.0), RM_OK);
  EXPECT(rm_record(a, h, 1.5), RM_OK);
  /* by key, not NUL-terminated: "jobs:done" inside a larger buffer */
  const char keybuf[] = "jobs:doneXYZ";
  EXPECT(rm_record_key(a, RM_COUNTER, keybuf, 9, "count", 5, 10.0), RM_OK);
  EXPECT(rm_record_at(a, s, 100.0, (T0 - 120) * NS), RM_OK); /* late: its own minute */
  EXPECT(rm_record_key_at(a, RM_COUNTER, "jobs:done", 9, NULL, 0, 1000.0, (T0 + 30) * NS), RM_OK);

  rm_bucket b[8];
  size_t n = 0;
  EXPECT(rm_snapshot(a, s, RM_1MIN, 0, INT64_MAX / 2, b, 8, &n), RM_OK);
  CHECK(n == 3);
  CHECK(b[0].start == T0 - 120 && b[0].sum == 100.0);
  CHECK(b[1].start == T0 && b[1].count == 3 && b[1].sum == 1003.5);
  CHECK(b[2].start == T0 + 60 && b[2].count == 2 && b[2].sum == 14.0);
  EXPECT(rm_snapshot(a, s, RM_1DAY, 0, INT64_MAX / 2, b, 8, &n), RM_OK);
  /* T0 - 120 s falls on the previous day */
  CHECK(n == 2 && b[0].count + b[1].count == 6 && b[0].sum + b[1].sum == 1117.5);
  CHECK(b[1].min == 1.0 && b[1].max == 1000.0);
  EXPECT(rm_snapshot(a, g, RM_5MIN, 0, INT64_MAX / 2, b, 8, &n), RM_OK);
  CHECK(n == 1 && b[0].last == 3.0 && b[0].sampled_at == (T0 + 60) * NS);
  EXPECT(rm_snapshot(a, h, RM_1HOUR, 0, INT64_MAX / 2, b, 8, &n), RM_OK);
  CHECK(n == 1 && b[0].count == 2 && b[0].min == 0.5 && b[0].max == 1.5);
  /* buffer too small: nothing copied, the needed size reported */
  memset(b, 0, sizeof b);
  EXPECT(rm_snapshot(a, s, RM_1MIN, 0, INT64_MAX / 2, b, 2, &n), RM_BUFFER_TOO_SMALL);
  CHECK(n == 3 && b[0].start == 0);
  EXPECT(rm_snapshot(a, s, RM_1MIN, 0, INT64_MAX / 2, NULL, 0, &n), RM_BUFFER_TOO_SMALL);
  EXPECT(rm_snapshot(a, s, RM_1MIN, 0, INT64_MAX / 2, NULL, 4, &n), RM_NULL_POINTER);
  EXPECT(rm_snapshot(a, s, 7, 0, 1, b, 8, &n), RM_INVALID_ARGUMENT);
  EXPECT(rm_snapshot(NULL, s, RM_1MIN, 0, 1, b, 8, &n), RM_NULL_POINTER);
  rm_aggregator_free(a);
}

static void test_refusals(void) {
  rm_aggregator *a = manual(2);
  rm_aggregator *other = manual(2);
  rm_series s, t;
  rm_drops d;
  size_t count = 0;
  EXPECT(rm_register(a, RM_COUNTER, "c", 1, NULL, 0, &s), RM_OK);
  EXPECT(rm_record(a, s, NAN), RM_NON_FINITE_VALUE);
  EXPECT(rm_record(a, s, INFINITY), RM_NON_FINITE_VALUE);
  EXPECT(rm_record(a, s, -INFINITY), RM_NON_FINITE_VALUE);
  EXPECT(rm_record_key(a, RM_COUNTER, "a\0b", 3, NULL, 0, 1.0), RM_INVALID_KEY);
  EXPECT(rm_record_key(a, RM_COUNTER, "", 0, NULL, 0, 1.0), RM_INVALID_KEY);
  char *big = malloc(1025);
  memset(big, 'k', 1025);
  EXPECT(rm_record_key(a, RM_COUNTER, big, 1025, NULL, 0, 1.0), RM_INVALID_KEY);
  free(big);
  EXPECT(rm_record_key(a, RM_COUNTER, "\xff\xfe", 2, NULL, 0, 1.0), RM_INVALID_UTF8);
  EXPECT(rm_record_key(a, RM_COUNTER, "k", 1, "\xc3", 1, 1.0), RM_INVALID_UTF8);
  EXPECT(rm_record_key(a, RM_COUNTER, "k", 1, "u\0", 2, 1.0), RM_INVALID_UNIT);
  EXPECT(rm_record_key(a, RM_COUNTER, NULL, 5, NULL, 0, 1.0), RM_NULL_POINTER);
  EXPECT(rm_record_key(a, 9, "k", 1, NULL, 0, 1.0), RM_INVALID_ARGUMENT);
  EXPECT(rm_record_key(a, RM_GAUGE, "c", 1, NULL, 0, 1.0), RM_CONFLICT);
  EXPECT(rm_record_key(a, RM_COUNTER, "c", 1, "bytes", 5, 1.0), RM_CONFLICT);
  EXPECT(rm_record_key(a, RM_COUNTER, "d", 1, NULL, 0, 1.0), RM_OK);
  EXPECT(rm_record_key(a, RM_COUNTER, "e", 1, NULL, 0, 1.0), RM_CAPACITY_EXHAUSTED);
  EXPECT(rm_record(a, s, 1e308), RM_OK);
  EXPECT(rm_record(a, s, 1e308), RM_OVERFLOW);
  EXPECT(rm_record_at(a, s, 1.0, -1), RM_INVALID_TIMESTAMP);
  EXPECT(rm_record_at(a, s, 1.0, (T0 + 3600) * NS), RM_INVALID_TIMESTAMP);
  EXPECT(rm_record_at(a, s, 1.0, (T0 - 400 * 86400) * NS), RM_NOT_STORED);
  EXPECT(rm_register(other, RM_COUNTER, "c", 1, NULL, 0, &t), RM_OK);
  EXPECT(rm_record(a, t, 1.0), RM_UNKNOWN_SERIES); /* another aggregator's handle */
  t.kind = 42;
  EXPECT(rm_record(other, t, 1.0), RM_UNKNOWN_SERIES);
  EXPECT(rm_record(NULL, s, 1.0), RM_NULL_POINTER);
  EXPECT(rm_register(a, RM_COUNTER, "c", 1, NULL, 0, NULL), RM_NULL_POINTER);
  EXPECT(rm_drops_read(a, &d, &count), RM_OK);
  CHECK(count == 2);
  CHECK(d.records[0] == 4); /* invalid keys (one not UTF-8) */
  CHECK(d.records[1] == 2); /* invalid units (one not UTF-8) */
  CHECK(d.records[2] == 3); /* non-finite */
  CHECK(d.records[3] == 2); /* timestamps */
  CHECK(d.records[4] == 2); /* conflicts */
  CHECK(d.records[5] == 1); /* overflow */
  CHECK(d.records[6] == 1); /* capacity */
  CHECK(d.expired[0] == 1 && d.expired[3] == 1);
  EXPECT(rm_drops_read(a, NULL, NULL), RM_NULL_POINTER);
  rm_aggregator_free(a);
  rm_aggregator_free(other);
}

static double day_sum(rm_aggregator *a, uint32_t kind, const char *key, const char *unit) {
  rm_series s;
  rm_bucket b[8];
  size_t n = 0;
  double sum = 0;
  EXPECT(rm_register(a, kind, key, strlen(key), unit, unit ? strlen(unit) : 0, &s), RM_OK);
  EXPECT(rm_snapshot(a, s, RM_1DAY, 0, INT64_MAX / 2, b, 8, &n), RM_OK);
  for (size_t i = 0; i < n; i++) sum += b[i].sum;
  return sum;
}

/* Recording by key: first use (registers), later uses (found without a
 * lock), two aggregators with the same keys, units of every short length,
 * and a bad value never creating a series. */
static void test_record_key_paths(void) {
  rm_aggregator *a = manual(64), *b = manual(64);
  rm_drops d;
  size_t count = 0;
  /* No rm_register before: the first call registers, the rest find it. */
  for (int i = 0; i < 3; i++) EXPECT(rm_record_key(a, RM_COUNTER, "k", 1, NULL, 0, 1.0), RM_OK);
  for (int i = 0; i < 2; i++) EXPECT(rm_record_key(b, RM_COUNTER, "k", 1, "count", 5, 10.0), RM_OK);
  EXPECT(rm_record_key(a, RM_COUNTER, "k", 1, "count", 5, 1.0), RM_OK);
  EXPECT(rm_record_key_at(b, RM_COUNTER, "k", 1, NULL, 0, 10.0, T0 * NS), RM_OK);
  CHECK(day_sum(a, RM_COUNTER, "k", NULL) == 4.0);
  CHECK(day_sum(b, RM_COUNTER, "k", NULL) == 30.0);
  /* Default units per kind. */
  EXPECT(rm_record_key(a, RM_GAUGE, "g", 1, NULL, 0, 7.0), RM_OK);
  EXPECT(rm_record_key(a, RM_GAUGE, "g", 1, "number", 6, 8.0), RM_OK);
  EXPECT(rm_record_key(a, RM_GAUGE, "g", 1, "count", 5, 8.0), RM_CONFLICT);
  EXPECT(rm_record_key(a, RM_HISTOGRAM, "g", 1, "number", 6, 8.0), RM_CONFLICT);
  EXPECT(rm_record_key(a, RM_HISTOGRAM, "h", 1, NULL, 0, 1.0), RM_OK);
  EXPECT(rm_record_key(a, RM_HISTOGRAM, "h", 1, NULL, 0, 2.0), RM_OK);
  EXPECT(rm_record_key(a, RM_HISTOGRAM, "h", 1, "number", 6, 3.0), RM_OK);
  EXPECT(rm_record_key(a, RM_COUNTER, "h", 1, NULL, 0, 3.0), RM_CONFLICT);
  CHECK(day_sum(a, RM_HISTOGRAM, "h", NULL) == 6.0);
  EXPECT(rm_record_key(a, RM_COUNTER, "n", 1, "number", 6, 1.0), RM_OK); /* not the default */
  EXPECT(rm_record_key(a, RM_COUNTER, "n", 1, "number", 6, 1.0), RM_OK);
  EXPECT(rm_record_key(a, RM_COUNTER, "n", 1, NULL, 0, 1.0), RM_CONFLICT);
  EXPECT(rm_record_key(a, RM_GAUGE, "g", 1, NULL, 0, 9.0), RM_OK);

  /* Units of 1..24 bytes: equal is found, any other unit conflicts. */
  for (size_t len = 1; len <= 24; len++) {
    char key[16], unit[32], other[32];
    int klen = snprintf(key, sizeof key, "unit:%zu", len);
    for (size_t i = 0; i < len; i++) unit[i] = (char)('a' + i);
    EXPECT(rm_record_key(a, RM_HISTOGRAM, key, (size_t)klen, unit, len, 1.0), RM_OK);
    EXPECT(rm_record_key(a, RM_HISTOGRAM, key, (size_t)klen, unit, len, 2.0), RM_OK);
    size_t at[3] = {0, len / 2, len - 1};
    for (int j = 0; j < 3; j++) {
      memcpy(other, unit, len);
      other[at[j]] = 'Z';
      EXPECT(rm_record_key(a, RM_HISTOGRAM, key, (size_t)klen, other, len, 1.0), RM_CONFLICT);
    }
    /* one byte shorter (at length 0: the default, "number") */
    EXPECT(rm_record_key(a, RM_HISTOGRAM, key, (size_t)klen, unit, len - 1, 1.0), RM_CONFLICT);
    memcpy(other, unit, len);
    other[len] = 'z';
    EXPECT(rm_record_key(a, RM_HISTOGRAM, key, (size_t)klen, other, len + 1, 1.0), RM_CONFLICT);
    unit[len] = '\0';
    CHECK(day_sum(a, RM_HISTOGRAM, key, unit) == 3.0);
  }

  /* Non-ASCII UTF-8 keys and units, by key and at a time. */
  EXPECT(rm_record_key(a, RM_HISTOGRAM, "caf\xc3\xa9", 5, "\xc2\xb5s", 3, 1.0), RM_OK);
  EXPECT(rm_record_key(a, RM_HISTOGRAM, "caf\xc3\xa9", 5, "\xc2\xb5s", 3, 2.0), RM_OK);
  EXPECT(rm_record_key_at(a, RM_HISTOGRAM, "caf\xc3\xa9", 5, "\xc2\xb5s", 3, 4.0, T0 * NS), RM_OK);
  EXPECT(rm_record_key_at(a, RM_HISTOGRAM, "caf\xc3", 4, "\xc2\xb5s", 3, 4.0, T0 * NS), RM_INVALID_UTF8);
  EXPECT(rm_record_key_at(a, RM_HISTOGRAM, "caf\xc3\xa9", 5, "\xc2", 1, 4.0, T0 * NS), RM_INVALID_UTF8);
  CHECK(day_sum(a, RM_HISTOGRAM, "caf\xc3\xa9", "\xc2\xb5s") == 7.0);

  /* A bad value is refused before a new key is registered, and counted. */
  EXPECT(rm_drops_read(a, &d, &count), RM_OK);
  size_t before = count;
  uint64_t nonfinite = d.records[2];
  EXPECT(rm_record_key(a, RM_COUNTER, "new", 3, NULL, 0, NAN), RM_NON_FINITE_VALUE);
  EXPECT(rm_record_key_at(a, RM_COUNTER, "new", 3, NULL, 0, INFINITY, T0 * NS), RM_NON_FINITE_VALUE);
  EXPECT(rm_record_key(a, RM_COUNTER, "k", 1, NULL, 0, NAN), RM_NON_FINITE_VALUE); /* a known key */
  EXPECT(rm_drops_read(a, &d, &count), RM_OK);
  CHECK(count == before && d.records[2] == nonfinite + 3);

  /* rm_record_key_at's refusals. */
  EXPECT(rm_record_key_at(NULL, RM_COUNTER, "k", 1, NULL, 0, 1.0, T0 * NS), RM_NULL_POINTER);
  EXPECT(rm_record_key_at(a, 3, "k", 1, NULL, 0, 1.0, T0 * NS), RM_INVALID_ARGUMENT);
  EXPECT(rm_record_key_at(a, RM_COUNTER, "k", 1, NULL, 0, 1.0, -1), RM_INVALID_TIMESTAMP);
  EXPECT(rm_record_key_at(a, RM_COUNTER, "k", 1, "\xc3", 1, 1.0, T0 * NS), RM_INVALID_UTF8);
  EXPECT(rm_record_key_at(a, RM_GAUGE, "k", 1, NULL, 0, 1.0, T0 * NS), RM_CONFLICT);
  EXPECT(rm_record_key(NULL, RM_COUNTER, "k", 1, NULL, 0, 1.0), RM_NULL_POINTER);
  EXPECT(rm_record_key(a, RM_COUNTER, "k", 1, NULL, 3, 1.0), RM_NULL_POINTER);
  rm_aggregator_free(a);
  rm_aggregator_free(b);
}

struct shared {
  rm_aggregator *a;
  rm_series s;
  int id;
};

static void *hammer(void *arg) {
  struct shared *sh = arg;
  char key[32];
  int n = snprintf(key, sizeof key, "thread:%d", sh->id);
  for (int i = 0; i < 50000; i++) {
    if (rm_record(sh->a, sh->s, 1.0) != RM_OK) return (void *)1;
    if (rm_record_key(sh->a, RM_COUNTER, key, (size_t)n, NULL, 0, 1.0) != RM_OK) return (void *)1;
    if (i % 10000 == 0) rm_aggregator_advance_time(sh->a, 61 * NS);
  }
  return NULL;
}

static void test_threads(void) {
  rm_aggregator *a = manual(64);
  rm_series s;
  EXPECT(rm_register(a, RM_HISTOGRAM, "shared", 6, NULL, 0, &s), RM_OK);
  pthread_t th[4];
  struct shared sh[4];
  for (int i = 0; i < 4; i++) {
    sh[i] = (struct shared){a, s, i};
    CHECK(pthread_create(&th[i], NULL, hammer, &sh[i]) == 0);
  }
  for (int i = 0; i < 4; i++) {
    void *ret = NULL;
    pthread_join(th[i], &ret);
    CHECK(ret == NULL);
  }
  rm_bucket b[64];
  size_t n = 0;
  EXPECT(rm_snapshot(a, s, RM_1DAY, 0, INT64_MAX / 2, b, 64, &n), RM_OK);
  uint64_t total = 0;
  for (size_t i = 0; i < n; i++) total += b[i].count;
  CHECK(total == 200000);
  for (int i = 0; i < 4; i++) {
    char key[32];
    int len = snprintf(key, sizeof key, "thread:%d", i);
    rm_series t;
    EXPECT(rm_register(a, RM_COUNTER, key, (size_t)len, NULL, 0, &t), RM_OK);
    EXPECT(rm_snapshot(a, t, RM_1DAY, 0, INT64_MAX / 2, b, 64, &n), RM_OK);
    double sum = 0;
    for (size_t j = 0; j < n; j++) sum += b[j].sum;
    CHECK(sum == 50000.0);
  }
  rm_aggregator_free(a);
}

/* Lengths over the limits are refused before any byte is read: the key and
 * unit here are one byte long, so ASan reports any read past them. */
static void test_hostile_lengths(void) {
  rm_aggregator *a = manual(8);
  rm_series s;
  rm_drops d;
  char *one = malloc(1);
  one[0] = 'k';
  const size_t lengths[] = {1025, 4096, (size_t)1 << 40, SIZE_MAX / 2, SIZE_MAX - 1, SIZE_MAX};
  char buf[256];
  size_t n = 0;
  /* A known key and owner: the record-by-key fast path is the one taken. */
  EXPECT(rm_register(a, RM_COUNTER, "k", 1, NULL, 0, &s), RM_OK);
  EXPECT(rm_record_key(a, RM_COUNTER, one, 1, NULL, 0, 1.0), RM_OK);
  for (size_t i = 0; i < sizeof lengths / sizeof lengths[0]; i++) {
    size_t len = lengths[i];
    EXPECT(rm_record_key(a, RM_COUNTER, one, len, NULL, 0, 1.0), RM_INVALID_KEY);
    EXPECT(rm_record_key_at(a, RM_COUNTER, one, len, NULL, 0, 1.0, T0 * NS), RM_INVALID_KEY);
    EXPECT(rm_register(a, RM_COUNTER, one, len, NULL, 0, &s), RM_INVALID_KEY);
    EXPECT(rm_record_key(a, RM_COUNTER, "k", 1, one, len, 1.0), RM_INVALID_UNIT);
    EXPECT(rm_record_key_at(a, RM_COUNTER, "k", 1, one, len, 1.0, T0 * NS), RM_INVALID_UNIT);
    EXPECT(rm_register(a, RM_COUNTER, "k", 1, one, len, &s), RM_INVALID_UNIT);
    /* NULL with a huge length: refused for its length, not dereferenced. */
    EXPECT(rm_record_key(a, RM_COUNTER, NULL, len, NULL, 0, 1.0), RM_INVALID_KEY);
  }
  EXPECT(rm_last_error_detail(buf, sizeof buf, &n), RM_OK);
  CHECK(strstr(buf, "over the limit") != NULL);
  EXPECT(rm_drops_read(a, &d, NULL), RM_OK);
  CHECK(d.records[0] == 6 * 4); /* per length: two record calls, register, a NULL key */
  CHECK(d.records[1] == 6 * 3); /* per length: two record calls, register */
  free(one);

  /* At the limits: a 1024-byte key, a 256-byte unit of 64 four-byte
   * characters; one byte more is refused. */
  char *key = malloc(1025);
  memset(key, 'k', 1025);
  key[0] = 'x';
  char unit[260];
  for (int i = 0; i < 65; i++) memcpy(unit + 4 * i, "\xf0\x9f\x98\x80", 4); /* U+1F600 */
  EXPECT(rm_record_key(a, RM_COUNTER, key, 1024, unit, 256, 1.0), RM_OK);
  EXPECT(rm_record_key(a, RM_COUNTER, key, 1024, unit, 256, 1.0), RM_OK); /* the fast path */
  EXPECT(rm_record_key(a, RM_COUNTER, key, 1025, unit, 256, 1.0), RM_INVALID_KEY);
  EXPECT(rm_record_key(a, RM_GAUGE, "g", 1, unit, 257, 1.0), RM_INVALID_UNIT);
  EXPECT(rm_record_key(a, RM_GAUGE, "g", 1, unit, 260, 1.0), RM_INVALID_UNIT); /* 65 characters */
  memset(unit, 'u', 65);
  EXPECT(rm_record_key(a, RM_GAUGE, "g", 1, unit, 65, 1.0), RM_INVALID_UNIT); /* 65 characters, 65 bytes */
  EXPECT(rm_record_key(a, RM_GAUGE, "g", 1, unit, 64, 1.0), RM_OK);
  free(key);
  rm_aggregator_free(a);
}

/* Durations: NaN, infinities, negatives and values over RM_MAX_DURATION_SECS
 * are refused with a result code, never a panic. Nothing listens on port 1,
 * so an accepted flush fails with RM_DATABASE at once. */
static void test_durations(void) {
  const char *nowhere = "host=127.0.0.1 port=1 connect_timeout=1";
  rm_aggregator *a = manual(4);
  rm_syncer *sy = NULL;
  rm_sync_status st;
  char buf[256];
  size_t n = 0;
  const double bad_intervals[] = {NAN, -NAN, 0.0, -0.0, -1.0, -INFINITY, 1e-10, 5e-324};
  for (size_t i = 0; i < sizeof bad_intervals / sizeof bad_intervals[0]; i++) {
    EXPECT(rm_syncer_start(a, nowhere, NULL, NULL, bad_intervals[i], &sy), RM_INVALID_CONFIG);
    CHECK(sy == NULL);
  }
  EXPECT(rm_last_error_detail(buf, sizeof buf, &n), RM_OK);
  CHECK(strstr(buf, "interval") != NULL);
  /* Over the maximum, an interval is clamped: no periodic sync. */
  const double huge_intervals[] = {RM_MAX_DURATION_SECS * 2, 1e20, 1e300, INFINITY};
  for (size_t i = 0; i < sizeof huge_intervals / sizeof huge_intervals[0]; i++) {
    EXPECT(rm_syncer_start(a, nowhere, NULL, NULL, huge_intervals[i], &sy), RM_OK);
    EXPECT(rm_syncer_status(sy, &st), RM_OK);
    CHECK(st.running == 1);
    rm_syncer_free(sy);
    sy = NULL;
  }
  /* Something to write: a flush with nothing to write does not connect. */
  EXPECT(rm_record_key(a, RM_COUNTER, "d", 1, NULL, 0, 1.0), RM_OK);
  EXPECT(rm_syncer_start(a, nowhere, NULL, NULL, 3600, &sy), RM_OK);
  const double bad_timeouts[] = {NAN, INFINITY, -INFINITY, -1.0, -1e-9, RM_MAX_DURATION_SECS * 1.0001, 1e20};
  for (size_t i = 0; i < sizeof bad_timeouts / sizeof bad_timeouts[0]; i++) {
    EXPECT(rm_syncer_flush(sy, bad_timeouts[i], NULL), RM_INVALID_ARGUMENT);
    EXPECT(rm_syncer_stop(sy, bad_timeouts[i], NULL), RM_INVALID_ARGUMENT);
    EXPECT(rm_syncer_status(sy, &st), RM_OK);
    CHECK(st.running == 1 && st.failures == 0); /* refused: nothing was tried */
  }
  EXPECT(rm_last_error_detail(buf, sizeof buf, &n), RM_OK);
  CHECK(strstr(buf, "timeout") != NULL);
  EXPECT(rm_syncer_flush(sy, RM_MAX_DURATION_SECS, NULL), RM_DATABASE);
  EXPECT(rm_syncer_stop(sy, RM_MAX_DURATION_SECS, NULL), RM_DATABASE);
  EXPECT(rm_syncer_status(sy, &st), RM_OK);
  CHECK(st.running == 0);
  rm_syncer_free(sy);
  rm_aggregator_free(a);
}

/* A configuration within every cap that the system cannot back is
   RM_OUT_OF_MEMORY, not an abort: in a child limited to 2 GiB of address
   space, a million series (about 33 GB reserved). */
static void test_out_of_memory(void) {
  pid_t pid = fork();
  if (pid == 0) {
    struct rlimit lim = {2UL << 30, 2UL << 30};
    setrlimit(RLIMIT_AS, &lim);
    rm_config c;
    rm_config_default(&c);
    c.capacity = 1000000;
    c.key_bytes = 1000000 * 96;
    rm_aggregator *a = NULL;
    rm_result r = rm_aggregator_new(&c, &a);
    char buf[256];
    size_t n = 0;
    rm_last_error_detail(buf, sizeof buf, &n);
    _exit(r == RM_OUT_OF_MEMORY && a == NULL && strstr(buf, "bytes") != NULL ? 0 : 1);
  }
  int status = 0;
  CHECK(pid > 0 && waitpid(pid, &status, 0) == pid);
  CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  CHECK(strcmp(rm_result_message(RM_OUT_OF_MEMORY), "the system refused the memory the configuration needs") == 0);
}

static void test_syncer(const char *dsn) {
  rm_aggregator *a = manual(16);
  rm_syncer *sy = NULL;
  rm_flush_report rep;
  rm_sync_status st;
  char buf[512];
  size_t n = 0;
  EXPECT(rm_syncer_start(a, NULL, NULL, NULL, 60, &sy), RM_NULL_POINTER);
  EXPECT(rm_syncer_start(a, dsn, "c_abi_", "c-test", 0, &sy), RM_INVALID_CONFIG);
  EXPECT(rm_syncer_start(a, "host=x password=hunter2 nonsense=1", NULL, NULL, 60, &sy), RM_INVALID_CONFIG);
  CHECK(sy == NULL);
  EXPECT(rm_last_error_detail(buf, sizeof buf, &n), RM_OK);
  CHECK(strstr(buf, "hunter2") == NULL);
  /* Any prefix Chancy accepts (it quotes it as an identifier). */
  {
    rm_aggregator *other = NULL;
    EXPECT(rm_aggregator_new(NULL, &other), RM_OK);
    EXPECT(rm_syncer_start(other, dsn, "c_abi_odd \"prefix\";", NULL, 60, &sy), RM_OK);
    rm_syncer_free(sy);
    sy = NULL;
    rm_aggregator_free(other);
  }
  EXPECT(rm_syncer_start(a, dsn, "c_abi_", "c-test", 3600, &sy), RM_OK);
  EXPECT(rm_record_key(a, RM_COUNTER, "c:jobs", 6, NULL, 0, 3.0), RM_OK);
  EXPECT(rm_record_key(a, RM_HISTOGRAM, "c:time", 6, "seconds", 7, 2.0), RM_OK);
  EXPECT(rm_syncer_flush(sy, 30, &rep), RM_OK);
  CHECK(rep.rows_written == 8 && rep.definitions_created == 2);
  EXPECT(rm_syncer_flush(sy, 30, NULL), RM_OK);
  EXPECT(rm_syncer_status(sy, &st), RM_OK);
  CHECK(st.running == 1 && st.flushes == 2 && st.failing == 0 && st.rows_written == 8);
  EXPECT(rm_syncer_status(NULL, &st), RM_NULL_POINTER);

  rm_read_result *res = NULL;
  EXPECT(rm_read_metrics(dsn, "c_abi_", "c", NULL, RM_1MIN, T0, T0 + 60, &res), RM_OK);
  CHECK(rm_read_result_len(res) == 2);
  rm_read_series rs;
  rm_read_point p;
  EXPECT(rm_read_result_series(res, 0, &rs), RM_OK);
  CHECK(rs.key_len == 6 && memcmp(rs.key, "c:jobs", 6) == 0 && rs.kind == RM_COUNTER && rs.points_len == 1);
  EXPECT(rm_read_result_point(res, 0, 0, &p), RM_OK);
  CHECK(p.start == T0 && p.value == 3.0);
  EXPECT(rm_read_result_series(res, 1, &rs), RM_OK);
  CHECK(rs.unit_len == 7 && memcmp(rs.unit, "seconds", 7) == 0);
  EXPECT(rm_read_result_point(res, 1, 0, &p), RM_OK);
  CHECK(p.count == 1 && p.value == 2.0);
  EXPECT(rm_read_result_series(res, 2, &rs), RM_INVALID_ARGUMENT);
  EXPECT(rm_read_result_point(res, 0, 5, &p), RM_INVALID_ARGUMENT);
  rm_read_result_free(res);
  rm_read_result_free(NULL);
  CHECK(rm_read_result_len(NULL) == 0);
  EXPECT(rm_read_metrics(dsn, "c_abi_", NULL, NULL, RM_1MIN, T0 + 1, T0 + 60, &res), RM_INVALID_CONFIG);

  uint64_t removed = 0;
  int64_t keep[4] = {3600, 86400, 604800, 7776000};
  EXPECT(rm_cleanup(dsn, "c_abi_", keep, &removed), RM_OK);
  CHECK(removed == 8); /* 2026-01-01 is long past every retention */
  EXPECT(rm_cleanup(dsn, "c_abi_", NULL, &removed), RM_NULL_POINTER);

  EXPECT(rm_syncer_stop(sy, 30, &rep), RM_OK);
  EXPECT(rm_syncer_stop(sy, 30, &rep), RM_OK);
  EXPECT(rm_syncer_flush(sy, 30, &rep), RM_STOPPED);
  rm_syncer_free(sy);
  rm_syncer_free(NULL);

  /* One syncer at a time per aggregator; a restarted one continues the
     aggregator's session, so nothing is written twice. */
  rm_syncer *again = NULL, *second = NULL;
  EXPECT(rm_syncer_start(a, dsn, "c_abi_", "c-test", 3600, &again), RM_OK);
  EXPECT(rm_syncer_start(a, dsn, "c_abi_", "c-test", 3600, &second), RM_INVALID_CONFIG);
  CHECK(second == NULL);
  EXPECT(rm_last_error_detail(buf, sizeof buf, &n), RM_OK);
  CHECK(strstr(buf, "already has a running syncer") != NULL);
  EXPECT(rm_record_key(a, RM_COUNTER, "c:jobs", 6, NULL, 0, 1.0), RM_OK);
  EXPECT(rm_syncer_flush(again, 30, NULL), RM_OK);
  EXPECT(rm_read_metrics(dsn, "c_abi_", "c:jobs", NULL, RM_1MIN, T0, T0 + 60, &res), RM_OK);
  CHECK(rm_read_result_len(res) == 1);
  EXPECT(rm_read_result_point(res, 0, 0, &p), RM_OK);
  CHECK(p.value == 4.0); /* 3 + 1 under one session, not 3 + 3 + 1 */
  rm_read_result_free(res);

  /* A key stored with another type: the series is held back, warned about
     and counted. */
  rm_aggregator *b = manual(4);
  rm_syncer *sb = NULL;
  EXPECT(rm_record_key(b, RM_GAUGE, "c:jobs", 6, NULL, 0, 1.0), RM_OK);
  EXPECT(rm_syncer_start(b, dsn, "c_abi_", "c-other", 3600, &sb), RM_OK);
  EXPECT(rm_syncer_last_warning(sb, buf, sizeof buf, &n), RM_OK);
  CHECK(n == 0 && buf[0] == 0);
  EXPECT(rm_syncer_flush(sb, 30, NULL), RM_OK);
  EXPECT(rm_syncer_status(sb, &st), RM_OK);
  CHECK(st.conflicts_dropped == 1);
  EXPECT(rm_syncer_last_warning(sb, buf, sizeof buf, &n), RM_OK);
  CHECK(n > 0 && strstr(buf, "\"c:jobs\"") != NULL && strstr(buf, "gauge") != NULL);
  EXPECT(rm_syncer_last_warning(NULL, buf, sizeof buf, &n), RM_NULL_POINTER);
  rm_syncer_free(sb);
  rm_aggregator_free(b);
  rm_syncer_free(again);

  /* A server that refuses: the error never shows the password. */
  EXPECT(rm_syncer_start(a, "host=127.0.0.1 port=1 user=x password=hunter2 connect_timeout=2", NULL, NULL, 3600, &sy),
         RM_OK);
  EXPECT(rm_syncer_flush(sy, 30, NULL), RM_DATABASE);
  EXPECT(rm_last_error_detail(buf, sizeof buf, &n), RM_OK);
  CHECK(n > 0 && strstr(buf, "hunter2") == NULL);
  EXPECT(rm_syncer_status(sy, &st), RM_OK);
  CHECK(st.failing == 1 && st.failures == 1);
  rm_syncer_free(sy);
  rm_aggregator_free(a);
}

/* An outage longer than the rings: buckets that leave a ring unsaved wait
   in the unsaved-bucket buffer (rm_config.spill), survive the failing
   syncer's stop, and are saved by the next syncer; a full buffer drops and
   counts them (rm_drops.unsaved). */
static void test_outage(const char *dsn) {
  const char *nowhere = "host=127.0.0.1 port=1 connect_timeout=1";
  for (int full = 0; full < 2; full++) {
    rm_config c;
    EXPECT(rm_config_default(&c), RM_OK);
    CHECK(c.spill == 10000);
    c.capacity = 4;
    for (int r = 0; r < 4; r++) c.buckets[r] = 6;
    if (full) c.spill = 3;
    rm_aggregator *a = NULL;
    EXPECT(rm_aggregator_new_manual_clock(&c, T0 * NS, &a), RM_OK);
    rm_syncer *sy = NULL;
    EXPECT(rm_syncer_start(a, nowhere, NULL, NULL, 3600, &sy), RM_OK);
    int minutes = full ? 20 : 30;
    for (int m = 0; m < minutes; m++) {
      EXPECT(rm_record_key(a, RM_COUNTER, "o:c", 3, NULL, 0, 1.0), RM_OK);
      EXPECT(rm_syncer_flush(sy, 30, NULL), RM_DATABASE);
      EXPECT(rm_aggregator_advance_time(a, 60 * NS), RM_OK);
    }
    EXPECT(rm_syncer_stop(sy, 30, NULL), RM_DATABASE);
    rm_syncer_free(sy);
    const char *prefix = full ? "c_abi_full_" : "c_abi_outage_";
    EXPECT(rm_syncer_start(a, dsn, prefix, "c-outage", 3600, &sy), RM_OK);
    EXPECT(rm_syncer_flush(sy, 30, NULL), RM_OK);
    rm_drops d;
    EXPECT(rm_drops_read(a, &d, NULL), RM_OK);
    rm_read_result *res = NULL;
    EXPECT(rm_read_metrics(dsn, prefix, "o", NULL, RM_1MIN, T0, T0 + 3600, &res), RM_OK);
    CHECK(rm_read_result_len(res) == 1);
    rm_read_series rs;
    EXPECT(rm_read_result_series(res, 0, &rs), RM_OK);
    if (full) {
      /* 13 minutes left the 1min ring, 3 fit the buffer, 10 were lost;
         the ring's 6 and the pending minute are saved. */
      CHECK(d.unsaved[0] == 10 && d.unsaved[1] == 0);
      CHECK(rs.points_len == 10);
    } else {
      CHECK(d.unsaved[0] == 0 && rs.points_len == 30);
      for (size_t i = 0; i < rs.points_len; i++) {
        rm_read_point p;
        EXPECT(rm_read_result_point(res, 0, i, &p), RM_OK);
        CHECK(p.value == 1.0);
      }
    }
    rm_read_result_free(res);
    EXPECT(rm_read_metrics(dsn, prefix, "o", NULL, RM_1HOUR, T0, T0 + 3600, &res), RM_OK);
    rm_read_point p;
    EXPECT(rm_read_result_point(res, 0, 0, &p), RM_OK);
    CHECK(p.value == (double)minutes); /* the hour ring lost nothing */
    rm_read_result_free(res);
    EXPECT(rm_syncer_stop(sy, 30, NULL), RM_OK);
    rm_syncer_free(sy);
    rm_aggregator_free(a);
  }
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s DSN\n", argv[0]);
    return 2;
  }
  test_messages();
  test_config_and_lifecycle();
  test_record_and_snapshot();
  test_refusals();
  test_record_key_paths();
  test_threads();
  test_hostile_lengths();
  test_durations();
  test_out_of_memory();
  test_syncer(argv[1]);
  test_outage(argv[1]);
  printf("C tests: %d passed, %d failed\n", passed, failed);
  return failed == 0 ? 0 : 1;
}
