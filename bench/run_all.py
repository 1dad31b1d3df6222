"""Run every benchmark behind a row of the README's performance table, print each table,
write bench/results/*.json and one plot (bench/results/summary.png, if matplotlib is
installed: `pip install '.[bench]'`).

    python bench/run_all.py [--quick]     # --plot: only redraw the plot from the JSON
"""

from __future__ import annotations

import argparse
import json
import time

from common import RESULTS, save

NAMES = ("ceiling", "cycles", "scaling", "fanout", "restart", "fuzz_long", "waiters", "pg")


def plot() -> None:
    results = {name: json.loads((RESULTS / f"{name}.json").read_text()) for name in NAMES}
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot (pip install '.[bench]')")
        return
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    ceiling = results["ceiling"]["results"]
    axes[0].bar([r["server"] for r in ceiling], [r["req_per_s"] for r in ceiling],
                color=["grey", "tab:blue"])
    axes[0].set_title(f"check_available, req/s\natsd / ceiling = {results['ceiling']['ratio']:.2f}")
    cycles = results["cycles"]["results"]
    labels = [f"{r['system'].split()[0]}\n×{r['clients']}" for r in cycles]
    colours = {"echo": "grey", "atsd": "tab:blue"}
    axes[1].bar(labels, [r["cycles_per_s"] for r in cycles],
                color=[colours.get(r["system"].split()[0], "tab:orange") for r in cycles])
    axes[1].set_yscale("log")
    axes[1].set_title("durable request+claim+release, cycles/s\n(×N: client processes)")
    rows = results["scaling"]["bookings"]
    axes[2].plot([r["bookings"] for r in rows], [r["search_us"] for r in rows], "o-",
                 label="availability search")
    axes[2].plot([r["bookings"] for r in rows], [r["request_release_us"] for r in rows], "s-",
                 label="request + release")
    dense = results["scaling"]["dense"]
    axes[2].plot([r["bookings"] for r in dense], [r["check_available_us"] for r in dense],
                 "o--", label="dense: check_available")
    axes[2].plot([r["bookings"] for r in dense],
                 [r["configured_request_release_us"] for r in dense], "s--",
                 label="dense: configured request + release")
    axes[2].set_xscale("log")
    axes[2].set_ylim(bottom=0)
    axes[2].set_title("one resource with N bookings, CPU µs/call")
    axes[2].legend(fontsize="small")
    fig.suptitle(f"atsd benchmarks, {time.strftime('%Y-%m-%d')}, 2 cores")
    fig.tight_layout()
    path = RESULTS / "summary.png"
    fig.savefig(path, dpi=90)
    print(f"plot: {path}")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true", help="shorter runs, no labgrid")
    p.add_argument("--plot", action="store_true", help="only redraw the plot")
    args = p.parse_args()
    if args.plot:
        return plot()
    duration = 1.5 if args.quick else 5.0
    started = time.monotonic()
    import ceiling
    import cycles
    import fanout
    import fuzz_long
    import pg
    import restart
    import scaling
    import waiters
    runs = {
        "ceiling": lambda: ceiling.run(duration),
        "cycles": lambda: cycles.run(duration, labgrid=not args.quick),
        "scaling": scaling.run,
        "fanout": fanout.run,
        "restart": lambda: restart.run(20_000 if args.quick else 100_000),
        "fuzz_long": lambda: fuzz_long.run(20_000 if args.quick else 100_000, seed=1, window=32),
        "waiters": lambda: waiters.run(*((3000, 300) if args.quick else (10_000, 1000))),
        "pg": lambda: pg.run(duration, 5 if args.quick else 20),
    }
    for name, run in runs.items():       # each saved as it ends, kept if a later one fails
        save(name, run())
    plot()
    print(f"run_all took {(time.monotonic() - started) / 60:.1f} min")


if __name__ == "__main__":
    main()
