"""The README's first command: the whole pipeline end to end on the built-in synthetic corpus.

    python jobs/demo.py                      # generate -> ingest -> train -> register -> score -> AUC
    python jobs/demo.py --max-minutes 2      # a quicker, weaker model

Prints the frame AUC, where the outputs are, and how to open the MLflow UI on them. Exit status 0 on success.
"""

from __future__ import annotations

import sys

from pipelines.common.config import config_from_args, config_parser
from pipelines.common.console import configure_console
from pipelines.demo import DemoConfig


def main(argv: list[str] | None = None) -> int:
    config = config_from_args(DemoConfig, config_parser(DemoConfig, description=__doc__).parse_args(argv))
    configure_console(config.verbose)
    from pipelines.demo import run_demo

    run_demo(config)
    return 0


if __name__ == "__main__":
    sys.exit(main())
