"""Cost benchmark: seconds per iteration, peak memory and FLOPs of every method, next to its FLOP floor.

``python -m medsemiseg.benchmark.cost`` trains each method for a few iterations with the *real* engine
(:class:`medsemiseg.engines.SemiSupervisedTrainer`, the method's own handlers — EMA teacher, SUFD discriminator step —
attached) on fixed in-memory batches of the same sizes for every method, and reports, relative to ``supervised``:

- **s/iter**: median wall time of the timed iterations (after warm-up; CUDA synchronised before every clock read),
  with the inter-quartile range, so a noisy shared machine shows as a wide range instead of a wrong ratio;
- **peak memory of a training step**:
  on CUDA ``torch.cuda.max_memory_allocated`` minus the memory allocated before the first iteration (model, data);
  on CPU the growth of the process's peak resident set size: each method runs in its own subprocess, the kernel's
  high-water mark ``VmHWM`` is reset (``echo 5 > /proc/self/clear_refs``) after the model and data are built, and
  read after the last iteration, minus ``VmRSS`` at the reset. Where that reset is not permitted the high-water mark
  is sampled by a 1 ms thread instead (the JSON records which: ``memory_method``). ``tracemalloc`` cannot see
  torch's allocator and is not used;
- **FLOPs per iteration**: counted by ``torch.utils.flop_counter.FlopCounterMode`` over one whole iteration
  (forward passes, backward, the discriminator step; EMA updates are element-wise and not counted), and the
  **FLOP floor**: the forward/backward passes a method cannot avoid (its module's declared
  :class:`~medsemiseg.methods.registry.FlopFloor`, read from the method registry) times the measured
  FLOPs of one image through the segmentation network (``F``), through its encoder alone (``E``) and through the
  discriminator (``G``), with backward ≈ 2 × forward. ``measured / floor`` above 1 is work an implementation does beyond the minimum (extra
  passes, a batch that runs with grad where no-grad would do).

**Eager and compiled** (``--compile both``): each method is measured eagerly and then with its network compiled
(``torch.compile``, :mod:`medsemiseg.engines.speed`; ``--compile-mode``, ``--channels-last``, ``--amp-dtype``) in one
process, from the same seed and batches. The compiled row adds its time relative to the eager one (``× eager``) and
the **compile time** paid once: the warm-up iterations' wall time minus ``warmup`` times its median step time (the
warm-up must be long enough to cover the compilations: the first forward/backward of every shape). Its FLOPs are
not counted again (the same work as eager; the counter does not see inside compiled code), and on a CPU its peak
memory is the process's high-water mark reset after the eager run, which includes the compiler's own memory.

Everything is measured in one run, one method after another, with the same seed and batch sizes. The cost module is
reusable: :func:`measure_method` returns one method's numbers and :func:`cost_table` formats a list of them.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Sequence

from medsemiseg.atomic_io import atomic_write_text
from medsemiseg.tasks import TASKS as _TASKS

__all__ = [
    "TASKS",
    "measurable_methods",
    "CostSettings",
    "floor_units",
    "measure_method",
    "measure_variants",
    "run_cost_benchmark",
    "cost_table",
    "main",
]

#: the data-set shapes of the tasks (:data:`medsemiseg.tasks.TASKS`): (image channels, classes)
TASKS = {t.name: (t.in_channels, t.num_classes) for t in _TASKS.values()}

def measurable_methods() -> list[str]:
    """The registered methods that declare a FLOP floor (the listed ones first, in their order)."""
    from medsemiseg.methods import registry

    return [name for name, spec in registry.specs().items() if spec.floor is not None]


def floor_units(method: str, b_l: int, b_u: int) -> tuple[float, float, float]:
    """(F-units, E-units, G-units) of the FLOP floor of ``method`` with batch sizes ``b_l``, ``b_u``."""
    from medsemiseg.methods import registry

    floor = registry.get(method).floor
    if floor is None:
        raise ValueError(f"method {method!r} declares no FLOP floor; measurable: {measurable_methods()}")
    return floor.units(b_l, b_u)


@dataclasses.dataclass
class CostSettings:
    task: str = "covid"
    network: str = "unet"
    network_kwargs: dict = dataclasses.field(default_factory=dict)
    image_size: int = 64
    batch_size: int = 4
    unlabeled_batch_size: int = 4
    iters: int = 10
    warmup: int = 3
    device: str = "cpu"
    amp: bool = False
    threads: int | None = None
    seed: int = 0
    method_options: dict = dataclasses.field(default_factory=dict)
    #: autocast dtype with ``amp``: ``float16`` (GradScaler) or ``bfloat16`` (no scaler)
    amp_dtype: str = "float16"
    #: the training step's network compiled with torch.compile (:mod:`medsemiseg.engines.speed`)
    compile: bool = False
    #: torch.compile's mode; ``auto``: ``reduce-overhead`` (CUDA graphs) on CUDA, ``default`` elsewhere
    compile_mode: str = "auto"
    #: network and inputs in channels-last memory format
    channels_last: bool = False


# ---------------------------------------------------------------------------------------------------------------
# memory probes
# ---------------------------------------------------------------------------------------------------------------

def _status_kb(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


class _RssPeak:
    """Peak RSS growth over a block: VmHWM reset through /proc/self/clear_refs, else a 1 ms sampling thread."""

    def __init__(self) -> None:
        self.method = "none"
        self.base_kb = 0
        self.peak_kb = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        import gc

        gc.collect()
        self.base_kb = _status_kb("VmRSS") or 0
        try:
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")
            hwm = _status_kb("VmHWM")
            if hwm is not None and hwm <= self.base_kb + 1024:  # the reset took effect
                self.method = "VmHWM reset via /proc/self/clear_refs"
                return
        except OSError:
            pass
        self.method = "VmRSS sampled every 1 ms"
        self.peak_kb = self.base_kb

        def sample() -> None:
            while not self._stop.is_set():
                v = _status_kb("VmRSS") or 0
                self.peak_kb = max(self.peak_kb, v)
                time.sleep(0.001)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()

    def stop(self) -> float:
        """Peak growth in MiB."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
        else:
            self.peak_kb = _status_kb("VmHWM") or 0
        return max(self.peak_kb - self.base_kb, 0) / 1024.0


# ---------------------------------------------------------------------------------------------------------------
# one method
# ---------------------------------------------------------------------------------------------------------------

def _batches(s: CostSettings, n: int, in_ch: int, num_classes: int, labelled: bool, seed: int) -> list[dict]:
    """``n`` fixed batches: smooth random images and label maps with every class present (ClassMix/SupMix masks
    are then non-trivial), so every method does its full work."""
    import torch
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(seed)
    bs = s.batch_size if labelled else s.unlabeled_batch_size
    out = []
    for _ in range(n):
        field = torch.rand(bs, 1, s.image_size // 8, s.image_size // 8, generator=g)
        field = F.interpolate(field, size=(s.image_size, s.image_size), mode="bilinear", align_corners=False)
        img = field.repeat(1, in_ch, 1, 1) + 0.1 * torch.randn(bs, in_ch, s.image_size, s.image_size, generator=g)
        item = {"image": img.float()}
        if labelled:
            # K-1 per-image quantile thresholds -> K roughly equal-area classes
            q = torch.quantile(field.flatten(1), torch.linspace(0, 1, num_classes + 1)[1:-1], dim=1)  # (K-1, B)
            lab = sum((field > q[k].view(bs, 1, 1, 1)).long() for k in range(num_classes - 1))
            item["label"] = lab
        out.append(item)
    return out


def _count_flops(fn) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc:
        fn()
    return float(fc.get_total_flops())


def measure_method(method_name: str, s: CostSettings) -> dict[str, Any]:
    """Train ``method_name`` for ``s.warmup + s.iters + 1`` iterations and return its costs (see module doc)."""
    import torch
    from ignite.engine import Events

    from medsemiseg.engines import SemiSupervisedTrainer
    from medsemiseg.bundle.speed import training_network
    from medsemiseg.methods import create_method, registry
    from medsemiseg.networks import FeatureDiscriminator, get_network

    if s.threads:
        torch.set_num_threads(s.threads)
    device = torch.device(s.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda asked for, but torch sees no CUDA device; use --device cpu")
    in_ch, num_classes = TASKS[s.task]
    torch.manual_seed(s.seed)
    net = get_network(s.network, in_ch, num_classes, **s.network_kwargs).to(device)
    # what the trainer and the method call: ``net`` itself when eager (as the bundles do)
    train_net = training_network(net, device, s.compile, s.compile_mode, s.channels_last)
    options = dict(s.method_options.get(method_name, {}))
    spec = registry.get(method_name)
    if "warmup_iters" in spec.options:
        options.setdefault("warmup_iters", 0)  # measure the steady state: adversarial term on from the start
    method = create_method(method_name, train_net, num_classes, **options)
    opt = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9, weight_decay=1e-4)
    # compiled: no FLOP-counting iteration (the same work as eager, and the counter cannot see into compiled code)
    count_flops = not s.compile
    n_total = s.warmup + s.iters + (1 if count_flops else 0)
    lab = [{k: v.to(device) for k, v in b.items()} for b in _batches(s, 4, in_ch, num_classes, True, s.seed)]
    unl = None
    if getattr(method, "requires_unlabeled", True):
        unl = [{k: v.to(device) for k, v in b.items()} for b in _batches(s, 4, in_ch, num_classes, False, s.seed + 1)]
    trainer = SemiSupervisedTrainer(
        device=device, max_epochs=1, train_data_loader=lab, network=train_net, optimizer=opt, method=method,
        unlabeled_data_loader=unl, epoch_length=n_total, amp=s.amp, amp_dtype=s.amp_dtype, decollate=False,
    )

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    times: list[float] = []
    warmup_times: list[float] = []
    clock: dict[str, Any] = {}
    flops: dict[str, float] = {}
    flop_iter = n_total if count_flops else -1  # the last iteration is counted, not timed (the counter slows it down)

    @trainer.on(Events.ITERATION_STARTED)
    def _start(engine) -> None:
        if engine.state.iteration == flop_iter:
            from torch.utils.flop_counter import FlopCounterMode

            clock["fc"] = FlopCounterMode(display=False)
            clock["fc"].__enter__()
            return
        sync()
        clock["t"] = time.perf_counter()

    # attached last, so it runs after the method's own ITERATION_COMPLETED handlers (EMA update, ...)
    @trainer.on(Events.ITERATION_COMPLETED)
    def _stop(engine) -> None:
        if engine.state.iteration == flop_iter:
            clock["fc"].__exit__(None, None, None)
            flops["iter"] = float(clock["fc"].get_total_flops())
            return
        sync()
        (times if engine.state.iteration > s.warmup else warmup_times).append(time.perf_counter() - clock["t"])

    probe = _RssPeak() if device.type == "cpu" else None
    if device.type == "cuda":
        sync()
        torch.cuda.reset_peak_memory_stats(device)
        base_alloc = torch.cuda.memory_allocated(device)
    else:
        probe.start()
    trainer.run()
    sync()
    if device.type == "cuda":
        peak_mb = (torch.cuda.max_memory_allocated(device) - base_alloc) / 2**20
        mem_method = "torch.cuda.max_memory_allocated - memory_allocated before the first iteration"
    else:
        peak_mb = probe.stop()
        mem_method = f"peak RSS growth ({probe.method})"

    # one image through the network (F), its encoder (E) and a discriminator on its deepest features (G)
    net.eval()
    x1 = lab[0]["image"][:1]
    with torch.no_grad():
        f_img = _count_flops(lambda: net(x1))
        e_img = _count_flops(lambda: net.encode(x1))
        feat = net.encode(x1)[-1]
        disc = FeatureDiscriminator(in_channels=int(net.feature_channels)).to(device)
        g_img = _count_flops(lambda: disc(feat))
    fu, eu, gu = spec.floor.units(s.batch_size, s.unlabeled_batch_size) if spec.floor else (float("nan"),) * 3
    floor = fu * f_img + eu * e_img + gu * g_img
    q = statistics.quantiles(times, n=4) if len(times) >= 2 else [times[0]] * 3
    median = statistics.median(times)
    return {
        "method": method_name,
        "variant": "compiled" if s.compile else "eager",
        "compile_mode": (training_network_mode(s) if s.compile else None),
        "channels_last": bool(s.channels_last),
        "amp_dtype": s.amp_dtype if s.amp else None,
        "warmup_s": sum(warmup_times),
        # what the warm-up took beyond as many steady steps: torch.compile's one-off work when compiled
        "compile_s": max(sum(warmup_times) - len(warmup_times) * median, 0.0) if s.compile else 0.0,
        "s_per_iter": median,
        "s_per_iter_q1": q[0],
        "s_per_iter_q3": q[2],
        "timed_iters": len(times),
        "peak_mem_mb": peak_mb,
        "memory_method": mem_method,
        "flops_per_iter": flops.get("iter", float("nan")),
        "flops_floor": floor,
        "floor_F_units": fu,
        "floor_E_units": eu,
        "floor_G_units": gu,
        "flops_per_image_fwd": f_img,
        "flops_encoder_per_image_fwd": e_img,
        "flops_disc_per_image_fwd": g_img,
        "floor_passes": spec.floor.text if spec.floor else "",
    }


def training_network_mode(s: CostSettings) -> str:
    """The torch.compile mode ``s.compile_mode`` stands for on ``s.device``."""
    from medsemiseg.bundle.speed import compile_mode

    return compile_mode(s.compile_mode, s.device)


#: ``--compile`` choices -> the variants measured, in order
VARIANTS = {"off": ("eager",), "on": ("compiled",), "both": ("eager", "compiled")}


def measure_variants(method_name: str, s: CostSettings, variants: Sequence[str] = ("eager",)) -> list[dict[str, Any]]:
    """:func:`measure_method` for each variant (``"eager"``, ``"compiled"``) in this process, one after the other,
    from the same seed and batches; a compiled row gets ``x_eager``, its step time over the eager one's."""
    rows = [measure_method(method_name, dataclasses.replace(s, compile=(v == "compiled"))) for v in variants]
    eager = next((r for r in rows if r["variant"] == "eager"), None)
    for r in rows:
        if r["variant"] == "compiled" and eager is not None:
            r["x_eager"] = r["s_per_iter"] / eager["s_per_iter"]
            r["flops_per_iter"] = eager["flops_per_iter"]  # the same work; counted in the eager run
            r["flops_counted_in"] = "eager"
    return rows


# ---------------------------------------------------------------------------------------------------------------
# the whole table
# ---------------------------------------------------------------------------------------------------------------

def _machine(s: CostSettings) -> str:
    import torch

    if s.device.startswith("cuda") and torch.cuda.is_available():
        dev = torch.cuda.get_device_name(torch.device(s.device))
    else:
        cpu = platform.processor() or platform.machine()
        try:
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
        except OSError:
            pass
        dev = f"{cpu}, {os.cpu_count()} logical cores, torch threads {s.threads or torch.get_num_threads()}"
    return f"{dev}; torch {torch.__version__}; Python {platform.python_version()}; {platform.system()}"


def run_cost_benchmark(methods: Sequence[str], s: CostSettings, isolate: bool = True, log=print,
                       variants: Sequence[str] = ("eager",)) -> dict[str, Any]:
    """Measure every method in each of ``variants`` (``"eager"``, ``"compiled"``: :func:`measure_variants`), each
    method in its own subprocess when ``isolate`` (which the CPU memory numbers need), and return ``{"settings",
    "machine", "date", "variants", "results": [...]}`` with ratios to ``supervised`` of the same variant."""
    results = []
    for m in methods:
        log(f"[cost] measuring {m} ({' and '.join(variants)}) ...")
        if isolate:
            with tempfile.TemporaryDirectory() as tmp:
                out = Path(tmp) / "r.json"
                cmd = [sys.executable, "-m", "medsemiseg.benchmark.cost", "--_worker", m, "--_settings",
                       json.dumps(dataclasses.asdict(s)), "--_variants", ",".join(variants), "--_out", str(out)]
                proc = subprocess.run(cmd, capture_output=True, text=True)
                if proc.returncode != 0 or not out.is_file():
                    tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-15:])
                    log(f"[cost] {m} FAILED (exit {proc.returncode}):\n{tail}")
                    results += [{"method": m, "variant": v, "error": tail} for v in variants]
                    continue
                rows = json.loads(out.read_text())
        else:
            rows = measure_variants(m, s, variants)
        for r in rows:
            peak = ("n/a (in-process)" if not isolate and not s.device.startswith("cuda")
                    else f"+{r['peak_mem_mb']:.0f} MiB")
            extra = (f", {r['x_eager']:.2f} x eager, compile {r['compile_s']:.1f} s once"
                     if r.get("variant") == "compiled" and "x_eager" in r else "")
            log(f"[cost] {m} {r.get('variant', 'eager')}: {r['s_per_iter']:.3f} s/iter, peak {peak}, "
                f"{r['flops_per_iter'] / 1e9:.2f} GFLOP/iter (floor {r['flops_floor'] / 1e9:.2f}){extra}")
        results += rows
    for variant in variants:
        rows = [r for r in results if r.get("variant", "eager") == variant]
        ref = next((r for r in rows if r.get("method") == "supervised" and "error" not in r), None)
        for r in rows:
            if ref is not None and "error" not in r:
                r["time_x_supervised"] = r["s_per_iter"] / ref["s_per_iter"]
                r["mem_x_supervised"] = (r["peak_mem_mb"] / ref["peak_mem_mb"] if ref["peak_mem_mb"] > 0
                                         else float("nan"))
                r["flops_x_supervised"] = r["flops_per_iter"] / ref["flops_per_iter"]
            if "error" not in r:
                r["measured_over_floor"] = r["flops_per_iter"] / r["flops_floor"] if r["flops_floor"] else float("nan")
    return {
        "settings": dataclasses.asdict(s),
        "machine": _machine(s),
        "date": _dt.datetime.now().isoformat(timespec="seconds"),
        "command": "python -m medsemiseg.benchmark.cost " + " ".join(sys.argv[1:]),
        "in_process": not isolate,  # CPU peak memory is then not per method (cost_table prints n/a)
        "variants": list(variants),
        "results": results,
    }


def _speed_note(s: dict[str, Any]) -> str:
    """How the step ran, for a table's head: AMP and its dtype, channels-last, the compile mode."""
    parts = []
    if s.get("amp"):
        parts.append(f"AMP {s.get('amp_dtype') or 'float16'}")
    if s.get("channels_last"):
        parts.append("channels-last")
    return "".join(f" + {p}" for p in parts)


def cost_table(report: dict[str, Any]) -> str:
    """Markdown table of a :func:`run_cost_benchmark` report (with compiled rows: a variant column, each compiled
    step time over the eager one, and the compile time paid once)."""
    s = report["settings"]
    variants = report.get("variants") or ["eager"]
    both = "compiled" in variants
    mode = next((r.get("compile_mode") for r in report["results"] if r.get("compile_mode")), None)
    compiled_note = f"; compiled: torch.compile mode {mode!r}" if both and mode else ""
    head = (
        f"{s['task']} shapes, {s['network']} {s['image_size']}×{s['image_size']}, batch {s['batch_size']} labelled + "
        f"{s['unlabeled_batch_size']} unlabelled, {s['device']}{_speed_note(s)}, median of "
        f"{s['iters']} iterations after {s['warmup']} warm-up{compiled_note}; {report['machine']}; {report['date']}\n\n"
    )
    if both:
        lines = [
            "| method | variant | s/iter (IQR) | × eager | compile s (once) | × sup | peak mem MiB | × sup | GFLOP/iter | "
            "× sup | floor GFLOP | measured/floor | floor passes |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
    else:
        lines = [
            "| method | s/iter (IQR) | × sup | peak mem MiB | × sup | GFLOP/iter | × sup | floor GFLOP | measured/floor | floor passes |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
    for r in report["results"]:
        variant = r.get("variant", "eager")
        first = f"| {r['method']} | {variant} |" if both else f"| {r['method']} |"
        if "error" in r:
            lines.append(first + " failed |" + " |" * (11 if both else 8))
            continue
        mem_invalid = report.get("in_process") and not str(s["device"]).startswith("cuda")
        mem = "n/a (in-process)" if mem_invalid else f"{r['peak_mem_mb']:.0f}"
        mem_x = "n/a" if mem_invalid else f"{r.get('mem_x_supervised', float('nan')):.2f}"
        speed = ""
        if both:
            x_eager = f"{r['x_eager']:.2f}" if "x_eager" in r else ("1.00" if variant == "eager" else "–")
            comp = f"{r.get('compile_s', 0.0):.1f}" if variant == "compiled" else "–"
            speed = f" {x_eager} | {comp} |"
        lines.append(
            f"{first} {r['s_per_iter']:.3f} ({r['s_per_iter_q1']:.3f}–{r['s_per_iter_q3']:.3f}) |{speed} "
            f"{r.get('time_x_supervised', float('nan')):.2f} | {mem} | "
            f"{mem_x} | {r['flops_per_iter'] / 1e9:.2f} | "
            f"{r.get('flops_x_supervised', float('nan')):.2f} | {r['flops_floor'] / 1e9:.2f} | "
            f"{r['measured_over_floor']:.2f} | {r['floor_passes']} |"
        )
    mem = {r.get("memory_method") for r in report["results"] if "memory_method" in r}
    foot = "\n\nPeak memory: " + "; ".join(sorted(m for m in mem if m)) + "." if mem else ""
    if report.get("in_process") and not str(s["device"]).startswith("cuda"):
        foot += ("\n\nPeak memory not shown: measured --in-process, every method shares one process, so the peak "
                 "resident set size of a method includes the ones measured before it.")
    if both:
        foot += ("\n\nCompiled rows: × eager is the compiled median step time over the eager one of the same method "
                 "(measured one after the other in one process); compile s is the warm-up's wall time beyond as many "
                 "steady steps (paid once per process); their GFLOP/iter are the eager run's (the same work)."
                 + (" CPU peak memory of a compiled row includes the compiler's own." if
                    not str(s["device"]).startswith("cuda") else ""))
    return head + "\n".join(lines) + foot + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m medsemiseg.benchmark.cost", description=__doc__.split("\n\n")[0])
    p.add_argument("--methods", nargs="+", default=None,
                   help="methods to measure (supervised first); default: every registered method with a FLOP floor")
    p.add_argument("--task", choices=sorted(TASKS), default="covid", help="image channels / classes of this task")
    p.add_argument("--network", default="unet")
    p.add_argument("--network-kwargs", default="{}", help='JSON, e.g. \'{"features": [16,32,64,128,256,16]}\'')
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=4, help="labelled batch size")
    p.add_argument("--unlabeled-batch-size", type=int, default=4)
    p.add_argument("--iters", type=int, default=10, help="timed iterations per method")
    p.add_argument("--warmup", type=int, default=3, help="untimed iterations first")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:k]")
    p.add_argument("--amp", action="store_true", help="autocast (CUDA; on the CPU with --amp-dtype bfloat16 only)")
    p.add_argument("--amp-dtype", choices=["float16", "bfloat16"], default="float16",
                   help="autocast dtype: float16 (with a GradScaler) or bfloat16 (no scaler)")
    p.add_argument("--compile", choices=sorted(VARIANTS), default="off",
                   help="off: eager only; on: compiled only; both: eager and compiled, side by side in one process "
                        "per method, with the ratio and the compile time")
    p.add_argument("--compile-mode", default="auto",
                   help="torch.compile mode (auto: reduce-overhead, i.e. CUDA graphs, on CUDA; default elsewhere)")
    p.add_argument("--channels-last", action="store_true", help="network and inputs in channels-last memory format")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    p.add_argument("--method-options", default="{}", help='JSON {method: {option: value}}')
    p.add_argument("--in-process", action="store_true", help="no subprocess per method (CPU memory then invalid)")
    p.add_argument("--json", help="write the full report here")
    p.add_argument("--markdown", help="write the Markdown table here")
    p.add_argument("--_worker", help=argparse.SUPPRESS)
    p.add_argument("--_settings", help=argparse.SUPPRESS)
    p.add_argument("--_out", help=argparse.SUPPRESS)
    p.add_argument("--_variants", default="eager", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a._worker:
        s = CostSettings(**json.loads(a._settings))
        atomic_write_text(a._out, json.dumps(measure_variants(a._worker, s, a._variants.split(","))))
        return 0
    measurable = measurable_methods()
    a.methods = measurable if a.methods is None else a.methods
    unknown = [m for m in a.methods if m not in measurable]
    if unknown:
        p.error(f"unknown method(s) {unknown}; choose from {measurable} (the registered methods with a FLOP floor)")
    if a.amp and not a.device.startswith("cuda") and a.amp_dtype != "bfloat16":
        p.error("--amp on the CPU needs --amp-dtype bfloat16 (float16 autocast is CUDA's); or use --device cuda")
    from medsemiseg.bundle.settings import BundleConfigError
    from medsemiseg.bundle.speed import compile_mode

    try:
        compile_mode(a.compile_mode, a.device, key="compile-mode")
    except BundleConfigError as e:
        p.error(str(e))
    try:
        s = CostSettings(
            task=a.task, network=a.network, network_kwargs=json.loads(a.network_kwargs), image_size=a.image_size,
            batch_size=a.batch_size, unlabeled_batch_size=a.unlabeled_batch_size, iters=a.iters, warmup=a.warmup,
            device=a.device, amp=a.amp, threads=a.threads, method_options=json.loads(a.method_options),
            amp_dtype=a.amp_dtype, compile_mode=a.compile_mode, channels_last=a.channels_last,
        )
    except json.JSONDecodeError as e:
        p.error(f"--network-kwargs / --method-options must be JSON: {e}")
    if a.iters < 2:
        p.error("--iters must be at least 2 (median and quartiles)")
    if a.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            print("error: --device cuda asked for, but torch sees no CUDA device; use --device cpu", file=sys.stderr)
            return 2
    report = run_cost_benchmark(a.methods, s, isolate=not a.in_process, variants=VARIANTS[a.compile])
    table = cost_table(report)
    print(table)
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(a.json, json.dumps(report, indent=2))
    if a.markdown:
        Path(a.markdown).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(a.markdown, table)
    return 1 if any("error" in r for r in report["results"]) else 0


if __name__ == "__main__":
    sys.exit(main())
