"""Plots hack/experiment's CSV: both runs side by side, per second the load
generator's p95 against the objective, the engine's decisions and the offline
container's CPU limit and work.

    python3 docs/policy/plot.py DIR SLO_MS STEP_S   (writes DIR/experiment.png)
"""
import csv
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def load(path):
    rows = list(csv.DictReader(open(path)))
    num = lambda v: float(v) if v else float("nan")
    return {
        "t": [int(r["second"]) for r in rows],
        "p95": [num(r["p95_ms"]) for r in rows],
        "cpu": [num(r["offline_cpu_millis"]) for r in rows],
        "work": [num(r["offline_work"]) for r in rows],
        "decisions": [r["decisions"] for r in rows],
    }


def main():
    out, slo, step = Path(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
    runs = [("off", "engine off"), ("on", "engine on (enforce)")]
    fig, axes = plt.subplots(2, 2, figsize=(13, 7), sharex=True,
                             gridspec_kw={"height_ratios": [3, 2]})
    top = max(max((v for v in load(out / f"experiment-{n}.csv")["p95"] if v == v), default=slo)
              for n, _ in runs)
    for col, (name, title) in enumerate(runs):
        d = load(out / f"experiment-{name}.csv")
        ax = axes[0][col]
        ax.plot(d["t"], d["p95"], marker=".", color="tab:blue", label="p95 latency (load generator)")
        ax.axhline(slo, color="tab:red", linestyle="--", label=f"objective {slo:.0f} ms")
        ax.axvline(step, color="grey", linestyle=":", label="load step")
        marked = False
        for t, dec in zip(d["t"], d["decisions"]):
            acts = [x for x in dec.split(" | ") if x and "rules" not in x]
            for x in acts:
                color = "tab:orange" if "throttle" in x else (
                    "tab:green" if "give-back" in x else (
                        "tab:purple" if "self-heal" in x or "rolled" in x else "black"))
                ax.axvline(t + 0.5, color=color, alpha=0.5, linewidth=1,
                           label=None if marked else "engine decision")
                marked = True
        ax.set_yscale("log")
        ax.set_ylim(10, max(top * 1.5, slo * 4))
        ax.set_ylabel("p95 per second (ms, log)")
        ax.set_title(title)
        ax.legend(loc="upper left", fontsize=8)
        ax2 = axes[1][col]
        ax2.step(d["t"], d["cpu"], where="post", color="tab:orange", label="offline CPU limit (millicores)")
        ax2.set_ylim(0, 1100)
        ax2.set_ylabel("millicores")
        ax2.set_xlabel("seconds")
        ax2.axvline(step, color="grey", linestyle=":")
        ax3 = ax2.twinx()
        ax3.bar(d["t"], d["work"], width=0.8, alpha=0.3, color="tab:grey", label="offline work units / s")
        ax3.set_ylabel("work units / s")
        h1, l1 = ax2.get_legend_handles_labels()
        h2, l2 = ax3.get_legend_handles_labels()
        ax2.legend(h1 + h2, l1 + l2, loc="lower left", fontsize=8)
    fig.suptitle("tidal policy engine: online p95 vs objective under a load step, offline pod on the same CPU")
    fig.tight_layout()
    fig.savefig(out / "experiment.png", dpi=90)


main()
