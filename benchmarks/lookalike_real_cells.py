"""How often does the app's "doesn't look like a C-NMC cell" warning fire on real C-NMC cells?

    python -m benchmarks.lookalike_real_cells --data-dir PATH/C-NMC_Leukemia

Every real cell should pass; prints the count of false warnings with their reasons, and writes
benchmarks/results/lookalike_real_cells.json.
"""

import argparse
from collections import Counter
from pathlib import Path

from tqdm.auto import tqdm

from benchmarks.report import save
from serving.lookalike import check_lookalike
from training.data import load_cnmc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--output", default="benchmarks/results/lookalike_real_cells.json")
    args = parser.parse_args()
    cells, warned, reasons = 0, [], Counter()
    for name, split in load_cnmc(args.data_dir, verify=False).items():
        for row in tqdm(split, desc=name):
            cells += 1
            result = check_lookalike(row["image"])
            if not result.looks_like_cell:
                warned.append(Path(row["path"]).name)
                reasons.update(reason.split(" (")[0].split(" by ")[0] for reason in result.reasons)
    report = {"cells": cells, "warned": len(warned), "rate": len(warned) / cells, "reasons": dict(reasons),
              "examples": warned[:20]}  # fmt: skip
    save(report, args.output)


if __name__ == "__main__":
    main()
