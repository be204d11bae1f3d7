"""soxspipe recipes: one module per recipe, all built on :mod:`._base_recipe_`.

:data:`RECIPES` registers every recipe the command line offers: its command name,
the module and class that implement it, and a one-line description for
``soxspipe -h``. A recipe appears on the command line only once it is listed here.
"""

import importlib

#: command name -> (module, class, one-line description), in cascade order
RECIPES = {
    "mbias": ("soxs_mbias", "soxs_mbias", "combine bias frames (VIS, ACQ) into a MASTER_BIAS"),
    "mdark": ("soxs_mdark", "soxs_mdark", "combine dark frames of one exposure time into a MASTER_DARK"),
}


def recipe_class(name):
    """Return the recipe class registered under the command ``name``."""
    module, cls, _ = RECIPES[name]
    return getattr(importlib.import_module(f"{__name__}.{module}"), cls)
