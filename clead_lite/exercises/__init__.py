"""Feedback for the notebooks' exercises, one module per notebook: each `check_*` runs the student's function
against the reference and says specifically what is wrong (or that it is right); `or_reference(fn)` hands the
rest of a notebook the reference solution when the check did not pass (and says so)."""
from ._common import or_reference  # noqa: F401
from .nb00_setup import *  # noqa: F401,F403
from .nb01_fgsm import *  # noqa: F401,F403
from .nb02_pgd import *  # noqa: F401,F403
from .nb03_training import *  # noqa: F401,F403
from .nb04_contrastive import *  # noqa: F401,F403
from .nb05_clead import *  # noqa: F401,F403
from .nb05_loop import *  # noqa: F401,F403
from .nb06_evaluation import *  # noqa: F401,F403
from .nb07_embeddings import *  # noqa: F401,F403
