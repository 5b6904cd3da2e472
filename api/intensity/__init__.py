"""Grid carbon intensity (gCO2e/kWh) from Electricity Maps, WattTime, the UK National Grid
API and CSV files, as ``IntensityPoint`` values; the caller stores them."""

from api.intensity.csvfile import read_csv
from api.intensity.sources import (
    LB_PER_MWH_TO_G_PER_KWH,
    ElectricityMaps,
    IntensityPoint,
    IntensityUnavailable,
    UkNationalGrid,
)
from api.intensity.watttime import AOER, MOER, WattTime

__all__ = [
    "AOER",
    "LB_PER_MWH_TO_G_PER_KWH",
    "MOER",
    "ElectricityMaps",
    "IntensityPoint",
    "IntensityUnavailable",
    "UkNationalGrid",
    "WattTime",
    "read_csv",
]
