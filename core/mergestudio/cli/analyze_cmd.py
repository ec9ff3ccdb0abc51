"""``mergestudio analyze --base BASE MODEL [MODEL…] [--density D] [--json out.json]``:
where task vectors agree, where they fight, and what a sparsifier would throw away."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from mergestudio.cli.args import float_at_least, positive_int, writable_file_path
from mergestudio.cli.progress import TerminalProgress, format_seconds
from mergestudio.cli.signals import cancel_on_stop

if TYPE_CHECKING:
    from mergestudio.analysis import AnalysisReport


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must lie in [0, 1]: {text}")
    return value


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "analyze",
        help="inspect where task vectors agree and conflict, before merging",
        description=(
            "Stream over the tensors of a base and its fine-tunes and report task-vector norms, "
            "cosine similarity and kinship, TIES sign conflicts after trimming, what trimming and "
            "DARE keep, magnitude histograms, mask overlap and singular spectra: per tensor, layer, "
            "module group and overall. Results are cached by the inputs' content."
        ),
    )
    parser.add_argument("--base", required=True, help="the base model the fine-tunes started from")
    parser.add_argument("models", nargs="+", help="fine-tuned models (folders, files or org/name[@rev])")
    parser.add_argument(
        "--density",
        type=_fraction,
        default=0.2,
        help="fraction of each task vector trimming keeps (default: 0.2)",
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="write the full report as JSON here")
    parser.add_argument(
        "--tall-lambda", type=float_at_least(0.0), default=0.4, help="λ of the TALL mask |τₜ| > λ|Στ − τₜ| (default: 0.4)"
    )
    parser.add_argument(
        "--spectra",
        choices=("auto", "all", "sample", "none"),
        default="auto",
        help="which matrices get singular spectra (default: auto = all when cheap, else a sample)",
    )
    parser.add_argument(
        "--spectrum-budget",
        type=float_at_least(0.0, strict=True),
        help="cost budget for spectra, Σ m·n·min(m,n) over models (default: 3e10, ~10-20 s on one core)",
    )
    parser.add_argument(
        "--cache-dir", type=Path, help="cache folder (default: $MERGESTUDIO_CACHE_DIR or user cache)"
    )
    parser.add_argument("--no-cache", action="store_true", help="recompute even when a cached result exists")
    parser.add_argument("--threads", type=positive_int, default=1, help="CPU threads for tensor math (default: 1)")
    parser.add_argument(
        "--allow-pickle", action="store_true", help="load .bin/.pt checkpoints (torch.load weights_only=True)"
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mergestudio.analysis import analyze
    from mergestudio.analysis.spectra import DEFAULT_SPECTRUM_BUDGET

    problem = writable_file_path(args.json, "--json") if args.json is not None else None
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    with cancel_on_stop() as cancel:
        report = analyze(
            args.base,
            args.models,
            args.density,
            tall_lambda=args.tall_lambda,
            spectra=args.spectra,
            spectrum_budget=args.spectrum_budget or DEFAULT_SPECTRUM_BUDGET,
            events=TerminalProgress(quiet=args.quiet),
            cancel=cancel,
            cache_dir=args.cache_dir,
            use_cache=not args.no_cache,
            threads=args.threads,
            allow_pickle=args.allow_pickle,
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(report.to_json())
    print_summary(report, sys.stdout)
    if args.json:
        print(f"\nfull report: {args.json}")
    return 0


def model_labels(references: list[str]) -> list[str]:
    """Short column labels: folder or repo names, numbered when they repeat."""
    names = [Path(r.rstrip("/")).name or r for r in references]
    names = [n.split("@")[0][-14:] for n in names]
    if len(set(names)) < len(names):
        return [f"{i + 1}:{n[-11:]}" for i, n in enumerate(names)]
    return names


def _number(value: float | None, spec: str = ".3f") -> str:
    return "—" if value is None else format(value, spec)


def _count(value: float) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if value >= scale:
            return f"{value / scale:.2f}{unit}"
    return f"{value:.0f}"


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}%"


def print_summary(report: AnalysisReport, out: TextIO) -> None:
    """A readable summary: per-model norms, the cosine and conflict matrices, a table per
    module group and per layer, mask overlap and spectra."""
    overall = report.overall()
    labels = model_labels(report.models)
    write = out.write
    origin = "from the cache" if report.from_cache else f"in {format_seconds(report.elapsed_s)}"
    write(
        f"analysis of {len(labels)} task vector(s) against {report.base} ({len(report.tensors)} tensors, "
        f"{_count(overall['numel'])} entries each, density {report.density:g}) {origin}\n"
    )
    if report.skipped:
        write(
            f"skipped {len(report.skipped)} tensor(s), e.g. {report.skipped[0]['name']}: "
            f"{report.skipped[0]['reason']}\n"
        )
    _models_table(overall, labels, write)
    _matrix("cosine similarity of task vectors", overall["cosine"]["matrix"], labels, write, ".3f")
    conflict = overall["sign_conflict_rate"]
    write(
        f"\nsign conflicts after trimming to density {report.density:g}: {_percent(conflict['overall'])} of "
        f"entries where two or more task vectors survive ({_percent(conflict['contested_fraction'])} of all "
        f"entries; {_percent(conflict['of_all_entries'])} of all entries conflict)\n"
    )
    _matrix("sign-conflict rate per pair", conflict["pairs"], labels, write, ".3f")
    _scope_table("per module group", [(g, s) for g, s in report.groups().items()], write)
    _scope_table("per layer", [(str(layer["layer"]), layer) for layer in report.layers()], write)
    _overlap(overall, write)
    _spectra(report, labels, write)


def _models_table(overall: dict[str, Any], labels: list[str], write: Any) -> None:
    write(
        f"\n{'task vector':16} {'‖τ‖':>10} {'‖τ‖/‖θ‖':>9} {'unchanged':>9} "
        f"{'trim keeps L1':>13} {'L2':>7} {'DARE keeps L2':>13}\n"
    )
    trim, dare = overall["trim"], overall["dare"]
    for i, label in enumerate(labels):
        write(
            f"{label[:16]:16} {_number(overall['norm'][i], '.4g'):>10} {_number(overall['relative_norm'][i], '.4f'):>9} "
            f"{_percent(overall['unchanged_fraction'][i]):>9} {_percent(trim['kept_l1_fraction'][i]):>13} "
            f"{_percent(trim['kept_l2_fraction'][i]):>7} {_percent(dare['kept_l2_fraction'][i]):>13}\n"
        )


def _matrix(title: str, matrix: list[list[float | None]], labels: list[str], write: Any, spec: str) -> None:
    if len(labels) < 2:
        return
    write(f"\n{title}\n{'':16}" + "".join(f" {label[:9]:>9}" for label in labels) + "\n")
    for label, row in zip(labels, matrix, strict=True):
        write(f"{label[:16]:16}" + "".join(f" {_number(v, spec):>9}" for v in row) + "\n")


def _scope_table(title: str, rows: list[tuple[str, dict[str, Any]]], write: Any) -> None:
    if not rows:
        return
    write(
        f"\n{title}\n{'':12} {'entries':>10} {'‖τ‖/‖θ‖':>9} {'cosine':>8} {'pearson':>8} "
        f"{'conflict':>9} {'trim L2':>8} {'≥2 tasks':>9}\n"
    )
    for name, summary in rows:
        relative = [v for v in summary["relative_norm"] if v is not None]
        kept = [v for v in summary["trim"]["kept_l2_fraction"] if v is not None]
        write(
            f"{name[:12]:12} {_count(summary['numel']):>10} "
            f"{_number(sum(relative) / len(relative) if relative else None, '.4f'):>9} "
            f"{_number(summary['cosine']['overall']):>8} {_number(summary['pearson']['overall']):>8} "
            f"{_percent(summary['sign_conflict_rate']['overall']):>9} "
            f"{_percent(sum(kept) / len(kept) if kept else None):>8} "
            f"{_percent(summary['mask_overlap']['trim']['two_or_more']):>9}\n"
        )


def _overlap(overall: dict[str, Any], write: Any) -> None:
    write("\nmask overlap (share of entries important to 0 / 1 / ≥2 tasks)\n")
    for name, title in (("trim", "top-density masks"), ("tall", "TALL masks")):
        cells = overall["mask_overlap"][name]
        write(
            f"  {title:18} {_percent(cells['none']):>7} {_percent(cells['one']):>7} "
            f"{_percent(cells['two_or_more']):>7}\n"
        )


def _spectra(report: AnalysisReport, labels: list[str], write: Any) -> None:
    plan = report.spectra_plan
    if not report.spectra:
        write(f"\nspectra: none ({plan.get('rule', 'not computed')})\n")
        return
    write(
        f"\nspectra of {len(report.spectra)} task matrices ({plan.get('rule')}): effective rank at 95 % energy\n"
    )
    write(f"{'matrix':44}" + "".join(f" {label[:9]:>9}" for label in labels) + "\n")
    for result in report.spectra[:24]:
        ranks = [f"{m['effective_rank']}/{m['full_rank']}" for m in result.models]
        write(f"{result.name[-44:]:44}" + "".join(f" {r:>9}" for r in ranks) + "\n")
    if len(report.spectra) > 24:
        write(f"… and {len(report.spectra) - 24} more in the JSON report\n")
