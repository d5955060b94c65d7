#!/usr/bin/env bash
# Runs every Go fuzz target under ./pkg/... for a bounded time each, one after the other
# (go test allows one -fuzz target per run). -short keeps packages whose TestMain starts the
# control planes (pkg/autoscaler) from starting them in every fuzz worker: targets are pure.
#
#   hack/fuzz.sh            # 10s per target (CI)
#   hack/fuzz.sh 5m         # longer, on demand
#   FUZZ_PARALLEL=4 hack/fuzz.sh 1m
#
# The seeds of every target also run in the plain `go test` of each package. A failing input
# is written to <pkg>/testdata/fuzz/<Target>/ by go test; commit it with the fix so that it
# stays a regression seed. Exits non-zero if any target fails.
set -euo pipefail
fuzztime="${1:-10s}"
parallel="${FUZZ_PARALLEL:-2}"
cd "$(dirname "$0")/.."

failed=()
total=0
while read -r pkg target; do
	total=$((total + 1))
	echo "=== $target ($pkg, $fuzztime)"
	log=$(mktemp)
	if go test -short -run='^$' -fuzz="^${target}\$" -fuzztime="$fuzztime" -parallel="$parallel" "$pkg" </dev/null >"$log" 2>&1; then
		# The last progress line carries the execution count.
		grep '^fuzz: elapsed' "$log" | tail -1 || true
		echo "--- PASS $target"
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

echo "fuzz targets: $total, failed: ${#failed[@]}"
for f in "${failed[@]}"; do echo "FAILED: $f"; done
[ "${#failed[@]}" -eq 0 ]
