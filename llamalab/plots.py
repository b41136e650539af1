"""Matplotlib figures the notebooks show. Each returns the Figure (and saves it when given a path)."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt


def _label(r: dict) -> str:
    return r["model"] + (f"\n+{Path(r['adapter']).name}" if r.get("adapter") else "")


def _save(fig, path):
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=120, bbox_inches="tight")
    return fig


def clickbait_figure(results: list[dict], path: str | Path | None = None):
    """Accuracy and format rate per model, and the confusion matrix of the first model."""
    fig, (ax1, *cms) = plt.subplots(1, 1 + len(results), figsize=(5 + 3.2 * len(results), 3.6))
    names = [_label(r) for r in results]
    x = range(len(results))
    acc = [r["summary"]["accuracy"] or 0 for r in results]
    fmt = [r["summary"]["format_ok_rate"] or 0 for r in results]
    ax1.bar([i - 0.2 for i in x], acc, width=0.4, label="accuracy")
    ax1.bar([i + 0.2 for i in x], fmt, width=0.4, label="format ok")
    ax1.axhline(0.5, color="grey", lw=0.8, ls="--", label="chance (balanced)")
    ax1.set_xticks(list(x), names, fontsize=8)
    ax1.set_ylim(0, 1)
    ax1.legend(fontsize=8)
    ax1.set_title("clickbait")
    for ax, r in zip(cms, results, strict=True):
        conf = r["summary"]["confusion"]
        truths, preds = ["yes", "no"], ["yes", "no", "none"]
        m = [[conf.get(t, {}).get(p, 0) for p in preds] for t in truths]
        ax.imshow(m, cmap="Blues")
        for i in range(2):
            for j in range(3):
                ax.text(j, i, m[i][j], ha="center", va="center")
        ax.set_xticks(range(3), preds)
        ax.set_yticks(range(2), truths)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(_label(r).replace("\n", " "), fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def sql_figure(results: list[dict], path: str | Path | None = None):
    """Execution accuracy by difficulty per model, and the failure categories."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    diffs = ["easy", "medium", "hard"]
    width = 0.8 / max(1, len(results))
    for k, r in enumerate(results):
        by = r["summary"].get("by_difficulty", {})
        vals = [(by.get(d) or {}).get("execution_accuracy") or 0 for d in diffs]
        ax1.bar([i + k * width for i in range(3)], vals, width=width, label=_label(r).replace("\n", " "))
    ax1.set_xticks([i + width * (len(results) - 1) / 2 for i in range(3)], diffs)
    ax1.set_ylim(0, 1)
    ax1.set_ylabel("execution accuracy")
    ax1.legend(fontsize=8)
    cats = sorted({c for r in results for c in r["summary"].get("failures", {})})
    for k, r in enumerate(results):
        f = r["summary"].get("failures", {})
        ax2.bar([i + k * width for i in range(len(cats))], [f.get(c, 0) for c in cats], width=width)
    ax2.set_xticks([i + width * (len(results) - 1) / 2 for i in range(len(cats))], cats, rotation=30, fontsize=8)
    ax2.set_ylabel("items")
    ax2.set_title("failure categories")
    fig.tight_layout()
    return _save(fig, path)


def jokes_figure(results: list[dict], path: str | Path | None = None):
    """The rough lexical proxy per joke and model (labelled as a proxy)."""
    fig, ax = plt.subplots(figsize=(8, 3.4))
    width = 0.8 / max(1, len(results))
    for k, r in enumerate(results):
        vals = [it.get("proxy_overlap") or 0 for it in r["items"]]
        ax.bar([i + k * width for i in range(len(vals))], vals, width=width, label=_label(r).replace("\n", " "))
    ids = [it["id"] for it in results[0]["items"]] if results else []
    ax.set_xticks(range(len(ids)), ids, rotation=60, fontsize=7)
    ax.set_ylim(0, 1)
    ax.set_ylabel("reference-word overlap (rough proxy)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def loss_curves(log_history: list[dict], path: str | Path | None = None, title: str = "SFT"):
    """Training (and eval) loss per step from a Trainer's log history."""
    fig, ax = plt.subplots(figsize=(6, 3.4))
    tr = [(h["step"], h["loss"]) for h in log_history if "loss" in h and "step" in h]
    ev = [(h["step"], h["eval_loss"]) for h in log_history if "eval_loss" in h]
    if tr:
        ax.plot(*zip(*tr, strict=True), label="train loss")
    if ev:
        ax.plot(*zip(*ev, strict=True), "o-", label="eval loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    return _save(fig, path)


def reward_histogram(chosen: list[float], rejected: list[float], path: str | Path | None = None):
    """Reward-model scores of chosen vs rejected responses on held-out pairs."""
    fig, ax = plt.subplots(figsize=(6, 3.4))
    lo, hi = min(chosen + rejected), max(chosen + rejected)
    bins = [lo + (hi - lo) * i / 30 for i in range(31)] if hi > lo else 10
    ax.hist(chosen, bins=bins, alpha=0.6, label="chosen")
    ax.hist(rejected, bins=bins, alpha=0.6, label="rejected")
    ax.set_xlabel("reward")
    ax.set_ylabel("pairs")
    ax.legend()
    fig.tight_layout()
    return _save(fig, path)


def study_figure(df, path: str | Path | None = None):
    """Before/after: one group of bars per metric, one bar per model."""
    cols = [c for c in df.columns if c != "prompt" and df[c].notna().any()]
    fig, ax = plt.subplots(figsize=(max(7, 1.3 * len(cols)), 3.8))
    width = 0.8 / max(1, len(df))
    for k, (label, row) in enumerate(df.iterrows()):
        ax.bar([i + k * width for i in range(len(cols))], [row[c] if row[c] == row[c] else 0 for c in cols],
               width=width, label=label)
    ax.set_xticks([i + width * (len(df) - 1) / 2 for i in range(len(cols))], cols, rotation=30, ha="right",
                  fontsize=8)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def rl_curves(rows: list[dict], path: str | Path | None = None, title: str = "PPO",
              score_key: str = "score", kl_key: str = "kl"):
    """Mean reward-model score and KL to the reference per update."""
    fig, ax1 = plt.subplots(figsize=(6.5, 3.4))
    x = [r["update"] for r in rows]
    ax1.plot(x, [r.get(score_key) for r in rows], "o-", color="tab:blue", label="mean score")
    ax1.set_xlabel("update")
    ax1.set_ylabel("reward-model score", color="tab:blue")
    ax2 = ax1.twinx()
    ax2.plot(x, [r.get(kl_key) for r in rows], "s--", color="tab:red", label="KL")
    ax2.set_ylabel("KL to reference (nats/seq)", color="tab:red")
    ax1.set_title(title)
    fig.tight_layout()
    return _save(fig, path)
