"""Carbon intensity of electricity (gCO2e/kWh) from codecarbon's bundled data, offline.

codecarbon ships per-country energy mixes (``data/private_infra/global_energy_mix.json``) and
regional data for the USA, Canada, China and the Nordic bidding zones. Rather than re-reading
those files, this asks codecarbon's own ``Emissions.get_private_infra_emissions`` for the
emissions of 1 kWh, so mlvigil's NVML path uses exactly the figure an OfflineEmissionsTracker
with the same ``country_iso_code``/``region`` would use. No network: no Electricity Maps token
is given, and the geo lookup that needs the network is never called.
"""

from __future__ import annotations

from dataclasses import dataclass

from mlvigil_producer.carbon_names import JOULES_PER_KWH


@dataclass(frozen=True)
class CarbonIntensity:
    g_per_kwh: float
    country_iso_code: str
    region: str | None
    source: str  # "codecarbon" or "configured"

    def grams(self, joules: float) -> float:
        return joules / JOULES_PER_KWH * self.g_per_kwh


class UnknownLocation(ValueError):
    """The country code is not in codecarbon's data (it would silently use the world average)."""


def carbon_intensity(
    country_iso_code: str, region: str | None = None, override_g_per_kwh: float | None = None
) -> CarbonIntensity:
    """gCO2e/kWh for a country (ISO alpha-3) and optional region, as codecarbon computes it.

    >>> round(carbon_intensity("FRA").g_per_kwh, 3)
    56.039
    >>> carbon_intensity("FRA", override_g_per_kwh=20.0).source
    'configured'
    """
    code = country_iso_code.upper()
    if override_g_per_kwh is not None:
        return CarbonIntensity(override_g_per_kwh, code, region, "configured")
    try:
        from codecarbon.core.emissions import Emissions
        from codecarbon.core.units import Energy
        from codecarbon.external.geography import GeoMetadata
        from codecarbon.input import DataSource
    except ImportError:
        raise UnknownLocation(
            "carbon budgets need codecarbon's intensity data: pip install 'mlvigil[carbon]',"
            " or set detectors.carbon.carbon_intensity_g_per_kwh"
        ) from None

    source = DataSource()
    if code not in source.get_global_energy_mix_data():
        raise UnknownLocation(f"country_iso_code {code!r} is not in codecarbon's energy-mix data")
    geo = GeoMetadata(country_iso_code=code, region=region)
    kg = Emissions(source).get_private_infra_emissions(Energy.from_energy(kWh=1.0), geo)
    return CarbonIntensity(float(kg) * 1000.0, code, region, "codecarbon")
