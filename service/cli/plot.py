"""The replay's picture: actual against predicted, and the loss under it."""

from __future__ import annotations

from pathlib import Path


def plot(path: Path, stream: str, name: str, truth: list[list[float]], predictions: list[list[float]],
         losses: list[float | None], intervals: list[list[list[float]] | None], flagged: list[bool]) -> None:  # fmt: skip
    """``name``: what the first column of ``truth`` is (the forecast input, or the first target); each
    prediction's interval (None: not calibrated yet) and whether each truth row was judged anomalous."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = range(1, len(predictions) + 1)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(11, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    top.plot(steps, [t[0] for t in truth[: len(predictions)]], label=f"actual ({name})", lw=1)
    top.plot(steps, [p[0] for p in predictions], label="predicted (before learning)", lw=1)
    nan = float("nan")
    lower = [band[0][0] if band else nan for band in intervals[: len(predictions)]]
    upper = [band[0][1] if band else nan for band in intervals[: len(predictions)]]
    top.fill_between(steps, lower, upper, color="tab:orange", alpha=0.2, lw=0, label="interval")
    marked = [k for k in range(len(predictions)) if k < len(flagged) and flagged[k]]
    if marked:
        top.scatter([k + 1 for k in marked], [truth[k][0] for k in marked], color="tab:red", s=18, zorder=3,
                    label=f"anomalous ({len(marked)})")  # fmt: skip
    top.set_title(f"{stream}: actual and predicted")
    top.legend(loc="upper left")
    known = [(k + 1, loss) for k, loss in enumerate(losses[: len(predictions)]) if loss is not None]
    if known:
        window = max(1, len(known) // 100)
        smooth = [sum(v for _, v in known[max(0, i - window) : i + 1]) / len(known[max(0, i - window) : i + 1])
                  for i in range(len(known))]  # fmt: skip
        bottom.plot([k for k, _ in known], smooth, color="tab:red", lw=1)
    bottom.set_yscale("log")  # the first steps' losses dwarf the rest
    bottom.set_ylabel("loss")
    bottom.set_xlabel("step")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
