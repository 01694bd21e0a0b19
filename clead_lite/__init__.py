"""clead_lite: the code of the C-LEAD course.

The modules directly in this package are the subject, read top to bottom in this order: `data`, `models`,
`attacks`, `losses`, `training`, `evaluation`, `embeddings`, `faithful` (plus `validate`, the argument checks).
They import nothing else of the package. The course's machinery lives in subpackages that import the core,
never the other way round: `course` (profiles, model store, checkpoints, notebook setup, command line, results
tables), `exercises` (the notebooks' checks) and `widgets` (figures and explorers).
"""
__version__ = "0.1.0"
__all__ = ["__version__"]
