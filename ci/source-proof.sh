#!/bin/sh
# Opt-in proof that kernels built from source work end to end (`make -C ci source-proof`;
# too slow for every CI run). On Debian's linux-source-6.1:
#   1. fetch and unpack the package; make the tree a git history: the base, an unrelated
#      commit, a revert of "tcp: call sk_data_ready() after listener migration" (which
#      reuseport/migrate_wakes_epoll_waiter detects), two more unrelated commits (so the
#      bisection meets a good step and a bad one);
#   2. build the base with --config minimal and run the whole library on it, and on
#      Debian's binary 6.1 of the same version, then diff the two;
#   3. `git bisect run` the README's recipe over the history: it must name the revert.
# Needs gcc, make, flex, bison, bc, libelf-dev (ci/setup.sh does not install them).
# Builds run under `nice -n 19` (NICE= turns that off on a quiet machine) so guests on a
# shared machine keep their CPU; the runs that boot guests take $HEAVY_LOCK (flock) when
# it is set, so proofs on a shared machine boot one at a time. Durations go to
# $WORK/durations.txt.
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SM=$ROOT/target/release/sockmatrix
CACHE=${SOCKMATRIX_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sockmatrix}
WORK=${PROOF_DIR:-$CACHE/source-proof}
PACKAGE=${PACKAGE:-linux-source-6.1=6.1.192-2}
CASE=reuseport/migrate_wakes_epoll_waiter
OUT=$WORK/results
NICE=${NICE-nice -n 19}   # NICE= on a quiet machine: the build gets every core
LOCK=${HEAVY_LOCK:+flock $HEAVY_LOCK}
say() { printf '== %s (%s, load %s)\n' "$*" "$(date -u +%H:%M:%S)" "$(cut -d' ' -f1-3 /proc/loadavg)"; }

cd "$ROOT" && cargo build --release
mkdir -p "$WORK"
TREE=$WORK/linux
if [ ! -d "$TREE/.git" ]; then
  say "fetching $PACKAGE"
  SRC=$("$SM" kernels build --debian "$PACKAGE" --only-source)
  rm -rf "$TREE"
  cp -al "$SRC" "$TREE"          # hard links: git replaces files, never edits them in place
  cd "$TREE"
  git init -q -b proof
  # Debian's top-level .gitignore ignores everything (its packaging repository).
  git add -f -A
  commit() { git -c user.name=proof -c user.email=proof@invalid commit -q "$@"; }
  commit -m "base: Debian $PACKAGE"
  # `sed -i` writes a new file: the tree's files are hard links into the cached source,
  # which an in-place edit (`>>`) would change for every later build.
  unrelated() { sed -i "\$a /* sockmatrix proof: unrelated change $1 */" "$2"; commit -a -m "$2: unrelated commit $1"; }
  unrelated 1 lib/string.c
  # The fix, reverted: inet_csk_listen_stop() no longer wakes the migration target.
  grep -q 'READ_ONCE(nsk->sk_data_ready)(nsk);' net/ipv4/inet_connection_sock.c
  sed -i '/READ_ONCE(nsk->sk_data_ready)(nsk);/d' net/ipv4/inet_connection_sock.c
  commit -a -m 'Revert "tcp: call sk_data_ready() after listener migration"'
  unrelated 2 lib/string.c
  unrelated 3 lib/sort.c
fi
cd "$TREE"
git checkout -q proof
BASE=$(git rev-list --max-parents=0 HEAD)
git checkout -q "$BASE"

: > "$WORK/durations.txt"
took() { echo "$1: $2 s" | tee -a "$WORK/durations.txt"; }

say "building the base (minimal)"
start=$(date +%s)
IMG=$($NICE "$SM" kernels build --source "$TREE" --config minimal)
# Its default id (`built-<version>-minimal-<key>`): a fixed --name would clash with an
# earlier proof's build of other inputs, which `kernels build` refuses.
ID=$(sed -n 's/^  "id": "\(.*\)",$/\1/p' "$(dirname "$IMG")/build.json")
: "${ID:?no id in $(dirname "$IMG")/build.json}"
took "first build (base, minimal)" $(( $(date +%s) - start ))
say "built: $IMG"

say "the library on the built kernel and on Debian's 6.1"
rm -rf "$OUT"
start=$(date +%s)
$LOCK "$SM" run --accel tcg --kernel "$ID" --kernel 6.1 --results "$OUT" "$ROOT/cases" \
  | tee "$WORK/library.log" || true
took "the library on both kernels" $(( $(date +%s) - start ))
"$SM" diff "$OUT/6.1" "$OUT/$ID" --cases "$ROOT/cases" | tee "$WORK/diff.log" || true

say "git bisect run"
git bisect reset >/dev/null 2>&1 || true
git bisect start proof "$BASE"
start=$(date +%s)
git bisect run sh -c "
  t0=\$(date +%s)
  img=\$($NICE '$SM' kernels build --source . --config minimal) || exit 125
  echo \"incremental rebuild (\$(git log -1 --format=%s | cut -c1-60)): \$(( \$(date +%s) - t0 )) s\" >> '$WORK/durations.txt'
  $LOCK '$SM' bisect-run --accel tcg --cases '$ROOT/cases' --kernel-image \"\$img\" --case $CASE" \
  | tee "$WORK/bisect.log"
took "git bisect run (builds and boots)" $(( $(date +%s) - start ))
git bisect reset >/dev/null
grep -q 'Revert "tcp: call sk_data_ready() after listener migration"' "$WORK/bisect.log"
say "bisect named the revert"
