"""From `runs.jsonl` to the study's answer: the table (mean ± SD, paired Δ with Holm-adjusted
p-values and intervals), the ablation, the convergence check and the figures."""

from __future__ import annotations

import os
import re
import statistics
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ecab_tune.reporting import plots
from ecab_tune.reporting.document import rebuild_block
from ecab_tune.reporting.stats import Contrast, holm, mean_std, paired_contrast
from ecab_tune.study.spec import Criteria, StudySpec

TABLE = "table.md"
PAIRED, CURVES, PARAMS = "paired_differences.png", "learning_curves.png", "accuracy_vs_params.png"
FIGURES = {  # file: what it shows, in the README's order
    PAIRED: "every seed's paired difference, with both intervals",
    CURVES: "mean validation accuracy per epoch",
    PARAMS: "test accuracy vs parameters",
}
Rows = list[dict[str, Any]]


def _by_arm(rows: Rows, group: str, epochs: int) -> dict[str, dict[int, dict[str, Any]]]:
    out: dict[str, dict[int, dict[str, Any]]] = defaultdict(dict)
    for r in rows:
        if r["group"] in (group, "main") and r["epochs"] == epochs:
            out[r["arm"]][r["seed"]] = r
    return out


def _contrast(name: str, a: dict[int, Any], b: dict[int, Any]) -> Contrast | None:
    seeds = sorted(set(a) & set(b))
    if len(seeds) < 2:
        return None
    return paired_contrast(
        name, [a[s]["test_acc"] for s in seeds], [b[s]["test_acc"] for s in seeds]
    )


def _main_pairs(spec: StudySpec) -> list[tuple[str, str]]:
    """The planned family: every arm vs the baseline, and the focus arm vs every other arm."""
    pairs = [(a, spec.baseline) for a in spec.arms if a != spec.baseline]
    return pairs + [(spec.focus, a) for a in spec.arms if a not in (spec.focus, spec.baseline)]


def main_family(spec: StudySpec, rows: Rows) -> list[Contrast]:
    """The planned family's contrasts estimable so far (two or more paired seeds), Holm-adjusted
    over the whole planned family."""
    arms = _by_arm(rows, "main", spec.train.epochs)
    pairs = _main_pairs(spec)
    found = [_contrast(f"{a} − {b}", arms.get(a, {}), arms.get(b, {})) for a, b in pairs]
    return holm([c for c in found if c is not None], family=len(pairs))


def ablation_family(spec: StudySpec, rows: Rows) -> list[Contrast]:
    arms = _by_arm(rows, "ablation", spec.train.epochs)
    found = [
        _contrast(f"{a} − {spec.focus}", arms.get(a, {}), arms.get(spec.focus, {}))
        for a in spec.ablations
    ]
    return holm([c for c in found if c is not None], family=len(spec.ablations))


def _pp(x: float) -> str:
    return f"{100 * x:+.2f}"


def _cell(c: Contrast | None, *counts: int) -> str:
    """A contrast; `counts`: the two arms' runs. Δ pairs the seeds both have: where that is
    fewer than either arm's n, it is not the difference of the means shown, so it says so."""
    if c is None:
        return "—"
    star = " *" if c.p_holm < 0.05 else ""
    pairs = f" ({len(c.diffs)} pairs)" if len(c.diffs) < max(counts) else ""
    return (
        f"{_pp(c.mean)} [{_pp(c.low)}, {_pp(c.high)}] · Holm [{_pp(c.adj_low)}, "
        f"{_pp(c.adj_high)}] p={c.p_holm:.3f}{star}{pairs}"
    )


def _accuracy(mean: float, sd: float, n: int) -> str:
    return f"{100 * mean:.2f} ± {100 * sd:.2f}" if n > 1 else f"{100 * mean:.2f}"


def _seconds(runs: Rows) -> str:
    """Mean seconds a run, per device where they differ: an H200's minutes and a CPU's hours
    averaged together would describe neither."""
    by_device: dict[str, list[float]] = defaultdict(list)
    for r in runs:
        by_device[r["device"]].append(r["seconds"])
    if len(by_device) == 1:
        return f"{statistics.fmean(*by_device.values()):,.0f}"
    return "; ".join(f"{statistics.fmean(s):,.0f} ({d})" for d, s in sorted(by_device.items()))


def _summary_rows(
    arms: dict[str, dict[int, dict[str, Any]]], labels: Sequence[str]
) -> list[tuple[str, int, str, int, float, str]]:
    out = []
    for label in labels:
        runs = list(arms.get(label, {}).values())
        if not runs:
            continue
        mean, sd = mean_std([r["test_acc"] for r in runs])
        acc = _accuracy(mean, sd, len(runs))
        out.append(
            (
                label,
                len(runs),
                acc,
                runs[0]["params"],
                runs[0]["macs"] / 1e6,
                _seconds(runs),
            )
        )
    return out


def format_report(spec: StudySpec, rows: Rows) -> str:
    """The Markdown the README's study section is rebuilt from."""
    arms = _by_arm(rows, "main", spec.train.epochs)
    family = {c.name: c for c in main_family(spec, rows)}
    lines = [
        f"# Study `{spec.name}`: {spec.model} on {spec.data.dataset}, "
        f"{spec.train.epochs} epochs, seeds 0–{spec.seeds - 1}",
        "",
        f"| arm | n | test acc % (mean ± SD) | Δ vs {spec.baseline}, points [95% CI] · "
        f"Holm-adjusted | Δ {spec.focus} − arm · Holm-adjusted | params | MACs (M) | s/run |",
        "|---|---|---|---|---|---|---|---|",
    ]
    n_base, n_focus = len(arms.get(spec.baseline, {})), len(arms.get(spec.focus, {}))
    for label, n, acc, params, macs, secs in _summary_rows(arms, list(spec.arms)):
        vs_base = family.get(f"{label} − {spec.baseline}")
        vs_focus = family.get(f"{spec.focus} − {label}")
        if label == spec.focus:
            vs_focus = None
        base, focus = _cell(vs_base, n, n_base), _cell(vs_focus, n, n_focus)
        lines.append(
            f"| {label} | {n} | {acc} | {base} | {focus} | {params:,} | {macs:.2f} | {secs} |"
        )
    planned = len(_main_pairs(spec))
    so_far = (
        ""
        if len(family) == planned
        else f" ({len(family)} estimable so far, with 2 or more paired seeds; the others count "
        "as p = 1 until then)"
    )
    lines += [
        "",
        f"SD: standard deviation over seeds. Δ: mean of the per-seed paired differences in test "
        f"accuracy (same seed: same initial trunk weights, data order and augmentation), over "
        "the seeds both arms have ('k pairs' where fewer than either arm's n); "
        f"[95% CI] from a paired t-test; Holm: the {planned} planned contrasts form one "
        f"family{so_far}, p-values Holm-adjusted, the interval at the level Holm's step tested "
        "that contrast (from the first contrast Holm retains on, at that step's level), so it "
        "excludes 0 exactly where p_Holm < 0.05 (*).",
    ]
    shared = all(len(h) == 1 for h in _per_seed(spec, rows, "init_hash").values())
    pairing = "one `init_hash` per seed across all arms" if shared else "NOT shared (check init)"
    lines.append(f"Initial trunk weights: {pairing}.")
    lines.append(_devices_line(spec, rows))
    lines += _diverged_lines(rows)
    lines += _ablation_lines(spec, rows) + _convergence_lines(spec, rows)
    lines += _criteria_lines(spec, rows) + _cost_lines(rows)
    return "\n".join(lines) + "\n"


def _per_seed(spec: StudySpec, rows: Rows, field: str) -> dict[int, set[Any]]:
    """Each seed's distinct values of `field` over the runs at the study's budget (main and
    ablation alike: every pair is formed within a seed)."""
    values: dict[int, set[Any]] = defaultdict(set)
    for r in rows:
        if r["epochs"] == spec.train.epochs:
            values[r["seed"]].add(r[field])
    return values


def _devices_line(spec: StudySpec, rows: Rows) -> str:
    """Whether each seed's runs trained on one device: a pair split between a GPU (TF32
    convolutions) and a CPU would carry the device's effect into its difference."""
    devices = _per_seed(spec, rows, "device")
    mixed = {seed: sorted(d) for seed, d in sorted(devices.items()) if len(d) > 1}
    if not mixed:
        return "Devices: each seed's runs on one device."
    where = "; ".join(f"seed {seed}: {', '.join(d)}" for seed, d in mixed.items())
    return f"Devices: MIXED within a seed ({where}): those pairs include a device effect."


def _diverged_lines(rows: Rows) -> list[str]:
    """The runs that diverged: each counts with its final model's accuracy (near chance), so
    its arm's mean, SD and paired differences say more about it than about the arm."""
    runs = [
        f"`{r['arm']}` seed {r['seed']} (epoch {len(r['val_acc'])} of {r['epochs']})"
        for r in rows
        if r.get("status") == "diverged"
    ]
    if not runs:
        return []
    return [f"Diverged (counted: its final model's test accuracy): {'; '.join(runs)}."]


def _ablation_lines(spec: StudySpec, rows: Rows) -> list[str]:
    if not spec.ablations:
        return []
    arms = _by_arm(rows, "ablation", spec.train.epochs)
    if not any(arms.get(label) for label in spec.ablations):
        return []
    family = {c.name: c for c in ablation_family(spec, rows)}
    seeds = range(spec.ablation_seeds)
    focus = {s: r for s, r in arms.get(spec.focus, {}).items() if s in seeds}
    lines = [
        "",
        f"## Ablation (seeds 0–{spec.ablation_seeds - 1}; Δ paired with `{spec.focus}`, "
        f"Holm over the {len(spec.ablations)} planned contrasts)",
        "",
        "| arm | options | n | test acc % | Δ arm − " + spec.focus + " · Holm-adjusted |",
        "|---|---|---|---|---|",
    ]
    for label in [spec.focus, *spec.ablations]:
        runs = focus if label == spec.focus else arms.get(label, {})
        if not runs:
            continue
        mean, sd = mean_std([r["test_acc"] for r in runs.values()])
        options = ", ".join(f"{k}={v}" for k, v in spec.all_arms()[label].options.items())
        acc = _accuracy(mean, sd, len(runs))
        contrast = family.get(f"{label} − {spec.focus}")
        cell = "—" if label == spec.focus else _cell(contrast, len(runs), len(focus))
        lines.append(f"| {label} | {options or '(defaults)'} | {len(runs)} | {acc} | {cell} |")
    return lines


def criteria_status(spec: StudySpec, rows: Rows) -> list[tuple[str, str, str]]:
    """(criterion, where it stands, met / not met / pending) for the study file's criteria.
    A criterion over seeds stays pending until every seed of its arms has finished."""
    c, arms = spec.criteria, _by_arm(rows, "main", spec.train.epochs)
    total = spec.seeds * len(spec.arms)
    done = sum(len(arms.get(a, {})) for a in spec.arms)
    ran = "met" if done == total else "pending"
    out = [("main runs, every arm at every seed", f"{done} of {total}", ran)]

    def settled(*labels: str) -> bool:
        return all(len(arms.get(a, {})) >= spec.seeds for a in labels)

    if c.baseline_min_test_pct is not None:
        name = f"`{spec.baseline}` mean test accuracy ≥ {c.baseline_min_test_pct:.2f} %"
        runs = list(arms.get(spec.baseline, {}).values())
        now, verdict = "no run yet", "pending"
        if runs:
            mean = 100 * statistics.fmean(r["test_acc"] for r in runs)
            now = f"{mean:.2f} % (n={len(runs)})"
            if settled(spec.baseline):
                verdict = _verdict(mean >= c.baseline_min_test_pct)
        out.append((name, now, verdict))
    for other in c.ci_arms if c.max_ci_half_width_points is not None else ():
        pair = f"{spec.focus} − {other}"
        name = f"95% CI half-width of `{pair}` ≤ {c.max_ci_half_width_points:.2f} points"
        found = _contrast(pair, arms.get(spec.focus, {}), arms.get(other, {}))
        now, verdict = "fewer than 2 paired seeds", "pending"
        if found is None and settled(spec.focus, other):  # one seed: no interval, ever
            verdict = "not met: add seeds"
        if found is not None:
            half = 100 * found.half_width
            now = f"±{half:.2f} points (n={len(found.diffs)})"
            if settled(spec.focus, other):
                verdict = "met" if half <= c.max_ci_half_width_points else "not met: add seeds"
        out.append((name, now, verdict))
    if c.convergence_max_gain_points is not None:
        name = f"doubling the epochs adds < {c.convergence_max_gain_points:.2f} points"
        gains = {
            long["seed"]: 100 * (long["test_acc"] - short) for long, short in _doubled(spec, rows)
        }
        now = ", ".join(f"seed {s}: {g:+.2f} points" for s, g in gains.items()) or "not run"
        verdict = "pending"
        if gains and len(gains) >= spec.convergence_seeds:
            verdict = _verdict(max(gains.values()) < c.convergence_max_gain_points)
        out.append((name, now, verdict))
    return out


def _verdict(ok: bool) -> str:
    return "met" if ok else "not met"


def _criteria_lines(spec: StudySpec, rows: Rows) -> list[str]:
    if spec.criteria == Criteria():
        return []
    return [
        "",
        "## Done when (the study file's criteria)",
        "",
        "| criterion | now | status |",
        "|---|---|---|",
        *(f"| {name} | {now} | {verdict} |" for name, now, verdict in criteria_status(spec, rows)),
    ]


def _doubled(spec: StudySpec, rows: Rows) -> list[tuple[dict[str, Any], float]]:
    """Each convergence run, with the test accuracy of its seed's run at the study's epochs."""
    base = _by_arm(rows, "main", spec.train.epochs).get(spec.convergence_arm or "", {})
    return [
        (r, base[r["seed"]]["test_acc"])
        for r in rows
        if r["group"] == "convergence" and r["seed"] in base
    ]


def _convergence_lines(spec: StudySpec, rows: Rows) -> list[str]:
    out = [
        f"Convergence: `{r['arm']}` seed {r['seed']}: {spec.train.epochs} epochs "
        f"{100 * short:.2f} %, {r['epochs']} epochs {100 * r['test_acc']:.2f} % "
        f"(doubling adds {100 * (r['test_acc'] - short):+.2f} points)."
        for r, short in _doubled(spec, rows)
    ]
    return ["", *out] if out else []


def _cost_lines(rows: Rows) -> list[str]:
    by_device: dict[str, float] = defaultdict(float)
    for r in rows:
        by_device[r["device"]] += r["seconds"]
    parts = [f"{secs / 3600:.2f} h on {dev}" for dev, secs in sorted(by_device.items())]
    return ["", f"Compute: {len(rows)} runs, {'; '.join(parts)} (summed over runs)."]


def write_figures(spec: StudySpec, rows: Rows, out: Path) -> list[Path]:
    arms = _by_arm(rows, "main", spec.train.epochs)
    points, curves = {}, {}
    for label in spec.arms:
        runs = list(arms.get(label, {}).values())
        if not runs:
            continue
        mean, sd = mean_std([r["test_acc"] for r in runs])
        points[label] = (runs[0]["params"], mean, sd)
        curves[label] = [
            statistics.fmean(r["val_acc"][e] for r in runs if len(r["val_acc"]) > e)
            for e in range(max(len(r["val_acc"]) for r in runs))
        ]
    figures = []
    if points:
        figures.append(plots.accuracy_vs_params(points, out / PARAMS))
        figures.append(plots.learning_curves(curves, out / CURVES))
    family = main_family(spec, rows)
    if family:
        figures.append(plots.paired_differences(family, out / PAIRED))
    return figures


def write_report(spec: StudySpec, rows: Rows, out: Path) -> str:
    out.mkdir(parents=True, exist_ok=True)
    text = format_report(spec, rows)
    (out / TABLE).write_text(text)
    write_figures(spec, rows, out)
    return text


def readme_tag(spec: StudySpec) -> str:
    return f"study:{spec.name}"


def update_readme(spec: StudySpec, table: str, out: Path, readme: Path) -> None:
    """Rebuild the README's block of this study (`<!-- begin study:NAME -->`): `table` (what
    `write_report` wrote) under the README's own heading (so one level down), then the figures."""
    body = table.split("\n", 1)[1]  # the title is the README's
    body = re.sub(r"^## ", "### ", body, flags=re.MULTILINE)
    for figure, alt in FIGURES.items():
        if (out / figure).is_file():
            body += f"\n![{alt}]({os.path.relpath(out / figure, readme.parent)})\n"
    rebuild_block(readme, readme_tag(spec), body)
