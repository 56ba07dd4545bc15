#define _POSIX_C_SOURCE 199309L
/* ns per record through the C ABI, single thread: by handle and by key.
 * Prints "c_handle_ns X" and "c_key_ns Y" (medians of 7 runs of 5M calls).
 *
 * usage: bench [N [RUNS [handle|key]]]   (tests/c/bench.sh --callgrind runs
 * one loop a few times under valgrind to count instructions per call) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ringmetrics.h"

static double now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

int main(int argc, char **argv) {
  rm_aggregator *a = NULL;
  rm_series s;
  if (rm_aggregator_new(NULL, &a) != RM_OK) return 1;
  if (rm_register(a, RM_COUNTER, "jobs:done", 9, NULL, 0, &s) != RM_OK) return 1;
  const int n = argc > 1 ? atoi(argv[1]) : 5000000;
  const int runs = argc > 2 && atoi(argv[2]) >= 1 && atoi(argv[2]) <= 7 ? atoi(argv[2]) : 7;
  const char *only = argc > 3 ? argv[3] : "";
  double handle[7] = {0}, key[7] = {0};
  for (int r = 0; r < runs; r++) {
    double t = now_ns();
    if (strcmp(only, "key") != 0)
      for (int i = 0; i < n; i++) rm_record(a, s, 1.0);
    handle[r] = (now_ns() - t) / (n > 0 ? n : 1);
    t = now_ns();
    if (strcmp(only, "handle") != 0)
      for (int i = 0; i < n; i++) rm_record_key(a, RM_COUNTER, "jobs:done", 9, "count", 5, 1.0);
    key[r] = (now_ns() - t) / (n > 0 ? n : 1);
  }
  qsort(handle, runs, sizeof(double), cmp);
  qsort(key, runs, sizeof(double), cmp);
  printf("c_handle_ns %.2f\nc_key_ns %.2f\n", handle[runs / 2], key[runs / 2]);
  rm_aggregator_free(a);
  return 0;
}
