"""CUDA kernels of the fastgp ops (csrc/cuda/).

The first test runs everywhere: a build with CUDA must have registered the
CUDA kernels. Every other test needs a GPU (marker ``gpu``; skipped without
one) and compares the kernels with ``fastgp.reference`` evaluated in float64.
"""

from __future__ import annotations

import copy

import pytest
import torch

try:  # a test extra; the GPU check machine may lack it
    from hypothesis import given, settings
    from hypothesis import strategies as st
except ImportError:
    given = None

import fastgp
import fastgp.ops  # noqa: F401  registers the fake kernels and autograd of the ops called directly below
from fastgp import reference
from fastgp._ext import state

OPS = ("interpolate", "penalty_forward", "penalty_backward")
HAS_CUDA = torch.cuda.is_available()


def _cuda_kernels_registered() -> bool:
    return state.loaded and all(
        torch._C._dispatch_has_kernel_for_dispatch_key(f"fastgp::{op}", "CUDA") for op in OPS)


def gpu(fn):
    """GPU test: needs a CUDA device and the extension's CUDA kernels."""
    reason = ("needs a CUDA device" if not HAS_CUDA else
              f"the C++ extension has no CUDA kernels (loaded={state.loaded}, reason={state.reason}, "
              f"build={state.build})")
    return pytest.mark.gpu(pytest.mark.skipif(not (HAS_CUDA and _cuda_kernels_registered()), reason=reason)(fn))


# --------------------------------------------------------------- CPU-only
def test_cuda_kernels_registered_when_built_with_cuda():
    if not state.loaded:
        pytest.skip(f"the C++ extension is not loaded: {state.reason}")
    build = state.build or {}
    if not build.get("with_cuda"):
        pytest.skip(f"the extension was built without CUDA (build info: {build})")
    for op in OPS:
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"fastgp::{op}", "CUDA"), op
    assert build.get("cuda_archs"), "a CUDA build must record its archs"
    assert str(build.get("torch_cuda_version")).split(".")[0] == str(torch.version.cuda).split(".")[0]


# ------------------------------------------------------------- tolerances
# Outputs stored in the input dtype: about one rounding of that dtype.
TOL = {
    torch.float16: dict(rtol=2e-3, atol=2e-3),
    torch.bfloat16: dict(rtol=1.6e-2, atol=1.6e-2),
    torch.float32: dict(rtol=1e-5, atol=1e-5),
    torch.float64: dict(rtol=1e-12, atol=1e-12),
}
# Norms and penalties, accumulated in float32 (float64 for float64 inputs).
ACC_TOL = {torch.float32: dict(rtol=2e-5, atol=1e-5), torch.float64: dict(rtol=1e-11, atol=1e-11)}
# d penalty / d grads: the per-sample coefficient is accumulation-dtype math, then one rounding to the dtype.
BWD_TOL = {**TOL, torch.float32: dict(rtol=1e-4, atol=1e-5), torch.float64: dict(rtol=1e-10, atol=1e-10)}
DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]


def acc_tol(dtype):
    return ACC_TOL[reference.accumulation_dtype(dtype)]


def assert_close_scaled(actual, expected, dtype, table=TOL):
    """Elementwise closeness in `dtype`'s tolerance, atol relative to the largest value."""
    tol = table[dtype]
    scale = float(expected.abs().max()) if expected.numel() else 1.0
    torch.testing.assert_close(actual.double(), expected.double(), rtol=tol["rtol"], atol=tol["atol"] * max(scale, 1.0))


# ---------------------------------------------------------------- layouts
def make(shape, dtype, layout="contiguous", seed=0, device="cuda"):
    """A tensor of `shape` and `dtype` with the given memory layout (same values for every layout)."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    values = torch.randn(shape, generator=g, dtype=torch.float64).to(dtype)
    if layout == "contiguous":
        return values.to(device)
    if layout == "channels_last":
        return values.to(device).contiguous(memory_format=torch.channels_last)
    if layout == "transposed":  # last two dims swapped in memory
        return values.to(device).transpose(-1, -2).contiguous().transpose(-1, -2)
    if layout == "padded":  # rows with gaps: every inner row padded by 3 elements
        big = torch.zeros(*shape[:-1], shape[-1] + 3, dtype=dtype, device=device)
        big[..., : shape[-1]] = values.to(device)
        return big[..., : shape[-1]]
    if layout == "batch_strided":  # every other sample of a bigger batch: dense rows
        big = torch.zeros(shape[0] * 2, *shape[1:], dtype=dtype, device=device)
        big[::2] = values.to(device)
        return big[::2]
    if layout == "misaligned":  # dense, but not 16-byte aligned: the scalar path
        flat = torch.zeros(values.numel() + 1, dtype=dtype, device=device)
        flat[1:] = values.to(device).reshape(-1)
        return flat[1:].view(shape)
    raise ValueError(layout)


LAYOUTS_4D = ["contiguous", "channels_last", "transposed", "padded", "batch_strided", "misaligned"]
SHAPES = [
    (1, 3, 8, 8),        # B = 1
    (5, 3, 7, 9),        # odd sizes
    (4, 3, 256, 256),    # long rows, small batch (reduced from 3x1024x1024)
    (64, 3, 64, 64),     # DCGAN
    (7, 2),              # toy 2-D data
    (3, 1),              # one element per row
]


def many_dims(dtype, seed=0):
    """9 dims, every one sliced: more unmergeable dims than a kernel argument describes."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    big = torch.randn((3,) + (3,) * 8, generator=g, dtype=torch.float64).to(dtype).cuda()
    return big[(slice(None),) + (slice(0, 2),) * 8]


# ------------------------------------------------------------ interpolate
@gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES + [(6, 0, 4)])
def test_interpolate_matches_reference(shape, dtype):
    real, fake = make(shape, dtype, seed=1), make(shape, dtype, seed=2)
    alpha = torch.rand(shape[0], device="cuda", dtype=reference.accumulation_dtype(dtype))
    out = torch.ops.fastgp.interpolate(real, fake, alpha)
    expected = reference.interpolate(real.double(), fake.double(), alpha.double())
    assert out.dtype == dtype and out.shape == real.shape
    assert_close_scaled(out, expected, dtype)


@gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("layout", LAYOUTS_4D)
def test_interpolate_layouts(layout, dtype):
    real, fake = make((5, 3, 9, 12), dtype, layout, seed=1), make((5, 3, 9, 12), dtype, "contiguous", seed=2)
    alpha = torch.rand(10, device="cuda")[::2]  # strided alpha
    out = torch.ops.fastgp.interpolate(real, fake, alpha)
    assert out.stride() == torch.empty_like(real).stride()  # the fake kernel's layout
    assert_close_scaled(out, reference.interpolate(real.double(), fake.double(), alpha.double()), dtype)


@gpu
def test_interpolate_many_dims_and_alpha_dtypes():
    real, fake = many_dims(torch.float32, 1), many_dims(torch.float32, 2)
    for adtype in (torch.float32, torch.float64, torch.float16):
        alpha = torch.rand(3, device="cuda").to(adtype)
        out = torch.ops.fastgp.interpolate(real, fake, alpha)
        assert_close_scaled(out, reference.interpolate(real.double(), fake.double(), alpha.double()), torch.float32)


# ---------------------------------------------------------- penalty forward
OPTIONS = [
    dict(weight=1.0, center=1.0, power=2.0, one_sided=False),
    dict(weight=10.0, center=0.0, power=2.0, one_sided=False),  # R1
    dict(weight=0.5, center=1.5, power=1.0, one_sided=True),
    dict(weight=2.0, center=3.0, power=3.0, one_sided=False),
    dict(weight=1.0, center=1.0, power=2.5, one_sided=True),
]
REDUCTIONS = {"none": 0, "mean": 1, "sum": 2}


def ref_penalty(grads, inv_scale, reduction, opts):
    """The oracle in float64 on the same (rounded) inputs."""
    g64 = [g.double() for g in grads]
    s64 = None if inv_scale is None else inv_scale.double()
    return reference.penalty_from_grads(g64, reduction=reduction, inv_scale=s64, **opts)


def check_forward(grads, inv_scale=None, reduction="mean", opts=OPTIONS[0]):
    dtype = grads[0].dtype
    pen, norms = torch.ops.fastgp.penalty_forward(grads, inv_scale, opts["weight"], opts["center"], opts["power"],
                                                  opts["one_sided"], REDUCTIONS[reduction])
    ref_pen, ref_norms = ref_penalty(grads, inv_scale, reduction, opts)
    acc = reference.accumulation_dtype(dtype)
    assert norms.dtype == acc and pen.dtype == acc
    assert pen.shape == ref_pen.shape and norms.shape == ref_norms.shape
    torch.testing.assert_close(norms.double(), ref_norms, **acc_tol(dtype))
    torch.testing.assert_close(pen.double(), ref_pen, **acc_tol(dtype))
    return pen, norms


@gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_penalty_forward_matches_reference(shape, dtype, reduction):
    check_forward([make(shape, dtype)], reduction=reduction)


@gpu
@pytest.mark.parametrize("opts", OPTIONS)
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_penalty_forward_options(opts, reduction):
    check_forward([make((9, 3, 5, 5), torch.float32) * 0.2], reduction=reduction, opts=opts)


@gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
@pytest.mark.parametrize("layout", LAYOUTS_4D)
def test_penalty_forward_layouts(layout, dtype):
    check_forward([make((6, 3, 17, 20), dtype, layout)])


@gpu
def test_penalty_forward_several_grads_mixed_layouts():
    grads = [make((5, 3, 16, 16), torch.float32, "channels_last", 1), make((5, 10), torch.float32, "contiguous", 2),
             make((5, 2, 7, 9), torch.float32, "padded", 3)]
    check_forward(grads)
    check_forward(grads, reduction="none", opts=OPTIONS[1])


@gpu
def test_penalty_forward_more_grads_than_one_launch_holds():
    grads = [make((4, 3 + k, 5), torch.float32, seed=k) for k in range(11)]
    check_forward(grads)
    check_forward(grads, reduction="none")


@gpu
def test_penalty_many_dims_fallback():
    check_forward([many_dims(torch.float32)])
    g = many_dims(torch.float64).requires_grad_(True)
    check_backward([g], None, "mean", OPTIONS[0])


@gpu
def test_empty_rows():
    """Rows of no elements have norm 0 (the reference cannot reshape them, so the expectation is written out)."""
    g = torch.empty(6, 0, 4, device="cuda")
    pen, norms = torch.ops.fastgp.penalty_forward([g], None, 3.0, 1.0, 2.0, False, 0)
    assert torch.equal(norms, torch.zeros(6, device="cuda")) and torch.equal(pen, torch.full((6,), 3.0, device="cuda"))
    (d,) = torch.ops.fastgp.penalty_backward(torch.ones(6, device="cuda"), [g], norms, None, 3.0, 1.0, 2.0, False, 0)
    assert d.shape == g.shape


@gpu
@pytest.mark.parametrize("opts", [OPTIONS[0], OPTIONS[1], OPTIONS[2]])
def test_zero_rows_are_finite(opts):
    g = make((6, 3, 8, 8), torch.float32)
    g[1] = 0
    g[4] = 0
    pen, norms = check_forward([g], reduction="none", opts=opts)
    assert norms[1] == 0 and norms[4] == 0
    g.requires_grad_(True)
    check_backward([g], None, "none", opts)


@gpu
@pytest.mark.parametrize("sdtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("shape", [(), (1,)])
def test_inv_scale(sdtype, shape):
    scale = 1024.0
    g = make((5, 3, 12, 12), torch.float32) * scale
    inv = torch.full(shape, 1.0 / scale, device="cuda", dtype=sdtype)
    _, norms = check_forward([g], inv_scale=inv)
    torch.testing.assert_close(norms, reference.grad_norms([g / scale]), rtol=1e-5, atol=1e-6)
    check_backward([g.requires_grad_(True)], inv, "sum", OPTIONS[0])


# --------------------------------------------------------- penalty backward
def check_backward(grads, inv_scale, reduction, opts, grad_out=None):
    """d penalty / d grads through autograd (the registered backward) vs the reference's autograd in float64."""
    dtype = grads[0].dtype
    pen, _ = torch.ops.fastgp.penalty_forward(grads, inv_scale, opts["weight"], opts["center"], opts["power"],
                                              opts["one_sided"], REDUCTIONS[reduction])
    if grad_out is None:
        grad_out = torch.ones_like(pen) if reduction != "none" else torch.rand_like(pen) + 0.5
    ours = torch.autograd.grad(pen, grads, grad_out)
    g64 = [g.detach().double().requires_grad_(True) for g in grads]
    ref_pen, _ = ref_penalty(g64, inv_scale, reduction, opts)
    expected = torch.autograd.grad(ref_pen, g64, grad_out.double())
    for o, e, g in zip(ours, expected, grads):
        assert o.dtype == dtype and o.shape == g.shape
        assert_close_scaled(o, e, dtype, BWD_TOL)
    return ours


@gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_penalty_backward_matches_reference(shape, dtype, reduction):
    check_backward([make(shape, dtype).requires_grad_(True)], None, reduction, OPTIONS[0])


@gpu
@pytest.mark.parametrize("opts", OPTIONS)
def test_penalty_backward_options(opts):
    check_backward([(make((9, 3, 5, 5), torch.float32) * 0.2).requires_grad_(True)], None, "sum", opts)


@gpu
@pytest.mark.parametrize("layout", LAYOUTS_4D)
def test_penalty_backward_layouts(layout):
    g = make((6, 3, 17, 20), torch.bfloat16, layout).requires_grad_(True)
    (d,) = check_backward([g], None, "mean", OPTIONS[0])
    assert d.stride() == torch.empty_like(g).stride()


@gpu
def test_penalty_backward_several_grads_and_grad_out_forms():
    grads = [make((5, 3, 16, 16), torch.float32, "channels_last", 1).requires_grad_(True),
             make((5, 10), torch.float32, "contiguous", 2).requires_grad_(True)]
    check_backward(grads, None, "mean", OPTIONS[0])
    check_backward(grads, None, "none", OPTIONS[1])
    # grad_out as a non-contiguous (B,) vector and in another float dtype, straight through the op.
    _, norms = torch.ops.fastgp.penalty_forward(grads, None, 1.0, 1.0, 2.0, False, 0)
    go = torch.rand(10, device="cuda", dtype=torch.float64)[::2]
    d = torch.ops.fastgp.penalty_backward(go, [g.detach() for g in grads], norms, None, 1.0, 1.0, 2.0, False, 0)
    d_ref = torch.ops.fastgp.penalty_backward(go.float().contiguous(), [g.detach() for g in grads], norms, None,
                                              1.0, 1.0, 2.0, False, 0)
    for a, b in zip(d, d_ref):
        torch.testing.assert_close(a, b)


if given is not None:  # property test over layouts (hypothesis)

    @gpu
    @settings(max_examples=40, deadline=None)
    @given(data=st.data())
    def test_random_shapes_and_strides(data):
        """Any memory order, any slicing: all three ops agree with the reference."""
        ndim = data.draw(st.integers(0, 4), label="non-batch dims")
        shape = [data.draw(st.integers(1, 6), label="batch")] + [data.draw(st.integers(1, 9)) for _ in range(ndim)]
        order = data.draw(st.permutations(range(1, ndim + 1)), label="memory order")
        step = data.draw(st.integers(1, 2), label="step of the last dim")
        dtype = data.draw(st.sampled_from([torch.float16, torch.float32, torch.float64]), label="dtype")

        def strided(seed):
            full = shape[:-1] + [shape[-1] * step] if ndim else shape
            perm = [0] + list(order)
            base = make([full[d] for d in perm], dtype, seed=seed)
            t = base.permute([perm.index(d) for d in range(len(perm))])
            return t[..., ::step] if ndim else t

        real, fake, g = strided(1), strided(2), strided(3).requires_grad_(True)
        alpha = torch.rand(shape[0], device="cuda", dtype=torch.float64)
        assert_close_scaled(torch.ops.fastgp.interpolate(real, fake, alpha),
                            reference.interpolate(real.double(), fake.double(), alpha), dtype)
        check_forward([g.detach()], reduction="none", opts=OPTIONS[3])
        check_backward([g], None, "mean", OPTIONS[0])


# ---------------------------------------------------------- determinism
@gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_bitwise_reproducible(dtype):
    g = make((4, 3, 512, 512), dtype).requires_grad_(True)
    real, fake = make((4, 3, 512, 512), dtype, seed=1), make((4, 3, 512, 512), dtype, seed=2)
    alpha = torch.rand(4, device="cuda")
    runs = []
    for _ in range(3):
        outs = [torch.ops.fastgp.interpolate(real, fake, alpha)]
        for reduction in (0, 1, 2):
            pen, norms = torch.ops.fastgp.penalty_forward([g], None, 10.0, 1.0, 2.0, False, reduction)
            outs += [pen, norms, *torch.autograd.grad(pen.sum(), [g])]
        runs.append(outs)
    for later in runs[1:]:
        for a, b in zip(runs[0], later):
            assert torch.equal(a, b)


@gpu
def test_sums_do_not_depend_on_the_load_path():
    """Vectorized, scalar and index-computing paths visit a row's elements in the same order."""
    shape = (3, 3, 40, 64)
    norms = [torch.ops.fastgp.penalty_forward([make(shape, torch.float32, layout)], None, 1.0, 1.0, 2.0, False, 1)[1]
             for layout in ("contiguous", "misaligned", "padded", "batch_strided")]
    for n in norms[1:]:
        assert torch.equal(n, norms[0])


# ----------------------------------------------------------------- opcheck
@gpu
@pytest.mark.parametrize("requires_grad", [False, True])
def test_opcheck_cuda(requires_grad):
    real = make((4, 3, 8, 8), torch.float32, seed=1).requires_grad_(requires_grad)
    fake = make((4, 3, 8, 8), torch.float32, "channels_last", seed=2).requires_grad_(requires_grad)
    alpha = torch.rand(4, device="cuda")
    torch.library.opcheck(torch.ops.fastgp.interpolate.default, (real, fake, alpha))
    grads = [make((4, 3, 8, 8), torch.float32, seed=3).requires_grad_(requires_grad),
             make((4, 5), torch.float32, seed=4).requires_grad_(requires_grad)]
    inv = torch.tensor(0.5, device="cuda")
    for reduction in (0, 1, 2):
        torch.library.opcheck(torch.ops.fastgp.penalty_forward.default, (grads, inv, 2.0, 1.0, 2.0, False, reduction))
    _, norms = torch.ops.fastgp.penalty_forward([g.detach() for g in grads], inv, 2.0, 1.0, 2.0, False, 1)
    go = torch.tensor(1.5, device="cuda", requires_grad=requires_grad)
    torch.library.opcheck(torch.ops.fastgp.penalty_backward.default, (go, grads, norms, inv, 2.0, 1.0, 2.0, False, 1))


# ---------------------------------------------------------- end to end
def _critic(channels=3, size=16):
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(channels, 8, 3, padding=1), torch.nn.LeakyReLU(0.2),
        torch.nn.Conv2d(8, 8, 3, stride=2, padding=1), torch.nn.GroupNorm(2, 8), torch.nn.SiLU(),
        torch.nn.Flatten(), torch.nn.Linear(8 * (size // 2) ** 2, 1)).cuda()


@gpu
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_critic_parameter_gradients_match_reference(memory_format):
    critic = _critic().to(memory_format=memory_format)
    twin = copy.deepcopy(critic)
    real = make((6, 3, 16, 16), torch.float32, seed=1).contiguous(memory_format=memory_format)
    fake = make((6, 3, 16, 16), torch.float32, seed=2).contiguous(memory_format=memory_format)
    alpha = torch.rand(6, device="cuda")
    ours = fastgp.gradient_penalty(critic, real, fake, weight=10.0, alpha=alpha, backend="cpp")
    ours.backward()
    expected = reference.gradient_penalty(twin, real, fake, weight=10.0, alpha=alpha)
    expected.backward()
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-5)
    for (name, p), q in zip(critic.named_parameters(), twin.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-6, msg=name)


def _gp_step(critic, real, fake, alpha, inv_scale):
    """interpolate -> critic -> input gradient -> penalty -> critic parameter gradients."""
    x_hat = torch.ops.fastgp.interpolate(real, fake, alpha).requires_grad_(True)
    out = critic(x_hat)
    (g,) = torch.autograd.grad(out.sum(), x_hat, create_graph=True)
    pen, _ = torch.ops.fastgp.penalty_forward([g], inv_scale, 10.0, 1.0, 2.0, False, 1)
    pen.backward()
    return pen


@gpu
def test_cuda_graph_capture_matches_eager():
    critic = _critic()
    twin = copy.deepcopy(critic)
    real, fake = make((8, 3, 16, 16), torch.float32, seed=1), make((8, 3, 16, 16), torch.float32, seed=2)
    alpha = torch.rand(8, device="cuda")
    inv = torch.tensor([1.0], device="cuda")
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm up outside the capture, as PyTorch's recipe does
        for _ in range(2):
            critic.zero_grad(set_to_none=True)
            _gp_step(critic, real, fake, alpha, inv)
    torch.cuda.current_stream().wait_stream(side)
    critic.zero_grad(set_to_none=True)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_pen = _gp_step(critic, real, fake, alpha, inv)
    # New inputs copied into the captured buffers, as a training loop would.
    real.copy_(make((8, 3, 16, 16), torch.float32, seed=3))
    alpha.copy_(torch.rand(8, device="cuda"))
    inv.fill_(0.5)
    graph.replay()
    torch.cuda.synchronize()
    eager = _gp_step(twin, real, fake, alpha, inv)
    torch.testing.assert_close(static_pen, eager, rtol=1e-5, atol=1e-6)
    for p, q in zip(critic.parameters(), twin.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-6)


@gpu
def test_compile_fullgraph_penalty_from_grads():
    torch._dynamo.reset()

    def loss(g):
        return fastgp.penalty_from_grads(g, weight=10.0, backend="cpp")

    compiled = torch.compile(loss, fullgraph=True)
    g1 = make((6, 3, 16, 16), torch.float32).requires_grad_(True)
    g2 = g1.detach().clone().requires_grad_(True)
    out_c, out_e = compiled(g1), loss(g2)
    torch.testing.assert_close(out_c, out_e)
    out_c.backward()
    out_e.backward()
    torch.testing.assert_close(g1.grad, g2.grad)


@gpu
def test_no_host_sync_on_the_gp_path():
    critic = _critic()
    real, fake = make((8, 3, 16, 16), torch.float32, seed=1), make((8, 3, 16, 16), torch.float32, seed=2)
    scaler = torch.amp.GradScaler("cuda", init_scale=256.0)
    inv = torch.tensor(0.5, device="cuda")  # made here: a host-to-device copy synchronizes

    def step():
        pen = fastgp.gradient_penalty(critic, real, fake, weight=10.0, scaler=scaler, backend="cpp")
        pen.backward()
        x = fastgp.interpolate(real, fake, backend="cpp")
        g = torch.randn_like(x).requires_grad_(True)
        fastgp.penalty_from_grads(g, inv_scale=inv, reduction="none", backend="cpp").sum().backward()

    step()  # warm-up: lazy initializations may synchronize once
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        step()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()


def _fastgp_kernels(fn):
    from torch.profiler import ProfilerActivity, profile

    fn()  # warm-up
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    # Everything the GPU ran (kernels, memcpy, memset), less the profiler's own bookkeeping.
    kernels = [e.name for e in prof.events()
               if e.device_type == torch.autograd.DeviceType.CUDA and "Activity Buffer" not in e.name]
    return kernels, [k for k in kernels if "fastgp" in k]


@gpu
@pytest.mark.parametrize("shape", [(256, 2), (16, 3, 256, 256), (4, 3, 1024, 1024)])
def test_at_most_four_launches_per_gp_call(shape):
    real, fake = make(shape, torch.bfloat16, seed=1), make(shape, torch.bfloat16, seed=2)
    alpha = torch.rand(shape[0], device="cuda")
    g = make(shape, torch.bfloat16, seed=3)
    go = torch.ones((), device="cuda")

    def ops_only():
        torch.ops.fastgp.interpolate(real, fake, alpha)
        _, norms = torch.ops.fastgp.penalty_forward([g], None, 10.0, 1.0, 2.0, False, 1)
        torch.ops.fastgp.penalty_backward(go, [g], norms, None, 10.0, 1.0, 2.0, False, 1)

    kernels, ours = _fastgp_kernels(ops_only)
    assert len(kernels) == 4 and len(ours) == 4, kernels
    assert sum("interpolate" in k for k in ours) == 1
    assert sum("partials" in k for k in ours) == 1 and sum("finalize" in k for k in ours) == 1
    assert sum("backward" in k for k in ours) == 1


@gpu
def test_gradient_penalty_launches_four_fastgp_kernels():
    critic = _critic()
    real, fake = make((8, 3, 16, 16), torch.float32, seed=1), make((8, 3, 16, 16), torch.float32, seed=2)
    _, ours = _fastgp_kernels(lambda: fastgp.gradient_penalty(critic, real, fake, backend="cpp").backward())
    assert len(ours) == 4, ours


# ------------------------------------------------------------------ errors
@gpu
def test_errors_name_the_argument():
    g = make((4, 3, 8, 8), torch.float32)
    with pytest.raises(RuntimeError, match="inv_scale"):
        torch.ops.fastgp.penalty_forward([g], torch.tensor(1.0), 1.0, 1.0, 2.0, False, 1)
    with pytest.raises(RuntimeError, match="norms"):
        torch.ops.fastgp.penalty_backward(torch.ones((), device="cuda"), [g], torch.ones(3, device="cuda"), None,
                                          1.0, 1.0, 2.0, False, 1)
    with pytest.raises(RuntimeError, match="alpha"):
        torch.ops.fastgp.interpolate(g, g, torch.rand(4))
    with pytest.raises(RuntimeError, match="grads\\[1\\]"):
        torch.ops.fastgp.penalty_forward([g, g.double()], None, 1.0, 1.0, 2.0, False, 1)


@gpu
def test_auto_backend_uses_the_cuda_kernels():
    assert fastgp.available_backends("cuda")[0] == "cpp"
