"""Which Keras dtype policy a run computes in: the `precision` setting, with `auto` resolved for the
machine. Weights stay float32 under every policy, and the logits and softmax layers are float32
(core.ml.models), so probabilities always come out float32.

auto means mixed_float16 on a GPU (tensor cores; Keras adds loss scaling) and float32 on a CPU.
bench/precision.py measured the recipe model on this project's CPU (AVX-512 BF16, no AMX; README,
Benchmarks: Precision): under mixed_bfloat16 its training steps ran x1.01-1.09 as fast in turns with
float32's, a 5-epoch recipe run trained x0.89 as fast, inference ran about x1.2 as fast, and the
validation numbers were a little lower (AUC 0.9948 against 0.9962). No gain for training, so a CPU
computes in bfloat16 only when the user chooses it.
"""
from __future__ import annotations

CPU_AUTO = "float32"
GPU_AUTO = "mixed_float16"


def policy_name(precision: str, has_gpu: bool) -> str:
    """The Keras dtype policy for the `precision` setting on a machine with or without a GPU."""
    if precision != "auto":
        return precision
    return GPU_AUTO if has_gpu else CPU_AUTO


def cpu_flags() -> set[str]:
    """The CPU's feature flags (Linux /proc/cpuinfo), for saying whether bfloat16 has hardware here."""
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def bfloat16_hardware() -> str:
    """'AMX' / 'AVX-512 BF16' / 'none' (what bfloat16 maths runs on, on this CPU)."""
    flags = cpu_flags()
    return "AMX" if "amx_bf16" in flags else "AVX-512 BF16" if "avx512_bf16" in flags else "none"
