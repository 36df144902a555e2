"""Run configurations: each module defines ``get_config(arg=None) -> ConfigDict``.

In a clone this folder is the top-level package ``configs``; an installed diffjax
carries it as ``diffjax.configs`` (setup.py). The files share code with
``from configs.X import ...``, so when imported under the installed name the
package also answers to ``configs`` (unless another package already does).
"""

import sys as _sys

if __name__ != "configs":
    _sys.modules.setdefault("configs", _sys.modules[__name__])
