"""A model's per-layer table as people read it, without Streamlit or TensorFlow: the rows that
core.ml.models.layer_table gives (and runs save as layers.json) -> a DataFrame with readable
counts and a totals line, and what to say about counts measured without pretrained weights."""
from __future__ import annotations

import pandas as pd

from core.present.compare import format_count
from core.settings.architectures import uses_pretrained_weights

# row key -> column title
COLUMNS = {"layer": "Layer", "type": "Type", "output_shape": "Output shape", "params": "Parameters",
           "macs": "MACs per image"}
SHARE_COLUMN = "Share of MACs"


def totals(rows: list[dict]) -> dict:
    """Layers, parameters and MACs per image of the whole model."""
    return {"layers": len(rows), "params": sum(int(r["params"]) for r in rows),
            "macs": sum(int(r["macs"]) for r in rows)}


def totals_row(rows: list[dict]) -> dict:
    """The table's last line: 'Total (31 layers)' with the summed parameters and MACs."""
    total = totals(rows)
    return {"layer": f"Total ({total['layers']} layers)", "type": "", "output_shape": "",
            "params": total["params"], "macs": total["macs"]}


def macs_share(macs: int, total_macs: int) -> str:
    """'12.5%' of the model's MACs; '' for a layer without any (most of them)."""
    if not macs or not total_macs:
        return ""
    share = 100 * macs / total_macs
    return f"{share:.1f}%" if share >= 0.1 else "<0.1%"


def table_line(row: dict, total_macs: int) -> dict:
    """One line of the table: parameters exact ('18,496'), MACs as '4.72 M', the share of the MACs."""
    return {COLUMNS["layer"]: row["layer"], COLUMNS["type"]: row["type"],
            COLUMNS["output_shape"]: row["output_shape"], COLUMNS["params"]: f"{int(row['params']):,}",
            COLUMNS["macs"]: format_count(int(row["macs"])), SHARE_COLUMN: macs_share(int(row["macs"]), total_macs)}


def layer_frame(rows: list[dict]) -> pd.DataFrame:
    """One line per layer, then the totals line."""
    total_macs = totals(rows)["macs"]
    lines = [table_line(row, total_macs) for row in rows]
    if rows:
        lines.append(table_line(totals_row(rows), total_macs))
    return pd.DataFrame(lines, columns=[*COLUMNS.values(), SHARE_COLUMN])


def totals_text(rows: list[dict]) -> str:
    """'31 layers · 574,930 parameters · 18.3 M MACs per image'."""
    total = totals(rows)
    return (f"{total['layers']} layers · {total['params']:,} parameters · "
            f"{format_count(total['macs'])} MACs per image")


def counts_caption(arch: str, params: dict) -> str | None:
    """What the Train page says under the counts when they come from a base without its weights."""
    if not uses_pretrained_weights(arch, params):
        return None
    return ("Counts of the architecture, measured with random weights: the ImageNet weights, loaded when "
            "the run trains, change no count (the pretrained base stays frozen, so only the head is trainable).")
