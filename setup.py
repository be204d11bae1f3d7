"""Install soxspipe: ``pip install .`` (add ``[test]`` or ``[docs]`` for the extras)."""

from pathlib import Path

from setuptools import find_packages, setup

here = Path(__file__).resolve().parent
version = {}
exec((here / "soxspipe" / "__init__.py").read_text(), version)

install_requires = [
    "numpy>=1.24",
    "scipy>=1.10",
    "astropy>=6.0",
    "ccdproc>=2.4",
    "matplotlib>=3.7",
    "docopt>=0.6.2",
    "pyyaml>=6.0",
    "fundamentals>=2.8.3",
    # fundamentals imports six without declaring it
    "six",
    "bottleneck>=1.3",
    # astropy reads Unix-compressed (.fits.Z) raw frames through it
    "uncompresspy",
    # acquisition-camera imaging: sources and aperture photometry, cosmic rays
    "photutils>=2.0",
    "astroscrappy>=1.2",
    # the 1D science products load as specutils spectra (soxspipe.commonutils.specutils_loader)
    "specutils>=1.12",
]

setup(
    name="soxspipe",
    version=version["__version__"],
    description="The data-reduction pipeline for SOXS, the Son Of X-Shooter spectrograph at the ESO NTT",
    long_description=(here / "README.md").read_text(),
    long_description_content_type="text/markdown",
    license="GPL-3.0-or-later",
    packages=find_packages(include=["soxspipe", "soxspipe.*"]),
    include_package_data=True,
    package_data={"soxspipe": ["*.yaml", "static_calibrations/*.fits", "static_calibrations/*.yaml",
                               "static_calibrations/filters/*"]},
    python_requires=">=3.10",
    install_requires=install_requires,
    extras_require={
        "test": ["pytest>=7", "pytest-xdist", "sphinx>=7", "pypdfium2"],
        "docs": ["sphinx>=7"],
    },
    entry_points={"console_scripts": ["soxspipe=soxspipe.cl_utils:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Astronomy",
    ],
)
