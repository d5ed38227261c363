#!/usr/bin/env python3
"""Draws the train and validation loss of a shardtune metrics file to a PNG.

    plot_metrics.py METRICS.jsonl OUT.png [--title TEXT]

Reads the JSONL records `shardtune train` appends (a resumed run appends to
the same file: the last record of each step counts) and plots them with
gnuplot (Debian's gnuplot-nox). Python standard library only.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("metrics")
    ap.add_argument("output")
    ap.add_argument("--title", default="shardtune")
    args = ap.parse_args()
    if shutil.which("gnuplot") is None:
        sys.exit("plot_metrics: gnuplot is not installed (apt-get install gnuplot-nox)")
    train, val = {}, {}
    with open(args.metrics) as f:
        for n, line in enumerate(f, 1):
            try:
                r = json.loads(line)
            except json.JSONDecodeError as e:
                sys.exit(f"plot_metrics: {args.metrics}:{n}: not a JSON record: {e}")
            if r.get("type") == "train" and not r.get("skipped"):  # a skipped step's loss is not finite
                train[r["step"]] = r["loss"]
            elif r.get("type") == "eval":
                val[r["step"]] = r["val_loss"]
    if not train:
        sys.exit(f"plot_metrics: {args.metrics} has no training records")
    with tempfile.TemporaryDirectory() as tmp:
        tdat, vdat = os.path.join(tmp, "train.dat"), os.path.join(tmp, "val.dat")
        with open(tdat, "w") as f:
            f.writelines(f"{s} {l}\n" for s, l in sorted(train.items()))
        with open(vdat, "w") as f:
            f.writelines(f"{s} {l}\n" for s, l in sorted(val.items()))
        plots = [f"'{tdat}' using 1:2 with lines lw 2 title 'train loss'"]
        if val:
            plots.append(f"'{vdat}' using 1:2 with linespoints pt 7 lw 2 title 'validation loss'")
        script = "\n".join([
            "set terminal png size 900,540",
            f"set output '{args.output}'",
            f"set title \"{args.title}\"",
            "set xlabel 'step'", "set ylabel 'loss (nats/token)'", "set grid",
            "plot " + ", ".join(plots),
        ])
        subprocess.run(["gnuplot"], input=script, text=True, check=True)
    print(f"plot_metrics: {args.output} ({len(train)} train, {len(val)} validation points)")


if __name__ == "__main__":
    main()
