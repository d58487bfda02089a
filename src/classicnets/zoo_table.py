"""The table of every model: paper, native input, parameters and multiply-adds.

``compute=True`` builds each model and counts (so the table is produced by the package, not
typed by hand); ``compute=False`` shows the model cards' published figures only.
"""

from __future__ import annotations

from .models import list_models, model_card


def models_table(pattern: str = "*", compute: bool = True) -> list[dict]:
    rows = []
    for name in list_models(pattern):
        card = model_card(name)
        row = {"name": name, "family": card.family, "paper": card.paper, "reference": card.reference,
               "input_size": list(card.input_size), "published_params": card.params,
               "published_macs": card.macs, "introduced": card.introduced,
               "torchvision": card.torchvision_name}
        if compute:
            from .summary_table import model_summary

            s = model_summary(name, device="meta")
            row.update(params=s.total_params, macs=s.total_macs)
        rows.append(row)
    return rows


def _macs(n: int | None) -> str:
    if n is None:
        return "-"
    return f"{n / 1e9:.2f} G" if n >= 1e9 else f"{n / 1e6:.2f} M"


def format_models_table(rows: list[dict], markdown: bool = False) -> str:
    header = ["model", "input (C x H x W)", "params", "multiply-adds", "paper"]
    body = []
    for r in rows:
        params = r.get("params", r["published_params"])
        macs = r.get("macs", r["published_macs"])
        body.append([r["name"], " x ".join(map(str, r["input_size"])), f"{params:,}", _macs(macs),
                     f"{r['paper']} ({r['reference']})"])
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(row) + " |" for row in body]
        return "\n".join(lines)
    widths = [max(len(h), *(len(row[i]) for row in body)) if body else len(h) for i, h in enumerate(header)]
    widths[-1] = len(header[-1])
    fmt = lambda row: "  ".join(  # noqa: E731
        (c.rjust(w) if i in (2, 3) else c.ljust(w)) for i, (c, w) in enumerate(zip(row, widths, strict=True))
    )
    return "\n".join([fmt(header), fmt(["-" * w for w in widths])] + [fmt(row) for row in body])


def format_card(name: str) -> str:
    """A model card as readable text."""
    card = model_card(name)
    lines = [f"{name} ({card.family})", f"  paper:        {card.paper}", f"  reference:    {card.reference}",
             f"  input:        {' x '.join(map(str, card.input_size))} (C x H x W), {card.num_classes} classes",
             f"  parameters:   {card.params:,}",
             f"  multiply-add: {_macs(card.macs)}", f"  introduced:   {card.introduced}"]
    if card.torchvision_name:
        lines.append(f"  torchvision:  state_dict-compatible with torchvision.models.{card.torchvision_name}")
    if card.notes:
        lines.append(f"  notes:        {card.notes}")
    return "\n".join(lines)
