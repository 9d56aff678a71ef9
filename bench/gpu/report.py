"""The GPU benchmark's report: the pipeline row's figures, the issue's targets checked, the table."""

from __future__ import annotations

from typing import Any

from bench.gpu.rows import Corpus, Peaks, figures

# (shape, what, row, compared against, minimum): ratios of one run on one GPU (issue 16's targets;
# qwen3 held to the other decoders')
TARGETS = (
    ("m3", "mfu_measured", "forward", None, 0.50),
    ("m3", "pairs_per_s", "forward", "flag-style", 1.5),
    ("m3", "pairs_per_s", "forward", "sentence-transformers", 1.3),
    ("llm", "mfu_measured", "forward", None, 0.40),
    ("layerwise", "mfu_measured", "forward", None, 0.40),
    ("qwen3", "mfu_measured", "forward", None, 0.40),
    ("m3", "steady_pairs_per_s", "pipeline", "forward", 0.95),
    ("llm", "steady_pairs_per_s", "pipeline", "forward", 0.95),
    ("layerwise", "steady_pairs_per_s", "pipeline", "forward", 0.95),
    ("qwen3", "steady_pairs_per_s", "pipeline", "forward", 0.95),
)


def pipeline_figures(
    measured: dict[str, Any],
    corpus: Corpus,
    flops: float,
    peaks: Peaks,
    device: str,
    workers: int,
    forward: dict,
) -> dict[str, Any]:
    """The pipeline row: figures over the wall time from the workers' go (tokenizer fill
    included), the steady rate over the scoring span, and the tokenizer cores one GPU needs."""
    real = int(corpus.lengths.sum())
    row = figures(measured["pairs"], real, measured["run_tokens"], measured["wall_s"], flops, peaks, device)
    per_core = (
        measured["tokenized_pairs"] / measured["tokenize_busy_s"] if measured["tokenize_busy_s"] else None
    )
    row |= {
        "steady_pairs_per_s": round(measured["pairs"] / measured["steady_s"], 1),
        "tokenize_workers": workers,
        "tokenize_pairs_per_s_per_core": per_core and round(per_core, 1),
        "tokenizer_cores_per_gpu": per_core and round(forward["pairs_per_s"] / per_core, 2),
        "non_finite_scores": measured["non_finite_scores"],
    }
    return row


def check_targets(kinds: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target with its measured value (None when a row is missing or skipped)."""
    out = []
    for kind, what, row, against, minimum in TARGETS:
        rows = kinds.get(kind, {}).get("rows", {})
        value = rows.get(row, {}).get(what)
        if against is not None and value is not None:
            base = rows.get(against, {}).get("pairs_per_s")
            value = round(value / base, 3) if base else None
        out.append(
            {
                "kind": kind,
                "target": f"{row} {what}" + (f" / {against} pairs_per_s" if against else ""),
                "minimum": minimum,
                "value": value,
                "met": None if value is None else value >= minimum,
            }
        )
    return out


def print_table(result: dict[str, Any]) -> None:
    meta = result["meta"]
    print(
        f"{meta['gpu'] or 'cpu'}  torch {meta['torch']}  transformers {meta['transformers']}  {meta['date']}"
    )
    print(
        f"fp16 peak: datasheet {meta['datasheet_fp16_tflops']} TFLOP/s, "
        f"measured matmul {meta['measured_fp16_matmul_tflops']}"
    )
    header = f"{'kind':<10}{'row':<26}{'pairs/s':>10}{'tokens/s':>11}{'pad eff':>8}"
    header += f"{'mfu ds':>8}{'mfu mm':>8}{'GiB':>7}"
    print(header)
    for kind, section in result["kinds"].items():
        for name, row in section.get("rows", {}).items():
            if "skipped" in row:
                print(f"{kind:<10}{name:<26}  skipped: {row['skipped']}")
                continue
            gib = row.get("peak_memory_bytes")
            print(
                f"{kind:<10}{name:<26}{row['pairs_per_s']:>10}{row['tokens_per_s']:>11}"
                f"{row['padding_efficiency']:>8}{_cell(row.get('mfu_datasheet')):>8}"
                f"{_cell(row.get('mfu_measured')):>8}{_cell(gib and gib / 2**30):>7}"
            )
        if "skipped" in section:
            print(f"{kind:<10}skipped: {section['skipped']}")
    parity = result["parity"]
    worst = max((abs(r["max_abs_diff"]) for r in parity["kernels"]), default=0.0)
    print(f"kernel paths vs padded eager, largest |diff| on the golden models: {worst:.2e}")
    for r in parity.get("reference", []):
        print(
            f"{r['family']} score vs full-vocabulary logits, fp32, max_length {r['max_length']}: "
            f"largest |diff| {r['max_abs_diff']:.2e} (largest |score| {r['max_abs_score']:.2f})"
        )
    for r in parity.get("skipped", []):
        print(f"parity {r['model']} skipped: {r['reason']}")
    for t in result.get("targets", []):
        print(f"target {t['kind']:<10}{t['target']:<50} >= {t['minimum']:<5} {t['value']}  {_met(t['met'])}")


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _met(met: bool | None) -> str:
    return "n/a" if met is None else ("met" if met else "NOT met")
