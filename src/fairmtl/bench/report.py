"""Turn the results store into the papers' tables and plots.

The table has one row per method (mean and standard error over seeds of each task's
test metrics at the selected epoch), the single-task baseline row (STL: task ``k``'s
metrics from the ``stl:k`` runs), the mean rank MR over the compared methods, Delta m%
against STL (computed per seed, then averaged) and the relative training time T
(training wall-clock time over LS's). It is written as Markdown and CSV; the plots show
each task's validation metrics per epoch and the task weights over time.
"""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from fairmtl.bench.base import Benchmark, require
from fairmtl.bench.store import ResultsStore, Run
from fairmtl.metrics import delta_m, mean_and_stderr, mean_rank, relative_time

_TIME_REFERENCE = "ls"
"""T is training time relative to linear scalarisation (LS, also called EW)."""


@dataclass
class MethodRow:
    """One method's aggregated results over its seeds."""

    method: str
    seeds: list[int]
    values: list[tuple[float, float]]  # (mean, standard error) per metric column
    delta_m: tuple[float, float] | None = None
    mean_rank: float | None = None
    time: float | None = None  # mean training seconds
    relative_time: float | None = None
    runs: list[Run] = field(default_factory=list)


@dataclass
class Report:
    benchmark: str
    config: str
    columns: list[str]  # "task/metric"
    higher_is_better: list[bool]
    stl: MethodRow | None
    rows: list[MethodRow]
    notes: list[str]


def _stats(values: Sequence[float]) -> tuple[float, float]:
    """Mean and standard error; NaN when a seed diverged (shown in the table, not hidden)."""
    if all(math.isfinite(v) for v in values):
        return mean_and_stderr(values)
    return (math.nan, math.nan)


def _order(bench: Benchmark, methods: Sequence[str]) -> list[str]:
    known = {m: i for i, m in enumerate(bench.default_methods)}
    return sorted(methods, key=lambda m: (known.get(m, len(known)), m))


def build_report(store: ResultsStore, bench: Benchmark, config: str) -> Report:
    """Aggregate the finished runs of ``bench`` under configuration label ``config``."""
    columns = [f"{task}/{spec.name}" for task, spec in bench.metric_columns()]
    hib = [spec.higher_is_better for _, spec in bench.metric_columns()]
    runs = store.runs(benchmark=bench.name, config_name=config, status="finished")
    if not runs:
        raise LookupError(
            f"no finished runs of benchmark {bench.name!r} with configuration {config!r} in {store.path}"
        )
    by_method: dict[str, list[Run]] = defaultdict(list)
    for run in runs:
        by_method[run.method].append(run)
    notes: list[str] = []

    def test_values(run: Run) -> list[float]:
        test = store.final_metrics(run.id).get("test", {})
        missing = [c for c in columns if c not in test]
        if missing:
            raise LookupError(f"run {run.key!r} has no test metric {missing[0]!r} in the store")
        return [test[c] for c in columns]

    # Single-task baseline: column c of task k from the stl:k runs.
    stl: MethodRow | None = None
    stl_values: list[list[float]] = [[] for _ in columns]
    for k, task in enumerate(bench.tasks):
        for run in by_method.get(f"stl:{k}", []):
            values = test_values(run)
            for i, (name, _) in enumerate(bench.metric_columns()):
                if name == task.name:
                    stl_values[i].append(values[i])
    if all(stl_values):
        stl = MethodRow("STL", [], [_stats(v) for v in stl_values])
    else:
        notes.append("No single-task baseline for every task (run stl:K): Delta m% is not shown.")

    rows: list[MethodRow] = []
    for method in _order(bench, [m for m in by_method if not m.startswith("stl:")]):
        method_runs = sorted(by_method[method], key=lambda r: r.seed)
        per_seed = [test_values(r) for r in method_runs]
        row = MethodRow(
            method,
            [r.seed for r in method_runs],
            [_stats([s[i] for s in per_seed]) for i in range(len(columns))],
            runs=method_runs,
        )
        base = [v[0] for v in stl.values] if stl is not None else []
        if stl is not None and all(math.isfinite(b) and b != 0 for b in base):
            finite = all(math.isfinite(v) for s in per_seed for v in s)
            row.delta_m = (
                _stats([delta_m(s, base, hib) for s in per_seed]) if finite else (math.nan, math.nan)
            )
        seconds = [r.train_seconds for r in method_runs if r.train_seconds is not None]
        row.time = sum(seconds) / len(seconds) if seconds else None
        rows.append(row)
    if not rows:
        raise LookupError(f"no finished multi-task runs of {bench.name!r} ({config!r}) in {store.path}")
    ranked = [r for r in rows if all(math.isfinite(v[0]) for v in r.values)]
    if len(ranked) < len(rows):
        notes.append("Methods with non-finite results (a diverged seed) are not ranked.")
    if len(ranked) > 1:
        ranks = mean_rank({r.method: [v[0] for v in r.values] for r in ranked}, hib)
        for r in ranked:
            r.mean_rank = ranks[r.method]
    times: dict[str, float] = {r.method: r.time for r in rows if r.time is not None}
    if not times.get(_TIME_REFERENCE):
        notes.append("No LS run: T is not shown (it is training time relative to LS).")
    else:
        ratios = relative_time(times, _TIME_REFERENCE)
        for r in rows:
            r.relative_time = ratios.get(r.method)
    seeds = sorted({s for r in rows for s in r.seeds})
    notes.append(
        f"Test metrics at the selected epoch; mean ± standard error over seeds {seeds}. "
        "Delta m% against STL (lower is better), MR = mean rank over the methods shown, "
        "T = training time relative to LS on this machine."
    )
    return Report(bench.name, config, columns, hib, stl, rows, notes)


def _fmt(mean: float, se: float, digits: int = 2) -> str:
    if not math.isfinite(mean):
        return str(mean)
    return f"{mean:.{digits}f}" if se == 0 else f"{mean:.{digits}f} ± {se:.{digits}f}"


def to_markdown(report: Report) -> str:
    arrows = [("↑" if h else "↓") for h in report.higher_is_better]
    header = ["Method"] + [f"{c} {a}" for c, a in zip(report.columns, arrows)]
    header += ["MR ↓", "Δm% ↓", "T"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    if report.stl is not None:
        cells = ["STL"] + [_fmt(m, s) for m, s in report.stl.values] + ["", "", ""]
        lines.append("| " + " | ".join(cells) + " |")
    for r in report.rows:
        cells = [r.method] + [_fmt(m, s) for m, s in r.values]
        cells.append("" if r.mean_rank is None else f"{r.mean_rank:.2f}")
        cells.append("" if r.delta_m is None else _fmt(*r.delta_m))
        cells.append("" if r.relative_time is None else f"{r.relative_time:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    title = f"## {report.benchmark} ({report.config})\n\n"
    return title + "\n".join(lines) + "\n\n" + "\n".join(f"- {n}" for n in report.notes) + "\n"


def published_markdown(benchmark: str) -> str:
    """The published tables of ``benchmark`` (:mod:`fairmtl.bench.published`), or ``""``."""
    from fairmtl.bench.published import PUBLISHED

    tables = PUBLISHED.get(benchmark, [])
    parts = []
    for table in tables:
        header = ["Method"] + [f"{m.name} {'↑' if m.higher_is_better else '↓'}" for m in table.metrics]
        header += ["MR ↓", "Δm% ↓"]
        lines = [f"### Published: {table.source}", "",
                 "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]  # fmt: skip
        if table.stl is not None:
            lines.append("| STL | " + " | ".join(f"{v:g}" for v in table.stl) + " |  |  |")
        methods = list(dict.fromkeys([*table.rows, *table.delta_m, *table.mean_rank]))
        for method in methods:
            row = table.rows.get(method)
            cells = [f"{v:g}" for v in row] if row is not None else [""] * len(table.metrics)
            mr, dm = table.mean_rank.get(method), table.delta_m.get(method)
            cells += ["" if mr is None else f"{mr:g}", "" if dm is None else f"{dm:g}"]
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
        if table.notes:
            lines += ["", table.notes]
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + ("\n" if parts else "")


def write_csv(report: Report, path: Path) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        head = ["method", "seeds"]
        for c in report.columns:
            head += [c, f"{c} se"]
        w.writerow(head + ["mr", "delta_m", "delta_m se", "train_seconds", "T"])
        rows = ([report.stl] if report.stl is not None else []) + report.rows
        for r in rows:
            cells: list[object] = [r.method, " ".join(map(str, r.seeds))]
            for m, s in r.values:
                cells += [m, s]
            cells += [
                r.mean_rank if r.mean_rank is not None else "",
                r.delta_m[0] if r.delta_m else "",
                r.delta_m[1] if r.delta_m else "",
                r.time if r.time is not None else "",
                r.relative_time if r.relative_time is not None else "",
            ]
            w.writerow(cells)


def _mean_curve(curves: list[list[tuple[int, float]]]) -> tuple[list[int], list[float]]:
    by_epoch: dict[int, list[float]] = defaultdict(list)
    for curve in curves:
        for epoch, value in curve:
            by_epoch[epoch].append(value)
    epochs = sorted(by_epoch)
    return epochs, [sum(by_epoch[e]) / len(by_epoch[e]) for e in epochs]


def plot_report(store: ResultsStore, report: Report, out: Path) -> list[Path]:
    """Learning curves (validation metrics per epoch) and task weights over time, as PNG."""
    require("matplotlib", "plot")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stem = f"{report.benchmark}_{report.config}"
    paths = []
    n = len(report.columns)
    cols = min(n, 3)
    nrows = -(-n // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(5 * cols, 3.6 * nrows), squeeze=False)
    colours = plt.get_cmap("tab20")
    for i, column in enumerate(report.columns):
        ax = axes[i // cols][i % cols]
        for j, r in enumerate(report.rows):
            curves = [store.epoch_metrics(run.id).get("val", {}).get(column, []) for run in r.runs]
            epochs, values = _mean_curve(curves)
            style = "-" if j < 20 else "--"  # 20 distinct colours, then dashed
            ax.plot(epochs, values, style, color=colours(j % 20), label=r.method)
        ax.set_title(f"val {column}")
        ax.set_xlabel("epoch")
    for j in range(n, nrows * cols):
        axes[j // cols][j % cols].axis("off")
    axes[0][0].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    paths.append(out / f"{stem}_curves.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    rows = [r for r in report.rows if any(store.task_weights(run.id) for run in r.runs)]
    if rows:
        cols = min(len(rows), 4)
        nrows = -(-len(rows) // cols)
        fig, axes = plt.subplots(nrows, cols, figsize=(4 * cols, 3 * nrows), squeeze=False)
        for i, r in enumerate(rows):
            ax = axes[i // cols][i % cols]
            weights = store.task_weights(r.runs[0].id)
            for task in range(len(weights[0][1])):
                ax.plot([e for e, _ in weights], [w[task] for _, w in weights], label=f"task {task}")
            ax.set_title(f"{r.method} (seed {r.runs[0].seed})", fontsize=9)
            ax.set_xlabel("epoch")
        for j in range(len(rows), nrows * cols):
            axes[j // cols][j % cols].axis("off")
        axes[0][0].legend(fontsize=7)
        fig.suptitle("mean task weight per epoch (loss weight x aggregator weight)")
        fig.tight_layout()
        paths.append(out / f"{stem}_weights.png")
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)
    return paths


def write_report(
    store: ResultsStore, bench: Benchmark, config: str, out: str | Path, plots: bool = True
) -> tuple[Report, list[Path]]:
    """Build the report and write ``<bench>_<config>_table.md``/``.csv`` (and plots) to ``out``."""
    report = build_report(store, bench, config)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"{report.benchmark}_{report.config}"
    md = out / f"{stem}_table.md"
    published = published_markdown(bench.name)
    md.write_text(to_markdown(report) + ("\n" + published if published else ""))
    csv_path = out / f"{stem}_table.csv"
    write_csv(report, csv_path)
    paths = [md, csv_path]
    if plots:
        paths += plot_report(store, report, out)
    return report, paths


def success_report(
    store: ResultsStore, benchmark: str, config: str, out: str | Path, plots: bool = True
) -> tuple[str, list[Path]]:
    """The reinforcement-learning table (MT10, FairGrad Table 4) and success curves.

    One row per method: the best mean success rate over training (as published) and the
    final one, mean ± standard error over seeds, each task's success at the best
    evaluation, and T (training time relative to LS). The published table follows.
    """
    runs = store.runs(benchmark=benchmark, config_name=config)
    runs = [r for r in runs if store.epoch_seconds(r.id)]
    if not runs:
        raise LookupError(f"no runs of {benchmark!r} with configuration {config!r} in {store.path}")
    by_method: dict[str, list[Run]] = defaultdict(list)
    for run in runs:
        by_method[run.method].append(run)
    tasks: list[str] = []
    rows: list[tuple[str, list[int], tuple[float, float], tuple[float, float], list[float], str, int]] = []
    times: dict[str, float] = {}
    for method in sorted(by_method, key=lambda m: (m != _TIME_REFERENCE, m)):
        group = sorted(by_method[method], key=lambda r: r.seed)
        best: list[float] = []
        final: list[float] = []
        per_task: dict[str, list[float]] = defaultdict(list)
        status: set[str] = set()
        for run in group:
            curve = store.epoch_metrics(run.id).get("eval", {})
            means = curve.get("mean/success", [])
            top = max(means, key=lambda ev: (ev[1], -ev[0]))
            best.append(top[1])
            final.append(means[-1][1])
            for name, values in curve.items():
                if name != "mean/success":
                    per_task[name].append(dict(values)[top[0]])
            status.add(run.status)
        tasks = sorted(per_task) if not tasks else tasks
        seconds = [r.train_seconds or sum(s for _, s in store.epoch_seconds(r.id)) for r in group]
        times[method] = sum(seconds) / len(seconds)
        steps = [e for e, _ in store.epoch_seconds(group[0].id)][-1] * int(group[0].config.get("eval_every", 1))
        rows.append((method, [r.seed for r in group], _stats(best), _stats(final),
                     [_stats(per_task[t])[0] for t in tasks], "/".join(sorted(status)), steps))  # fmt: skip
    ratios = relative_time(times, _TIME_REFERENCE) if times.get(_TIME_REFERENCE) else {}
    head = ["Method", "seeds", "best mean success ↑", "final mean success ↑", "T", "status", "steps"]
    head += [t.removesuffix("/success") for t in tasks]
    lines = [f"## {benchmark} ({config})", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for method, seeds, b, f, per, run_status, steps in rows:
        t = ratios.get(method)
        cells = [method, " ".join(map(str, seeds)), _fmt(*b, digits=3), _fmt(*f, digits=3),
                 "" if t is None else f"{t:.2f}", run_status, str(steps)] + [f"{v:.2f}" for v in per]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        (
            "- Success rates of the deterministic policy at each evaluation; best = the best "
            "mean over training (as published), per-task columns at that evaluation; mean ± "
            "standard error over seeds. T = training time relative to LS on this machine."
        ),
    ]
    text = "\n".join(lines) + "\n"
    published = published_markdown(benchmark)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    md = out / f"{benchmark}_{config}_table.md"
    md.write_text(text + ("\n" + published if published else ""))
    paths = [md]
    if plots:
        require("matplotlib", "plot")
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4))
        for method, group in sorted(by_method.items()):
            every = int(group[0].config.get("eval_every", 1))
            curves = [store.epoch_metrics(r.id).get("eval", {}).get("mean/success", []) for r in group]
            epochs, avg = _mean_curve(curves)
            ax.plot([e * every for e in epochs], avg, label=method)
        ax.set_xlabel("environment steps (all tasks per step)")
        ax.set_ylabel("mean success rate")
        ax.legend(fontsize=8)
        fig.tight_layout()
        paths.append(out / f"{benchmark}_{config}_success.png")
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)
    return text, paths
