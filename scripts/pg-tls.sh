#!/usr/bin/env bash
# A throwaway PostgreSQL cluster with TLS on, for the connection tests.
#
#   scripts/pg-tls.sh start DIR   # prints the port
#   scripts/pg-tls.sh stop DIR
#
# Generates, with the openssl CLI, a test CA (DIR/ca.crt) and a server
# certificate signed by it for the name `localhost` only (not 127.0.0.1),
# so verify-full succeeds with host=localhost and refuses host=127.0.0.1.
# Also DIR/other-ca.crt, a CA that signed nothing the server shows, and
# CRLs of the test CA: DIR/empty.crl (nothing revoked), DIR/revoked.crl and
# DIR/crldir/ (the server's certificate revoked).
# Listens on 127.0.0.1 at a free port. pg_hba.conf:
#   rm_nossl    plain TCP only (trust)     -> sslmode=prefer must fall back
#   rm_sslonly  TLS only (trust)           -> sslmode=allow must retry TLS
#   rm_cert     TLS with a client certificate (DIR/client.crt, DIR/client.key,
#               DIR/client-enc.key encrypted with "key pass")
#   rm_scram    TLS or plain, SCRAM, password 'pw with spaces:@/?'
#   postgres    anything (trust)
set -euo pipefail
cd "$(dirname "$0")/.."

cmd=${1:?start|stop}
dir=${2:?directory}

bin() {
  local d
  for d in /usr/lib/postgresql/*/bin /usr/local/bin /usr/bin; do
    if [ -x "$d/$1" ]; then echo "$d/$1"; return; fi
  done
  command -v "$1" || { echo "pg-tls: $1 not found; install PostgreSQL" >&2; exit 1; }
}
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

case "$cmd" in
  start)
    command -v openssl >/dev/null || { apt-get update -qq && apt-get install -y -qq openssl >/dev/null; }
    mkdir -p "$dir"
    (
      cd "$dir"
      openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 2 \
        -subj "/CN=ringmetrics test CA" >/dev/null 2>&1
      openssl req -x509 -newkey rsa:2048 -nodes -keyout other-ca.key -out other-ca.crt -days 2 \
        -subj "/CN=ringmetrics other CA" >/dev/null 2>&1
      openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr \
        -subj "/CN=localhost" >/dev/null 2>&1
      printf 'subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n' > server.ext
      openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out server.crt -days 2 \
        -extfile server.ext >/dev/null 2>&1
      # A client certificate for rm_cert, its key plain and as encrypted
      # PKCS#8 (password "key pass").
      openssl req -newkey rsa:2048 -nodes -keyout client.key -out client.csr -subj "/CN=rm_cert" >/dev/null 2>&1
      printf 'basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n' > client.ext
      openssl x509 -req -in client.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out client.crt -days 2 \
        -extfile client.ext >/dev/null 2>&1
      openssl pkcs8 -topk8 -v2 aes-256-cbc -in client.key -out client-enc.key -passout "pass:key pass" >/dev/null 2>&1
      # CRLs: one revoking nothing, one revoking the server's certificate.
      printf '[ca]\ndefault_ca = test\n[test]\ndatabase = index.txt\ncrlnumber = crlnumber\ndefault_md = sha256\ndefault_crl_days = 2\n' > ca.cnf
      : > index.txt
      echo 01 > crlnumber
      openssl ca -config ca.cnf -gencrl -keyfile ca.key -cert ca.crt -out empty.crl >/dev/null 2>&1
      openssl ca -config ca.cnf -revoke server.crt -keyfile ca.key -cert ca.crt >/dev/null 2>&1
      openssl ca -config ca.cnf -gencrl -keyfile ca.key -cert ca.crt -out revoked.crl >/dev/null 2>&1
      mkdir -p crldir && cp revoked.crl crldir/
      chmod 600 server.key ca.key other-ca.key client.key client-enc.key
    )
    [ "$(id -u)" = 0 ] && chown -R postgres "$dir"
    as_pg "$(bin initdb)" -D "$dir/data" -U postgres -A trust --no-sync >"$dir/initdb.log" 2>&1
    cat > "$dir/data/pg_hba.conf" <<'EOF'
local     all  all                       trust
hostnossl all  rm_nossl    127.0.0.1/32  trust
hostssl   all  rm_sslonly  127.0.0.1/32  trust
hostssl   all  rm_cert     127.0.0.1/32  cert
host      all  rm_scram    127.0.0.1/32  scram-sha-256
host      all  postgres    127.0.0.1/32  trust
EOF
    for _ in 1 2 3 4 5 6 7 8; do
      port=$(( (RANDOM % 20000) + 20000 ))
      if as_pg "$(bin pg_ctl)" -D "$dir/data" -l "$dir/server.log" -w -t 30 \
          -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=100 \
              -c ssl=on -c ssl_cert_file=$dir/server.crt -c ssl_key_file=$dir/server.key -c ssl_ca_file=$dir/ca.crt" start >/dev/null 2>&1; then
        as_pg "$(bin psql)" -h "$dir" -p "$port" -U postgres -d postgres -qAt -v ON_ERROR_STOP=1 <<'EOF' >/dev/null
CREATE ROLE rm_nossl LOGIN SUPERUSER;
CREATE ROLE rm_sslonly LOGIN SUPERUSER;
CREATE ROLE rm_cert LOGIN SUPERUSER;
SET password_encryption = 'scram-sha-256';
CREATE ROLE rm_scram LOGIN SUPERUSER PASSWORD 'pw with spaces:@/?';
EOF
        echo "$port" > "$dir/port"
        echo "$port"
        exit 0
      fi
    done
    echo "pg-tls: could not start PostgreSQL; see $dir/server.log" >&2
    exit 1
    ;;
  stop)
    as_pg "$(bin pg_ctl)" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
    ;;
  *)
    echo "usage: $0 start|stop DIR" >&2
    exit 2
    ;;
esac
