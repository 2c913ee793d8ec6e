# Shared by the bench scripts (sourced). Needs W (the run's work directory, holding keys/ from
# blockrep-keygen) and BIN (the programs).

drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }
now() { date +%s.%N; }
# since T: seconds from T (a `now`) to now.
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.3f\n", b - a }'; }
# median: of the numbers on stdin, one a line.
median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

# start_staging [staging args...]: starts blockrep-staging on 127.0.0.1 with its store in
# $W/store and its log in $W/staging.log; sets SPID and PORT, or stops the run saying why.
start_staging() {
  "$BIN/blockrep-staging" --listen 127.0.0.1:0 --store "${STAGING_STORE:-$W/store}" --tls-cert "$W/keys/staging.crt" \
    --tls-key "$W/keys/staging.key" --tls-ca "$W/keys/ca.crt" "$@" 2>"$W/staging.log" &
  SPID=$!
  PORT=
  for _ in $(seq 1 100); do
    PORT=$(grep -o 'listening on 127.0.0.1:[0-9]*' "$W/staging.log" | cut -d: -f2 || true)
    [[ -n $PORT ]] && return 0
    sleep 0.05
  done
  echo "$(basename "$0"): the staging did not start: $(tail -n 2 "$W/staging.log")" >&2
  exit 1
}
