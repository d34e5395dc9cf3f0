#!/usr/bin/env bash
# Keeps the Dockerfile honest on a machine where it cannot be built (no Docker engine here):
#
#   (a) parses the Dockerfile (scripts/check/dockerfile_model.py: stages, ARGs, flags, continuations)
#       and extracts the build stage's `cargo build` command; it must be --release --locked;
#   (b) asks `cargo metadata --no-deps --format-version 1` (no build) which binaries that command
#       produces and where, follows the RUN that copies them out of the cache-mounted target, and
#       checks that every binary a runtime stage COPYs is one of them; the build stage copies every
#       workspace member, and .dockerignore lets them through;
#   (c) runs ldd on already-built binaries of the same workspace (--bin-dir DIR, default
#       $CARGO_TARGET_DIR/debug, else target/debug) and fails on any shared library the runtime
#       base does not carry, or on a glibc symbol version newer than the base's glibc;
#   (d) checks USER is numeric and not root, ENTRYPOINT is the exec-form binary and nothing else,
#       the ports EXPOSEd are the ones the operator and the chart use, and that the commands the
#       operator (operator/src/workloads.rs: args ["serve", <service>]) and the chart
#       (templates/deployment.yaml: args ["run", --lease-name=…, …]) give the images are commands
#       and flags the built binaries accept (their --help).
#
# Usage: scripts/check/dockerfile.sh [--dockerfile FILE] [--bin-dir DIR] [--binaries-only]
#   --binaries-only: only (c), for binaries about to go into the image (the Tiltfile's fast path).
# Prints what it checked; exits 1 with one FAIL line per problem.
set -uo pipefail
cd "$(dirname "$0")/../.."
repo=$(pwd)

dockerfile=Dockerfile
bin_dir=""
binaries_only=0
while [ $# -gt 0 ]; do
  case "$1" in
    --dockerfile) dockerfile=$2; shift 2 ;;
    --bin-dir) bin_dir=$2; shift 2 ;;
    --binaries-only) binaries_only=1; shift ;;
    -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "dockerfile.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

failures=0
ok() { printf '  ok    %s\n' "$*"; }
fail() { printf '  FAIL  %s\n' "$*"; failures=$((failures + 1)); }
step() { printf '\n== %s\n' "$*"; }

# The Python that reads YAML: the kit's (scripts/kit-tools prints KIT_PYTHON=…), else python3.
py="${KIT_PYTHON:-${TEST_KIT_PYTHON:-python3}}"
command -v "$py" >/dev/null 2>&1 || { echo "dockerfile.sh: no Python ($py)" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

step "cargo metadata --no-deps --format-version 1 (reads the manifests; builds nothing)"
if ! cargo metadata --no-deps --format-version 1 >"$work/metadata.json" 2>"$work/metadata.err"; then
  fail "cargo metadata failed: $(head -3 "$work/metadata.err")"
  exit 1
fi
ok "$(jq -r '"\(.workspace_members | length) workspace members; bin targets: \([.packages[] | .targets[] | select(.kind | index("bin")) | .name] | join(", "))"' "$work/metadata.json")"
# The binaries to inspect: --bin-dir, else the debug directory of the target directory cargo
# uses here (it honours $CARGO_TARGET_DIR), where the test suite's build leaves them.
[ -n "$bin_dir" ] || bin_dir="$(jq -r .target_directory "$work/metadata.json")/debug"

step "(a) (b) (d) $dockerfile: the cargo build, the stages, what they copy, USER, ENTRYPOINT, labels"
if [ $binaries_only -eq 1 ]; then
  "$py" scripts/check/dockerfile_model.py check --dockerfile "$dockerfile" --context . \
    --metadata "$work/metadata.json" --summary "$work/summary.json" --rustc "$(rustc --version 2>/dev/null)" \
    >"$work/model.out" 2>&1
  model_rc=$?
  if [ $model_rc -ne 0 ] && ! jq -e '.binaries' "$work/summary.json" >/dev/null 2>&1; then
    cat "$work/model.out"; fail "the Dockerfile model failed before it found the binaries"; exit 1
  fi
  echo "  (skipped with --binaries-only; the binaries and the runtime base come from it)"
else
  "$py" scripts/check/dockerfile_model.py check --dockerfile "$dockerfile" --context . \
    --metadata "$work/metadata.json" --summary "$work/summary.json" --rustc "$(rustc --version 2>/dev/null)"
  model_rc=$?
  [ $model_rc -eq 0 ] || failures=$((failures + $(jq '.failures | length' "$work/summary.json" 2>/dev/null || echo 1)))
fi
[ -s "$work/summary.json" ] || { fail "the Dockerfile model wrote no summary"; exit 1; }
if ! jq -e '.binaries' "$work/summary.json" >/dev/null; then
  echo; echo "dockerfile.sh: $failures problem(s) found (the rest needs a Dockerfile the model understands)"; exit 1
fi

if [ $binaries_only -eq 0 ]; then
  step "(d) what the operator and the chart run in these images"
  if ! "$py" -c 'import yaml' 2>/dev/null; then
    fail "$py has no PyYAML; run scripts/kit-tools and pass KIT_PYTHON=… (it prints it)"
  else
    "$py" scripts/check/dockerfile_model.py deploy --repo . --summary "$work/summary.json" --out "$work/deploy.json" \
      || failures=$((failures + 1))
  fi
fi

# The shared libraries each runtime base carries (sonames). gcr.io/distroless/cc-debian12 is
# distroless/base (glibc: Debian's libc6, with its loader) plus libgcc-s1. So a binary may need:
#   linux-vdso.so.1 / linux-gate.so.1  the kernel's vDSO, not a file
#   ld-linux-x86-64.so.2 / ld-linux-aarch64.so.1   glibc's dynamic loader (libc6)
#   libc.so.6 libm.so.6 libpthread.so.0 libdl.so.2 librt.so.1   glibc itself (libc6)
#   libgcc_s.so.1   the unwinder Rust's std links (libgcc-s1: why the cc variant, not base)
# Not allowed: libssl/libcrypto (the workspace uses rustls), libstdc++, libz, libsqlite3 (bundled
# and linked statically) and anything else; a new one means a new runtime base or a static link.
# distroless/static carries no shared library at all: only a static binary runs there.
runtime_base=$(jq -r '.runtime_base // ""' "$work/summary.json")
case "$runtime_base" in
  *distroless/cc-debian12*|*distroless/cc:*)
    allowed="linux-vdso.so.1 linux-gate.so.1 ld-linux-x86-64.so.2 ld-linux-aarch64.so.1 libc.so.6 libm.so.6 libpthread.so.0 libdl.so.2 librt.so.1 libgcc_s.so.1"
    glibc_max=2.36 ;;   # Debian 12's glibc
  *distroless/static*)
    allowed="" ; glibc_max="" ;;
  *)
    allowed="" ; glibc_max=""
    fail "no list of the shared libraries of runtime base '${runtime_base:-?}': add one to $0" ;;
esac

step "(c) the built binaries against ${runtime_base:-?} (from $bin_dir)"
echo "  allowed: ${allowed:-none (static binaries only)}${glibc_max:+; glibc symbol versions up to GLIBC_$glibc_max}"
for bin in $(jq -r '.binaries | keys[]' "$work/summary.json" 2>/dev/null); do
  path="$bin_dir/$bin"
  if [ ! -x "$path" ]; then
    fail "$path is not there: build it first (cargo build -p $bin), or pass --bin-dir"
    continue
  fi
  if ! out=$(ldd "$path" 2>&1); then
    if grep -q 'not a dynamic executable' <<<"$out"; then ok "$bin: static, needs no shared library"; continue; fi
    fail "ldd $path failed: $out"; continue
  fi
  libs=()
  before=$failures
  while read -r line; do
    [ -n "$line" ] || continue
    soname=${line%% *}
    soname=${soname##*/}
    if grep -q '=> not found' <<<"$line"; then fail "$bin needs $soname, which is not even installed here"; continue; fi
    libs+=("$soname")
    case " $allowed " in
      *" $soname "*) ;;
      *) fail "$bin needs $soname, which $runtime_base does not carry" ;;
    esac
  done <<<"$out"
  if [ $failures -eq $before ]; then ok "$bin links only what the base carries: ${libs[*]}"; else echo "  --    $bin links: ${libs[*]}"; fi
  if [ -n "$glibc_max" ]; then
    if ! command -v readelf >/dev/null 2>&1; then
      fail "readelf (binutils) is needed to read the glibc versions $bin requires"
    else
      newest=$(readelf -V -W "$path" 2>/dev/null | grep -o 'Name: GLIBC_[0-9.]*' | sed 's/Name: GLIBC_//' | sort -V | tail -1)
      if [ -z "$newest" ]; then
        fail "$bin: readelf shows no GLIBC version needs (cannot check)"
      elif [ "$(printf '%s\n%s\n' "$newest" "$glibc_max" | sort -V | tail -1)" != "$glibc_max" ]; then
        fail "$bin needs GLIBC_$newest, $runtime_base has glibc $glibc_max (built against a newer glibc than the image's)"
      else
        ok "$bin needs at most GLIBC_$newest (the base has $glibc_max)"
      fi
    fi
  fi
done

if [ $binaries_only -eq 0 ] && [ -s "$work/deploy.json" ]; then
  step "(d) the binaries accept what the operator and the chart pass (their --help)"
  sagaflow="$bin_dir/sagaflow"
  operator="$bin_dir/sagaflow-operator"
  if [ -x "$sagaflow" ]; then
    help=$("$sagaflow" --help 2>&1) || fail "sagaflow --help exited non-zero"
    cmd=$(jq -r '.targets.sagaflow.cmd[0] // ""' "$work/summary.json")
    for sub in serve ${cmd:+"$cmd"}; do
      if grep -Eq "^  $sub( |$)" <<<"$help"; then ok "sagaflow has the subcommand '$sub'"; else fail "sagaflow --help lists no subcommand '$sub'"; fi
    done
    # The default CMD's flags (e.g. --host) are flags of its subcommand.
    if [ -n "$cmd" ]; then
      cmd_help=$("$sagaflow" "$cmd" --help 2>&1) || fail "sagaflow $cmd --help exited non-zero"
      for flag in $(jq -r '.targets.sagaflow.cmd[1:][] | select(startswith("--")) | split("=")[0]' "$work/summary.json"); do
        if grep -Eq -- "^ +(-[a-zA-Z], )?$flag[ =<]" <<<"$cmd_help"; then ok "sagaflow $cmd accepts the CMD's $flag"; else fail "the image's CMD passes $flag, which sagaflow $cmd does not accept"; fi
      done
    fi
    serve_help=$("$sagaflow" serve --help 2>&1) || fail "sagaflow serve --help exited non-zero"
    values=$(grep -o 'possible values: [^]]*' <<<"$serve_help" | sed 's/possible values: //; s/,//g')
    for svc in $(jq -r '.services[].name' "$work/deploy.json"); do
      case " $values " in
        *" $svc "*) ;;
        *) fail "the operator runs 'sagaflow serve $svc', which sagaflow serve does not accept (it takes: $values)" ;;
      esac
    done
    ok "sagaflow serve accepts every service the operator runs: $values"
  else
    fail "$sagaflow is not built: cannot check the subcommands the images run"
  fi
  if [ -x "$operator" ]; then
    help=$("$operator" --help 2>&1) || fail "sagaflow-operator --help exited non-zero"
    if grep -Eq '^  run( |$)' <<<"$help"; then ok "sagaflow-operator has the subcommand 'run'"; else fail "sagaflow-operator --help lists no 'run'"; fi
    run_help=$("$operator" run --help 2>&1) || fail "sagaflow-operator run --help exited non-zero"
    for flag in $(jq -r '.chart_operator_flags[]?' "$work/deploy.json"); do
      if grep -Eq -- "^ +$flag[ =<]" <<<"$run_help"; then ok "sagaflow-operator run accepts the chart's $flag"; else fail "the chart passes $flag, which sagaflow-operator run does not accept"; fi
    done
    port=$(jq -r '.chart_operator_port // ""' "$work/deploy.json")
    default_port=$(grep -A2 -- '--port' <<<"$run_help" | grep -o 'default: [0-9]*' | grep -o '[0-9]*' | head -1)
    if [ -n "$port" ] && [ "$port" = "$default_port" ]; then
      ok "the operator listens on $default_port by default, the chart's containerPort"
    else
      fail "the chart's operator containerPort is ${port:-?}, sagaflow-operator run listens on ${default_port:-?} by default"
    fi
  else
    fail "$operator is not built: cannot check the flags the chart passes"
  fi
fi

echo
if [ $failures -gt 0 ]; then
  echo "dockerfile.sh: $failures problem(s) found"
  exit 1
fi
echo "dockerfile.sh: all checks passed"
