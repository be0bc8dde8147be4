#!/usr/bin/env bash
# A local GAVO DaCHS TAP server for xpipe's service tests and local pulls.
#
#   dachs.sh install            apt-get PostgreSQL + pgSphere + DaCHS (idempotent, fast if present)
#   dachs.sh start              start PostgreSQL and the DaCHS web server on 127.0.0.1:$DACHS_PORT
#                               for this checkout (a server started for another is restarted)
#   dachs.sh load SIM_DIR [SCHEMA...]   serve a simulated catalogue as CSC tables (default csc2)
#                               plus a SIMBAD-shaped public.basic table
#   dachs.sh stop               stop the DaCHS server if it serves this checkout (PostgreSQL keeps
#                               running); DACHS_FORCE_STOP=1 stops it whoever started it
#   dachs.sh url                print the TAP URL
#   dachs.sh served-by          print which checkout and inputs the running server serves
#
# Why by hand: this machine has no systemd and package scripts may not start services, so
# PostgreSQL and DaCHS are started here. What the server and the database read (the RDs and
# CSVs DaCHS imports) is written to DaCHS's own inputs directory, one folder per checkout
# (/var/gavo/inputs/xpipe-<hash of the checkout's path>, readable by the gavo and postgres
# users), never read in place: a checkout in a directory other users cannot read works too.
# The running server's checkout and inputs are recorded in $SERVED; a server started for
# another checkout is restarted for this one, never silently reused.
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$HERE/../../.." && pwd)"
DACHS_PORT="${DACHS_PORT:-8086}"
GAVO_INPUTS="${GAVO_INPUTS:-/var/gavo/inputs}"
CHECKOUT_ID="$(printf '%s' "$REPO" | sha256sum | cut -c1-12)"
DACHS_HOME="${DACHS_HOME:-$GAVO_INPUTS/xpipe-$CHECKOUT_ID}"
INPUTS="$DACHS_HOME/inputs"
SERVED="${DACHS_SERVED:-/var/gavo/state/xpipe-served}"
PY="${PY:-$REPO/.venv/bin/python}"
URL="http://127.0.0.1:$DACHS_PORT/tap"
export DEBIAN_FRONTEND=noninteractive
CALLER_PWD="$PWD"
cd /  # the server, PostgreSQL and su'd commands may not be able to enter the checkout

log() { echo "dachs.sh: $*" >&2; }

need_root() {
  if [ "$(id -u)" != 0 ]; then
    log "must run as root (installs packages and starts PostgreSQL)"; exit 1
  fi
}

pg_cluster() {  # "VERSION NAME" of the first PostgreSQL cluster
  pg_lsclusters -h 2>/dev/null | awk 'NR==1 {print $1, $2}'
}

start_postgres() {
  local cluster
  cluster="$(pg_cluster)"
  if [ -z "$cluster" ]; then log "no PostgreSQL cluster found"; exit 1; fi
  # shellcheck disable=SC2086
  if ! pg_lsclusters -h | awk 'NR==1 {print $4}' | grep -q online; then
    pg_ctlcluster $cluster start
  fi
}

patch_pgsphere() {
  # PostgreSQL >= 15.20 refuses the COMMUTATOR/NEGATOR of two legacy `@` operators in
  # pgSphere 1.2.0's install script; DaCHS does not use them, so drop those two clauses.
  local f
  for f in /usr/share/postgresql/*/extension/pg_sphere--1.2.0.sql; do
    [ -f "$f" ] || continue
    python3 - "$f" <<'EOF'
import sys
path = sys.argv[1]
lines = open(path).read().split("\n")
start = next((i for i, s in enumerate(lines) if "backwards-compatible operators for GAVO" in s),
             None)
if start is not None:
    end = next((i for i in range(start, len(lines)) if lines[i].startswith("-- debugging")),
               len(lines))
    kept = [s for i, s in enumerate(lines)
            if not (start < i < end and s.strip().startswith(("COMMUTATOR", "NEGATOR")))]
    if len(kept) != len(lines):
        open(path, "w").write("\n".join(kept))
        print(f"patched {path}")
EOF
  done
}

install() {
  need_root
  if command -v dachs >/dev/null && dpkg -s gavodachs2-server 2>/dev/null \
      | grep -q "Status: install ok installed"; then
    log "DaCHS already installed"; return 0
  fi
  if ! apt-get install -y -q --no-install-recommends postgresql postgresql-contrib \
      >/dev/null 2>&1; then
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends postgresql postgresql-contrib >/dev/null
  fi
  start_postgres
  local pgver
  pgver="$(pg_cluster | cut -d' ' -f1)"
  apt-get install -y -q --no-install-recommends "postgresql-$pgver-pgsphere" \
    "postgresql-$pgver-q3c" >/dev/null
  patch_pgsphere
  # its setup step creates the DaCHS database, so PostgreSQL must be running by now
  apt-get install -y -q --no-install-recommends gavodachs2-server >/dev/null \
    || dpkg --configure -a
  dpkg -s gavodachs2-server | grep -q "Status: install ok installed"
  log "DaCHS installed"
}

write_config() {
  mkdir -p "$INPUTS/__system"
  own_inputs
  cat > /etc/gavo.rc <<EOF
# written by xpipe's tests/services/dachs/dachs.sh for $REPO
[general]
inputsDir: $INPUTS
logLevel: warning

[web]
bindAddress: 127.0.0.1
serverPort: $DACHS_PORT
serverURL: http://127.0.0.1:$DACHS_PORT
sqlTimeout: 900
maxUploadSize: 400000000
maxSyncUploadSize: 400000000

[async]
defaultExecTimeSync: 900
defaultExecTime: 7200
maxTAPRunning: 4
maxUserUWSRunningDefault: 4
hardMAXREC: 20000000
EOF
}

own_inputs() {  # the DaCHS server (gavo) and PostgreSQL (postgres) read what is here
  if id dachsroot >/dev/null 2>&1 && getent group gavo >/dev/null; then
    chown -R dachsroot:gavo "$DACHS_HOME"
  fi
  chmod -R a+rX,go-w "$DACHS_HOME"
}

identity() {  # what $SERVED records for this checkout
  printf 'checkout=%s inputs=%s port=%s\n' "$REPO" "$INPUTS" "$DACHS_PORT"
}

served_by() {
  if [ -f "$SERVED" ]; then cat "$SERVED"; else echo "unknown (not started by this script)"; fi
}

server_up() {
  curl -fsS -m 5 "$URL/capabilities" >/dev/null 2>&1
}

stop_server() {
  dachs serve stop >/dev/null 2>&1 || true
  for _ in $(seq 1 30); do
    server_up || break
    sleep 1
  done
  if server_up; then log "DaCHS still answers on $URL after stopping it"; return 1; fi
  rm -f "$SERVED"
}

start() {
  need_root
  start_postgres
  if server_up; then
    if [ -f "$SERVED" ] && [ "$(cat "$SERVED")" = "$(identity)" ]; then
      write_config
      log "DaCHS already serving $URL for this checkout"; return 0
    fi
    log "DaCHS on $URL serves another checkout ($(served_by)): restarting it for $REPO"
    stop_server
  fi
  write_config
  # a start that fails half-way leaves nothing running
  trap 'rc=$?; if [ $rc != 0 ]; then stop_server || true; fi' EXIT
  dachs serve start >/dev/null 2>&1 || true
  for _ in $(seq 1 60); do
    if server_up; then
      identity > "$SERVED"
      log "DaCHS serving $URL for $REPO (inputs $INPUTS)"; return 0
    fi
    sleep 1
  done
  log "DaCHS did not answer on $URL within 60 s; see /var/gavo/logs"; exit 1
}

stop() {
  if ! server_up && [ ! -f /var/gavo/state/web.pid ]; then
    rm -f "$SERVED"; log "DaCHS not running"; return 0
  fi
  if [ -f "$SERVED" ] && [ "$(cat "$SERVED")" != "$(identity)" ] \
      && [ "${DACHS_FORCE_STOP:-0}" != 1 ]; then
    log "DaCHS on $URL serves another checkout ($(served_by)): left running" \
        "(DACHS_FORCE_STOP=1 stops it)"
    return 0
  fi
  stop_server
  log "DaCHS stopped"
}

psql_gavo() {
  su postgres -c "psql -q -v ON_ERROR_STOP=1 -d gavo" "$@"
}

load() {
  need_root
  local sim="$1"; shift
  case "$sim" in /*) ;; *) sim="$CALLER_PWD/$sim" ;; esac
  local schemas=("$@")
  [ ${#schemas[@]} -gt 0 ] || schemas=(csc2)
  if server_up && { [ ! -f "$SERVED" ] || [ "$(cat "$SERVED")" != "$(identity)" ]; }; then
    log "DaCHS on $URL serves another checkout ($(served_by)): run dachs.sh start first"
    exit 1
  fi
  write_config
  rm -rf "$INPUTS/data"
  "$PY" "$HERE/make_tables.py" "$sim" "$INPUTS" "${schemas[@]}"
  own_inputs
  local rd table
  for rd in "${schemas[@]}" simbad; do
    if ! dachs imp "$rd/q" >"$DACHS_HOME/imp-$rd.log" 2>&1; then
      cat "$DACHS_HOME/imp-$rd.log" >&2; log "dachs imp $rd/q failed"; exit 1
    fi
  done
  for schema in "${schemas[@]}"; do
    for table in master_source master_stack_assoc stack_source stack_observation_assoc \
        observation_source; do
      psql_gavo <<EOF
TRUNCATE $schema.$table;
\copy $schema.$table FROM '$INPUTS/data/$table.csv' WITH (FORMAT csv, HEADER true)
ANALYZE $schema.$table;
EOF
    done
  done
  psql_gavo <<EOF
TRUNCATE public.basic;
\copy public.basic FROM '$INPUTS/data/basic.csv' WITH (FORMAT csv, HEADER true)
ANALYZE public.basic;
EOF
  # the running server caches table metadata: reload it
  if server_up; then dachs serve reload >/dev/null 2>&1 || true; fi
  echo "$sim" > "$DACHS_HOME/loaded-from"
  own_inputs
  log "loaded $sim into ${schemas[*]} and public.basic"
}

case "${1:-}" in
  install) install ;;
  start) start ;;
  stop) stop ;;
  load) shift; load "$@" ;;
  url) echo "$URL" ;;
  served-by) served_by ;;
  *) sed -n '2,22p' "$0"; exit 2 ;;
esac
