"""Alarm and detection settings of a field (the ``rules:`` section of a field file).

Every default here is a starting value from practice or a standard; the comment on each
says where it comes from. The rules engine reads these; nothing else interprets them.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field, model_validator

from aquavolt.profiles import Frozen


class Priority(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


class Selector(Frozen):
    """Which points a rule applies to: a device, or every device of a profile."""

    device: str | None = None
    profile: str | None = None
    point: str

    @model_validator(mode="after")
    def _one(self) -> Selector:
        if (self.device is None) == (self.profile is None):
            raise ValueError("give exactly one of device or profile")
        return self


class LimitRule(Selector):
    """High/low limits with deadband and delays (ISA-18.2)."""

    high: float | None = None
    low: float | None = None
    deadband: float = Field(0.0, ge=0, description="Clears only this far back inside the limit")
    on_delay_s: float = Field(0.0, ge=0)
    off_delay_s: float = Field(0.0, ge=0)
    priority: Priority = Priority.MEDIUM
    armed_by: str | None = Field(
        None, description="Point of the same device that must be true for the rule to run"
    )
    arm_delay_s: float = Field(
        20.0, ge=0, description="Seconds after armed_by turns true (pump low flow: 20 s)"
    )

    @model_validator(mode="after")
    def _limits(self) -> LimitRule:
        if self.high is None and self.low is None:
            raise ValueError("a limit rule needs high, low or both")
        if self.high is not None and self.low is not None and self.low >= self.high:
            raise ValueError(f"low {self.low} must be below high {self.high}")
        return self


class RateRule(Selector):
    """Rate of change above a bound, per second."""

    max_rate_per_s: float = Field(gt=0)
    priority: Priority = Priority.LOW


class DiscreteRule(Selector):
    """A discrete state is an alarm: breaker open, pump fault, door open."""

    alarm_value: bool | int = True
    on_delay_s: float = Field(0.0, ge=0)
    priority: Priority = Priority.MEDIUM
    message: str = ""


class EventTimeConfig(Frozen):
    """Event time in the rules engine: how long it waits for late messages, how often it judges time.

    Messages (data, device and gateway status, health) are put in event-time order in a buffer
    before any rule sees them: the newest timestamp seen, less ``allowed_lateness_s``, is the
    horizon; everything stamped at or before it is released in timestamp order. Time-based rules
    (stale, delays, windows) are judged on a grid of ``tick_s``. Both are event seconds, the same
    at any speed of the clock: a replay gives the same alarms however its messages arrive, as
    long as no message comes later than the lateness."""

    allowed_lateness_s: float = Field(
        10.0, ge=0, description="Event seconds a message may arrive after a newer one and still be "
        "judged in order (gateways interleaved, a gateway a poll cycle behind another); a message "
        "older than what was already released is processed at once and counted as late")
    tick_s: float = Field(
        5.0, ge=0.001, description="Time-based rules are judged at multiples of this many event seconds "
        "(a tick judges every rule: about 1,000 in the demo town)")
    max_future_s: float = Field(
        300.0, gt=0, description="Plausibility window, event seconds: a message stamped more than "
        "this far ahead of the engine's now (the wall clock; in a simulated run the clock's instant, "
        "in lockstep the last instant granted) is dead-lettered and counted, never moving event time")


class StaleDefaults(Frozen):
    """Stale data, judged on each gateway's own event time (its newest data, status or health
    timestamp), so a gateway whose messages lag the others' is not taken for silent."""

    intervals: float = Field(3.0, gt=0, description="No data for this many poll intervals")
    heartbeat_s: float = Field(
        900.0, ge=0, description="... beyond the edge's heartbeat (its max_silence_s): report by "
        "exception sends an unchanged value only this often, so silence shorter than that is normal")
    priority: Priority = Priority.LOW
    startup_grace_s: float = Field(
        300.0, ge=0, description="A device never heard from is not stale before this long after its "
        "gateway's first message (polls of a starting gateway spread over its slowest interval)")
    gateway_after_s: float = Field(
        300.0, gt=0, description="A gateway whose event time lags the engine's horizon by this "
        "much (no data, status or health) raises ONE stale alarm on the gateway id, not one per device")


class CommFailConfig(Frozen):
    """Loss of communication: a hold-off per device, one alarm per bus or gateway.

    The hold-off lets the outage roll-up (``OutageConfig.debounce_s``, 45 s) declare the
    outage first, so that the meters' loss of communication is suppressed by it instead of
    being annunciated meter by meter. When ``rollup_fraction`` of the devices of one bus (or
    of one gateway with several buses) fail together, one ``comm_fail`` alarm is raised on
    the bus (``{gateway}.{bus}``) or the gateway, and the devices' own are suppressed.
    """

    on_delay_s: float = Field(
        60.0, ge=0, description="A device's comm_fail must last this long (above the 45 s outage debounce)"
    )
    rollup_fraction: float = Field(
        0.8, gt=0, le=1, description="Share of a bus's (gateway's) devices failing together"
    )
    rollup_min_devices: int = Field(2, ge=2, description="Buses with fewer devices are not rolled up")
    rollup_off_delay_s: float = Field(
        30.0, ge=0, description="The bus alarm clears after this long below the fraction"
    )
    release_after_s: float = Field(
        60.0, ge=0, description="After an upstream fault (outage, bus, gateway) clears, each of its "
        "devices' loss-of-data alarms stays suppressed for the device's fastest poll interval plus "
        "this long: a meter read every 15 minutes has had the chance to answer again before any of "
        "its alarms can show",
    )
    priority: Priority = Priority.MEDIUM


class NightFlowConfig(Frozen):
    """Minimum night flow (UKWIR practice; ../docs/detection.md)."""

    window_start_h: float = Field(2.0, ge=0, lt=24, description="02:00-04:00 urban practice")
    window_end_h: float = Field(4.0, gt=0, le=24)
    baseline_nights: int = Field(7, ge=3, description="Rolling 7-night window")
    baseline_percentile: float = Field(20.0, gt=0, lt=100, description="20th percentile")
    night_active_fraction: float = Field(0.06, description="6 % of population active at night")
    cistern_l: float = Field(10.0, description="10 L cistern per night use")
    non_domestic_lph: float = Field(50.0, description="Small non-domestic users, 50 L/h each")
    background_lph_per_km: float = Field(40.0, description="Background losses per km of main")
    # The rise of the net night flow over the zone's baseline alarms when it exceeds the
    # LARGEST of these: an absolute floor, figures that scale with the zone (per service
    # connection, per km of mains: how water-loss practice states leakage), a share of the
    # baseline and the night-to-night noise of the baseline nights (docs/detection.md).
    rise_alarm_m3h: float = Field(
        0.2, ge=0, description="Absolute floor of the rise that alarms, m3/h (meter and night-use "
        "noise of a small zone)")
    rise_l_per_conn_h: float = Field(
        3.0, ge=0, description="... per service connection, L/conn/h (a good DMA's whole net night "
        "flow is a few L/conn/h)")
    rise_m3_per_km_h: float = Field(
        0.04, ge=0, description="... per km of mains, m3/km/h (the 40 L/km/h background allowance: a "
        "rise as large as the zone's whole background leakage)")
    rise_alarm_fraction: float = Field(0.25, ge=0, description="... this fraction of the baseline")
    rise_noise_sigmas: float = Field(
        3.0, ge=0, description="... this many standard deviations of the baseline nights' net night "
        "flow (a zone whose legitimate night use varies a lot detects less)")
    confirm_nights: int = Field(
        2, ge=1, description="Nights in a row above baseline + threshold: a step, not one odd night"
    )
    priority: Priority = Priority.MEDIUM


class ContinuousFlowConfig(Frozen):
    """Customer-side leak: 24 h with every hour above a small volume (AMI practice)."""

    hours: int = Field(24, ge=1)
    min_hourly_l: float = Field(4.0, gt=0, description="About 1 US gallon")
    max_read_gap_s: float = Field(
        1800.0, gt=0, description="Reads further apart (two 15-min reads) leave the hours unknown"
    )


class BurstConfig(Frozen):
    """Residual against a time-of-day profile, CUSUM (k 0.5 sigma, h 4-5 sigma)."""

    history_weeks: int = Field(4, ge=1)
    cusum_k_sigma: float = 0.5
    cusum_h_sigma: float = 5.0
    min_step_fraction: float = Field(0.2, description="Step of at least 20 % of expected flow")
    min_step_lps: float = Field(
        1.0, ge=0, description="... and of at least this much: a burst is a large, sudden flow "
        "(small zones at night vary by more than 20 % of their flow)"
    )
    pressure_drop_m: float = Field(3.0, description="Pressure drop that confirms a burst")
    min_duration_s: float = Field(
        900.0, ge=0, description="The step and its pressure drop must hold this long: a burst "
        "flows until it is repaired, a demand peak passes within minutes")
    slot_s: int = Field(300, ge=60, description="CUSUM on means of this many seconds")
    min_history_days: int = Field(3, ge=1, description="Days of a slot's profile before arming")
    sigma_floor_fraction: float = Field(
        0.03, ge=0, description="Sigma at least this share of expected flow (meter noise)"
    )
    clear_after_s: float = Field(900.0, ge=0, description="Back near the profile this long")
    priority: Priority = Priority.HIGH


class OutageConfig(Frozen):
    """Outage debounce and classification (IEC 61000-4-30, IEEE 1366, EN 50160)."""

    dead_fraction: float = Field(0.01, description="Interruption: below 1 % of nominal")
    debounce_s: float = Field(45.0, description="Outage declaration period of a meter, 30-45 s")
    sustained_after_s: float = Field(300.0, description="IEEE 1366: sustained after 5 min")
    rollup_fraction: float = Field(0.6, description="Share of a transformer's meters out")
    rollup_hold_s: float = Field(
        60.0, ge=0, description="A transformer outage waits for its feeder bay's state at the "
        "instant of the loss (a bay reading at or after it) at most this long past the debounce, "
        "so that a feeder outage whose bay reading arrives late is ONE alarm on the feeder")
    live_max_age_s: float = Field(
        180.0, gt=0, description="A voltage reading older than this no longer proves supply"
    )
    bay_skew_s: float = Field(
        15.0, ge=0, description="A feeder-bay reading taken less than this after a transformer's "
        "loss may still show the state before it (timestamps are taken at poll time; devices and "
        "gateways do not sample at one instant); late delivery is the lateness buffer's business "
        "(event_time.allowed_lateness_s)")
    priority: Priority = Priority.HIGH


class VoltageQualityConfig(Frozen):
    """EN 50160 on 10-minute means; imbalance limit 2 %."""

    band_fraction: float = 0.10
    hard_low_fraction: float = 0.15
    imbalance_pct: float = 2.0
    overload_fraction: float = Field(1.0, description="Transformer load above nameplate")
    power_factor_default: float = 0.95
    window_s: int = Field(600, ge=60, description="EN 50160: 10-minute mean RMS")
    week_outside_pct: float = Field(
        5.0, ge=0, le=100, description="EN 50160: 95 % of a week's 10-minute means within the "
        "band; more than this share outside over the last 7 days raises `voltage_week`")
    week_min_coverage: float = Field(
        0.9, gt=0, le=1, description="Share of a week's 10-minute windows that must have a mean "
        "before the weekly statistic is judged (interruptions and gaps are not counted)")


class OverConsumptionConfig(Frozen):
    """Same period last year, 364 days earlier, per day."""

    period_days: int = Field(14, ge=1)
    lag_days: int = Field(364, description="364 keeps weekdays aligned")
    min_history_days: int = Field(395, description="13 months")
    fallback_weeks: int = Field(4, description="Last weeks' average when history is short")
    ratio_threshold: float = Field(1.3, gt=1, description="+30 % (high-bill alerts): the alert is "
                                   "raised when the ratio is at least this")
    clear_ratio: float = Field(
        1.2, gt=0, description="... and cleared only once it is below this (hysteresis: a customer "
        "at 1.3 times last year is not told and untold on alternate days by SMS)")
    raise_after_days: int = Field(
        1, ge=1, description="Daily checks in a row at or above ratio_threshold before raising (the "
        "14-day period already averages out single days)")
    clear_after_days: int = Field(
        3, ge=1, description="Daily checks in a row below clear_ratio before clearing")
    max_plausible_daily_l: float = Field(20000.0, description="Days above this are excluded")
    holidays: list[str] = Field(default_factory=list, description="ISO dates to exclude")
    min_valid_days: int = Field(7, ge=1, description="Comparable days needed for a verdict")
    check_delay_s: float = Field(
        3600.0, ge=0, lt=86400,
        description="The daily check runs this long (event time) after midnight, local and UTC "
        "(the 1d rollup of InfluxDB 1.x is computed just after UTC midnight)",
    )

    @model_validator(mode="after")
    def _hysteresis(self) -> OverConsumptionConfig:
        if self.clear_ratio >= self.ratio_threshold:
            raise ValueError(f"clear_ratio {self.clear_ratio} must be below ratio_threshold "
                             f"{self.ratio_threshold}")
        return self


class SmsConfig(Frozen):
    cooldown_s: float = Field(86400.0, ge=0, description="One message per customer per day")
    max_retries: int = Field(5, ge=0)
    retry_base_s: float = Field(30.0, gt=0, description="First retry delay, doubled each time")
    notify_outage_after_s: float = Field(
        300.0, ge=0, description="Only sustained outages (IEEE 1366: 5 min) are sent to customers"
    )
    status_poll_s: float = Field(60.0, gt=0, description="Delivery status polling interval")


class RulesConfig(Frozen):
    event_time: EventTimeConfig = EventTimeConfig()
    limits: list[LimitRule] = Field(default_factory=list)
    rates: list[RateRule] = Field(default_factory=list)
    discrete: list[DiscreteRule] = Field(default_factory=list)
    stale: StaleDefaults = StaleDefaults()
    comm_fail: CommFailConfig = CommFailConfig()
    night_flow: NightFlowConfig = NightFlowConfig()
    continuous_flow: ContinuousFlowConfig = ContinuousFlowConfig()
    burst: BurstConfig = BurstConfig()
    outage: OutageConfig = OutageConfig()
    voltage: VoltageQualityConfig = VoltageQualityConfig()
    over_consumption: OverConsumptionConfig = OverConsumptionConfig()
    sms: SmsConfig = SmsConfig()
    prime_history_days: int = Field(
        21, ge=0, description="At start, the burst profiles and night-flow baselines are primed from this "
        "many days of the zone inlets' flow_lps and the night users' flow_lph history in InfluxDB "
        "(0: learn from live readings only)")
