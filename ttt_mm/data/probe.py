"""Deprecated: ``python -m ttt_mm.data.probe`` is now ``python -m ttt_mm.tasks.probe`` (same options,
``-o`` optional); this forwards to it and will be removed."""

import sys
import warnings

from ttt_mm.tasks.probe import main

MESSAGE = "python -m ttt_mm.data.probe is deprecated; use python -m ttt_mm.tasks.probe"

if __name__ == "__main__":
    warnings.warn(MESSAGE, DeprecationWarning, stacklevel=1)  # attributed to __main__: shown by default
    sys.exit(main())
else:
    warnings.warn(MESSAGE, DeprecationWarning, stacklevel=2)
