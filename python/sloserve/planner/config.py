"""Configuration of the slos-serve policy (one frozen dataclass, help text in metadata)."""

from __future__ import annotations

from dataclasses import dataclass, field

OUTPUT_LENGTH_MODES = ("reserve", "predict", "learn")
UNADMITTED_MODES = ("best_effort", "reject")


@dataclass(frozen=True)
class SLOsServeConfig:
    unadmitted: str = field(
        default="best_effort",
        metadata={
            "help": "what happens to a request the plan cannot admit: 'best_effort' serves it from leftover capacity; 'reject' refuses it with the reason (the server answers 429)"
        },
    )
    admit_all: bool = field(
        default=False, metadata={"help": "ablation: no admission control, every request joins the SLO tier"}
    )
    fixed_batch_tokens: int = field(
        default=0,
        metadata={
            "help": "ablation: > 0 uses this fixed per-step token budget (Sarathi-like) instead of TPOT-sized steps"
        },
    )
    replan_interval_s: float = field(
        default=0.0,
        metadata={
            "help": "ablation: > 0 decides admissions only on this timer (the authors' 0.1 s) instead of per event"
        },
    )
    output_length: str = field(
        default="learn",
        metadata={
            "help": "unknown output lengths: 'learn' (default) plans an online upper quantile per class and prompt bucket (planner/lengths.py); 'predict' plans predict_margin x the class mean; both re-plan on overrun; 'reserve' plans max_new_tokens (the live runtimes' default, runtime/step_timing.py). Known lengths are always planned as they are"
        },
    )
    predict_prior_tokens: int = field(
        default=256, metadata={"help": "predict mode: prior output length before any request of the class finished"}
    )
    predict_margin: float = field(
        default=1.5, metadata={"help": "predict mode: plan this multiple of the class's mean observed output length"}
    )
    length_quantile: float = field(
        default=0.5,
        metadata={
            "help": "learn mode: plan this quantile of the finished output lengths of the request's class and prompt bucket"
        },
    )
    length_min_samples: int = field(
        default=20,
        metadata={
            "help": "learn mode: lengths a bucket (else the class) needs before its quantile replaces the prior (max_new_tokens)"
        },
    )
    length_prior_tokens: int = field(
        default=256,
        metadata={
            "help": "learn mode: planned output length until enough lengths are known (0: max_new_tokens, the reserve-mode plan)"
        },
    )
    overrun_step_down: bool = field(
        default=True,
        metadata={
            "help": "learn mode: an outrunning request whose extension does not fit tries half as far past its current length, a quarter, ... before it is demoted"
        },
    )
    overrun_readmit: bool = field(
        default=True,
        metadata={
            "help": "learn mode: a request demoted for an overrun comes back to the SLO tier once a plan for it fits the KV pool and keeps the admitted plan feasible, if every token it emitted since met its deadline"
        },
    )
    length_window: int = field(
        default=1000, metadata={"help": "learn mode: most recent finished lengths kept per bucket and per class"}
    )
    promote_best_effort: bool = field(
        default=True, metadata={"help": "re-offer not-yet-started best-effort requests to the DP at every re-plan"}
    )
    max_candidates: int = field(
        default=8, metadata={"help": "at most this many candidates (new plus promotable) per DP run"}
    )
    max_front: int = field(default=16, metadata={"help": "DP: at most this many Pareto states kept per tier-count key"})
    max_states: int = field(
        default=64, metadata={"help": "DP: at most this many states per layer (beam; exact below it)"}
    )
    stretch_steps: bool = field(
        default=True,
        metadata={
            "help": "let a step run past L (up to max_step_s) when every decode has banked enough slack and the plan stays feasible"
        },
    )
    max_step_s: float = field(
        default=0.25, metadata={"help": "longest stretched step (bounds how long a new arrival waits for the engine)"}
    )
    planning_tolerance: float = field(
        default=0.0,
        metadata={"help": "plan against deadlines stretched like the attainment metric's tolerance (0: the plain SLO)"},
    )
    # On by default since stop 28: with repace, more capacity in paper mode and level in realistic
    # mode (docs/planner.md §3b); built only where full reservations no longer hold an arrival, so
    # it costs nothing while KV does not bind (docs/results.md §4).
    kv_profile: bool = field(
        default=True,
        metadata={
            "help": "admit on the peak KV the admitted requests can hold over time (growth and completion bounds) instead of the sum of their full reservations; not in predict mode; built only when the full reservations no longer hold an arrival"
        },
    )
    kv_growth_relax: float = field(
        default=1.0,
        metadata={
            "help": "ablation: divide the KV profile's growth rate by this; above 1 the profile may count less than the admitted requests can hold (no longer a bound, admitted requests may be left without KV); measures what the physical growth bound costs (docs/results.md §3b)"
        },
    )
    kv_growth_calibrate: bool = field(
        default=True,
        metadata={
            "help": "with kv_profile and speculation: count each resident's KV growth at kv_growth_margin x the kv_growth_quantile of the tokens residents gained per second recently (never above the physical bound) instead of the fastest rate the engine allows, every draft accepted (planner/growth.py)"
        },
    )
    kv_growth_quantile: float = field(
        default=0.99, metadata={"help": "with kv_growth_calibrate: the quantile of residents' recent 1 s gains"}
    )
    kv_growth_margin: float = field(
        default=1.25, metadata={"help": "with kv_growth_calibrate: the growth counted is this multiple of the quantile"}
    )
    best_effort_yield_kv: float = field(
        default=0.8,
        metadata={
            "help": "best-effort requests get no step tokens while the SLO tier's reserved KV is above this fraction of the pool (admitted requests then decode in short steps and free KV sooner); 1 = never yield"
        },
    )
    repace: bool = field(
        default=True,
        metadata={
            "help": "at completions while KV binds, tighten ahead residents' remaining deadlines to tau = repace_tau * L per token (never later than the SLO's; kept only if the plan stays feasible) so their KV profile finish moves earlier"
        },
    )
    repace_tau: float = field(
        default=1.0,
        metadata={
            "help": "with repace: per-token spacing of re-paced deadlines, as a multiple of the step length L (>= 1)"
        },
    )
    # Off since stop 31: the tail is allowed for by the step a re-paced decode ends (the executor
    # ends it by the due time at the tail), not by every token's spacing; with it, chatbot under
    # 10% step noise lost 14% of its exact-engine capacity against 7% (docs/planner.md §6b)
    repace_tail: bool = field(
        default=False,
        metadata={
            "help": "with repace: divide tau by the calibration's tail factor (1 with an exact engine; about 0.8 under 10% step noise), so one token per step at the tail keeps the pace"
        },
    )
    repace_slack_steps: float = field(
        default=2.0,
        metadata={"help": "with repace: the first re-paced token is due this many steps plus tau after now"},
    )
    repace_min_gain_steps: float = field(
        default=4.0,
        metadata={
            "help": "with repace: re-pace a resident only when its finish bound moves earlier by more than this many steps"
        },
    )
    repace_above: float = field(
        default=0.8,
        metadata={
            "help": "with repace and kv_profile: KV binds when the admitted requests' KV peak exceeds this fraction of the pool (or reserved KV exceeds best_effort_yield_kv)"
        },
    )
    calibrate: bool = field(
        default=True,
        metadata={
            "help": "scale the batch-time model by a high quantile of observed/predicted step times (planner/calibrate.py); a no-op while the engine matches the model"
        },
    )
    # 0.9 + a 0.999 tail (was 0.99 alone): realistic-mode capacity +4% to +37% per synthetic
    # scenario, authors' coder +28%, admitted misses 2 against 8 over the six scenarios
    # (benchmark/calibration_grid.py, docs/planner.md §6b). The forecasts that admit requests sum
    # many steps, whose noise averages out; only the step that ends at a deadline must survive
    # one slow step.
    calibrate_quantile: float = field(
        default=0.9,
        metadata={
            "help": "with calibrate: the quantile of recent observed/predicted step-time ratios the model is scaled by (never below 1)"
        },
    )
    # the tail at 0.9999 (0.999 until stop 35): a request meets several steps that end at one of
    # its deadlines, and at 0.999 the full system's admitted misses were 0.15-0.17% of admitted
    # requests in two of seven cells (8 seeds; the misses looked at: steps past their tail, or a
    # prompt whose last chunk followed a step that ran long);
    # at 0.9999 every cell is at most 0.1%. The price is capacity where TTFT deadlines are a
    # few steps away (tool-calling at 1 replica -18%; docs/planner.md §6b, stop 35)
    calibrate_tail_quantile: float = field(
        default=0.9999,
        metadata={
            "help": "with calibrate: a step that ends at a deadline (a decode's, an admitted prompt's TTFT it can finish by, the end the last plan chose for its first step) is sized to end in time even at this quantile of observed/predicted ratios (the larger of the empirical one and a fitted lognormal's), and plans count step 0 so; the rest at calibrate_quantile (<= calibrate_quantile: off). The affine form takes it over observed / its planned time; the live defaults turn it off (runtime/step_timing.py)"
        },
    )
    # 2 since stop 36 (inf before: every first step sized for the tail): plain slos-serve's noise
    # capacity +3.7% (summarizer) and +2.0% (tool-calling), the full system on the authors'
    # coder 0.875 -> 0.891; admitted misses in the seven cells of docs/planner.md §6b 23 against
    # 20, each at most 0.1% (every full-length first step at the scale, no prompt asked about:
    # summarizer 17 of 5,861, 0.29%)
    calibrate_first_tail_steps: float = field(
        default=2.0,
        metadata={
            "help": "with calibrate's tail: a full-length first step of a committed plan is sized for the tail only while an admitted prompt (or a candidate) is due within this many steps after its end; otherwise it runs at the scale like the steps after it, whose deadlines are further away (inf: every first step, as before stop 36)"
        },
    )
    # On by default: +6% / +7% / +17% capacity on synthetic chatbot / coder / mixed, authors'
    # summarizer +8%, chatbot -2% (one search step); docs/planner.md §4b.
    best_effort_step_frac: float = field(
        default=0.25,
        metadata={
            "help": "best-effort work pads a step to at most this fraction of the tightest TTFT SLO among recent requests, so an SLO arrival waits little for the running step (0: up to the full step)"
        },
    )
    best_effort_decodes_forced: bool = field(
        default=False,
        metadata={
            "help": "plan running best-effort decodes as forced items of every step, before SLO prefills: for an engine that decodes every running request each step (SGLang; the plugin's default)"
        },
    )
    calibrate_form: str = field(
        default="scale",
        metadata={
            "help": "with calibrate: 'scale' multiplies the model by the quantile of observed/predicted; 'affine' plans scale x model + offset, the pair on a grid of scales (offset: the quantile of the excess) with the smallest planned mean step (a fixed per-step cost, stalls; the SGLang plugin's default)"
        },
    )
    calibrate_run_steps: int = field(
        default=1,
        metadata={
            "help": "with calibrate: the quantile is taken over runs of this many consecutive steps (observed and predicted summed), not single steps: a deadline several steps away is missed by a slow run of steps (the tail of calibrate_tail_quantile stays a single step's); 1: single steps"
        },
    )
    calibrate_window: int = field(
        default=512, metadata={"help": "with calibrate: recent steps the quantile is taken over"}
    )
    calibrate_prior: float = field(
        default=1.2,
        metadata={
            "help": "with calibrate: the model's scale from the first step that differs from the model until 8 steps were observed (protects the first admissions on an engine not yet measured)"
        },
    )
    count_kv_read: bool = field(
        default=True,
        metadata={
            "help": "charge each step the KV its attention reads (the model's KV-read term, if any), the requests in it (a fitted per-request term, if any) and, with a prefill-attention term (roofline), every token the longest prefill context when sizing steps and admission grids; false: the behaviour before issue 16's fix (ablation)"
        },
    )
    idle_step_s: float = field(
        default=0.05, metadata={"help": "step length when no SLO request is resident (best effort only)"}
    )

    def __post_init__(self) -> None:
        if self.unadmitted not in UNADMITTED_MODES:
            raise ValueError(f"unadmitted must be one of {UNADMITTED_MODES}, got {self.unadmitted!r}")
        if self.output_length not in OUTPUT_LENGTH_MODES:
            raise ValueError(f"output_length must be one of {OUTPUT_LENGTH_MODES}, got {self.output_length!r}")
        if self.fixed_batch_tokens < 0 or self.replan_interval_s < 0:
            raise ValueError("fixed_batch_tokens and replan_interval_s must be >= 0")
        if self.max_candidates < 1 or self.max_front < 1 or self.max_states < 1:
            raise ValueError("max_candidates, max_front and max_states must be >= 1")
        if self.predict_prior_tokens < 1 or self.predict_margin <= 0:
            raise ValueError("predict_prior_tokens must be >= 1 and predict_margin > 0")
        if (
            not 0 < self.length_quantile <= 1
            or self.length_min_samples < 1
            or self.length_prior_tokens < 0
            or self.length_window < self.length_min_samples
        ):
            raise ValueError(
                "length_quantile must be in (0, 1], length_min_samples >= 1, length_window >= length_min_samples"
            )
        if not 0 <= self.planning_tolerance < 1:
            raise ValueError("planning_tolerance must be in [0, 1)")
        if not 0 <= self.best_effort_yield_kv <= 1:
            raise ValueError("best_effort_yield_kv must be in [0, 1]")
        if self.kv_growth_relax <= 0:
            raise ValueError("kv_growth_relax must be positive")
        if not (0 < self.kv_growth_quantile <= 1 and self.kv_growth_margin >= 1):
            raise ValueError("kv_growth_quantile must be in (0, 1] and kv_growth_margin >= 1")
        if self.repace_tau < 1 or self.repace_slack_steps < 0 or not 0 <= self.repace_above <= 1:
            raise ValueError("repace_tau must be >= 1, repace_slack_steps >= 0 and repace_above in [0, 1]")
        if (
            not 0 < self.calibrate_quantile <= 1
            or not 0 <= self.calibrate_tail_quantile <= 1
            or self.calibrate_window < 32
            or self.calibrate_prior < 1
            or not 1 <= self.calibrate_run_steps <= 8
        ):
            raise ValueError(
                "calibrate_quantile must be in (0, 1], calibrate_window >= 32, calibrate_prior >= 1"
                " and calibrate_run_steps in [1, 8]"
            )
        if not 0 <= self.best_effort_step_frac <= 1:
            raise ValueError("best_effort_step_frac must be in [0, 1]")
        if not self.calibrate_first_tail_steps >= 0:
            raise ValueError("calibrate_first_tail_steps must be >= 0 (inf: every first step)")
        if self.calibrate_form not in ("scale", "affine"):
            raise ValueError("calibrate_form must be 'scale' or 'affine'")
        if not (self.idle_step_s > 0 and self.max_step_s > 0):
            raise ValueError("idle_step_s and max_step_s must be positive")
