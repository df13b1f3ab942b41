"""The CPU kernels' variants per instruction set (default, AVX2, AVX-512):
each one is picked only where ATen and the CPU allow it, and each gives the
same bits as the default one, for every dtype, layout and value (every
float16/bfloat16 bit pattern, infs, subnormals, rows at the ends of the
range), NaN wherever the default gives NaN.

Each variant runs in a subprocess with ATEN_CPU_CAPABILITY set (the variable
ATen's dispatch honours, and fastgp's with it); variants this CPU lacks are
skipped, and the report says so.
"""

import os
import subprocess
import sys

import pytest
import torch

import fastgp
import fastgp.reference

pytestmark = pytest.mark.skipif("cpp" not in fastgp.available_backends("cpu"), reason="C++ extension not loaded")

VARIANTS = ("default", "avx2", "avx512")
_CPU_FLAGS = {"avx2": {"avx2", "f16c"}, "avx512": {"avx2", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512dq"}}
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(fastgp.__file__)))


def _cpu_flags():
    """The CPU's feature flags (Linux), or None where they cannot be read."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return None


def _cpu_has(variant):
    if variant == "default":
        return True
    flags = _cpu_flags()
    return flags is not None and _CPU_FLAGS[variant] <= flags


def _run(variant, *args):
    env = dict(os.environ, ATEN_CPU_CAPABILITY=variant, PYTHONPATH=_ROOT)
    out = subprocess.run([sys.executable, os.path.abspath(__file__), *args], env=env, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, f"ATEN_CPU_CAPABILITY={variant}: exit {out.returncode}\n{out.stderr[-3000:]}"
    return out.stdout.strip().splitlines()[-1]


@pytest.mark.skipif(_cpu_flags() is None, reason="the CPU's flags are unknown here (no /proc/cpuinfo)")
@pytest.mark.parametrize("requested", VARIANTS)
def test_variant_follows_aten_and_the_cpu(requested):
    """ATen's capability, lowered to what this CPU has: ATEN_CPU_CAPABILITY=avx512
    on a CPU without AVX-512 must not run AVX-512 code (ATen itself believes it)."""
    aten, chosen = _run(requested, "--which").split()
    allowed = {"DEFAULT": 0, "NO AVX": 0, "AVX2": 1, "AVX512": 2}[aten]
    expected = max(i for i, v in enumerate(VARIANTS) if i <= allowed and _cpu_has(v))
    assert chosen == VARIANTS[expected], (requested, aten, chosen)


@pytest.mark.parametrize("variant", [v for v in VARIANTS if v != "default"])
def test_variant_gives_the_bits_of_the_default(variant, tmp_path):
    if not _cpu_has(variant):
        pytest.skip(f"this CPU has no {variant}: that variant was compiled but cannot run here")
    base, other = tmp_path / "default.pt", tmp_path / f"{variant}.pt"
    assert _run("default", "--outputs", str(base)) == "default"
    assert _run(variant, "--outputs", str(other)) == variant
    expected, got = torch.load(base), torch.load(other)
    assert len(got) == len(expected) > 100
    for name in expected:
        a, b = expected[name].reshape(-1), got[name].reshape(-1)
        assert a.dtype == b.dtype and a.shape == b.shape, name
        # A NaN may be any NaN: x86 passes one operand's NaN (sign, payload) on,
        # and which operand comes first in a commutative product is the compiler's choice.
        nan = torch.isnan(a)
        assert torch.equal(nan, torch.isnan(b)), name
        bits = {2: torch.int16, 4: torch.int32, 8: torch.int64}[a.element_size()]
        assert torch.equal(a[~nan].view(bits), b[~nan].view(bits)), name


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64], ids=str)
def test_conversions_and_arithmetic_are_atens(dtype):
    """The kernels' float16/bfloat16 conversions round as c10's do, and their
    arithmetic is the reference's: interpolation over every float16/bfloat16
    bit pattern gives the reference's bits (NaN for NaN), in this process's variant."""
    gen = torch.Generator().manual_seed(5)
    real, fake = (_values((64, 1031), dtype, gen, "bits") for _ in range(2))
    alpha = torch.rand(64, generator=gen, dtype=torch.float64 if dtype == torch.float64 else torch.float32)
    alpha[:4] = torch.tensor([0.0, 1.0, 0.5, 1e-30])
    got = torch.ops.fastgp.interpolate(real, fake, alpha)
    expected = fastgp.reference.interpolate(real, fake, alpha)
    nan = torch.isnan(expected)
    assert torch.equal(torch.isnan(got), nan)
    bits = {2: torch.int16, 4: torch.int32, 8: torch.int64}[got.element_size()]
    assert torch.equal(got[~nan].view(bits), expected[~nan].view(bits))


# ----------------------------------------------------------------------------- worker (run in a subprocess)
def _values(shape, dtype, gen, kind):
    """Inputs of one kind: ordinary, every bit pattern (float16/bfloat16: NaN
    payloads, infs, subnormals), or rows at the ends of the range."""
    if kind == "bits" and dtype in (torch.float16, torch.bfloat16):
        return torch.randint(-(1 << 15), 1 << 15, shape, generator=gen, dtype=torch.int16).view(dtype)
    x = torch.randn(shape, generator=gen, dtype=torch.float64)
    if kind == "range":
        huge, tiny = {torch.float16: (3e4, 1e-7), torch.bfloat16: (1e30, 1e-30), torch.float32: (1e30, 1e-40),
                      torch.float64: (1e300, 1e-310)}[dtype]
        x[0::3] *= huge
        x[1::3] *= tiny
    return x.to(dtype)


def _layouts(x):
    """The same values in several memory layouts."""
    yield "contiguous", x
    if x.dim() >= 2 and x.shape[-1] > 1:
        yield "transposed", x.transpose(-1, -2).contiguous().transpose(-1, -2)
        yield "sliced", torch.cat([x, x], dim=-1)[..., ::2]
    if x.dim() == 4:
        yield "channels_last", x.contiguous(memory_format=torch.channels_last)


def _outputs():
    results = {}
    shapes = [(3, 5), (4, 37), (2, 3, 17, 19), (5, 1), (300, 2), (2, 40001)]  # the last: two chunks per row
    params = [(1.0, 1.0, 2.0, False, 1), (10.0, 0.0, 2.0, False, 2), (2.0, 0.5, 1.5, True, 0),
              (1.0, 1.0, 1.0, False, 1)]
    for dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        acc = torch.float64 if dtype == torch.float64 else torch.float32
        for shape in shapes:
            for kind in ("bits" if dtype.itemsize == 2 else "ordinary", "range"):
                gen = torch.Generator().manual_seed(len(results))
                real, fake, g = (_values(shape, dtype, gen, kind) for _ in range(3))
                alpha = torch.rand(shape[0], generator=gen, dtype=acc)
                for (name, r), (_, f), (_, gl) in zip(_layouts(real), _layouts(fake), _layouts(g)):
                    key = f"{dtype} {shape} {kind} {name}"
                    results[f"interpolate {key}"] = torch.ops.fastgp.interpolate(r, f, alpha)
                    for i, (weight, center, power, one_sided, red) in enumerate(params):
                        inv_scale = torch.tensor(0.5, dtype=acc) if i % 2 else None
                        pen, norms = torch.ops.fastgp.penalty_forward([gl, f], inv_scale, weight, center, power,
                                                                      one_sided, red)
                        go = torch.rand(shape[0] if red == 0 else (), generator=gen, dtype=acc)
                        dg, df = torch.ops.fastgp.penalty_backward(go, [gl, f], norms, inv_scale, weight, center,
                                                                   power, one_sided, red)
                        for what, t in (("penalty", pen), ("norms", norms), ("dg", dg), ("df", df)):
                            results[f"{what} {i} {key}"] = t
        # Outputs of over 4 MiB are written with non-temporal stores by the AVX
        # variants; a view one element in checks the unaligned start.
        gen = torch.Generator().manual_seed(len(results))
        real, fake, g = (_values((3, 700_002), dtype, gen, "range") for _ in range(3))
        alpha = torch.rand(3, generator=gen, dtype=acc)
        for name, (r, f, gl) in (("large", (real, fake, g)), ("large offset", (real[:, 1:], fake[:, 1:], g[:, 1:]))):
            results[f"interpolate {dtype} {name}"] = torch.ops.fastgp.interpolate(r, f, alpha)
            pen, norms = torch.ops.fastgp.penalty_forward([gl], None, 1.0, 1.0, 2.0, False, 0)
            (dg,) = torch.ops.fastgp.penalty_backward(torch.ones(3, dtype=acc), [gl], norms, None, 1.0, 1.0, 2.0,
                                                      False, 0)
            results[f"norms {dtype} {name}"], results[f"dg {dtype} {name}"] = norms, dg
    return results


if __name__ == "__main__":
    if sys.argv[1] == "--which":
        print(torch.backends.cpu.get_cpu_capability(), torch.ops.fastgp.cpu_capability())
    else:
        torch.save(_outputs(), sys.argv[2])
        print(torch.ops.fastgp.cpu_capability())
