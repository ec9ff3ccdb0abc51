"""Plan and execute merges: recipe -> per-tensor plan -> streamed execution."""

from mergestudio.engine.execute import ExecutionStats, execute_plan
from mergestudio.engine.merge import MergeResult, load_recipe, merge
from mergestudio.engine.plan import MergePlan, PlannedTensor, TensorInput, build_plan
from mergestudio.engine.targets import DictTarget, TensorTarget

__all__ = [
    "DictTarget",
    "ExecutionStats",
    "MergePlan",
    "MergeResult",
    "PlannedTensor",
    "TensorInput",
    "TensorTarget",
    "build_plan",
    "execute_plan",
    "load_recipe",
    "merge",
]
