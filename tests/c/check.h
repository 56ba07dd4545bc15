/* The C tests' checks: each CHECK counts a pass or prints where it failed;
 * a test's main reports `passed` and `failed` and exits non-zero on any
 * failure. One copy for every test file (each is its own program). */
#ifndef RINGMETRICS_TESTS_CHECK_H
#define RINGMETRICS_TESTS_CHECK_H

#include <stdio.h>

static int passed = 0, failed = 0;

#define CHECK(cond)                                                            \
  do {                                                                         \
    if (cond) {                                                                \
      passed++;                                                                \
    } else {                                                                   \
      failed++;                                                                \
      fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
    }                                                                          \
  } while (0)

#define EXPECT(call, code) CHECK((call) == (code))

#endif
