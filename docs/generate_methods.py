"""Write docs/methods.md from the method declarations, so the reference cannot drift from
the code. Run: .venv/bin/python docs/generate_methods.py (tests check the committed file)."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "core"))

from mergestudio.methods import all_methods  # noqa: E402
from mergestudio.methods.plugins import all_post_processes  # noqa: E402
from mergestudio.methods.registry import MethodSpec, Param  # noqa: E402

OUTPUT = ROOT / "docs" / "methods.md"
# Measured results (hand-written from benchmark runs), appended verbatim.
MEASURED = ROOT / "docs" / "methods_measured.md"

HEADER = """# Merge methods

Generated from the method declarations by `docs/generate_methods.py`; do not edit by hand.
`mergestudio methods NAME` prints the same information for one method.

τᵢ = θᵢ − θ_base is model i's task vector, wᵢ its weight. "per model" parameters are set
under each model in a recipe; the others once, under `parameters`. Every method computes
in the compute dtype (float32 unless asked otherwise) and writes the output dtype.
Stochastic methods draw from a generator seeded by the recipe's `random_seed` and the
tensor's name: the same recipe and seed give bit-identical output on the same device.

"""


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _range(param: Param) -> str:
    if param.kind == "bool":
        return "true/false"
    if param.kind == "choice":
        return " / ".join(param.choices)
    low = "−∞" if param.low is None else f"{param.low:g}"
    high = "∞" if param.high is None else f"{param.high:g}"
    return f"[{low}, {high}]"


def _param(param: Param) -> str:
    default = "required" if param.required else f"default {param.default}"
    scope = ", per model" if param.per_model else ""
    return f"`{param.name}` ({default}; {_range(param)}{scope})"


def _row(method: MethodSpec) -> str:
    params = "<br>".join(_param(p) for p in method.params) or "—"
    inputs = []
    if method.needs_base:
        inputs.append("base")
    if method.stochastic:
        inputs.append("seeded")
    name = f"`{method.name}`" + (f" ({', '.join(inputs)})" if inputs else "")
    return f"| {name} | {_cell(method.family)} | {params} | {_cell(method.paper or '—')} | {_cell(method.math)} |"


def render() -> str:
    methods = all_methods()
    lines = [HEADER.rstrip("\n"), ""]
    lines.append("| Method | Family | Parameters | Paper | Math |")
    lines.append("|---|---|---|---|---|")
    lines += [_row(m) for m in methods]
    lines.append("")
    lines.append("## Notes")
    lines.append("")
    for method in methods:
        text = method.summary + (f" {method.notes}" if method.notes else "")
        aliases = f" Also known as {', '.join(f'`{a}`' for a in method.aliases)}." if method.aliases else ""
        lines.append(f"- **`{method.name}`**: {_cell(text)}{aliases}")
    lines.append("")
    lines += _post_processes()
    if MEASURED.is_file():
        lines += [*MEASURED.read_text(encoding="utf-8").rstrip("\n").split("\n"), ""]
    return "\n".join(lines)


def _post_processes() -> list[str]:
    lines = [
        "## Post-processing plug-ins",
        "",
        "A plug-in runs on the output of any method that uses the base model, tensor by tensor. "
        "A recipe names one under `post_process`:",
        "",
        "```yaml",
        "post_process:",
        "  name: svc",
        "  parameters: {alpha: 0.1}",
        "```",
        "",
        "| Plug-in | Parameters | Paper | Math |",
        "|---|---|---|---|",
    ]
    plugins = all_post_processes()
    for plugin in plugins:
        params = "<br>".join(_param(p) for p in plugin.params) or "—"
        lines.append(f"| `{plugin.name}` | {params} | {_cell(plugin.paper or '—')} | {_cell(plugin.math)} |")
    lines.append("")
    for plugin in plugins:
        lines.append(f"- **`{plugin.name}`**: {_cell(plugin.summary + ' ' + plugin.notes)}")
    lines.append("")
    return lines


def main() -> int:
    OUTPUT.write_text(render(), encoding="utf-8")
    print(f"wrote {OUTPUT.relative_to(ROOT)} ({len(all_methods())} methods)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
