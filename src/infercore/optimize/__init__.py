"""Making a trained torch model smaller and faster, measured: structured pruning (``prune``),
recovery by distillation or fine-tuning (``distill``) and the measured chain of pruning,
distillation, ``ic.convert`` and ``ic.calibrate`` (``optimize``).

    import infercore as ic
    pruned = ic.prune(model, example, ratio=0.5)                      # PruneResult(module, report)
    ic.distill(pruned.module, model, (x_train, y_train), epochs=5)    # DistillResult(module, report)
    res = ic.optimize(model, example, (x_train, y_train), (x_test, y_test),
                      steps=["prune", "distill", "convert", "int8"], target="openvino")
    print(res.report)                                                 # every step measured

Modules: ``pruning`` (torch-pruning underneath), ``distillation``, ``pipeline`` (``optimize``),
``speed`` (paired-round speed ratios), ``report``, ``torchmodel`` (a module's inputs, calls and
files) and ``lift`` (a ``.pt2``/``.pt`` program made prunable). Needs ``pip install "infercore[prune]"``.
"""

from __future__ import annotations

from ..facade import callable_module
from .distillation import DistillReport, DistillResult, distill
from .pipeline import STEPS, TARGETS, optimize
from .pruning import IMPORTANCES, LayerChannels, LeftAlone, PruneReport, PruneResult, prune
from .report import OptimizeReport, OptimizeResult, StepReport
from .speed import MIN_SPEEDUP, NO_SPEEDUP

__all__ = [
    "IMPORTANCES",
    "MIN_SPEEDUP",
    "NO_SPEEDUP",
    "STEPS",
    "TARGETS",
    "DistillReport",
    "DistillResult",
    "LayerChannels",
    "LeftAlone",
    "OptimizeReport",
    "OptimizeResult",
    "PruneReport",
    "PruneResult",
    "StepReport",
    "distill",
    "optimize",
    "prune",
]

callable_module(__name__, "optimize")  # ic.optimize stays callable once this package is imported
