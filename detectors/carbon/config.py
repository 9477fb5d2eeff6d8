"""Configuration of carbon accounting: the section ``detectors.carbon``.

Example::

    detectors:
      carbon:
        country_iso_code: FRA          # ISO 3166-1 alpha-3, as codecarbon uses it
        region: null                   # e.g. "california" (USA), "quebec" (CAN), "SE3" (SWE)
        budgets:
          - name: finetune-bert
            run_id: run-42             # exactly one of run_id | model | namespace | team
            kg_co2e: 1.5
            kwh: 20
            planned_steps: 10000       # progress = steps done / planned
          - name: each-run
            run_id: "*"                # one budget per run seen
            kg_co2e: 5
            expected_duration: 6h      # progress = elapsed compute time / expected
          - name: research-monthly
            team: research
            kg_co2e: 200
            period: month              # calendar month (UTC); progress = share of the month gone
        serving:
          - name: chat
            service: chat-api          # or model: (request model of LLM calls / model of inferences)
            g_per_1k_requests: 2.0
            g_per_1m_tokens: 40.0
            window: 1h
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from mlvigil.core.config import Duration, Strict

#: Budget matchers and the handler attribute each one reads (docs/carbon.md).
SCOPES = ("run_id", "model", "namespace", "team")


class BudgetConfig(Strict):
    """A carbon and/or energy budget for one run, model, namespace or team (or each of them)."""

    # Name of the budget, unique in the section; it is part of each Finding's identity.
    name: str = Field(min_length=1)
    # Exactly one matcher. "*" applies the budget to each value seen separately.
    run_id: str | None = None
    model: str | None = None
    namespace: str | None = None
    team: str | None = None
    # Limits; neither set = tracked only (metrics, no Findings).
    kg_co2e: float | None = Field(default=None, gt=0)
    kwh: float | None = Field(default=None, gt=0)
    # Progress for the forecast: steps done vs planned, or compute time vs expected duration.
    planned_steps: int | None = Field(default=None, gt=0)
    expected_duration: Duration | None = None
    # Calendar period the budget renews over (UTC); None = the subject's whole lifetime.
    period: Literal["day", "week", "month"] | None = None
    # Where energy comes from: codecarbon handler totals, GPU energy counters (NVML), or auto
    # (codecarbon where the subject has handler data, since it already includes its GPUs).
    source: Literal["auto", "codecarbon", "nvml"] = "auto"

    @model_validator(mode="after")
    def _one_matcher(self) -> BudgetConfig:
        set_ = [s for s in SCOPES if getattr(self, s) is not None]
        if len(set_) != 1:
            raise ValueError(f"set exactly one of {', '.join(SCOPES)} (got {set_ or 'none'})")
        if self.expected_duration == 0:
            raise ValueError("expected_duration must be > 0")
        return self

    @property
    def scope(self) -> str:
        return next(s for s in SCOPES if getattr(self, s) is not None)

    @property
    def match(self) -> str:
        value = getattr(self, self.scope)
        assert isinstance(value, str)
        return value


class ServingBudgetConfig(Strict):
    """SCI-style serving intensity, (E x I) / R, over a sliding window, with its budget."""

    name: str = Field(min_length=1)
    # Which traffic: service.name of the server, or the model (inferences.model, llm request model).
    service: str | None = None
    model: str | None = None
    g_per_1k_requests: float | None = Field(default=None, gt=0)
    g_per_1m_tokens: float | None = Field(default=None, gt=0)
    # Sliding window E and R are measured over.
    window: Duration = 3600.0
    # Energy of this traffic: codecarbon handler series whose service (or model attribute)
    # matches, or the NVML energy of these GPUs (hw.id UUIDs) when listed.
    gpu_uuids: list[str] = Field(default_factory=list)
    # Fewest requests in the window before the intensity is judged (tiny R is noise).
    min_requests: int = Field(default=100, ge=1)

    @model_validator(mode="after")
    def _one_matcher(self) -> ServingBudgetConfig:
        if (self.service is None) == (self.model is None):
            raise ValueError("set exactly one of service, model")
        if self.window <= 0:
            raise ValueError("window must be > 0")
        return self


class CarbonConfig(Strict):
    """Section ``detectors.carbon``."""

    # Where the GPUs run, for the carbon intensity of NVML energy (codecarbon's bundled data).
    country_iso_code: str = "USA"
    region: str | None = None
    # Fixed intensity in gCO2e/kWh, overriding the country/region data (e.g. a PPA's figure).
    carbon_intensity_g_per_kwh: float | None = Field(default=None, ge=0)
    # Power usage effectiveness applied to NVML energy (codecarbon applies its own pue).
    pue: float = Field(default=1.0, ge=1.0)
    budgets: list[BudgetConfig] = Field(default_factory=list)
    serving: list[ServingBudgetConfig] = Field(default_factory=list)
    # Forecast: no warning before this much progress (early projections are noise).
    min_progress: float = Field(default=0.05, ge=0.0, lt=1.0)
    # Forecast band: z-score on the spread of the recent energy rate (1.645 = 90% two-sided).
    band_z: float = Field(default=1.645, gt=0)
    # How many recent measurement intervals the rate spread is taken over.
    band_intervals: int = Field(default=20, ge=2)
    # NVML attribution: a run is active on its GPU between steps closer than this.
    max_step_gap: Duration = 300.0
    # How far back "*" budgets look for subjects, and lifetime budgets for data.
    lookback: Duration = 30 * 86400.0
    # Each carbon detector runs as this many instances (carbon_budgets[i/N]), each over the
    # (budget, subject) pairs -- serving budgets by name -- that hash to it. On replicas sharing
    # PostgreSQL each is a lease of its own (docs/scale-out.md); 1 on one node.
    shards: int = Field(default=1, ge=1, le=256)

    @field_validator("country_iso_code")
    @classmethod
    def _iso3(cls, value: str) -> str:
        value = value.strip().upper()
        if len(value) != 3 or not value.isalpha():
            raise ValueError(f"expected an ISO 3166-1 alpha-3 code such as FRA or USA, got {value!r}")
        return value

    @model_validator(mode="after")
    def _unique_names(self) -> CarbonConfig:
        names = [b.name for b in self.budgets] + [s.name for s in self.serving]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"budget names must be unique, repeated: {dupes}")
        return self
