#!/usr/bin/env bash
# The benchmark issue's GPU checks in one go, on one CUDA machine. Run it from the repository root, in an environment
# where the package is installed (pip install -e .; the script stops at once if an import fails):
#
#   bash scripts/gpu_checks.sh
#
#   1. the cost benchmark at the paper grid's step settings (UNet 16-256, 256 px, batch 8 + 8) with AMP, every
#      method in one process;
#   2. one cell of the paper grid's probe (configs/benchmark_covid_probe.yaml: supmix_sufd, 1/8 labelled, seed 0,
#      the paper grid's cell stopped after 10 of its 200 epochs), timed. It trains on data/covid; when that has no
#      datalist.json, synthetic CT phantoms in MedSeg's layout (100 slices of 512 x 512) are written and prepared
#      there first, so the time is real and the IoU says nothing about real CT;
#   3. the projected time of the whole paper grid, from the probe cell and the AMP step times;
#   4. the tests marked `gpu` (the CUDA / AMP twins of CPU tests; CI has no GPU and skips them);
#   5. the cost benchmark again without AMP, and with AMP a second time (the repeat gives the spread);
#   6. when more than one GPU is visible, multi-GPU training (scripts/multi_gpu_scaling.py): the covid bundle under
#      torchrun with configs/multi_gpu_train.json at the same step settings (256 px, batch 8 + 8 per GPU, AMP),
#      seconds per iteration on 1 and on all N GPUs and the scaling efficiency (s/iter on 1 / s/iter on N);
#   7. `speed` (docs/speed.md): for each precision of SPEED_DTYPES (fp32, AMP float16, AMP bfloat16) the cost table
#      eager and compiled side by side (`--compile both`: torch.compile, on CUDA mode reduce-overhead = CUDA graphs;
#      each method's ratio, peak memory and one-off compile time), then the projection of GRID from it twice, with
#      the eager and with the compiled step times. Not in the default STEPS (compiling every method three times
#      takes longer than the rest): STEPS=speed, or add it.
# They run in this order, what the issue asks first, so a machine taken back early still leaves the main results.
# On an H100 (2026-11-26) every step but the probe cell took 4.5 min together (data writing 50 s of it) and the probe
# cell 3.7 min (it had needed 9 min before train_sampling). docs/notes/2026-11-26-h100-leases.md has the results.
#
# Results in $RESULTS (default runs/gpu_checks): log.txt (everything), tests.txt, cost_fp32.json, cost_amp.json,
# cost_amp_repeat.json, projection.md / .json, probe_cell.tar.gz (the probe cell's folder without checkpoints),
# multi_gpu.json; with `speed`, speed_<dtype>.json / .md (the eager + compiled cost table) and
# projection_<dtype>_{eager,compiled}.md / .json for each dtype.
# A step that fails is reported and the next one still runs; the exit status is 1 if any failed.
#
# Knobs (environment): PYTHON (python3), RESULTS, GRID / PROBE (the two YAMLs), DEVICE (cuda; `cpu` runs the
# plumbing without the AMP measurements, e.g. with a PROBE that trains on the CPU), COST_ITERS (50), COST_WARMUP (10),
# STEP_TIMEOUT (7200 s: a step running longer is stopped and counted as failed), SKIP_TESTS=1, MGPU_ITERS (50
# iterations per epoch of the multi-GPU runs), STEPS (which of cost, probe, projection, tests, cost_repeat, multi_gpu,
# speed to run; default all but speed; `probe` includes writing the data it needs),
# COST_JSON (the step times the projection reads when `cost` is not run, e.g. an earlier run's cost_amp.json), and
# for `speed`: SPEED_DTYPES (fp32 amp bf16; on DEVICE=cpu `amp` is skipped, float16 autocast being CUDA's),
# COMPILE_MODE (auto: reduce-overhead on CUDA), CHANNELS_LAST=1 (network and inputs channels-last), COST_METHODS
# (default every method; the projections of a GRID with other methods then fail, naming the methods not measured)
# and COST_SIZE / COST_BATCH (256 / 8: the paper grid's step).
#
#   STEPS="probe projection" COST_JSON=docs/results/gpu/h100_2026-11-26/cost_amp.json bash scripts/gpu_checks.sh
#   STEPS=speed SPEED_DTYPES="bf16 amp" bash scripts/gpu_checks.sh        # issue 31: eager vs compiled
#   DEVICE=cpu STEPS=speed SPEED_DTYPES=fp32 COST_SIZE=32 COST_BATCH=2 COST_ITERS=2 COST_WARMUP=1 \
#     GRID=my_cpu_grid.yaml bash scripts/gpu_checks.sh                    # the plumbing, on a CPU
set -uo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
RESULTS=${RESULTS:-runs/gpu_checks}
GRID=${GRID:-configs/benchmark_covid.yaml}
PROBE=${PROBE:-configs/benchmark_covid_probe.yaml}
DEVICE=${DEVICE:-cuda}
COST_ITERS=${COST_ITERS:-50}
COST_WARMUP=${COST_WARMUP:-10}
STEP_TIMEOUT=${STEP_TIMEOUT:-7200}
COST_SIZE=${COST_SIZE:-256}
COST_BATCH=${COST_BATCH:-8}
SPEED_DTYPES=${SPEED_DTYPES:-fp32 amp bf16}
COMPILE_MODE=${COMPILE_MODE:-auto}
STEPS=" ${STEPS:-cost probe projection tests cost_repeat multi_gpu} "
STEPS=${STEPS//,/ }
wanted() { [[ "$STEPS" == *" $1 "* ]]; }
for s in $STEPS; do
  case $s in cost|probe|projection|tests|cost_repeat|multi_gpu|speed) ;;
    *) echo "unknown step in STEPS: $s" >&2; exit 2 ;; esac
done
for d in $SPEED_DTYPES; do
  case $d in fp32|amp|bf16) ;;
    *) echo "unknown precision in SPEED_DTYPES: $d (fp32, amp, bf16)" >&2; exit 2 ;; esac
done
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
mkdir -p "$RESULTS"
exec > >(tee -a "$RESULTS/log.txt") 2>&1

failed=()
step() {  # step NAME COMMAND...: run (at most STEP_TIMEOUT seconds), time, record a failure, go on
  local name=$1 t0 rc
  shift
  echo "== $name: $* ($(date -u +%H:%M:%S))"
  t0=$(date +%s)
  timeout "$STEP_TIMEOUT" "$@"
  rc=$?
  echo "== $name: exit $rc after $(( $(date +%s) - t0 )) s"
  [ "$rc" -eq 0 ] || failed+=("$name")
  return 0
}

echo "== machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
# everything the bundles import, before minutes are spent: `monai.bundle run` needs fire (monai[fire]), which a
# machine with torch and MONAI copied in by hand can lack (the first run of this script lost its probe cell to it)
if ! "$PY" -c "import torch, monai, ignite, nibabel, pydicom, fire, yaml, medsemiseg
print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available(),
      '| monai', monai.__version__, '| ignite', ignite.__version__)"; then
  echo "== a package is missing: pip install -e . (see README) or put its wheel on PYTHONPATH" >&2
  exit 2
fi

cost=(-m medsemiseg.benchmark.cost --task covid --network unet
      --network-kwargs '{"features": [16, 32, 64, 128, 256, 16]}' --image-size "$COST_SIZE" --batch-size "$COST_BATCH"
      --unlabeled-batch-size "$COST_BATCH" --iters "$COST_ITERS" --warmup "$COST_WARMUP" --device "$DEVICE" --in-process
      ${COST_METHODS:+--methods $COST_METHODS})
# the step times the projection uses first: the grid trains with AMP
if ! wanted cost; then
  step_cost=${COST_JSON:-}
elif [ "$DEVICE" != "cpu" ]; then
  step_cost="$RESULTS/cost_amp.json"
  step cost_amp "$PY" "${cost[@]}" --amp --json "$step_cost"
else
  step_cost="$RESULTS/cost_fp32.json"
  step cost_fp32 "$PY" "${cost[@]}" --json "$step_cost"
fi

if wanted probe && [ ! -f data/covid/datalist.json ]; then
  raw=$(mktemp -d)
  step synthetic_data "$PY" -m medsemiseg.data.synthetic --task covid --out "$raw" --n 100 --size 512 --no-dicom \
    --overwrite
  step prepare "$PY" -m medsemiseg.prepare covid --image "$raw/tr_im.nii.gz" --mask "$raw/tr_mask.nii.gz" \
    --unlabeled "$raw/val_im.nii.gz" "$raw/unlabeled" --out data/covid --no-progress
  rm -rf "$raw"
fi

if wanted probe; then
  step probe_cell "$PY" -m medsemiseg.benchmark "$PROBE" --methods supmix_sufd --fractions 1/8 --seeds 0 \
    --no-progress --no-report
  probe_dir=$("$PY" -c "import sys; from medsemiseg.benchmark.config import load_config
print(load_config(sys.argv[1]).task_dir)" "$PROBE")
  [ -d "$probe_dir" ] && tar -czf "$RESULTS/probe_cell.tar.gz" --exclude='*.pt' --exclude='*.ts' "$probe_dir"
fi

if wanted projection; then
  step projection "$PY" -m medsemiseg.benchmark.projection "$GRID" --probe "$PROBE" ${step_cost:+--cost "$step_cost"} \
    --json "$RESULTS/projection.json" --markdown "$RESULTS/projection.md"
fi

# then what the issue asks less urgently: the CUDA tests, AMP against float32, and the repeat's spread
if wanted tests && [ "${SKIP_TESTS:-0}" != "1" ]; then
  step tests "$PY" -m pytest -q -m gpu -p no:cacheprovider tests/test_mixing.py tests/test_views.py \
    tests/test_engine.py tests/test_bundles.py tests/test_speed.py -o addopts="" --junitxml="$RESULTS/tests.xml"
fi
if wanted cost_repeat && [ "$DEVICE" != "cpu" ]; then
  step cost_fp32 "$PY" "${cost[@]}" --json "$RESULTS/cost_fp32.json"
  step cost_amp_repeat "$PY" "${cost[@]}" --amp --json "$RESULTS/cost_amp_repeat.json"
fi

if wanted multi_gpu && [ "$DEVICE" != "cpu" ]; then
  gpus=$("$PY" -c "import torch; print(torch.cuda.device_count())")
  if [ "${gpus:-0}" -gt 1 ]; then
    step multi_gpu "$PY" scripts/multi_gpu_scaling.py --processes "$gpus" --iters "${MGPU_ITERS:-50}" --amp \
      --json "$RESULTS/multi_gpu.json"
  else
    echo "== multi_gpu: skipped, ${gpus:-0} GPU visible (it needs two or more)"
  fi
fi

# issue 31: eager and compiled side by side, per precision, and the paper grid projected with each
if wanted speed; then
  for d in $SPEED_DTYPES; do
    case $d in
      fp32) prec=() ;;
      amp) prec=(--amp --amp-dtype float16) ;;
      bf16) prec=(--amp --amp-dtype bfloat16) ;;
    esac
    if [ "$d" = amp ] && [ "$DEVICE" = cpu ]; then
      echo "== speed_amp: skipped on the CPU (float16 autocast is CUDA's; bf16 runs on both)"
      continue
    fi
    speed_json="$RESULTS/speed_$d.json"
    rm -f "$speed_json"  # the projections below read this run's table, never an earlier one's
    step "speed_$d" "$PY" "${cost[@]}" "${prec[@]}" --compile both --compile-mode "$COMPILE_MODE" \
      ${CHANNELS_LAST:+--channels-last} --json "$speed_json" --markdown "$RESULTS/speed_$d.md"
    [ -f "$speed_json" ] || continue
    for v in eager compiled; do
      step "projection_${d}_$v" "$PY" -m medsemiseg.benchmark.projection "$GRID" --probe "$PROBE" --cost "$speed_json" \
        $([ "$v" = compiled ] && echo --compiled) --json "$RESULTS/projection_${d}_$v.json" \
        --markdown "$RESULTS/projection_${d}_$v.md"
    done
  done
fi

if [ "${#failed[@]}" -gt 0 ]; then
  echo "== FAILED: ${failed[*]}"
  exit 1
fi
echo "== all GPU checks passed; results in $RESULTS"
