#!/usr/bin/env bash
# The GPU check: speed, memory and MFU of training and generation, in one call on a lent GPU machine.
#
#   bench/gpu_check.sh           on the GPU machine (no network, no pip install -e): from the working tree and
#                                the wheels of `make gpu-wheels` (.gpuwheels/cp312, carried along) only
#   bench/gpu_check.sh --smoke   the same parts at tiny sizes on this machine's CPU, with the network cut, seeing
#                                only the GPU machine's packages (bench/gpu_machine_packages.txt) plus the wheels
#
# The wheels go into a temporary --target (no index, no dependencies); PYTHONPATH is that target and the tree.
# Each part is a fresh `python -m bench.gpu_check PART` under its own time limit, so a slow part cannot starve
# the rest, and writes $OUT/PART.json (see bench/gpu_check.py); the whole log goes to $OUT/gpu_check.log.
# Exit status: 0 when every part completed, 1 otherwise. $OUT defaults to state/gpu-check; GPU_CHECK_PARTS
# (space-separated names) runs only some parts.
set -uo pipefail

# All in one function, read whole before it runs: editing this file during a run cannot change the run.
main() {
    ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
    MODE=full
    case "${1:-}" in
        "") ;;
        --smoke) MODE=smoke ;;
        *) echo "usage: bench/gpu_check.sh [--smoke]" >&2; exit 2 ;;
    esac
    # The GPU machine's python3 holds its torch; the smoke run takes torch from this checkout's CPU venv.
    DEFAULT_PYTHON=python3
    [[ $MODE == smoke ]] && DEFAULT_PYTHON=$ROOT/.venv/bin/python
    PYTHON=${GPU_CHECK_PYTHON:-$DEFAULT_PYTHON}
    OUT=${OUT:-$ROOT/state/gpu-check}

    if [[ $MODE == smoke && -z ${GPU_CHECK_ISOLATED:-} ]]; then
        # A clean environment in a network namespace of its own (only loopback, and that down): nothing can reach
        # out, so a part that tried would fail here. Root gets a plain namespace, anyone else a user namespace.
        isolate=(unshare -n)
        [[ $(id -u) == 0 ]] || isolate=(unshare -rn)
        "${isolate[@]}" true 2>/dev/null || { echo "gpu_check: cannot cut the network (${isolate[*]} failed)" >&2; exit 3; }
        exec env -i PATH="$PATH" HOME="${HOME:-/tmp}" LANG=C.UTF-8 OUT="$OUT" GPU_CHECK_PYTHON="$PYTHON" \
            GPU_CHECK_ISOLATED=1 GPU_CHECK_WHEELS="${GPU_CHECK_WHEELS:-}" GPU_CHECK_PARTS="${GPU_CHECK_PARTS:-}" \
            "${isolate[@]}" bash "$0" --smoke
    fi

    mkdir -p "$OUT"
    exec > >(tee "$OUT/gpu_check.log") 2>&1
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu-check.XXXXXX")
    trap 'rm -rf "$WORK"' EXIT

    if [[ $MODE == smoke ]]; then
        WHEELS=${GPU_CHECK_WHEELS:-$ROOT/.gpuwheels/host}
        PARTS=(env:60 train:150 profile:120 sweep:120 job:150 generate:150 compile:180)
    else
        WHEELS=${GPU_CHECK_WHEELS:-$ROOT/.gpuwheels/cp312}
        # Seconds per part; together with the install, under 8 minutes. Compile goes last: it is the likeliest to
        # need all of its time.
        PARTS=(env:30 train:65 profile:40 sweep:60 job:140 generate:50 compile:85)
    fi

    echo "== wheels: $WHEELS"
    # Exactly the pins of bench/gpu_wheels.txt: one wheel each, nothing else (two versions would both install).
    pins=$(grep -v '^#' "$ROOT/bench/gpu_wheels.txt" | grep -c .)
    wheels=("$WHEELS"/*.whl)
    if [[ ! -e ${wheels[0]} || ${#wheels[@]} -ne $pins ]]; then
        echo "gpu_check: $WHEELS must hold the $pins wheels of bench/gpu_wheels.txt; run make gpu-wheels" >&2
        exit 4
    fi
    while IFS= read -r pin; do
        name=${pin%%==*}; version=${pin##*==}
        # A wheel's file name spells the project in lower case with "_" for "-" and "." (PEP 427).
        stem="$(tr 'A-Z' 'a-z' <<<"$name" | tr -- '-.' '__')-$version-"
        ls "$WHEELS" | tr 'A-Z' 'a-z' | grep -q "^$stem" || { echo "gpu_check: no wheel for $pin in $WHEELS" >&2; exit 4; }
    done < <(grep -v '^#' "$ROOT/bench/gpu_wheels.txt" | grep .)
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --disable-pip-version-check \
        --target "$WORK/site" "${wheels[@]}" || exit 4

    FACE_MODELS=${GPU_CHECK_FACE_MODELS:-$ROOT/.gpuwheels/face}
    [[ -d $FACE_MODELS/face_recognition_models/models ]] || {
        echo "gpu_check: $FACE_MODELS lacks the face models; run make gpu-wheels" >&2
        exit 4
    }
    PYPATH="$WORK/site:$FACE_MODELS:$ROOT:$ROOT/protos"
    RUN=("$PYTHON")
    FLAGS=()
    if [[ $MODE == smoke ]]; then
        # Without its own site-packages (-S), Python sees only the GPU machine's packages, linked from here.
        (cd "$ROOT" && "$PYTHON" -m bench.smoke_site "$WORK/gpu-site") || exit 4
        PYPATH="$PYPATH:$WORK/gpu-site"
        RUN=("$PYTHON" -S)
        FLAGS=(--smoke)
    fi
    export PYTHONPATH=$PYPATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
    export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 HF_HOME="$WORK/hf"
    export TORCHINDUCTOR_CACHE_DIR="$WORK/inductor"

    echo "== machine"
    date -u
    uname -a
    command -v nvidia-smi >/dev/null && nvidia-smi
    failed=()
    started=$SECONDS
    for entry in "${PARTS[@]}"; do
        part=${entry%%:*}; limit=${entry##*:}
        # GPU_CHECK_PARTS="train compile" reruns only those parts (a second call with the time that is left).
        [[ -z ${GPU_CHECK_PARTS:-} || " $GPU_CHECK_PARTS " == *" $part "* ]] || continue
        echo "== $part (at most $limit s)"
        part_started=$SECONDS
        timeout --kill-after=10 "$limit" "${RUN[@]}" -m bench.gpu_check "$part" --out "$OUT" --work "$WORK" \
            --budget "$limit" "${FLAGS[@]}"
        status=$?
        echo "== $part: exit $status after $((SECONDS - part_started)) s"
        [[ $status == 0 ]] || failed+=("$part")
    done
    echo "== done in $((SECONDS - started)) s; failed: ${failed[*]:-none}"
    [[ ${#failed[@]} == 0 ]]
}

main "$@"
