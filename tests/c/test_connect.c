/* C tests of connecting like libpq through the ABI: TLS modes against a
 * throwaway TLS cluster (scripts/pg-tls.sh), and no password in any error
 * detail, whatever the DSN form and the error path. Built with the same
 * -Werror and ASan/UBSan flags as test_abi.c by tests/c/run.sh.
 *
 * usage: test_connect PORT CA_FILE   (the TLS cluster's port and test CA)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ringmetrics.h"
#include "check.h"

static char detail[2048];

static const char *last_detail(void) {
  size_t n = 0;
  if (rm_last_error_detail(detail, sizeof detail, &n) != RM_OK) return "";
  return detail;
}

/* The password pieces that must never show. */
static int clean(const char *text) {
  return strstr(text, "hunter2") == NULL && strstr(text, "s3cret") == NULL;
}

/* Start, flush (expected to fail), check every message; returns the
 * result of the flush (or of the start when it failed). */
static rm_result fail_and_check(const char *dsn) {
  rm_aggregator *a = NULL;
  rm_syncer *sy = NULL;
  rm_sync_status st;
  rm_result r;
  EXPECT(rm_aggregator_new(NULL, &a), RM_OK);
  EXPECT(rm_record_key(a, RM_COUNTER, "c:n", 3, NULL, 0, 1.0), RM_OK);
  r = rm_syncer_start(a, dsn, "c_connect_", "c", 3600, &sy);
  if (r == RM_OK) {
    r = rm_syncer_flush(sy, 30, NULL);
    CHECK(r != RM_OK);
    CHECK(clean(last_detail()));
    EXPECT(rm_syncer_status(sy, &st), RM_OK);
    CHECK(st.failing == 1);
    rm_syncer_free(sy);
  } else {
    CHECK(sy == NULL);
    CHECK(clean(last_detail()));
  }
  if (!clean(detail)) fprintf(stderr, "leaked by %s: %s\n", dsn, detail);
  {
    const int64_t keep[4] = {86400, 86400, 86400, 86400};
    uint64_t removed = 0;
    rm_read_result *res = NULL;
    if (rm_cleanup(dsn, "c_connect_", keep, &removed) != RM_OK) CHECK(clean(last_detail()));
    if (rm_read_metrics(dsn, "c_connect_", NULL, NULL, RM_1MIN, 0, 60, &res) != RM_OK) {
      CHECK(clean(last_detail()));
    } else {
      rm_read_result_free(res);
    }
  }
  rm_aggregator_free(a);
  return r;
}

static void saves(const char *dsn) {
  rm_aggregator *a = NULL;
  rm_syncer *sy = NULL;
  rm_flush_report rep;
  EXPECT(rm_aggregator_new(NULL, &a), RM_OK);
  EXPECT(rm_record_key(a, RM_COUNTER, "c:n", 3, NULL, 0, 2.0), RM_OK);
  EXPECT(rm_syncer_start(a, dsn, "c_connect_", "c", 3600, &sy), RM_OK);
  EXPECT(rm_syncer_flush(sy, 30, &rep), RM_OK);
  if (rep.rows_written == 0) fprintf(stderr, "%s: %s\n", dsn, last_detail());
  rm_syncer_free(sy);
  rm_aggregator_free(a);
}

int main(int argc, char **argv) {
  char dsn[1024];
  const char *ca;
  int port, i;
  if (argc != 3) {
    fprintf(stderr, "usage: %s PORT CA_FILE\n", argv[0]);
    return 2;
  }
  port = atoi(argv[1]);
  ca = argv[2];

  /* TLS modes that must save. */
  snprintf(dsn, sizeof dsn, "host=127.0.0.1 port=%d user=postgres dbname=postgres sslmode=require", port);
  saves(dsn);
  snprintf(dsn, sizeof dsn, "host=127.0.0.1 port=%d user=postgres dbname=postgres sslmode=verify-ca sslrootcert=%s",
           port, ca);
  saves(dsn);
  snprintf(dsn, sizeof dsn, "postgresql://postgres@localhost:%d/postgres?sslmode=verify-full&sslrootcert=%s", port,
           ca);
  saves(dsn);

  /* Every error path, with the password in every DSN form. */
  {
    const char *forms[] = {
        "host=127.0.0.1 port=%d user=rm_scram dbname=postgres password=hunter2 %s",
        "host=127.0.0.1 port=%d user=rm_scram dbname=postgres password = 'hunter2 s3cret' %s",
        "host=127.0.0.1 port=%d user=rm_scram dbname=postgres password=hunter2\\ s3cret %s",
    };
    const char *uri_forms[] = {
        "postgresql://rm_scram:hunter2%%20s3cret@127.0.0.1:%d/postgres?%s",
        "postgresql://rm_scram@127.0.0.1:%d/postgres?password=hunter2%%20s3cret&%s",
    };
    char extra_tls[600];
    const char *extras[3];
    const char *uri_extras[3];
    int ports[3];
    int k;
    snprintf(extra_tls, sizeof extra_tls, "sslmode=verify-full sslrootcert=%s", ca);
    extras[0] = "sslmode=disable"; /* wrong password: authentication fails */
    extras[1] = "connect_timeout=2"; /* port 1: refused */
    extras[2] = extra_tls;           /* 127.0.0.1 is not the certificate's name */
    ports[0] = port;
    ports[1] = 1;
    ports[2] = port;
    for (k = 0; k < 3; k++) {
      for (i = 0; i < 3; i++) {
        snprintf(dsn, sizeof dsn, forms[i], ports[k], extras[k]);
        EXPECT(fail_and_check(dsn), RM_DATABASE);
      }
    }
    uri_extras[0] = "sslmode=disable";
    uri_extras[1] = "connect_timeout=2";
    uri_extras[2] = NULL;
    for (k = 0; k < 3; k++) {
      char tls_query[700];
      if (k == 2) {
        snprintf(tls_query, sizeof tls_query, "sslmode=verify-full&sslrootcert=%s", ca);
        uri_extras[2] = tls_query;
      }
      for (i = 0; i < 2; i++) {
        snprintf(dsn, sizeof dsn, uri_forms[i], ports[k], uri_extras[k]);
        EXPECT(fail_and_check(dsn), RM_DATABASE);
      }
    }
  }
  /* Bad DSNs: configuration errors that never echo a value. */
  {
    const char *bad[] = {
        "host=x password=hunter2 bogus=1",
        "host=x password=hunter2 s3cret",
        "host=x password='hunter2 s3cret",
        "postgresql://u:hunter2%zz@h/db",
        "postgresql://u:hunter2@h/db?bogus=s3cret",
        "host=x password=hunter2 requirepeer=s3cret",
        "hunter2 s3cret",
    };
    for (i = 0; i < (int)(sizeof bad / sizeof bad[0]); i++) {
      EXPECT(fail_and_check(bad[i]), RM_INVALID_CONFIG);
    }
  }

  printf("c connect: %d passed, %d failed\n", passed, failed);
  return failed == 0 ? 0 : 1;
}
