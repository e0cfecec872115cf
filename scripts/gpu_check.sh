#!/usr/bin/env bash
# The GPU check: one script, at most 8 minutes on one H100, no network.
#
# On a CUDA GPU it runs
#   1. the GPU-marked tests (tests/engine/test_gpu.py: a LoRA step under bf16 autocast against fp32, bf16 and NF4
#      bases, gradient checkpointing and deterministic mode bit for bit, LoRA compiled by inductor against eager);
#   2. the training-step bench (python -m harness.bench) at bf16: MiniLM (every method), SmolLM2-135M and a random
#      Llama-3.2-1B-shaped model (conf/model/llama32_1b_random.yaml; LoRA and DoRA, ours and PEFT's), each of the
#      two decoders also on an NF4 base with gradient checkpointing (QLoRA and QDoRA, ours and PEFT's), and MiniLM's
#      limit and LoRA eager and compiled (train.compile, inductor) beside PEFT's eager LoRA (goal: >= 1.2x faster);
#   3. one short demo run: LoRA on bbc_news with MiniLM at the demo sweep's settings (conf/sweep/demo.yaml: 30 steps
#      of batch 16 at 32 tokens, 150 validation and 150 test articles).
# Estimated time on an H100 (not yet measured there): tests 1.2 min, MiniLM bench 1.4 min, MiniLM compiled 1.2 min
# (inductor compiles the limit and LoRA, for training and for the activation count), SmolLM2 benches 2 × 0.6 min
# (the first converts the packaged GGUF once, ~0.5 min), Llama-1B benches 2 × 1 min (random init and a copy per
# contender of 1.24B parameters on the CPU dominate), demo 0.5 min, startup and summary 0.1 min: about 7.6 minutes.
# Each step has its own timeout (their sum is 520 s) so a hung step cannot take the whole budget; a step over it
# counts as failed.
#
# Without a GPU it runs the same steps at tiny size (the CPU fallback, tested by tests/bench/test_gpu_check.py): the
# GPU tests (they skip), the bench on tiny_bert (bf16 base; LoRA, DoRA) and tiny_llama (NF4 base, checkpointed;
# LoRA, DoRA), one step, and a one-step demo run on tiny_bert; this proves the script's plumbing, not the GPU.
#
# Output: the bench pages <device>-<model>-b<batch>x<length>[-bf16][-nf4][-checkpointed].md and a summary
# gpu-check-<device>.md in the output folder: $GPU_CHECK_OUT, else the first argument, else results/bench (CPU
# fallback: a temporary folder unless one is given). The demo's record goes to a scratch folder. Exit status 0 when
# every step passed.
#
# Usage: bash scripts/gpu_check.sh [OUT]          GPU_CHECK_DEVICE=cpu forces the fallback.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 WANDB_MODE=offline WANDB_SILENT=true

if [[ "${GPU_CHECK_DEVICE:-}" == cpu ]]; then
    cuda=False slug=cpu
else  # CUDA or not, and the device's name as the bench slugs it (harness/bench/driver.py)
    read -r cuda slug < <(python -c 'import re, torch; cuda = torch.cuda.is_available(); print(cuda, re.sub(
        r"[^a-z0-9]+", "-", (torch.cuda.get_device_name() if cuda else "cpu").lower()).strip("-"))')
fi
if [[ "$cuda" == True ]]; then
    out=${GPU_CHECK_OUT:-${1:-results/bench}}
else
    out=${GPU_CHECK_OUT:-${1:-$(mktemp -d)}}
fi
mkdir -p "$out"
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
touch "$scratch/started"  # the pages written after it are this check's
started=$SECONDS
steps=()

# step NAME TIMEOUT_S COMMAND...: runs COMMAND under a timeout, its output in the scratch folder, and records
# "NAME | passed/FAILED (rc) | seconds".
step() {
    local name=$1 limit=$2 began=$SECONDS rc=0
    shift 2
    echo "== $name (at most ${limit} s)"
    timeout "$limit" "$@" >"$scratch/$name.log" 2>&1 || rc=$?
    tail -n 3 "$scratch/$name.log"
    local outcome="passed"
    if ((rc == 124)); then outcome="FAILED (over ${limit} s)"; elif ((rc != 0)); then outcome="FAILED (exit $rc)"; fi
    ((rc == 0)) || tail -n 40 "$scratch/$name.log"
    steps+=("| $name | $outcome | $((SECONDS - began)) |")
}

tests=(python -m pytest -q -p no:cacheprovider -m gpu tests/engine/test_gpu.py -rs)
run=(python -m harness progress=false "results_dir=$scratch/demo" "hydra.run.dir=$scratch/hydra")  # the demo
if [[ "$cuda" == True ]]; then
    device=cuda
    bench=(python -m harness.bench --device cuda --precision bf16 --dtype bf16 --out "$out")
    decoder=(--methods lora,dora --batch 8 --length 256 --warmup 1 --rounds 2 --steps 2)
    nf4=(--quantize nf4 --gradient-checkpointing)  # QLoRA and QDoRA, ours and PEFT's
    step gpu-tests 80 "${tests[@]}"
    step bench-minilm 85 "${bench[@]}" --model minilm --batch 16 --length 128 --warmup 1 --rounds 2 --steps 2
    step bench-minilm-compiled 85 "${bench[@]}" --model minilm --methods lora --compile --batch 16 --length 128 \
        --warmup 2 --rounds 2 --steps 3
    step bench-smollm2 60 "${bench[@]}" --model smollm2_135m "${decoder[@]}"
    step bench-smollm2-nf4-checkpointed 45 "${bench[@]}" --model smollm2_135m "${decoder[@]}" "${nf4[@]}"
    step bench-llama1b 70 "${bench[@]}" --model llama32_1b_random "${decoder[@]}"
    step bench-llama1b-nf4-checkpointed 60 "${bench[@]}" --model llama32_1b_random "${decoder[@]}" "${nf4[@]}"
    demo=(method=lora train.device=cuda train.max_steps=30 train.eval_every=30 task.max_length=32
        task.limit_eval=150)
    step demo 35 "${run[@]}" "${demo[@]}"
else
    device=cpu
    bench=(python -m harness.bench --device cpu --methods lora,dora --no-peft --batch 2 --length 16 --warmup 0
        --rounds 1 --steps 1 --out "$out")
    step gpu-tests 120 "${tests[@]}"
    step bench-tiny-bert-bf16 120 "${bench[@]}" --model tiny_bert --precision bf16 --dtype bf16
    step bench-tiny-llama-nf4-checkpointed 120 "${bench[@]}" --model tiny_llama --quantize nf4 --gradient-checkpointing
    demo=(method=lora model=tiny_bert train.device=cpu train.max_steps=1 train.eval_every=1 train.batch_size=4
        task.limit_train=8 task.limit_eval=8)
    step demo 120 "${run[@]}" "${demo[@]}"
fi

summary="$out/gpu-check-$slug.md"
failed=$(printf '%s\n' "${steps[@]}" | grep -c FAILED || true)
{
    echo "# GPU check ($slug): $((${#steps[@]} - failed)) of ${#steps[@]} steps passed, $((SECONDS - started)) s"
    echo
    if [[ "$device" == cpu ]]; then fallback=" (the CPU fallback: plumbing only)"; else fallback=""; fi
    echo "\`bash scripts/gpu_check.sh\` on $device$fallback."
    echo
    echo "| step | outcome | seconds |"
    echo "|:-----|:--------|--------:|"
    printf '%s\n' "${steps[@]}"
    echo
    echo "Bench pages written:"
    echo
    find "$out" -maxdepth 1 -name '*.md' -newer "$scratch/started" ! -name 'gpu-check-*' -printf '- %f\n' | sort
    echo
    echo "Tests: $(grep -E '(passed|skipped|failed|error)' "$scratch/gpu-tests.log" | tail -n 1)"
    echo
    echo "Demo: $(grep -E 'test accuracy' "$scratch/demo.log" | tail -n 1)"
} >"$summary"
echo
cat "$summary"
echo
echo "summary: $summary"
((failed == 0))
