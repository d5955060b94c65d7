#!/usr/bin/env bash
# Runs every Go fuzz target under ./pkg/... for a bounded time each, one after the other
# (go test allows one -fuzz target per run). -short keeps packages whose TestMain starts the
# control planes (pkg/autoscaler) from starting them in every fuzz worker: targets are pure.
#
#   hack/fuzz.sh            # 20000 executions per target (CI)
#   hack/fuzz.sh 5m         # a duration per target, on demand
#   FUZZ_PARALLEL=4 hack/fuzz.sh 1m
#
# CI counts executions instead of timing them: with a duration, Go 1.26's fuzz coordinator can
# fail a healthy target with "context deadline exceeded" just as the time runs out (a race
# between its deadline and its workers' context, go.dev/issue/75804, fixed in Go 1.27; it failed
# our CI once). A count has no deadline, so that race cannot happen. With a duration, a failure
# that is exactly that message and wrote no failing input is reported as the race, not a crash.
#
# The seeds of every target also run in the plain `go test` of each package. A failing input
# is written to <pkg>/testdata/fuzz/<Target>/ by go test; commit it with the fix so that it
# stays a regression seed. Exits non-zero if any target fails.
set -euo pipefail
fuzztime="${1:-20000x}"
parallel="${FUZZ_PARALLEL:-2}"
cd "$(dirname "$0")/.."

failed=()
raced=()
total=0
while read -r pkg target; do
	total=$((total + 1))
	echo "=== $target ($pkg, $fuzztime)"
	log=$(mktemp)
	if go test -short -run='^$' -fuzz="^${target}\$" -fuzztime="$fuzztime" -parallel="$parallel" "$pkg" </dev/null >"$log" 2>&1; then
		# The last progress line carries the execution count.
		grep '^fuzz: elapsed' "$log" | tail -1 || true
		echo "--- PASS $target"
	elif [[ "$fuzztime" != *x ]] && ! grep -q 'Failing input written' "$log" &&
		[[ "$(grep -v -e '^fuzz: ' -e '^FAIL' -e '^exit status' -e '^--- FAIL' -e '^ok ' "$log" | sed 's/^[[:space:]]*//')" == "context deadline exceeded" ]]; then
		grep '^fuzz: elapsed' "$log" | tail -1 || true
		echo "--- RACE $target: Go's fuzz coordinator hit its own deadline (go.dev/issue/75804), no failing input"
		raced+=("$pkg $target")
	else
		cat "$log"
		echo "--- FAIL $target"
		failed+=("$pkg $target")
	fi
	rm -f "$log"
done < <(go list -f '{{.ImportPath}} {{.Dir}}' ./pkg/... | while read -r p dir; do
	# Fuzz targets live in _test.go files; list them without building anything.
	# A package without targets makes grep fail; under pipefail that must not end the list.
	{ grep -ho '^func Fuzz[A-Za-z0-9_]*' "$dir"/*_test.go 2>/dev/null || true; } | sed 's/^func //' | sort -u | sed "s|^|$p |"
done)

echo "fuzz targets: $total, failed: ${#failed[@]}, coordinator deadline race: ${#raced[@]}"
for f in "${failed[@]}"; do echo "FAILED: $f"; done
[ "${#failed[@]}" -eq 0 ]
