"""`python -m clead_lite ...`: the course's command line (clead_lite/course/cli.py)."""
from .course.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
