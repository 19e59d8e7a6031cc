"""Pallas Mosaic GPU compositing kernels (Hopper and newer), with a custom VJP.

Same interface and semantics as ``xla.composite`` (gsplat 1.5.3's
``rasterize_to_pixels``); projection and binning stay in XLA. The kernels
reformulate the per-pixel front-to-back loop as matrix products so that the
channels ride the tensor cores (WGMMA):

* The Gaussians of a tile are processed in chunks of ``K = 64`` (the per-tile
  ranges are re-laid out so that every tile starts at a multiple of ``K``:
  ``pack``). A program handles ``M = 64`` pixels (4 rows of a 16x16 tile).
* For a chunk, alpha [M, K] is computed elementwise. The transmittance in front
  of each Gaussian is ``T_start * exp(cumsum_k log(1 - alpha))``; the cumulative
  sum along K is a product with an upper-triangular matrix of ones.
* The weights w = alpha T (masked where gsplat skips or stops) multiply the
  features: out [M, C'] += w [M, K] @ F [K, C'] with C' = C + depth + 1 (the last
  channel accumulates alpha), padded to a multiple of 16.
* float32 accuracy on bf16 tensor cores: every operand is split into three bf16
  parts (x = x1 + x2 + x3, 24 significant bits) and the products with
  i + j <= 2 are summed in float32 (six MMAs; the triangular and pixel-moment
  matrices are exact in bf16, so three MMAs there).
* Stopping: a pixel is done once a Gaussian would take T to <= 1e-4 (it and
  everything behind it are skipped); a program leaves its chunk loop when all of
  its pixels are done (whole-block early exit).

The backward recomputes each chunk front to back and writes one gradient row per
intersection: dF = w^T G (an MMA) and six pixel moments of dL/dsigma
(q^T [1, x, y, x^2, xy, y^2], an MMA) from which XLA forms the gradients of the
means, conics and opacities; a segment sum reduces the rows per Gaussian.
With g = dL/dout_p and S_i = sum_{j > i} w_j (g . f_j):
    dL/dalpha_i = T_i (g . f_i) - S_i / (1 - alpha_i),
and S_i = g . out_p - cumsum_{j <= i} w_j (g . f_j), again a triangular product.

``interpret=True`` runs the same kernels in Pallas' GPU interpreter on the CPU
(tests); layout annotations and the register-A operand form are the only things
that differ there.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import mosaic_gpu as plgpu

from gshead_jax import _compat
from gshead_jax.splat.binning import tile_grid

TILE = 16  # the kernels are written for gsplat's default 16x16 tiles
SUB = 4  # programs (pixel blocks) per tile
M = TILE * TILE // SUB  # pixels per program: 4 rows of 16
MIN_T = 1e-4  # gsplat: stop before the Gaussian that takes T to <= 1e-4
MAX_ALPHA = 0.999
ALPHA_MIN = 1.0 / 255.0
_PAIRS = ((0, 0), (0, 1), (1, 0), (0, 2), (1, 1), (2, 0))  # split products kept
PACK_K = 64  # tile alignment of the packed list and the backward's chunk (WGMMA M = 64)
_F32 = jnp.float32


@dataclasses.dataclass(frozen=True)
class Config:
    """Static kernel options.

    Attributes:
        block_gaussians: Gaussians per forward chunk (K): 32 or 64. The backward
            always works in chunks of 64 (its per-Gaussian outputs are the M side
            of a WGMMA, whose M is a multiple of 64).
        approx_math: Use the hardware exp2/log2 approximations. Off by default:
            lg2.approx has an absolute error of ~2^-22, i.e. a relative error of
            ~1e-4 in log(1 - alpha) for the faint splats near alpha = 1/255, which
            shows up at the 1e-4 level in the image (measured on an H200).
        prefetch: Double-buffer the chunk loads (TMA) behind the compute.
        auto_barriers: Let Pallas put a warpgroup barrier around every SMEM
            access. The kernels do not need them: shared scratch is written with
            plain stores and read only by the tensor cores after ``commit_smem``
            (a fence and a barrier), and the TMA-filled buffers are read only after
            their barrier and refilled only after every warp has passed the next
            ``commit_smem``.
        profile_dir: If set, Mosaic GPU's in-kernel profiler writes a trace of the
            named stages there (``profile_space`` events per warpgroup).
    """

    block_gaussians: int = 64
    approx_math: bool = False
    prefetch: bool = True
    auto_barriers: bool = False
    profile_dir: str | None = None
    profile_space: int = 256

    def __post_init__(self):
        if self.block_gaussians not in (32, 64):
            raise ValueError(f"block_gaussians must be 32 or 64, got {self.block_gaussians}")


DEFAULT_CONFIG = Config()


def is_supported() -> bool:
    """True on NVIDIA GPUs of compute capability 9.0 (Hopper) or newer."""
    try:
        dev = jax.devices()[0]
    except RuntimeError:
        return False
    if dev.platform != "gpu":
        return False
    cc = getattr(dev, "compute_capability", None)
    try:
        return cc is not None and float(cc) >= 9.0
    except (TypeError, ValueError):
        return False


def _truncate_to_bf16(x):
    """x with its low 16 bits cleared: a float32 that bfloat16 holds exactly."""
    bits = lax.bitcast_convert_type(x, jnp.uint32) & jnp.uint32(0xFFFF0000)
    return lax.bitcast_convert_type(bits, _F32)


def _split3(x):
    """x (f32) -> three bf16 parts with x == x1 + x2 + x3 exactly.

    Truncation by bit masking, not ``astype`` round trips: XLA may keep excess
    precision through a fused f32 -> bf16 -> f32 (``xla_allow_excess_precision``,
    on by default), which silently made the residuals zero -- bf16 accuracy, 1e-3
    errors -- on the GPU. Each residual is exact in float32 and the last one has at
    most 8 significant bits, so all three parts are exact in bfloat16.
    """
    x1 = _truncate_to_bf16(x)
    r = x - x1
    x2 = _truncate_to_bf16(r)
    x3 = r - x2
    return x1.astype(jnp.bfloat16), x2.astype(jnp.bfloat16), x3.astype(jnp.bfloat16)


def _transforms(swizzle: int):
    return (plgpu.TilingTransform((8, swizzle // 2)), plgpu.SwizzleTransform(swizzle))


def _padded_channels(c: int) -> int:
    return -(-c // 16) * 16


class _Ops:
    """Kernel helpers that differ between compiled Mosaic GPU and the interpreter."""

    ROW = plgpu.Layout.WGMMA.reduce(1)  # [M] per-pixel vectors
    COL = plgpu.Layout.WGMMA.reduce(0)  # [K] per-Gaussian vectors

    def __init__(self, interpret: bool):
        self.interpret = interpret

    def cast(self, x, layout):
        return x if self.interpret else plgpu.layout_cast(x, layout)

    def iota(self, shape, dim):
        if self.interpret:
            return lax.broadcasted_iota(jnp.int32, shape, dim)
        return plgpu.broadcasted_iota(jnp.int32, shape, dim, layout=plgpu.Layout.WGMMA)

    def load(self, ref, layout):
        return ref[...] if self.interpret else _compat.mosaic_gpu_load(ref, layout)

    def mma(self, shape, terms, name="mma"):
        """sum_k op(a_k) @ op(b_k) in float32 for (a_ref, b_ref, transpose_a, transpose_b)."""
        if self.interpret:
            out = jnp.zeros(shape, _F32)
            for a, b, ta, tb in terms:
                av, bv = a[...].astype(_F32), b[...].astype(_F32)
                out = out + jnp.dot(
                    av.T if ta else av, bv.T if tb else bv, precision=lax.Precision.HIGHEST
                )
            return out

        def body(acc_ref):
            for a, b, ta, tb in terms:
                plgpu.wgmma(
                    acc_ref,
                    plgpu.transpose_ref(a, (1, 0)) if ta else a,
                    plgpu.transpose_ref(b, (1, 0)) if tb else b,
                )
            return acc_ref[...]

        with jax.named_scope(name):
            return pl.run_scoped(body, plgpu.ACC(shape, _F32))


def _kernel_call(body, out_type, scratch, grid, grid_names, config, interpret):
    kwargs = {}
    if interpret:
        from jax._src.pallas.mosaic_gpu.interpret.params import InterpretGPUParams

        kwargs["interpret"] = InterpretGPUParams()
    return plgpu.kernel(
        body,
        out_type=out_type,
        scratch_types=scratch,
        grid=grid,
        grid_names=grid_names,
        compiler_params=plgpu.CompilerParams(
            approx_math=config.approx_math,
            unsafe_no_auto_barriers=not config.auto_barriers,
            **(
                {"profile_space": config.profile_space, "profile_dir": config.profile_dir}
                if config.profile_dir
                else {}
            ),
        ),
        **kwargs,
    )


@jax.named_scope("alpha")
def _alpha_block(ops, prm_smem, px_row, py_row, k):
    """alpha, raw opacity falloff and log(1 - alpha) of one chunk for one pixel block. [M, K]

    Per-Gaussian values arrive as [K] column vectors and per-pixel centres as [M]
    row vectors; broadcasting them keeps few registers live.
    """
    mx, my, ca, cb, cc, op = (ops.load(prm_smem.at[r], _Ops.COL) for r in range(6))

    def col(v):
        return lax.broadcast_in_dim(v, (M, k), [1])

    dx = col(mx) - lax.broadcast_in_dim(px_row, (M, k), [0])
    dy = col(my) - lax.broadcast_in_dim(py_row, (M, k), [0])
    sigma = dx * (col(0.5 * ca) * dx + col(cb) * dy) + col(0.5 * cc) * (dy * dy)
    raw = col(op) * jnp.exp(-sigma)
    alpha = jnp.minimum(_F32(MAX_ALPHA), raw)
    valid = (sigma >= 0.0) & (alpha >= _F32(ALPHA_MIN))
    log_t = jnp.where(valid, jnp.log(1.0 - alpha), _F32(0))
    return alpha, raw, log_t


@jax.named_scope("transmittance")
def _transmittance(ops, log_t, tcur, done, a_smem, u_smem, k):
    """T in front of / after each Gaussian, the keep mask and the new per-pixel state."""
    for j, part in enumerate(_split3(log_t)):
        a_smem[j] = part
    plgpu.commit_smem()
    cum = ops.mma(
        (M, k), [(a_smem.at[j], u_smem, False, False) for j in range(3)], name="cumsum_mma"
    )
    tb = lax.broadcast_in_dim(jnp.where(done > 0.0, _F32(0), tcur), (M, k), [0])
    t_incl = tb * jnp.exp(cum)
    t_excl = tb * jnp.exp(cum - log_t)
    valid = log_t < 0.0  # alpha >= 1/255 (and sigma >= 0) exactly when log(1 - alpha) < 0
    keep = valid & (t_incl > _F32(MIN_T))  # tb == 0 (done) keeps nothing
    stop = valid & (tb > 0.0) & (t_incl <= _F32(MIN_T))
    new_t = tcur * jnp.exp(jnp.sum(jnp.where(keep, log_t, _F32(0)), axis=1))
    new_done = jnp.maximum(done, jnp.max(jnp.where(stop, _F32(1), _F32(0)), axis=1))
    return t_excl, keep, new_t, new_done


def _chunk_loader(feat_ref, prm_ref, f_smem, prm_smem, bars, k):
    """issue(c, slot): TMA copies of chunk c (three feature splits + parameters) into slot."""

    def issue(c, slot):
        for j in range(3):
            plgpu.copy_gmem_to_smem(
                feat_ref.at[j, pl.ds(c * k, k), :], f_smem.at[slot, j], bars.at[slot]
            )
        plgpu.copy_gmem_to_smem(prm_ref.at[:, pl.ds(c * k, k)], prm_smem.at[slot], bars.at[slot])

    return issue


def _await_chunk(bars, slot, issue, c, has_next, prefetch):
    """Waits for chunk c in ``slot``; with ``prefetch``, starts loading c + 1 into the other.

    The other slot's previous chunk is consumed: its parameters were loaded before
    the last ``commit_smem`` barrier and its MMAs awaited.
    """
    with jax.named_scope("wait"):
        plgpu.barrier_wait(bars.at[slot])
    if prefetch:

        @pl.when(has_next)
        def _():
            issue(c + 1, 1 - slot)


def _load_next_unbuffered(issue, c, has_next, prefetch):
    """Without prefetch (one buffer), loads chunk c + 1 once chunk c is consumed."""
    if not prefetch:

        @pl.when(has_next)
        def _():
            issue(c + 1, 0)


def _pixel_coords(ops, tile, sub, tiles_x, k, width, height):
    """Pixel centres of a program's block and the initial done flags, each [M]."""
    m = ops.iota((M, k), 0)
    px = ((tile % tiles_x) * TILE + m % TILE).astype(_F32) + 0.5
    py = ((tile // tiles_x) * TILE + sub * (TILE // SUB) + m // TILE).astype(_F32) + 0.5
    # Pixels past the image border never render (gsplat: done = !inside).
    outside = jnp.where((px > width) | (py > height), _F32(1), _F32(0))
    return jnp.max(px, axis=1), jnp.max(py, axis=1), jnp.max(outside, axis=1)


def _sequential_batching(kernel_fn):
    """Batch a kernel call by looping over the batch (``lax.map``) under ``vmap``.

    Mosaic GPU kernels have no batching rule; each render already fills the GPU,
    so a loop costs only the launch latency. Static keyword arguments are bound
    before ``sequential_vmap`` wraps the array arguments.
    """

    @functools.wraps(kernel_fn)
    def call(*arrays, **static):
        bound = functools.partial(kernel_fn, **static)
        return jax.custom_batching.sequential_vmap(bound)(*arrays)

    return call


@_sequential_batching
def _fwd(ranges, prm, feat3, *, tiles_x, num_tiles, width, height, config, interpret):
    """Forward kernel: out_aug [T, 256, C'], T_final [T, 256], chunks processed [T, 256]."""
    ops = _Ops(interpret)
    k = config.block_gaussians
    ranges = ranges * (PACK_K // k)  # packed chunks of 64 -> forward chunks of k
    cp = feat3.shape[-1]
    nbuf = 2 if config.prefetch else 1
    u = jnp.triu(jnp.ones((k, k), _F32)).astype(jnp.bfloat16)  # U[j, i] = 1 if j <= i

    def splat_fwd_kernel(ranges_ref, prm_ref, feat_ref, u_ref, out_ref, tf_ref, nch_ref, *scratch):
        prm_smem, f_smem, u_smem, a_smem, bars, ubar = scratch
        t = lax.axis_index("tile")
        s = lax.axis_index("sub")
        plgpu.copy_gmem_to_smem(u_ref, u_smem, ubar)
        c0 = ranges_ref[t, 0]
        c1 = ranges_ref[t, 1]

        issue = _chunk_loader(feat_ref, prm_ref, f_smem, prm_smem, bars, k)

        @pl.when(c0 < c1)
        def _():
            issue(c0, 0)

        px, py, done0 = _pixel_coords(ops, t, s, tiles_x, k, width, height)
        plgpu.barrier_wait(ubar)

        def step(carry):
            i, tcur, done, acc = carry
            c = c0 + i
            slot = i % nbuf
            _await_chunk(bars, slot, issue, c, c + 1 < c1, config.prefetch)

            alpha, _, log_t = _alpha_block(ops, prm_smem.at[slot], px, py, k)
            t_excl, keep, tcur, done = _transmittance(ops, log_t, tcur, done, a_smem, u_smem, k)
            w = jnp.where(keep, alpha * t_excl, _F32(0))
            for j, part in enumerate(_split3(w)):
                a_smem[j] = part
            plgpu.commit_smem()
            acc = acc + ops.mma(
                (M, cp),
                [(a_smem.at[a], f_smem.at[slot, b], False, False) for a, b in _PAIRS],
                name="feature_mma",
            )
            _load_next_unbuffered(issue, c, c + 1 < c1, config.prefetch)

            return i + 1, tcur, done, acc

        def cond(carry):
            i, _, done, _ = carry
            return (c0 + i < c1) & (jnp.min(done) < 1.0)

        init = (
            jnp.int32(0),
            ops.cast(jnp.ones((M,), _F32), _Ops.ROW),
            ops.cast(done0, _Ops.ROW),
            ops.cast(jnp.zeros((M, cp), _F32), plgpu.Layout.WGMMA),
        )
        i, tcur, _, acc = lax.while_loop(cond, step, init)

        # A prefetched chunk that was never consumed must land before the block exits.
        @pl.when(c0 + i < c1)
        def _():
            plgpu.barrier_wait(bars.at[i % nbuf])

        out_ref[t, pl.ds(s * M, M), :] = acc
        tf_ref[t, pl.ds(s * M, M)] = tcur
        nch_ref[t, pl.ds(s * M, M)] = ops.cast(jnp.full((M,), i, jnp.int32), _Ops.ROW)

    tr = _transforms(32)
    call = _kernel_call(
        splat_fwd_kernel,
        out_type=(
            jax.ShapeDtypeStruct((num_tiles, SUB * M, cp), _F32),
            jax.ShapeDtypeStruct((num_tiles, SUB * M), _F32),
            jax.ShapeDtypeStruct((num_tiles, SUB * M), jnp.int32),
        ),
        scratch=[
            plgpu.SMEM((nbuf, 8, k), _F32),
            plgpu.SMEM((nbuf, 3, k, cp), jnp.bfloat16, transforms=tr),
            plgpu.SMEM((k, k), jnp.bfloat16, transforms=tr),
            plgpu.SMEM((3, M, k), jnp.bfloat16, transforms=tr),
            plgpu.Barrier(num_arrivals=4, num_barriers=nbuf),
            plgpu.Barrier(num_arrivals=1),
        ],
        grid=(num_tiles, SUB),
        grid_names=("tile", "sub"),
        config=config,
        interpret=interpret,
    )
    return call(ranges, prm, feat3, u)


def moment_basis() -> np.ndarray:
    """P[s, m] = [1, x, y, x^2, xy, y^2, 0...], tile-centred pixel coordinates. [SUB, M, 16]

    The coordinates are half-integers in [-7.5, 7.5], so every entry is an odd
    multiple of 1/4 below 64: exact in bfloat16.
    """
    p = np.zeros((SUB, M, 16), np.float32)
    for s in range(SUB):
        m = np.arange(M)
        x = m % TILE - 7.5
        y = s * (TILE // SUB) + m // TILE - 7.5
        p[s, :, :6] = np.stack([np.ones_like(x), x, y, x * x, x * y, y * y], -1)
    return p


@_sequential_batching
def _bwd(ranges, prm, feat3, nch, g3, gc, *, tiles_x, num_tiles, width, height, config, interpret):
    """Backward kernel: per-intersection dF [I, C'] and q-moments [I, 16]."""
    ops = _Ops(interpret)
    k = PACK_K
    cp = feat3.shape[-1]
    ipad = prm.shape[1]
    nbuf = 2 if config.prefetch else 1
    u = jnp.triu(jnp.ones((k, k), _F32)).astype(jnp.bfloat16)
    pmat = jnp.asarray(moment_basis(), jnp.bfloat16)

    def splat_bwd_kernel(ranges_ref, prm_ref, feat_ref, nch_ref, g_ref, gc_ref, u_ref, p_ref,
                         df_ref, mom_ref, *scratch):  # fmt: skip
        prm_smem, f_smem, u_smem, p_smem, g_smem, a_smem, b_smem, gc_smem, bars, cbar = scratch
        t = lax.axis_index("tile")
        for j in range(3):
            plgpu.copy_gmem_to_smem(g_ref.at[j, t], g_smem.at[j], cbar)
        plgpu.copy_gmem_to_smem(u_ref, u_smem, cbar)
        plgpu.copy_gmem_to_smem(p_ref, p_smem, cbar)
        plgpu.copy_gmem_to_smem(gc_ref.at[t], gc_smem, cbar)
        c0 = ranges_ref[t, 0]
        nch_s = [nch_ref[t, s * M] for s in range(SUB)]
        nmax = functools.reduce(jnp.maximum, nch_s)

        issue = _chunk_loader(feat_ref, prm_ref, f_smem, prm_smem, bars, k)

        @pl.when(nmax > 0)
        def _():
            issue(c0, 0)

        coords = [_pixel_coords(ops, t, s, tiles_x, k, width, height) for s in range(SUB)]
        plgpu.barrier_wait(cbar)
        gcs = [ops.load(gc_smem.at[pl.ds(s * M, M)], _Ops.ROW) for s in range(SUB)]

        def chunk(i, carry):
            c = c0 + i
            slot = i % nbuf
            _await_chunk(bars, slot, issue, c, i + 1 < nmax, config.prefetch)

            df_acc = ops.cast(jnp.zeros((k, cp), _F32), plgpu.Layout.WGMMA)
            mom_acc = ops.cast(jnp.zeros((k, 16), _F32), plgpu.Layout.WGMMA)
            new_carry = []
            for s in range(SUB):
                px, py, _ = coords[s]
                g_rows = pl.ds(s * M, M)

                def compute(tcur, done, prefix, df_acc, mom_acc, s=s, px=px, py=py, g_rows=g_rows):
                    alpha, _, log_t = _alpha_block(ops, prm_smem.at[slot], px, py, k)
                    t_excl, keep, tcur, done = _transmittance(
                        ops, log_t, tcur, done, a_smem, u_smem, k
                    )
                    # The operand order keeps few [M, K] arrays live (register pressure).
                    w = jnp.where(keep, alpha * t_excl, _F32(0))
                    for j, part in enumerate(_split3(w)):
                        b_smem[j] = part
                    # gf[p, i] = g_p . f_i
                    gf = ops.mma(
                        (M, k),
                        [
                            (g_smem.at[a, g_rows], f_smem.at[slot, b], False, True)
                            for a, b in _PAIRS
                        ],
                        name="gf_mma",
                    )
                    wgf = w * gf
                    prefix_next = prefix + jnp.sum(wgf, axis=1)
                    for j, part in enumerate(_split3(wgf)):
                        a_smem[j] = part
                    plgpu.commit_smem()
                    cum_wgf = ops.mma(
                        (M, k),
                        [(a_smem.at[j], u_smem, False, False) for j in range(3)],
                        name="cum_wgf_mma",
                    )
                    rest = lax.broadcast_in_dim(gcs[s] - prefix, (M, k), [0]) - cum_wgf
                    dalpha = t_excl * gf - rest / (1.0 - alpha)
                    # dL/dsigma; zero where alpha is clamped at 0.999 (no dependence).
                    q = jnp.where(keep & (alpha < _F32(MAX_ALPHA)), -dalpha * alpha, _F32(0))
                    for j, part in enumerate(_split3(q)):
                        a_smem[j] = part
                    plgpu.commit_smem()
                    mom = ops.mma(
                        (k, 16),
                        [(a_smem.at[j], p_smem.at[s], True, False) for j in range(3)],
                        name="moment_mma",
                    )
                    df = ops.mma(
                        (k, cp),
                        [(b_smem.at[a], g_smem.at[b, g_rows], True, False) for a, b in _PAIRS],
                        name="df_mma",
                    )
                    prefix = prefix_next
                    return tcur, done, prefix, df_acc + df, mom_acc + mom

                tcur, done, prefix = carry[s]
                tcur, done, prefix, df_acc, mom_acc = lax.cond(
                    i < nch_s[s], compute, lambda *a: a, tcur, done, prefix, df_acc, mom_acc
                )
                new_carry.append((tcur, done, prefix))
            df_ref[pl.ds(c * k, k), :] = df_acc
            mom_ref[pl.ds(c * k, k), :] = mom_acc
            _load_next_unbuffered(issue, c, i + 1 < nmax, config.prefetch)
            return tuple(new_carry)

        init = tuple(
            (
                ops.cast(jnp.ones((M,), _F32), _Ops.ROW),
                ops.cast(coords[s][2], _Ops.ROW),
                ops.cast(jnp.zeros((M,), _F32), _Ops.ROW),
            )
            for s in range(SUB)
        )
        lax.fori_loop(0, nmax, chunk, init)

    tr = _transforms(32)
    call = _kernel_call(
        splat_bwd_kernel,
        out_type=(
            jax.ShapeDtypeStruct((ipad, cp), _F32),
            jax.ShapeDtypeStruct((ipad, 16), _F32),
        ),
        scratch=[
            plgpu.SMEM((nbuf, 8, k), _F32),
            plgpu.SMEM((nbuf, 3, k, cp), jnp.bfloat16, transforms=tr),
            plgpu.SMEM((k, k), jnp.bfloat16, transforms=tr),
            plgpu.SMEM((SUB, M, 16), jnp.bfloat16, transforms=tr),
            plgpu.SMEM((3, SUB * M, cp), jnp.bfloat16, transforms=tr),
            plgpu.SMEM((3, M, k), jnp.bfloat16, transforms=tr),
            plgpu.SMEM((3, M, k), jnp.bfloat16, transforms=tr),
            plgpu.SMEM((SUB * M,), _F32),
            plgpu.Barrier(num_arrivals=4, num_barriers=nbuf),
            plgpu.Barrier(num_arrivals=6),
        ],
        grid=(num_tiles,),
        grid_names=("tile",),
        config=config,
        interpret=interpret,
    )
    return call(ranges, prm, feat3, nch, g3, gc, u, pmat)


# ----------------------------------------------------------------------------- XLA side


def pack(tile_ranges, gaussian_ids, means2d, conics, opacities, feats, *, k):
    """Re-lays the sorted intersections so that each tile starts at a multiple of ``k``.

    Args:
        tile_ranges: (start, end) per tile into ``gaussian_ids``. [T, 2] int32
        gaussian_ids: Sorted intersection list. [I] int32
        means2d: [N, 2]; conics: [N, 3]; opacities: [N].
        feats: Augmented features (C + depth + 1, zero-padded to C'). [N, C']
        k: Chunk size.

    Returns:
        (chunk_ranges [T, 2] int32, prm [8, I'] f32 rows (x, y, a, b, c, o),
        feat3 [3, I', C'] bf16 splits, gid [I'] int32 with N for padding).
        I' = (ceil(I / k) + T + 1) * k: every tile may add at most k - 1 padding
        slots. Padding slots have zero opacity, so they never contribute.
    """
    num_tiles = tile_ranges.shape[0]
    n = means2d.shape[0]
    starts, ends = tile_ranges[:, 0], tile_ranges[:, 1]
    counts = ends - starts
    nch = (counts + k - 1) // k
    cend = jnp.cumsum(nch)
    cstart = cend - nch
    ipad = (-(-gaussian_ids.shape[0] // k) + num_tiles + 1) * k
    slot = jnp.arange(ipad, dtype=jnp.int32)
    # Tile of every chunk (a search over ipad / k chunks, not over every slot).
    chunk_tile = jnp.searchsorted(cend, jnp.arange(ipad // k, dtype=jnp.int32), side="right")
    tile = chunk_tile.astype(jnp.int32)[slot // k]
    tile_c = jnp.minimum(tile, num_tiles - 1)
    local = slot - cstart[tile_c] * k
    valid = (tile < num_tiles) & (local < counts[tile_c])
    src = jnp.clip(starts[tile_c] + local, 0, gaussian_ids.shape[0] - 1)
    gid = jnp.where(valid, gaussian_ids[src], n)
    zero = jnp.zeros((n + 1, 2), _F32)
    prm = jnp.concatenate([means2d, conics, opacities[:, None]], axis=1).astype(_F32)
    prm = jnp.concatenate([jnp.pad(prm, ((0, 1), (0, 0))), zero], axis=1).T  # [8, N + 1]
    # Split the (few) Gaussians first, then gather rows: I' can be ~10x N.
    f3 = jnp.stack(_split3(jnp.pad(feats.astype(_F32), ((0, 1), (0, 0)))))  # [3, N + 1, C']
    ranges = jnp.stack([cstart, cend], axis=1).astype(jnp.int32)
    return ranges, prm[:, gid], f3[:, gid], gid


def _moment_grads(mom, prm, slot_tile, tiles_x):
    """dL/d(x, y, a, b, c, o) per slot from the pixel moments of q = dL/dsigma. Each [I']."""
    s0, sx, sy, sxx, sxy, syy = (mom[:, j] for j in range(6))
    mx = prm[0] - ((slot_tile % tiles_x) * TILE + TILE / 2)
    my = prm[1] - ((slot_tile // tiles_x) * TILE + TILE / 2)
    a, b, c, o = prm[2], prm[3], prm[4], prm[5]
    # sum_p q dx, with dx = mean_x - pixel_x (sigma's convention), and so on.
    qdx = mx * s0 - sx
    qdy = my * s0 - sy
    qdxx = mx * mx * s0 - 2.0 * mx * sx + sxx
    qdyy = my * my * s0 - 2.0 * my * sy + syy
    qdxy = mx * my * s0 - mx * sy - my * sx + sxy
    d_o = jnp.where(o > 0.0, -s0 / jnp.where(o > 0.0, o, 1.0), 0.0)
    return (
        a * qdx + b * qdy,
        b * qdx + c * qdy,
        0.5 * qdxx,
        qdxy,
        0.5 * qdyy,
        d_o,
    )


@functools.partial(jax.custom_vjp, nondiff_argnums=(6, 7, 8, 9, 10))
def _composite_aug(means2d, conics, opacities, feats, tile_ranges, gaussian_ids,
                   width, height, tiles_x, config, interpret):  # fmt: skip
    return _composite_aug_fwd(
        means2d, conics, opacities, feats, tile_ranges, gaussian_ids,
        width, height, tiles_x, config, interpret,
    )[0]  # fmt: skip


def _composite_aug_fwd(means2d, conics, opacities, feats, tile_ranges, gaussian_ids,
                       width, height, tiles_x, config, interpret):  # fmt: skip
    num_tiles = tile_ranges.shape[0]
    ranges, prm, feat3, gid = pack(
        tile_ranges, gaussian_ids, means2d, conics, opacities, feats, k=PACK_K
    )
    out, _, nch_fwd = _fwd(
        ranges, prm, feat3, tiles_x=tiles_x, num_tiles=num_tiles, width=width, height=height,
        config=config, interpret=interpret,
    )  # fmt: skip
    # Chunks of 64 the forward reached, per pixel block (rows replicated). [T, 256]
    kf = config.block_gaussians
    nch = (nch_fwd * kf + PACK_K - 1) // PACK_K
    residuals = (ranges, prm, feat3, gid, nch, out, means2d.shape[0], tile_ranges, gaussian_ids)
    return out, residuals


def _zero_cotangent(x):
    return np.zeros(x.shape, jax.dtypes.float0)


def _composite_aug_bwd(width, height, tiles_x, config, interpret, residuals, g_out):
    ranges, prm, feat3, gid, nch, out, n, tile_ranges, gaussian_ids = residuals
    num_tiles = ranges.shape[0]
    k = PACK_K
    g_out = g_out.astype(_F32)
    gc = jnp.sum(g_out * out, axis=-1)  # g . out per pixel
    df, mom = _bwd(
        ranges, prm, feat3, nch, jnp.stack(_split3(g_out)), gc, tiles_x=tiles_x,
        num_tiles=num_tiles, width=width, height=height, config=config, interpret=interpret,
    )  # fmt: skip
    # Rows of chunks the kernel never reached were not written: mask them.
    slot = jnp.arange(prm.shape[1], dtype=jnp.int32)
    chunk_tile = jnp.searchsorted(
        ranges[:, 1], jnp.arange(prm.shape[1] // k, dtype=jnp.int32), side="right"
    )
    slot_tile = jnp.minimum(chunk_tile.astype(jnp.int32)[slot // k], num_tiles - 1)
    reached = jnp.max(nch[:, ::M], axis=1)  # chunks the backward visited per tile
    written = (slot // k - ranges[slot_tile, 0]) < reached[slot_tile]
    written &= gid < n
    df = jnp.where(written[:, None], df, 0.0)
    mom = jnp.where(written[:, None], mom, 0.0)
    dx, dy, da, db, dc, do = _moment_grads(mom, prm, slot_tile, tiles_x)
    rows = jnp.concatenate([jnp.stack([dx, dy, da, db, dc, do], axis=1), df], axis=1)
    # Padding slots (zero rows) go to 1024 dummy segments rather than one: a single
    # dummy row would serialise the scatter-add's atomics on the GPU.
    seg = jnp.where(gid < n, gid, n + slot % 1024)
    per_g = jax.ops.segment_sum(rows, seg, num_segments=n + 1024)[:n]
    return (
        per_g[:, 0:2],
        per_g[:, 2:5],
        per_g[:, 5],
        per_g[:, 6:],
        _zero_cotangent(tile_ranges),
        _zero_cotangent(gaussian_ids),
    )


_composite_aug.defvjp(_composite_aug_fwd, _composite_aug_bwd)


def composite(
    means2d: jax.Array,
    conics: jax.Array,
    opacities: jax.Array,
    features: jax.Array,
    depths: jax.Array,
    background: jax.Array,
    tile_ranges: jax.Array,
    gaussian_ids: jax.Array,
    *,
    width: int,
    height: int,
    tile_size: int,
    config: Config = DEFAULT_CONFIG,
    interpret: bool | None = None,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Front-to-back compositing on the tensor cores; the interface of ``xla.composite``.

    Args:
        means2d: Pixel-space centres. [N, 2]
        conics: Inverse 2D covariances (a, b, c). [N, 3]
        opacities: Opacities. [N]
        features: Per-Gaussian features, any C >= 1. [N, C]
        depths: Camera z. [N]
        background: Colour under the remaining transmittance. [C]
        tile_ranges: (start, end) per row-major tile into ``gaussian_ids``. [T, 2] int32
        gaussian_ids: Gaussian of each intersection, sorted by (tile, depth). [I] int32
        width: Image width in pixels.
        height: Image height in pixels.
        tile_size: Must be 16 (the kernels' tile).
        config: Kernel options.
        interpret: Run in Pallas' GPU interpreter (default: when not on a Hopper+ GPU).

    Returns:
        (image [H, W, C], alpha [H, W, 1], depth [H, W, 1]) as ``xla.composite``.
    """
    if tile_size != TILE:
        raise ValueError(f"the pallas backend needs tile_size={TILE}, got {tile_size}")
    if interpret is None:
        interpret = not is_supported()
    tiles_x, tiles_y = tile_grid(width, height, TILE)
    c = features.shape[-1]
    cp = _padded_channels(c + 2)
    feats = jnp.concatenate(
        [features, depths[:, None], jnp.ones_like(depths)[:, None]], axis=-1
    ).astype(_F32)
    feats = jnp.pad(feats, ((0, 0), (0, cp - c - 2)))
    out = _composite_aug(
        means2d.astype(_F32), conics.astype(_F32), opacities.astype(_F32), feats,
        tile_ranges, gaussian_ids, width, height, tiles_x, config, bool(interpret),
    )  # fmt: skip
    # [T, 256, C'] tile-major -> image rows.
    out = out.reshape(tiles_y, tiles_x, TILE, TILE, cp).swapaxes(1, 2)
    out = out.reshape(tiles_y * TILE, tiles_x * TILE, cp)[:height, :width]
    alpha = out[..., c + 1 : c + 2]
    image = out[..., :c] + (1.0 - alpha) * background
    has = alpha > 0.0
    depth = jnp.where(has, out[..., c : c + 1] / jnp.where(has, alpha, 1.0), 0.0)
    dtype = features.dtype
    return image.astype(dtype), alpha.astype(dtype), depth.astype(dtype)
