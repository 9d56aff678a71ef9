"""The table and the targets of bench/throughput.py: row names, ratio columns, the issue's targets
and the printed report, apart from the runs that fill the rows (bench/throughput.py's docstring says
what each row is)."""

from __future__ import annotations

from typing import Any

FLAG, ST = "flagembedding", "sentence-transformers"
# The targets: the job at an explicit precision against vLLM at the same one (steady,
# marginal); the job's defaults against today's default (fp32, padded, eager), marginal rate.
TARGET_VS_VLLM = {"steady, reported": ("steady", 1.0), "marginal": ("marginal", 1.2)}
TARGET_DEFAULT_VS_FP32 = 1.5
# The earlier CPU targets, checked on the fp32 job: (row compared against, minimum ratio).
TARGET_RATIOS = {"limit fp32": 0.90, FLAG: 2.0, ST: 1.05}
TARGET_PAD_EFF = 0.97
MET = {True: "met", False: "NOT met", None: "n/a (no figure)"}
COLUMNS = [
    ("pairs/s", "pairs_per_s"),
    ("tokens/s", "tokens_per_s"),
    ("pad eff", "padding_efficiency"),
    ("seconds", "seconds"),
    ("vs limit", "vs_limit"),
    ("vs vllm", "vs_vllm"),
    ("vs flag", f"vs_{FLAG}"),
    ("vs st", f"vs_{ST}"),
    ("load1", "load1"),
]
NAME_WIDTH = 32


def job_name(label: str, form: str) -> str:
    """A job row's name: label is a precision tag or `default`, form steady/marginal/end to end."""
    return f"job {label} ({form})"


def add_ratios(rows: dict[str, dict[str, Any]], pairs: int, flops: float, peak: float | None) -> None:
    """Ratios of every row against the limit and vLLM's steady row at its own precision and the two
    fp32 peers (None where one is missing); MFU."""

    def rate(name: str) -> float | None:
        return rows.get(name, {}).get("pairs_per_s")

    for r in rows.values():
        bases = {
            "limit": f"limit {r['dtype']}",
            "vllm": f"vllm {r['dtype']} (steady)",
            FLAG: FLAG,
            ST: ST,
        }
        for key, base in bases.items():
            base_rate, own = rate(base), r["pairs_per_s"]
            r[f"vs_{key}"] = round(own / base_rate, 3) if base_rate and own is not None else None
        if peak is not None and r["pairs_per_s"]:
            r["mfu"] = round(flops * r["pairs_per_s"] / pairs / peak, 3)


def target(name: str, measured: float | None, minimum: float) -> dict[str, Any]:
    return {
        "target": name,
        "minimum": minimum,
        "measured": None if measured is None else round(measured, 3),
        "met": None if measured is None else measured >= minimum,
    }


def check_targets(rows: dict[str, dict[str, Any]], tags: list[str]) -> list[dict[str, Any]]:
    """The issue's targets (met is None where a figure is missing): per precision the job against
    vLLM, the job's defaults against fp32; then the earlier CPU targets on the fp32 job."""

    def ratio(a: str, b: str) -> float | None:
        x, y = rows.get(a, {}).get("pairs_per_s"), rows.get(b, {}).get("pairs_per_s")
        return x / y if x is not None and y else None

    checks = []
    for tag in tags:
        for form, (vllm_form, minimum) in TARGET_VS_VLLM.items():
            a, b = job_name(tag, form), f"vllm {tag} ({vllm_form})"
            checks.append(target(f"{a} / {b}", ratio(a, b), minimum))
    a, b = job_name("default", "marginal"), job_name("fp32", "marginal")
    checks.append(target(f"{a} / {b}", ratio(a, b), TARGET_DEFAULT_VS_FP32))
    if "fp32" in tags:
        for form in ("steady, reported", "marginal"):
            name = job_name("fp32", form)
            for base, minimum in TARGET_RATIOS.items():
                checks.append(target(f"{name} / {base}", ratio(name, base), minimum))
            eff = rows[name]["padding_efficiency"]
            checks.append(target(f"{name} padding efficiency", eff, TARGET_PAD_EFF))
    return checks


def _cell(value: Any, width: int) -> str:
    return f"{'-' if value is None else value:>{width}}"


def print_report(result: dict[str, Any], max_length: int) -> None:
    """The header, the table, the targets and the notes."""
    rows, notes = result["results"], result["notes"]
    print(
        f"device={result['device']} model={result['model']} pairs={result['pairs']} "
        f"mean tokens/pair={result['mean_tokens_per_pair']} pairs at {max_length} tokens="
        f"{result['pairs_at_max_length']} budget={result['max_batch_tokens']} "
        f"threads={result['torch_threads']}"
    )
    columns = COLUMNS + ([("mfu", "mfu")] if any("mfu" in r for r in rows.values()) else [])
    print(f"{'row':<{NAME_WIDTH}}" + "".join(f"{title:>10}" for title, _ in columns))
    for name, r in rows.items():
        cells = "".join(_cell(r.get(key), 10) for _, key in columns)
        print(f"{name:<{NAME_WIDTH}}{cells}" + (f"  {r['note']}" if "note" in r else ""))
    print(f"{'targets (the issue)':<64}{'minimum':>9}{'measured':>10}")
    for t in result["targets"]:
        cells = f"{'>= ' + str(t['minimum']):>9}{_cell(t['measured'], 10)}  {MET[t['met']]}"
        print(f"{t['target']:<64}{cells}")
    for note in notes:
        print(f"note: {note}")
