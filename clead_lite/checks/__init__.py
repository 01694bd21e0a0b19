"""Feedback for the notebooks' exercises: each `check_*` runs the student's function against the reference
and says specifically what is wrong (or that it is right)."""
from .attacks import *  # noqa: F401,F403
from .contrastive import *  # noqa: F401,F403
