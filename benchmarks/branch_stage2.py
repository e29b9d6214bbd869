"""Branch a run at the start of stage 2 (kept for the commands in earlier results' notes): the same as
``utad branch SRC --out NEW --no-train --set ...`` (``utad.branch``). Example:

    python benchmarks/branch_stage2.py runs/demo-base runs/demo-res --set expert.residual=true
    utad train --resume --out runs/demo-res && utad test runs/demo-res
"""

from __future__ import annotations

import argparse

from utad.branch import branch_stage2


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("src", help="run folder whose IE-Net is kept")
    ap.add_argument("dst", help="new run folder")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args()
    print(branch_stage2(args.src, args.dst, args.set))


if __name__ == "__main__":
    main()
