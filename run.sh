#!/usr/bin/env bash
# Metronome's single entry point: sets up .venv and the database, then runs what you ask.
#   ./run.sh                    web server + scheduler worker + tenant worker (Ctrl-C stops all)
#   AS_WORKER=yes ./run.sh      one worker only; WORKER_QUEUES=1,2 or =scheduler picks queues
#   ./run.sh test [pytest args] type check, tests, browser tests (with args: that pytest run only)
#   ./run.sh typecheck          the type check alone (mypy, configured in pyproject.toml)
#   ./run.sh manage ARGS        python manage.py ARGS with the environment set
#   ./run.sh worker             same as AS_WORKER=yes ./run.sh
#   ./run.sh db-start | db-stop | db-status | db-url   the embedded PostgreSQL
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$ROOT"
VENV="$ROOT/.venv"
PY="$VENV/bin/python"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export DJANGO_SETTINGS_MODULE="${DJANGO_SETTINGS_MODULE:-config.settings}"

die() { echo "run.sh: $1" >&2; exit "${2:-1}"; }

usage() {
  sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'
}

# Reads .env (if any) so run.sh sees DATABASE_URL etc. exactly as Django does.
load_dotenv() {
  if [[ -f "$ROOT/.env" ]]; then
    set -a
    # shellcheck disable=SC1091
    source "$ROOT/.env"
    set +a
  fi
}

ensure_python() {
  local python="${PYTHON:-python3}"
  command -v "$python" >/dev/null 2>&1 || die "'$python' not found; install Python 3.11+ or set PYTHON=/path/to/python3.11"
  "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || die "$("$python" -V 2>&1) is too old; Metronome needs Python 3.11+ (set PYTHON=/path/to/python3.11)"
  echo "$python"
}

requirements_hash() {
  cat "$@" | sha256sum | cut -d' ' -f1
}

# ensure_venv runtime|dev: create .venv and install requirements, skipped when unchanged.
ensure_venv() {
  local kind="$1" files stamp_ok=no
  if [[ ! -x "$PY" ]] || ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    local python
    python="$(ensure_python)"
    echo "run.sh: creating $VENV with $("$python" -V 2>&1)" >&2
    rm -rf "$VENV"
    "$python" -m venv "$VENV"
  fi
  local runtime_hash dev_hash
  runtime_hash="$(requirements_hash requirements.txt)"
  dev_hash="$(requirements_hash requirements.txt requirements-dev.txt)"
  [[ "$(cat "$VENV/.stamp-dev" 2>/dev/null)" == "$dev_hash" ]] && stamp_ok=yes
  [[ "$kind" == runtime && "$(cat "$VENV/.stamp-runtime" 2>/dev/null)" == "$runtime_hash" ]] && stamp_ok=yes
  if [[ "$stamp_ok" == no ]]; then
    files=(-r requirements.txt)
    [[ "$kind" == dev ]] && files=(-r requirements-dev.txt)
    echo "run.sh: installing $kind requirements into $VENV" >&2
    "$PY" -m pip install --quiet --disable-pip-version-check "${files[@]}" >&2 \
      || die "pip install failed; see the messages above"
    echo "$runtime_hash" >"$VENV/.stamp-runtime"
    [[ "$kind" == dev ]] && echo "$dev_hash" >"$VENV/.stamp-dev"
  fi
  if ! "$PY" -m localdb bin >/dev/null 2>&1 && [[ -z "${DATABASE_URL:-}" ]]; then
    echo "run.sh: no PostgreSQL binaries on this machine; installing pgserver from PyPI" >&2
    "$PY" -m pip install --quiet --disable-pip-version-check pgserver >&2 || die "pip install pgserver failed"
  fi
  return 0
}

# ensure_db: check DATABASE_URL, or start the embedded cluster and export its URL.
ensure_db() {
  if [[ -n "${DATABASE_URL:-}" ]]; then
    "$PY" -m localdb check-url || exit 1
  else
    DATABASE_URL="$("$PY" -m localdb start)" || exit 1
    export DATABASE_URL
  fi
}

migrate() {
  "$PY" manage.py migrate --noinput >/dev/null || die "manage.py migrate failed; see the error above"
}

run_all() {
  ensure_venv runtime
  ensure_db
  migrate
  local port="${WEB_PORT:-8000}"
  cat >&2 <<MSG
run.sh: starting web, scheduler and tenant worker (Ctrl-C stops all of them)
  admin:             http://127.0.0.1:${port}/admin/
  create a login:    ./run.sh manage createsuperuser
  list jobs:         ./run.sh manage shell -c 'from scheduler.bg_helper import BgHelper; [print(j) for j in BgHelper().list_jobs()]'
MSG
  export WEB_PORT="$port" PYTHONUNBUFFERED=1
  # honcho runs each process in its own process group and, on Ctrl-C or SIGTERM,
  # terminates every group (then kills what is left after 5 s). A worker still finishing
  # its running jobs then (see supervise) stops by itself once they are done.
  PATH="$VENV/bin:$PATH" exec "$VENV/bin/honcho" start --no-colour -f "$ROOT/Procfile" -d "$ROOT"
}

# `./run.sh worker` (or AS_WORKER=yes ./run.sh): set up, then one supervised worker.
run_worker() {
  ensure_venv runtime
  ensure_db
  migrate
  start_worker
}

# One supervised worker, set-up done. The Procfile's workers run it as `./run.sh _worker`:
# run_all set up once for all of them, so none repeats the venv check, database and migrate.
start_worker() {
  local args=(manage.py procrastinate worker)
  if [[ -n "${WORKER_QUEUES:-}" ]]; then
    [[ "$WORKER_QUEUES" =~ ^[A-Za-z0-9_.-]+(,[A-Za-z0-9_.-]+)*$ ]] \
      || die "WORKER_QUEUES='$WORKER_QUEUES' is not a comma-separated list of queue names (e.g. WORKER_QUEUES=1,2 or WORKER_QUEUES=scheduler)" 2
    args+=(--queues="$WORKER_QUEUES")
  fi
  [[ -n "${WORKER_NAME:-}" ]] && args+=(--name="$WORKER_NAME")
  echo "run.sh: worker on queues: ${WORKER_QUEUES:-all}" >&2
  export PYTHONUNBUFFERED=1
  supervise "$PY" "${args[@]}"
}

# procrastinate's worker exits when it loses the database (its LISTEN connection fails);
# restart it until we are asked to stop, so a PostgreSQL restart needs no manual step.
# The worker runs in a session of its own: a Ctrl-C, a hang-up or honcho's SIGTERM to this
# process group reaches this shell alone, which passes exactly one SIGTERM on. procrastinate
# takes a second signal as "stop now" and abandons its running jobs.
supervise() {
  local child="" stopping=no rc=0 own_session=()
  command -v setsid >/dev/null && own_session=(setsid)
  trap 'stopping=yes; [[ -n "$child" ]] && kill -TERM "$child" 2>/dev/null' TERM INT HUP
  while true; do
    "${own_session[@]}" "$@" &
    child=$!
    while kill -0 "$child" 2>/dev/null; do
      rc=0
      wait "$child" || rc=$?  # returns early (>128) when a trapped signal arrives
    done
    child=""
    [[ "$stopping" == yes ]] && exit 0
    echo "run.sh: worker exited (status $rc); restarting in 2 s" >&2
    sleep 2 &
    wait $! || true
    [[ "$stopping" == yes ]] && exit 0
  done
}

# Browser tests need Debian's Chromium; as root we install it, otherwise we say how.
ensure_chromium() {
  [[ -x "${CHROMIUM_PATH:-/usr/bin/chromium}" ]] && return 0
  if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; then
    echo "run.sh: installing Chromium for the browser tests (apt-get install chromium)" >&2
    { apt-get update -qq || true; } >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >&2 \
      || die "apt-get install chromium failed; install it, or set CHROMIUM_PATH"
  else
    die "browser tests need Chromium: sudo apt-get install chromium (or set CHROMIUM_PATH)"
  fi
}

# ruff's lint rules and formatting (see [tool.ruff] in pyproject.toml).
lint() {
  echo "run.sh: lint (ruff check, ruff format --check)" >&2
  { "$PY" -m ruff check --quiet . && "$PY" -m ruff format --check --quiet .; } \
    || die "lint failed: fix the places listed above (.venv/bin/ruff check --fix . && .venv/bin/ruff format . fixes most)"
}

# mypy over the application packages (see [tool.mypy] in pyproject.toml). Its Django plugin
# loads the settings, hence after ensure_db (and quietly: no start-up log lines).
typecheck() {
  echo "run.sh: type check (mypy: tenants, integrations, scheduler, audit, monitoring, config, localdb)" >&2
  LOG_LEVEL=WARNING "$PY" -m mypy \
    || die "type check failed: fix the errors listed above (./run.sh typecheck repeats only this step)"
}

# Without arguments: lint, the type check, the suite, then the browser tests in their own pytest
# process (Playwright's sync API leaves an event loop behind that breaks procrastinate's sync
# defer). With pytest arguments: that selection only.
run_tests() {
  ensure_venv dev
  ensure_db
  if [[ $# -gt 0 ]]; then
    exec "$PY" -m pytest "$@"
  fi
  lint
  typecheck
  local status=0
  "$PY" -m pytest -m "not browser" --ignore=tests/browser || status=$?
  ensure_chromium
  "$PY" -m pytest tests/browser || status=$?
  return "$status"
}

main() {
  load_dotenv
  local cmd="${1:-}"
  if [[ -z "$cmd" ]]; then
    case "${AS_WORKER:-}" in
      ""|no|false|0) cmd=run ;;
      *) cmd=worker ;;
    esac
  else
    shift
  fi
  case "$cmd" in
    run) run_all ;;
    worker) run_worker ;;
    _worker)  # the Procfile's workers, inside `./run.sh` after its set-up
      [[ -x "$PY" && -n "${DATABASE_URL:-}" ]] \
        || die "'_worker' runs inside ./run.sh after its set-up; use ./run.sh worker" 2
      start_worker
      ;;
    test) run_tests "$@" ;;
    typecheck) ensure_venv dev; ensure_db; typecheck ;;
    manage)
      ensure_venv runtime
      ensure_db
      exec "$PY" manage.py "$@"
      ;;
    db-start) ensure_venv runtime; "$PY" -m localdb start >/dev/null && "$PY" -m localdb status ;;
    db-stop) ensure_venv runtime; exec "$PY" -m localdb stop ;;
    db-status) ensure_venv runtime; exec "$PY" -m localdb status ;;
    db-url) ensure_venv runtime; exec "$PY" -m localdb url ;;
    help|-h|--help) usage ;;
    *) echo "run.sh: unknown command '$cmd'" >&2; usage >&2; exit 2 ;;
  esac
}

main "$@"
