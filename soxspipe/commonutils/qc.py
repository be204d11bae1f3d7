"""QC values: recorded by recipes, checked against acceptable ranges, written out.

A recipe calls :meth:`QCRecorder.add` for each value; the recorder checks it
against its range from the settings and logs a warning for one out of range.
The base recipe writes each value as ``ESO QC <NAME>`` into every product
header, marks the header when any failed, and writes a QC table beside it.
"""

import logging
import math
from dataclasses import dataclass

from astropy.table import Table

from .keywords import set_value

log = logging.getLogger(__name__)


@dataclass
class QCValue:
    """One QC measurement and its verdict."""

    name: str
    value: float
    unit: str = ""
    comment: str = ""
    low: float | None = None
    high: float | None = None

    @property
    def passed(self):
        """True when the value is finite and inside its acceptable range."""
        if isinstance(self.value, (int, float)) and not math.isfinite(self.value):
            return False
        if self.low is not None and self.value < self.low:
            return False
        if self.high is not None and self.value > self.high:
            return False
        return True


class QCRecorder:
    """Collects the QC values of one recipe run.

    Parameters
    ----------
    ranges : dict
        ``{QC name: (low, high)}`` acceptable ranges (None for an open end).
    """

    def __init__(self, ranges=None):
        self.ranges = dict(ranges or {})
        self.values = []

    def add(self, name, value, unit="", comment=""):
        """Record a QC value; return it as a :class:`QCValue`."""
        name = name.upper()
        if hasattr(value, "item"):
            value = value.item()
        low, high = self.ranges.get(name, (None, None))
        qc = QCValue(name, value, unit, comment, low, high)
        self.values = [v for v in self.values if v.name != name] + [qc]
        if not qc.passed:
            log.warning("QC %s = %s %s is outside its acceptable range [%s, %s]", name, value, unit, low, high)
        return qc

    @property
    def failed(self):
        """The QC values outside their acceptable range."""
        return [v for v in self.values if not v.passed]

    def write_header(self, header):
        """Write every value as ``ESO QC <NAME>`` and the overall status into ``header``."""
        for v in self.values:
            value = round(v.value, 6) if isinstance(v.value, float) and math.isfinite(v.value) else v.value
            if isinstance(value, float) and not math.isfinite(value):
                value = str(value)
            comment = f"[{v.unit}] {v.comment}" if v.unit else v.comment
            set_value(header, "qc", value, comment[:40] or None, qc_name=v.name)
        failed = self.failed
        set_value(header, "qc_status", "FAIL" if failed else "PASS", "all QC values inside their ranges?")
        if failed:
            set_value(header, "qc_failed", ",".join(v.name for v in failed)[:60], "QC values out of range")

    def table(self):
        """The QC values as an astropy Table (name, value, unit, low, high, status, comment)."""
        return Table(
            rows=[
                (v.name, float(v.value), v.unit, v.low if v.low is not None else float("nan"),
                 v.high if v.high is not None else float("nan"), "PASS" if v.passed else "FAIL", v.comment)
                for v in self.values
            ],
            names=("name", "value", "unit", "low", "high", "status", "comment"),
            dtype=(str, float, str, float, float, str, str),
        )
