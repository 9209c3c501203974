"""The paper's image experiment (Table 1): one-class AUC of MemAE, MemAE-nonSpar, AE, OC-SVM and KDE.

Each class in turn is normal and the others anomalous; see experiments/images/one_class.py for the protocol and
experiments/images/benchmark.py for how each method is trained, configured and scored. Prints progress, then the table
in the paper's layout with the paper's numbers beside; writes table.md, table.csv, results.csv, runs.csv, config.json
and figure4.png to --out and logs one MLflow run (experiment "memae-bench-images") in the project's default store.

    python jobs/bench_images.py                                    # digits (bundled), 3 seeds, all 10 classes
    python jobs/bench_images.py --quick                            # smoke run: 1 seed, 2 classes, 5 epochs
    python jobs/bench_images.py --dataset mnist --root ~/data/mnist --epochs 20
    python jobs/bench_images.py --dataset cifar10 --root ~/data/cifar-10-batches-bin --epochs 20
    python jobs/bench_images.py --config bench.yaml --no-mlflow    # every flag is also a YAML key

Exit status 0 on success, 2 on bad input (missing data files, unknown classes, bad settings).
"""

from __future__ import annotations

import sys

from experiments.images.data import DatasetError
from experiments.images.run import BenchJobConfig, run
from pipelines.common.config import config_from_args, config_parser


def main(argv: list[str] | None = None) -> int:
    parser = config_parser(BenchJobConfig, description=__doc__)
    args = parser.parse_args(argv)
    try:
        run(config_from_args(BenchJobConfig, args), echo=lambda line: print(line, flush=True))
    except (DatasetError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
