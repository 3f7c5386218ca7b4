#!/usr/bin/env bash
# Fuzzes every parser for SECONDS each and prints a table: target, seconds, execs, findings.
#
#   fuzz/run.sh 600            # 10 minutes per target, one at a time
#   JOBS=2 fuzz/run.sh 600     # two targets at once (one core each)
#   fuzz/run.sh 60 xml fixed   # only these targets
#
# Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`). Corpora grow in
# fuzz/corpus/<target> (seeded from fixtures/ and tests/data/ on the first run); anything found is
# in fuzz/artifacts/<target>/. Not part of .ci/run.
set -euo pipefail
cd "$(dirname "$0")"
SECONDS_EACH=${1:?usage: fuzz/run.sh SECONDS [TARGET...]}
shift
TARGETS=("$@")
if [ ${#TARGETS[@]} -eq 0 ]; then
  TARGETS=(csv json compact_json xml fixed xlsx ooxml ods text config archive pgp)
fi
JOBS=${JOBS:-1}
REPO=..

# Seeds: the first byte of an input picks the parser's options (src/fuzzing.rs); 0 is the default.
seed() { # target, files...
  local t=$1; shift
  mkdir -p "corpus/$t"
  [ -n "$(ls -A "corpus/$t")" ] && return 0
  local i=0
  for f in "$@"; do
    [ -f "$f" ] || continue
    { printf '\0'; [ "$t" = fixed ] && printf '\x47'; cat "$f"; } > "corpus/$t/seed-$i"
    i=$((i + 1))
  done
}
shopt -s nullglob
seed csv "$REPO"/fixtures/incoming/customers/*.csv "$REPO"/tests/data/formats/csv_*/input*
seed json "$REPO"/fixtures/incoming/orders/*.json "$REPO"/fixtures/incoming/orders/*.ndjson \
  "$REPO"/tests/data/formats/json_*/input*
seed compact_json "$REPO"/fixtures/incoming/orders/*compact*
seed xml "$REPO"/tests/data/formats/xml_*/input* "$REPO"/fixtures/formats/incoming/shipments/*.xml \
  "$REPO"/fixtures/incoming/orders/*.xml
seed fixed "$REPO"/fixtures/formats/incoming/payments/*.txt
seed xlsx "$REPO"/fixtures/formats/incoming/ledger/*.xlsx "$REPO"/fixtures/incoming/orders/*.xlsx
# The XML parts of the workbook cases, NUL-separated as fuzzing::ooxml reads them.
parts() { # archive, part names...
  python3 - "$@" <<'PY'
import sys, zipfile
z = zipfile.ZipFile(sys.argv[1])
names = set(z.namelist())
sys.stdout.buffer.write(b"\0".join(z.read(n) for n in sys.argv[2:] if n in names))
PY
}
if [ ! -d corpus/ooxml ] || [ -z "$(ls -A corpus/ooxml 2>/dev/null)" ]; then
  mkdir -p corpus/ooxml corpus/ods
  i=0
  for f in "$REPO"/tests/data/workbooks/*/input.xlsx; do
    { printf '\0'; parts "$f" xl/worksheets/sheet1.xml xl/sharedStrings.xml xl/styles.xml xl/workbook.xml; } > "corpus/ooxml/seed-$i"
    i=$((i + 1))
  done
  for f in "$REPO"/tests/data/workbooks/*/input.ods; do
    { printf '\0'; parts "$f" content.xml; } > "corpus/ods/seed-$i"
    i=$((i + 1))
  done
fi
seed text "$REPO"/fixtures/incoming/orders/*.gz "$REPO"/tests/data/formats/gzip_*/input* \
  "$REPO"/tests/data/formats/utf16_with_bom/input* "$REPO"/fixtures/incoming/customers/*latin1*
seed config "$REPO"/config/ferry.toml "$REPO"/fixtures/*/ferry.toml
# Archives (the first byte picks zip, tar, tar.gz) and OpenPGP messages made by the tools.
if [ ! -d corpus/archive ] || [ -z "$(ls -A corpus/archive 2>/dev/null)" ]; then
  mkdir -p corpus/archive corpus/pgp
  python3 - corpus/archive <<'PY'
import io, sys, tarfile, zipfile
out = sys.argv[1]
members = [("orders/a.csv", b"id,name\n1,a\n"), ("stock/b.csv", b"sku\nx\n")]
for i, kind in enumerate(["zip", "tar", "tar.gz"]):
    buf = io.BytesIO()
    if kind == "zip":
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
            for n, d in members:
                z.writestr(n, d)
    else:
        with tarfile.open(fileobj=buf, mode="w:gz" if kind == "tar.gz" else "w") as t:
            for n, d in members:
                info = tarfile.TarInfo(n); info.size = len(d); t.addfile(info, io.BytesIO(d))
    open(f"{out}/seed-{kind}", "wb").write(bytes([i]) + buf.getvalue())
PY
  printf 'id,name\n1,a\n' | gpg --batch --store --compress-algo zlib > corpus/pgp/seed-literal 2>/dev/null || true
  printf 'id,name\n1,a\n' | gpg --batch --armor --store > corpus/pgp/seed-armored 2>/dev/null || true
fi

cargo +nightly fuzz build -O

mkdir -p logs
fuzz_one() {
  local t=$1
  mkdir -p "artifacts/$t"
  cargo +nightly fuzz run -O "$t" "corpus/$t" -- \
    -max_total_time="$SECONDS_EACH" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
    -print_final_stats=1 -artifact_prefix="artifacts/$t/" >"logs/$t.log" 2>&1 || true
}
export -f fuzz_one
export SECONDS_EACH
printf '%s\n' "${TARGETS[@]}" | xargs -P "$JOBS" -I{} bash -c 'fuzz_one {}'

printf '%-14s %8s %14s %10s %9s %6s\n' target seconds execs crashes timeouts ooms
for t in "${TARGETS[@]}"; do
  execs=$(grep -ao 'stat::number_of_executed_units: *[0-9]*' "logs/$t.log" | grep -o '[0-9]*$' | tail -1 || true)
  secs=$(grep -ao 'Done [0-9]* runs in [0-9]* second' "logs/$t.log" | grep -o 'in [0-9]*' | grep -o '[0-9]*' | tail -1 || true)
  crashes=$(ls "artifacts/$t" | grep -c '^crash-' || true)
  timeouts=$(ls "artifacts/$t" | grep -c '^timeout-' || true)
  ooms=$(ls "artifacts/$t" | grep -c '^oom-' || true)
  printf '%-14s %8s %14s %10s %9s %6s\n' "$t" "${secs:-$SECONDS_EACH}" "${execs:-?}" "$crashes" "$timeouts" "$ooms"
done
