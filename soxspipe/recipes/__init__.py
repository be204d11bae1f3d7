"""soxspipe recipes: one module per recipe, all built on :mod:`._base_recipe_`."""
