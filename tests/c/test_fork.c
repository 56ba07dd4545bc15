/* fork() while other threads record: the child must record and snapshot the
 * series those threads were writing (a stripe write or a fold may have been
 * copied mid-flight) and exit within a second. Hundreds of forks, each
 * child timed by the parent; a child still running after 1 s is killed and
 * counted as hung. Built with -Wall -Wextra -Wpedantic -Werror (and the
 * sanitizers) by tests/c/run.sh.
 *
 * usage: test_fork [FORKS]   (default 300)
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ringmetrics.h"

#define THREADS 4
#define KEYS 3

static rm_aggregator *agg;
static rm_series series[KEYS];
static const char *keys[KEYS] = {"fork:counter", "fork:gauge", "fork:histogram"};
static const uint32_t kinds[KEYS] = {RM_COUNTER, RM_GAUGE, RM_HISTOGRAM};
static atomic_int stop;

static void *recorder(void *arg) {
  size_t i = (size_t)arg;
  double v = 1.0;
  while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
    /* By handle on every series, and by key on one: both paths are in
     * flight when the parent forks. */
    for (int k = 0; k < KEYS; k++) {
      if (rm_record(agg, series[k], v) != RM_OK) abort();
    }
    if (rm_record_key(agg, kinds[i % KEYS], keys[i % KEYS], strlen(keys[i % KEYS]), NULL, 0, v) != RM_OK) abort();
    v = v < 1000.0 ? v + 1.0 : 1.0;
  }
  return NULL;
}

static double now_secs(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* The child: record into every series, by handle and by key, then read each
 * one back. Exit code 0 only if all of it worked. */
static int child(void) {
  rm_bucket b[64];
  size_t n = 0;
  for (int k = 0; k < KEYS; k++) {
    if (rm_record(agg, series[k], 5.0) != RM_OK) return 10 + k;
    if (rm_record_key(agg, kinds[k], keys[k], strlen(keys[k]), NULL, 0, 5.0) != RM_OK) return 20 + k;
    if (rm_snapshot(agg, series[k], RM_1MIN, 0, (int64_t)time(NULL) + 3600, b, 64, &n) != RM_OK || n == 0) return 30 + k;
    if (b[n - 1].count < 1) return 40 + k;
  }
  rm_series fresh;
  if (rm_register(agg, RM_COUNTER, "fork:child", 10, NULL, 0, &fresh) != RM_OK) return 50;
  if (rm_record(agg, fresh, 1.0) != RM_OK) return 51;
  if (rm_snapshot(agg, fresh, RM_1MIN, 0, (int64_t)time(NULL) + 3600, b, 64, &n) != RM_OK || n != 1 || b[0].sum != 1.0) return 52;
  return 0;
}

int main(int argc, char **argv) {
  int forks = argc > 1 ? atoi(argv[1]) : 300;
  if (rm_aggregator_new(NULL, &agg) != RM_OK) return 2;
  for (int k = 0; k < KEYS; k++) {
    if (rm_register(agg, kinds[k], keys[k], strlen(keys[k]), NULL, 0, &series[k]) != RM_OK) return 2;
  }
  pthread_t th[THREADS];
  for (size_t i = 0; i < THREADS; i++) {
    if (pthread_create(&th[i], NULL, recorder, (void *)i) != 0) return 2;
  }
  int hung = 0, failed = 0;
  double slowest = 0;
  for (int f = 0; f < forks; f++) {
    /* Let the recorders run a little between forks, at varying offsets. */
    struct timespec pause = {0, (long)(100000 + (f % 7) * 37000)};
    nanosleep(&pause, NULL);
    double started = now_secs();
    pid_t pid = fork();
    if (pid < 0) {
      perror("fork");
      return 2;
    }
    if (pid == 0) _exit(child());
    int status = 0;
    for (;;) {
      pid_t r = waitpid(pid, &status, WNOHANG);
      if (r == pid) break;
      if (r < 0 && errno != EINTR) {
        perror("waitpid");
        return 2;
      }
      if (now_secs() - started > 1.0) {
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
        hung++;
        fprintf(stderr, "fork %d: the child was still running after 1 s (killed)\n", f);
        status = 0;
        break;
      }
      struct timespec poll = {0, 200000};
      nanosleep(&poll, NULL);
    }
    double took = now_secs() - started;
    if (took > slowest) slowest = took;
    if (WIFEXITED(status) && WEXITSTATUS(status) != 0) {
      failed++;
      fprintf(stderr, "fork %d: the child failed with code %d\n", f, WEXITSTATUS(status));
    } else if (WIFSIGNALED(status) && WTERMSIG(status) != SIGKILL) {
      failed++;
      fprintf(stderr, "fork %d: the child died of signal %d\n", f, WTERMSIG(status));
    }
  }
  atomic_store(&stop, 1);
  for (size_t i = 0; i < THREADS; i++) pthread_join(th[i], NULL);
  rm_aggregator_free(agg);
  printf("C fork test: %d forks while %d threads recorded: %d hung, %d failed, slowest child %.3f s\n", forks,
         THREADS, hung, failed, slowest);
  return hung == 0 && failed == 0 ? 0 : 1;
}
