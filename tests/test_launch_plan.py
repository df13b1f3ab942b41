"""The CUDA kernels' launch plan, checked on the CPU.

``fastgp::_launch_plan_debug`` (csrc/launch_plan_debug.cpp, internal) makes the
plan exactly as the CUDA host code does (csrc/launch_plan.h, shared with
csrc/cuda/) for a device holding a given number of warps, then walks every
task as each of the 32 lanes of a warp walks it in the kernels, moving real
data through the planned offsets and access paths: the forward adds x^2 per
row, the backward writes -grad, interpolate writes real - fake. Values are
small integers, so every result is exact: an element visited twice or missed,
or a 128-bit access over the wrong bytes, changes a number. On meta tensors
only the addresses are walked, so plans for more than 2^31 elements cost no
memory.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from fastgp._ext import state

if not state.loaded:
    pytest.skip(f"the C++ extension is not loaded: {state.reason}", allow_module_level=True)

H100_WARPS = 132 * 64  # resident warps of a full H100 SXM (a figure to plan for; no GPU needed)
WARPS = [1, 64, 2112, H100_WARPS, 10**6]  # from a tiny device to a huge one: every mode of the plan
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]


def debug_plan(kernel, tensors, resident_warps=H100_WARPS, walk=None):
    """(summary, tensors) of fastgp::_launch_plan_debug; walk: task indices to walk (None: all)."""
    summary, tensors_out = torch.ops.fastgp._launch_plan_debug(kernel, list(tensors), int(resident_warps),
                                                               None if walk is None else list(walk))
    return json.loads(summary), list(tensors_out)


def ints(shape, dtype, seed):
    """Small nonzero integers (exact in every float dtype), with random signs."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(1, 8, shape, generator=g).to(torch.float64)
    x = x * (torch.randint(0, 2, shape, generator=g) * 2 - 1)
    return x.to(dtype)


def layout(name, shape, dtype, seed=0):
    """A tensor of `shape` with values from ints() in the named memory layout."""
    shape = tuple(shape)
    if name == "contiguous":
        return ints(shape, dtype, seed)
    if name == "channels_last":
        fmt = torch.channels_last if len(shape) == 4 else torch.channels_last_3d
        return ints(shape, dtype, seed).to(memory_format=fmt)
    if name == "transposed":  # last two dims swapped: dense, not contiguous
        s = list(shape)
        s[-1], s[-2] = s[-2], s[-1]
        return ints(s, dtype, seed).transpose(-1, -2)
    if name == "sliced":  # every other element of the last dim
        s = list(shape)
        s[-1] *= 2
        return ints(s, dtype, seed)[..., ::2]
    if name == "expanded_inner":  # stride 0 in the last dim
        s = list(shape)
        s[-1] = 1
        return ints(s, dtype, seed).expand(shape)
    if name == "expanded_batch":  # stride 0 in the batch dim: every row is one memory row
        return ints((1,) + shape[1:], dtype, seed).expand(shape)
    if name == "batch_minor":  # the batch is the fastest dim
        return ints(tuple(reversed(shape)), dtype, seed).permute(*reversed(range(len(shape))))
    if name.startswith("offset"):  # storage offset of k elements: 16-byte alignment broken for k * size % 16 != 0
        k = int(name[len("offset"):])
        flat = ints((math.prod(shape) + k,), dtype, seed)
        return flat[k:].view(shape)
    if name == "batch_slice":  # every other sample
        return ints((2 * shape[0],) + shape[1:], dtype, seed)[::2]
    raise ValueError(name)


LAYOUTS_2D = ["contiguous", "transposed", "sliced", "expanded_inner", "expanded_batch", "batch_minor", "offset1",
              "offset2", "offset3", "batch_slice"]
LAYOUTS_4D = LAYOUTS_2D + ["channels_last"]


def assert_clean(summary):
    assert summary["violation_count"] == 0, summary["violations"]


def assert_tasks_cover_rows(summary, table, batch, row_numels):
    """Tasks of each launch cover every (row, element) of every operand exactly once."""
    k0 = 0
    for li, launch in enumerate(summary["launches"]):
        rows = table[table[:, 0] == li]
        assert rows.shape[0] == launch["tasks"]
        for k, op in enumerate(launch["operands"]):
            n = row_numels[k0 + k]
            mine = rows[(rows[:, 2] <= k) & (rows[:, 3] > k)]
            if n == 0 and not launch["all_operands"]:
                assert mine.shape[0] == 0  # rows of no elements get no tasks
                continue
            if op["chunks_per_row"] <= 1:  # whole rows: [b0, b0 + nrows) tile the batch
                spans = sorted((int(r[4]), int(r[4] + r[5])) for r in mine)
                assert spans[0][0] == 0 and spans[-1][1] == batch
                assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
                assert all((r[6], r[7]) == (0, -1) for r in mine.tolist())
            else:  # chunks: one row each, [begin, end) tile the row
                assert (mine[:, 5] == 1).all()
                for b in range(batch) if batch <= 64 else (0, batch - 1):
                    spans = sorted((int(r[6]), int(r[7])) for r in mine[mine[:, 4] == b])
                    assert spans[0][0] == 0 and spans[-1][1] == n, (b, spans[:2], spans[-2:])
                    assert all(a[1] == c[0] for a, c in zip(spans, spans[1:]))
                    assert all((e - s) % op["chunk"] == 0 or e == n for s, e in spans)
        k0 += len(launch["operands"])


def row_sums(grads):
    sums = torch.zeros(grads[0].shape[0], dtype=torch.float64)
    for g in grads:
        if g.numel():
            sums += g.double().flatten(1).square().sum(1) if g.dim() > 1 else g.double().square()
    return sums


def check_forward(grads, resident_warps=H100_WARPS):
    summary, (sums, table) = debug_plan("forward", grads, resident_warps)
    assert_clean(summary)
    torch.testing.assert_close(sums, row_sums(grads), rtol=0, atol=0)
    assert int(table[:, 8].sum()) == sum(g.numel() for g in grads)  # element visits of the walk, in all
    assert_tasks_cover_rows(summary, table, grads[0].shape[0], [g[0].numel() for g in grads])
    return summary


def check_written_once(out, writes):
    """Every element of out stored exactly once, nothing else in its storage touched."""
    expected = torch.zeros_like(writes)
    offsets = torch.zeros(out.shape, dtype=torch.long)
    for d, (size, stride) in enumerate(zip(out.shape, out.stride())):
        view = [1] * out.dim()
        view[d] = size
        offsets += torch.arange(size).view(view) * stride
    expected.index_put_((offsets.reshape(-1),), torch.ones(out.numel(), dtype=writes.dtype), accumulate=True)
    assert torch.equal(writes, expected)


def check_backward(grads, resident_warps=H100_WARPS):
    summary, res = debug_plan("backward", grads, resident_warps)
    assert_clean(summary)
    k = len(grads)
    outs, writes = res[:k], res[k:2 * k]
    for g, out, w in zip(grads, outs, writes):
        assert out.stride() == torch.empty_like(g).stride()  # the fake kernel's promise
        assert torch.equal(out, -g)
        check_written_once(out, w)
    assert_tasks_cover_rows(summary, res[-1], grads[0].shape[0], [g[0].numel() for g in grads])
    return summary


def check_interpolate(real, fake, resident_warps=H100_WARPS):
    summary, (out, writes, table) = debug_plan("interpolate", [real, fake], resident_warps)
    assert_clean(summary)
    assert out.stride() == torch.empty_like(real).stride()
    assert torch.equal(out, real - fake)
    check_written_once(out, writes)
    assert_tasks_cover_rows(summary, table, real.shape[0], [real[0].numel()])
    return summary


# ------------------------------------------------- every element, once
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", LAYOUTS_4D)
@pytest.mark.parametrize("shape", [(5, 3, 4, 6), (3, 2, 9, 33)])
def test_all_kernels_visit_every_element_once_4d(shape, name, dtype):
    g = layout(name, shape, dtype, seed=1)
    check_forward([g])
    check_backward([g])
    check_interpolate(g, layout("contiguous", shape, dtype, seed=2))
    check_interpolate(layout("channels_last", shape, dtype, seed=3), g)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", LAYOUTS_2D)
@pytest.mark.parametrize("row", [1, 2, 3, 7, 8, 16, 33, 100, 513, 1030, 4100])
def test_all_kernels_visit_every_element_once_rows(row, name, dtype):
    g = layout(name, (6, row), dtype, seed=row)
    for warps in (1, H100_WARPS):  # rows split into chunks, and whole rows
        check_forward([g], warps)
        check_backward([g], warps)
        check_interpolate(g, layout("offset1", (6, row), dtype, seed=5), warps)


@pytest.mark.parametrize("warps", WARPS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_every_mode_of_the_plan(dtype, warps):
    """Folded or split, narrow or wide, several rows per task or chunks: same coverage."""
    cases = [[layout("contiguous", (3, 20000), dtype, 1)],
             [layout("contiguous", (700, 3, 8, 8), dtype, 2)],
             [layout("contiguous", (2000, 5), dtype, 3), layout("sliced", (2000, 2, 3), dtype, 4)]]
    for grads in cases:
        check_forward(grads, warps)
        check_backward(grads, warps)


def test_split_and_folded_modes_both_occur():
    long_rows = [layout("contiguous", (2, 5000), torch.float32, 1)]
    assert not check_forward(long_rows, H100_WARPS)["folded"]
    assert check_forward(long_rows, 1)["folded"]  # a tiny device: whole rows fill it
    many_rows = [layout("contiguous", (10000, 64), torch.float32, 2)]
    assert check_forward(many_rows, H100_WARPS)["folded"]


def test_rows_of_no_elements_mixed_with_others():
    B = 7
    grads = [layout("contiguous", (B, 0), torch.float32, 1), layout("contiguous", (B, 5), torch.float32, 2),
             layout("contiguous", (B, 0, 3), torch.float32, 3), layout("sliced", (B, 600), torch.float32, 4)]
    for warps in (1, H100_WARPS):
        s = check_forward(grads, warps)
        if not s["folded"]:
            assert s["cols"][0] == 0 and s["cols"][2] == 0  # no columns of partial sums for empty rows
        check_backward(grads, warps)
    only_empty = [layout("contiguous", (B, 0), torch.float64, 1)]
    summary, (sums, _) = debug_plan("forward", only_empty)
    assert summary["folded"] and torch.equal(sums, torch.zeros(B, dtype=torch.float64))
    summary, res = debug_plan("backward", only_empty)
    assert summary["launches"][0]["tasks"] == 0 and res[0].shape == (B, 0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_a_million_rows_of_two(dtype):
    B = 10**6
    g = layout("contiguous", (B, 2), dtype, seed=7)
    s = check_forward([g])
    op = s["launches"][0]["operands"][0]
    # many short rows: folded, packed one row per lane, many rows per task
    assert s["folded"] and op["lanes_per_row"] == 1 and op["rows_per_task"] >= 32
    assert s["launches"][0]["tasks"] == math.ceil(B / op["rows_per_task"])
    # rows of 8 (fp32) or 4 (bf16) bytes are not 16-byte aligned one by one: scalar accesses
    assert op["paths"] == ["scalar"] and s["vector_accesses"] == 0
    check_backward([g])
    check_interpolate(g, layout("contiguous", (B, 2), dtype, seed=8))


def test_short_aligned_rows_are_packed_with_vector_accesses():
    g = layout("contiguous", (4096, 16), torch.float32, seed=1)  # 4 packs a row: 4 lanes a row, 8 rows a warp
    s = check_forward([g])
    op = s["launches"][0]["operands"][0]
    assert op["lanes_per_row"] == 4 and op["paths"] == ["vector"]
    assert s["vector_accesses"] == g.numel() // 4 and s["scalar_elements"] == 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("shape", [(1, 2**31 + 5), (1, 3, 2**15 + 1, 2**15)])
def test_more_than_2_31_elements_in_one_row(shape, dtype):
    """Plans only (meta tensors, nothing allocated): the tasks that cross 2^31, and the
    last, reach the right offsets through the same int64 arithmetic as the kernels."""
    for kernel, tensors in (("forward", [torch.empty(shape, dtype=dtype, device="meta")]),
                            ("backward", [torch.empty(shape, dtype=dtype, device="meta")]),
                            ("interpolate", [torch.empty(shape, dtype=dtype, device="meta"),
                                             torch.empty(shape, dtype=dtype, device="meta")])):
        n = math.prod(shape[1:])
        summary, res = debug_plan(kernel, tensors, walk=[])  # the plan alone
        table = res[-1]
        assert (table[:, 8] == -1).all()  # nothing walked
        assert_tasks_cover_rows(summary, table, 1, [n])
        holding = [int(torch.nonzero((table[:, 6] <= j) & (table[:, 7] > j))[0]) for j in (2**31 - 1, 2**31)]
        walk = sorted({0, *holding, table.shape[0] - 1})
        summary, res = debug_plan(kernel, tensors, walk=walk)
        assert_clean(summary)
        table = res[-1]
        for t in walk:
            begin, end, visited, largest = (int(x) for x in table[t, 6:10])
            assert visited == end - begin and largest == end - 1  # contiguous: offset == element index
        vec = 16 // tensors[0].element_size()
        per_element = len(summary["launches"][0]["operands"][0]["paths"])  # tensors moved per element
        assert summary["vector_accesses"] > 0  # scalar accesses: the row's tail only
        assert summary["scalar_elements"] == (n % vec) * per_element


def test_storage_offsets_break_alignment_per_tensor():
    """Only the tensor whose offset breaks 16-byte alignment loses the vector path."""
    real = layout("contiguous", (8, 64), torch.float32, 1)
    fake = layout("offset1", (8, 64), torch.float32, 2)
    s = check_interpolate(real, fake)
    assert s["launches"][0]["operands"][0]["paths"] == ["vector", "vector", "scalar"]
    s = check_interpolate(layout("offset4", (8, 64), torch.float32, 3), real)  # 4 floats = 16 bytes: aligned
    assert s["launches"][0]["operands"][0]["paths"] == ["vector", "vector", "vector"]
    rows_misaligned = layout("contiguous", (8, 63), torch.float32, 4)  # row starts drift off 16 bytes
    s = check_forward([rows_misaligned])
    assert s["launches"][0]["operands"][0]["paths"] == ["scalar"]


def test_one_strided_tensor_leaves_the_others_on_the_vector_path():
    dense = layout("contiguous", (4, 3, 16, 16), torch.float32, 1)
    sliced = layout("sliced", (4, 3, 16, 16), torch.float32, 2)
    s = check_forward([dense, sliced])
    launch = s["launches"][0]
    assert launch["general"] and [op["paths"] for op in launch["operands"]] == [["vector"], ["strided"]]
    assert s["vector_accesses"] == dense.numel() // 4
    s = check_backward([dense, sliced])
    assert [op["paths"] for op in s["launches"][0]["operands"]] == [["vector", "vector"], ["vector", "strided"]]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_interpolate_contiguous_real_channels_last_fake(dtype):
    """A common setup (contiguous loader, channels_last generator): out = empty_like(real)
    and real stay on the vector path; only fake computes offsets."""
    real = layout("contiguous", (4, 3, 16, 16), dtype, 1)
    fake = layout("channels_last", (4, 3, 16, 16), dtype, 2)
    s = check_interpolate(real, fake)
    assert s["launches"][0]["operands"][0]["paths"] == ["vector", "vector", "strided"]
    s = check_interpolate(fake, real)  # the other way round: out is channels_last
    assert s["launches"][0]["operands"][0]["paths"] == ["vector", "vector", "strided"]
    s = check_interpolate(fake, layout("channels_last", (4, 3, 16, 16), dtype, 3))
    assert s["launches"][0]["operands"][0]["paths"] == ["vector"] * 3 and not s["launches"][0]["general"]


def test_more_grads_than_one_launch_holds():
    grads = [layout(["contiguous", "sliced", "transposed"][k % 3], (5, 4, 3 + k), torch.float32, k)
             for k in range(19)]
    s = check_forward(grads)
    assert len(s["launches"]) == 3 and not s["folded"]
    s = check_backward(grads)
    assert len(s["launches"]) == 3


def test_layouts_beyond_the_kernel_dims_are_copied():
    x = layout("contiguous", (2, 3, 2, 3, 2, 3, 2, 3, 2), torch.float32, 1)
    g = x.permute(0, 8, 1, 7, 2, 6, 3, 5, 4)  # no two dims merge: 8 inner dims > 6
    check_forward([g])
    check_backward([g])
    check_interpolate(g, layout("contiguous", g.shape, torch.float32, 2))


def test_finalize_sees_every_chunk():
    """Split rows: the columns of partial sums match the chunks of each row."""
    grads = [layout("contiguous", (3, 70000), torch.float32, 1), layout("contiguous", (3, 9), torch.float32, 2)]
    s = check_forward(grads, resident_warps=256)
    assert not s["folded"]
    ops = s["launches"][0]["operands"]
    assert s["cols"] == [ops[0]["chunks_per_row"], 1] and ops[0]["chunks_per_row"] > 1
    assert s["ncols"] == sum(s["cols"])


def test_bad_arguments_are_refused():
    g = torch.ones(3, 4)
    with pytest.raises(RuntimeError, match="kernel must be forward, backward or interpolate"):
        debug_plan("sideways", [g])
    with pytest.raises(RuntimeError, match="out of range"):
        debug_plan("forward", [g], walk=[99])
    with pytest.raises(RuntimeError, match="resident_warps must be positive"):
        debug_plan("forward", [g], resident_warps=0)


try:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
except ImportError:  # a test extra
    given = None

if given is not None:
    @st.composite
    def strided_tensor(draw):
        ndim = draw(st.integers(1, 5))
        shape = [draw(st.integers(1, 40))] + [draw(st.integers(0, 9)) for _ in range(ndim - 1)]
        dtype = draw(st.sampled_from(DTYPES))
        # a bigger base tensor, permuted, sliced with steps, offset, some dims expanded
        steps = [draw(st.integers(1, 3)) for _ in shape]
        base_shape = [max(1, s * st_) for s, st_ in zip(shape, steps)]
        perm = draw(st.permutations(range(ndim)))
        base = ints(tuple(base_shape[p] for p in perm), dtype, draw(st.integers(0, 1000)))
        inv = [perm.index(d) for d in range(ndim)]
        x = base.permute(*inv)
        x = x[tuple(slice(0, s * st_, st_) for s, st_ in zip(shape, steps))]
        for d in range(ndim):
            if shape[d] > 1 and draw(st.booleans()) and draw(st.integers(0, 4)) == 0:
                idx = [slice(None)] * ndim
                idx[d] = slice(0, 1)
                x = x[tuple(idx)].expand(*[shape[e] if e == d else x.shape[e] for e in range(ndim)])
        return x

    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(g=strided_tensor(), warps=st.sampled_from(WARPS))
    def test_random_shapes_and_strides(g, warps):
        check_forward([g], warps)
        check_backward([g], warps)
        check_interpolate(g, layout("contiguous", g.shape, g.dtype, 9) if g[0].numel() else g.contiguous(), warps)
