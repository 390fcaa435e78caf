"""Print the memory plan of a pipeline config: per phase the estimated GPU peak and whether it fits.

    python -m vla_mbpo_ros.plan --config config/finetune_gpu.yaml --gpu-gb 80

Nothing is loaded: the shapes come from the backend names and the local snapshots' config.json files
(core/util/memory_plan.py). Exit status 1 when a phase does not fit; the last line says which.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    from vla_mbpo_ros.core.loop.pipeline import PipelineConfig
    from vla_mbpo_ros.core.util.memory_plan import plan_for_pipeline

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, type=Path)
    parser.add_argument("--gpu-gb", type=float, default=None, help="GPU memory in GiB (default: memory.gpu_gb)")
    parser.add_argument("--json", action="store_true", help="print the plan as JSON instead of a table")
    args = parser.parse_args(argv)
    plan = plan_for_pipeline(PipelineConfig.from_yaml(args.config), args.gpu_gb)
    if args.json:
        print(json.dumps(plan.to_dict(), indent=2))
    else:
        print(f"memory plan for {args.config} (ESTIMATES, not measurements; GPU {plan.gpu_gib:g} GiB)")
        print(plan.table())
    refusal = plan.refusal()
    print(refusal or "memory plan: every phase fits" if plan.gpu_gib > 0 else "memory plan: no GPU size given")
    return 1 if refusal else 0


if __name__ == "__main__":
    sys.exit(main())
