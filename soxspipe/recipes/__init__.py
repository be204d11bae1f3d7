"""soxspipe recipes: one module per recipe, all built on :mod:`._base_recipe_`.

:data:`RECIPES` registers every recipe the command line offers: its command name,
the module and class that implement it, and a one-line description for
``soxspipe -h``. A recipe appears on the command line only once it is listed here.
"""

import importlib

#: command name -> (module, class, one-line description[, extra usage]), in cascade order.
#: The optional extra usage (docopt syntax, e.g. ``[--poly=<degrees>]``) adds recipe-specific
#: options; their values reach the recipe as ``options`` (see :func:`recipe_usage`).
RECIPES = {
    "mbias": ("soxs_mbias", "soxs_mbias", "combine bias frames (VIS, ACQ) into a MASTER_BIAS"),
    "mdark": ("soxs_mdark", "soxs_mdark", "combine dark frames of one exposure time into a MASTER_DARK"),
    "disp_solution": ("soxs_disp_solution", "soxs_disp_solution",
                      "first-guess dispersion solution from a single-pinhole arc: DISP_TAB", "[--poly=<degrees>]"),
    "order_centres": ("soxs_order_centres", "soxs_order_centres",
                      "order-centre traces from a single-pinhole flat: ORDER_TAB", "[--poly=<degrees>]"),
    "mflat": ("soxs_mflat", "soxs_mflat", "master flat: slit flats + ORDER_TAB -> MASTER_FLAT, ORDER_TAB with edges (VIS, NIR); ACQ: one filter -> MASTER_FLAT_ACQ_<filter>"),
    "spat_solution": ("soxs_spatial_solution", "soxs_spatial_solution",
                      "full dispersion and spatial solution from a multi-pinhole arc: DISP_TAB, DISP_IMAGE",
                      "[--poly=<degrees>]"),
    "response": ("soxs_response", "soxs_response",
                 "response and end-to-end efficiency from a flux standard (raw frames + calibrations, or its "
                 "STD_FLUX_ORDERS): RESPONSE"),
    "telluric": ("soxs_telluric", "soxs_telluric",
                 "telluric transmission from a telluric standard (raw frames + calibrations, or its STD_TELL_MERGED; "
                 "a flux standard's STD_FLUX_MERGED serves): TELLURIC"),
    "stare": ("soxs_stare", "soxs_stare",
              "a staring OB (science, flux or telluric standard): sky removed, spectra extracted, merged, 2D"),
    "nod": ("soxs_nod", "soxs_nod",
            "a nodding OB: A-B pairs, residual sky, each positive image extracted, combined; merged, 2D"),
    "offset": ("soxs_offset", "soxs_offset",
               "an offset OB: object minus nearest sky frame(s), residual sky, extracted, combined; merged, 2D"),
    "image": ("soxs_image", "soxs_image",
              "acquisition-camera images of one filter: detrended, stacked, WCS and zero point -> IMAGE_ACQ_<filter>"),
    "merge": ("soxs_merge", "soxs_merge",
              "the UV-VIS and NIR SDP spectra of one OB (+ its SOURCE_CAT_ACQ): absolute flux, one merged spectrum"),
}


def recipe_class(name):
    """Return the recipe class registered under the command ``name``."""
    module, cls = RECIPES[name][:2]
    return getattr(importlib.import_module(f"{__name__}.{module}"), cls)


def recipe_usage(name):
    """The recipe-specific usage of command ``name`` ('' when it has none)."""
    entry = RECIPES[name]
    return entry[3] if len(entry) > 3 else ""
