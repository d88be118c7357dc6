#!/usr/bin/env bash
# Runs one benchmark (or all of them) with the project's venv:
#   bench/run.sh tick_cost|idle_tick|lateness|worker_overhead|connections|fairness|retention|herd
#                [--quick] [--repeat N] [...]
#   bench/run.sh all [--quick]
# Without --database-url (or BENCH_DATABASE_URL) they use metronome_bench in the embedded
# PostgreSQL, created and migrated on first use. Full runs update docs/benchmarks.md.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="$ROOT/.venv/bin/python"
[[ -x "$PY" ]] || { echo "bench/run.sh: no .venv yet; run ./run.sh test once first" >&2; exit 1; }
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export DJANGO_SETTINGS_MODULE=config.settings
ALL=(tick_cost idle_tick lateness worker_overhead)
# Not in `all`: they start worker (and web) processes of their own and take minutes
# (connections, fairness, retention, herd).
EXTRA=(connections fairness retention herd)
name="${1:-}"
[[ -n "$name" ]] || { sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
shift
if [[ "$name" == all ]]; then
  for bench in "${ALL[@]}"; do "$PY" -m "bench.$bench" "$@"; done
elif [[ " ${ALL[*]} ${EXTRA[*]} " == *" $name "* ]]; then
  exec "$PY" -m "bench.$name" "$@"
else
  echo "bench/run.sh: unknown benchmark '$name' (one of: ${ALL[*]} ${EXTRA[*]}, all)" >&2
  exit 2
fi
