# ruff: noqa: E501  (PromQL expressions read best unbroken)
"""The six mlvigil dashboards, as code. ``python -m dashboards`` writes them to generated/.

Panel ids are part of the public interface (``dashboards.links`` points findings at them):
change a panel's meaning, not its id, and never reuse an id for something else.
"""

from __future__ import annotations

from dashboards.spec import RANGE, RATE_INTERVAL, DashboardSpec, PanelSpec, Query, Step, Variable

RI = RATE_INTERVAL
OK = Step(None, "green")
NEUTRAL = (Step(None, "blue"),)
VERDICT = {"0": ("healthy", "green"), "1": ("degraded", "orange"), "2": ("fault", "red")}

# -- fleet overview --------------------------------------------------------------------------
FLEET = DashboardSpec(
    uid="mlvigil-fleet",
    title="mlvigil / Fleet overview",
    description="Findings firing across drift, training, GPUs and carbon, and the health of mlvigil itself.",
    tags=("overview",),
    variables=(
        Variable(
            "kind",
            "kind",
            "mlvigil_findings_firing",
            "Finding kinds (data_drift, straggler, gpu_fault, ...).",
        ),
    ),
    panels=(
        PanelSpec(
            1,
            "Critical findings firing",
            "Findings of severity critical firing now, all kinds. Open /api/v1/findings?severity=critical for"
            " the list; each kind's dashboard shows its subject.",
            "none",
            (Query('sum(mlvigil_findings_firing{severity="critical", kind=~"$kind"}) or vector(0)'),),
            (OK, Step(1, "red")),
            kind="stat",
            width=6,
            height=5,
        ),
        PanelSpec(
            2,
            "Warnings firing",
            "Findings of severity warning firing now, all kinds.",
            "none",
            (Query('sum(mlvigil_findings_firing{severity="warning", kind=~"$kind"}) or vector(0)'),),
            (OK, Step(1, "orange")),
            kind="stat",
            width=6,
            height=5,
        ),
        PanelSpec(
            3,
            "Findings firing by kind",
            "Findings firing now by kind and severity. A finding's link (Slack, API) opens the panel of its kind.",
            "none",
            (
                Query(
                    'sum by (kind, severity) (mlvigil_findings_firing{kind=~"$kind"})',
                    "{{kind}} {{severity}}",
                ),
            ),
            (OK, Step(1, "orange"), Step(5, "red")),
            kind="bargauge",
            width=12,
            height=5,
        ),
        PanelSpec(
            4,
            "Finding transitions",
            "Findings fired and resolved per interval, by kind. A kind that flaps (fires and resolves"
            " repeatedly) needs a longer window or a higher threshold.",
            "short",
            (
                Query(
                    f'sum by (kind, transition) (increase(mlvigil_findings_transitions_total{{kind=~"$kind"}}[{RI}]))',
                    "{{kind}} {{transition}}",
                ),
            ),
            NEUTRAL,
        ),
        PanelSpec(
            5,
            "Items ingested",
            "Spans, metric points and log records durably stored per second, by signal and transport.",
            "cps",
            (
                Query(
                    f"sum by (signal, transport) (rate(mlvigil_receiver_items_accepted_total[{RI}]))",
                    "{{signal}} {{transport}}",
                ),
            ),
            NEUTRAL,
        ),
        PanelSpec(
            6,
            "Items rejected",
            "Share of received items refused (malformed, too large, over the queue). Above 1 % producers"
            " are losing data: the reasons are on mlvigil_receiver_items_rejected_total.",
            "percentunit",
            (
                Query(
                    f"(sum(rate(mlvigil_receiver_items_rejected_total[{RI}])) or vector(0))"
                    f" / sum(rate(mlvigil_receiver_items_received_total[{RI}]))",
                    "rejected share",
                ),
            ),
            (OK, Step(0.01, "orange"), Step(0.05, "red")),
            min=0,
        ),
        PanelSpec(
            7,
            "Export latency p99",
            "99th percentile from receipt of an OTLP export request to its acknowledgement (after the"
            " durable commit), by signal.",
            "s",
            (
                Query(
                    "histogram_quantile(0.99, sum by (le, signal)"
                    f" (rate(mlvigil_receiver_request_duration_seconds_bucket[{RI}])))",
                    "{{signal}}",
                ),
            ),
            (OK, Step(0.5, "orange"), Step(2, "red")),
        ),
        PanelSpec(
            8,
            "Ingest queue fill",
            "Items waiting for a durable commit over the queue bound. At 100 % receivers answer 429 /"
            " UNAVAILABLE and producers retry.",
            "percentunit",
            (Query("max(mlvigil_ingest_queue_items / mlvigil_ingest_queue_capacity_items)", "queue fill"),),
            (OK, Step(0.5, "orange"), Step(0.9, "red")),
            min=0,
            max=1,
        ),
        PanelSpec(
            9,
            "Store commit latency p99",
            "99th percentile duration of one group commit to the store.",
            "s",
            (
                Query(
                    "histogram_quantile(0.99, sum by (le)"
                    f" (rate(mlvigil_store_commit_duration_seconds_bucket[{RI}])))",
                    "p99",
                ),
            ),
            (OK, Step(0.25, "orange"), Step(1, "red")),
        ),
        PanelSpec(
            10,
            "Records written",
            "Rows written per second by record table (llm_calls, inferences, training_steps, ...).",
            "cps",
            (Query(f"sum by (table) (rate(mlvigil_store_records_written_total[{RI}]))", "{{table}}"),),
            NEUTRAL,
        ),
        PanelSpec(
            11,
            "Alert deliveries",
            "Notification deliveries per interval by target and outcome; failures are retried from the"
            " durable outbox.",
            "short",
            (
                Query(
                    f"sum by (target, outcome) (increase(mlvigil_alerts_delivery_attempts_total[{RI}]))",
                    "{{target}} {{outcome}}",
                ),
            ),
            NEUTRAL,
        ),
        PanelSpec(
            12,
            "API requests",
            "API requests per second by route and status code.",
            "reqps",
            (Query(f"sum by (route, code) (rate(mlvigil_api_requests_total[{RI}]))", "{{route}} {{code}}"),),
            NEUTRAL,
        ),
    ),
)

# -- drift -----------------------------------------------------------------------------------
_DRIFT = 'monitor=~"$monitor", feature=~"$feature"'
DRIFT = DashboardSpec(
    uid="mlvigil-drift",
    title="mlvigil / Drift",
    description="Data, prediction, performance (realised and estimated) and LLM-traffic drift per monitor"
    " and feature.",
    tags=("drift",),
    variables=(
        Variable(
            "monitor", "monitor", "mlvigil_drift_window_rows", "Drift monitors (detectors.drift.monitors)."
        ),
        Variable(
            "feature", "feature", "mlvigil_drift_score", "Features, outputs or LLM signals a monitor tests."
        ),
    ),
    panels=(
        PanelSpec(
            1,
            "Monitors drifting",
            "Monitors whose latest window drifted (at least min_drifted_features features rejected).",
            "none",
            (Query('sum(mlvigil_drift_drifted{monitor=~"$monitor", feature=""}) or vector(0)'),),
            (OK, Step(1, "red")),
            kind="stat",
            width=6,
            height=6,
        ),
        PanelSpec(
            2,
            "Monitor state",
            "Drift decision of each monitor's latest window over time.",
            "none",
            (
                Query(
                    'max by (monitor) (mlvigil_drift_drifted{monitor=~"$monitor", feature=""})', "{{monitor}}"
                ),
            ),
            (OK, Step(1, "red")),
            kind="statetimeline",
            width=18,
            height=6,
            mappings={"0": ("no drift", "green"), "1": ("drift", "red")},
        ),
        PanelSpec(
            3,
            "Drift score per feature",
            "Distance between the reference and the current window per feature, on the scale of its test"
            " (PSI, Jensen-Shannon, Wasserstein, KS statistic, ...). Monitors configured with a distance"
            " threshold drift when the score reaches it; the dashed line marks PSI's customary 0.2.",
            "none",
            (Query(f"mlvigil_drift_score{{{_DRIFT}}}", "{{monitor}} {{feature}} ({{test}})"),),
            (OK, Step(0.1, "orange"), Step(0.2, "red")),
            width=12,
            show_thresholds=True,
            min=0,
        ),
        PanelSpec(
            4,
            "p-value per feature",
            "Multiple-testing corrected p-value per feature. A feature drifts when it falls to the"
            " monitor's alpha (dashed line: the default 0.05).",
            "none",
            (Query(f"mlvigil_drift_p_value{{{_DRIFT}}}", "{{monitor}} {{feature}} ({{test}})"),),
            (Step(None, "red"), Step(0.05, "green")),
            width=12,
            show_thresholds=True,
            min=0,
            max=1,
        ),
        PanelSpec(
            5,
            "Drifted features",
            "Features whose test rejected in the latest window (1 = drifted).",
            "none",
            (
                Query(
                    f'mlvigil_drift_drifted{{{_DRIFT}, feature!=""}}', "{{monitor}} {{feature}}", instant=True
                ),
            ),
            (OK, Step(1, "red")),
            kind="bargauge",
            width=8,
            mappings={"0": ("stable", "green"), "1": ("drifted", "red")},
        ),
        PanelSpec(
            6,
            "Window sizes",
            "Rows in the reference and the current window. Under the window's min_size a monitor makes no"
            " decision.",
            "short",
            (Query('mlvigil_drift_window_rows{monitor=~"$monitor"}', "{{monitor}} {{sample}}"),),
            (Step(None, "orange"), Step(50, "green")),
            width=8,
        ),
        PanelSpec(
            7,
            "Evaluations by outcome",
            "Monitor evaluations per interval: drift, no_drift, or why a window was skipped (too few rows,"
            " no reference).",
            "short",
            (
                Query(
                    f'sum by (monitor, outcome) (increase(mlvigil_drift_evaluations_total{{monitor=~"$monitor"}}[{RI}]))',
                    "{{monitor}} {{outcome}}",
                ),
            ),
            NEUTRAL,
            width=8,
        ),
        PanelSpec(
            8,
            "Estimated performance",
            "Label-free estimate of each metric of estimated_performance monitors (docs/estimation.md),"
            " with its 95% sampling band, the reference range it must stay within, and the realised"
            " value once labels arrived for the window.",
            "none",
            (
                Query(
                    'mlvigil_performance_estimate{monitor=~"$monitor"}',
                    "{{monitor}} {{metric}} {{value}}",
                ),
            ),
            NEUTRAL,
            width=24,
        ),
    ),
)

# -- LLM traffic -----------------------------------------------------------------------------
_LLM = 'service=~"$service", model=~"$model"'
LLM = DashboardSpec(
    uid="mlvigil-llm",
    title="mlvigil / LLM traffic",
    description="LLM calls from gen_ai, OpenLLMetry/traceloop and OpenInference spans: tokens, latency,"
    " time to first token, errors and finish reasons.",
    tags=("llm",),
    variables=(
        Variable(
            "service", "service", "mlvigil_llm_calls_total", "Applications calling LLMs (service.name)."
        ),
        Variable("model", "model", "mlvigil_llm_calls_total", "Response model (request model when absent)."),
    ),
    panels=(
        PanelSpec(
            1,
            "Calls",
            "LLM calls per second by service and model.",
            "reqps",
            (
                Query(
                    f"sum by (service, model) (rate(mlvigil_llm_calls_total{{{_LLM}}}[{RI}]))",
                    "{{service}} {{model}}",
                ),
            ),
            NEUTRAL,
        ),
        PanelSpec(
            2,
            "Tokens",
            "Input and output tokens per second by model.",
            "short",
            (
                Query(
                    f"sum by (model, type) (rate(mlvigil_llm_tokens_total{{{_LLM}}}[{RI}]))",
                    "{{model}} {{type}}",
                ),
            ),
            NEUTRAL,
        ),
        PanelSpec(
            3,
            "Latency",
            "Call duration percentiles (whole call, first byte to last token) by model.",
            "s",
            tuple(
                Query(
                    f"histogram_quantile({q}, sum by (le, model)"
                    f" (rate(mlvigil_llm_call_duration_seconds_bucket{{{_LLM}}}[{RI}])))",
                    f"{{{{model}}}} p{int(q * 100)}",
                )
                for q in (0.5, 0.95, 0.99)
            ),
            (OK, Step(10, "orange"), Step(30, "red")),
        ),
        PanelSpec(
            4,
            "Time to first token",
            "Time from request to the first streamed token, p50 and p95 by model (streaming calls only).",
            "s",
            tuple(
                Query(
                    f"histogram_quantile({q}, sum by (le, model)"
                    f" (rate(mlvigil_llm_time_to_first_token_seconds_bucket{{{_LLM}}}[{RI}])))",
                    f"{{{{model}}}} p{int(q * 100)}",
                )
                for q in (0.5, 0.95)
            ),
            (OK, Step(1, "orange"), Step(3, "red")),
        ),
        PanelSpec(
            5,
            "Error ratio",
            "Share of calls that ended in an error, by model. Error types are on mlvigil_llm_errors_total.",
            "percentunit",
            (
                Query(
                    f'(sum by (model) (rate(mlvigil_llm_calls_total{{{_LLM}, outcome="error"}}[{RI}])) or'
                    f" 0 * sum by (model) (rate(mlvigil_llm_calls_total{{{_LLM}}}[{RI}])))"
                    f" / sum by (model) (rate(mlvigil_llm_calls_total{{{_LLM}}}[{RI}]))",
                    "{{model}}",
                ),
            ),
            (OK, Step(0.01, "orange"), Step(0.05, "red")),
            min=0,
        ),
        PanelSpec(
            6,
            "Errors by type",
            "Failed calls per interval by error type (error.type or the span status).",
            "short",
            (
                Query(
                    f"sum by (model, error) (increase(mlvigil_llm_errors_total{{{_LLM}}}[{RI}]))",
                    "{{model}} {{error}}",
                ),
            ),
            (OK, Step(1, "red")),
        ),
        PanelSpec(
            7,
            "Finish reasons",
            "Calls per second by finish reason. A rising share of 'length' means answers are cut at"
            " max_tokens; 'content_filter' means refused output.",
            "reqps",
            (
                Query(
                    f"sum by (reason) (rate(mlvigil_llm_finish_reasons_total{{{_LLM}}}[{RI}]))", "{{reason}}"
                ),
            ),
            NEUTRAL,
            width=24,
        ),
    ),
)

# -- training --------------------------------------------------------------------------------
_RUN = 'run_id=~"$run_id"'
_RANK = 'run_id=~"$run_id", rank=~"$rank"'
TRAINING = DashboardSpec(
    uid="mlvigil-training",
    title="mlvigil / Training runs",
    description="Step time, slowdown, stragglers, goodput and loss of training runs.",
    tags=("training",),
    variables=(
        Variable(
            "run_id", "run_id", "mlvigil_training_step_time_seconds", "Training runs (mlvigil.train.run_id)."
        ),
        Variable("rank", "rank", "mlvigil_training_step_time_seconds", "Ranks of the selected runs."),
    ),
    panels=(
        PanelSpec(
            1,
            "Step time per rank",
            "Rolling median step time of each rank. One rank above the others is a straggler; all ranks"
            " rising together is a slowdown.",
            "s",
            (Query(f"mlvigil_training_step_time_seconds{{{_RANK}}}", "{{run_id}} rank {{rank}}"),),
            NEUTRAL,
        ),
        PanelSpec(
            2,
            "Slowdown",
            "Rolling median step time over the run's post-warm-up baseline (1 = as fast as it was). The"
            " training_slowdown finding needs at least 10 % (min_slowdown) and a CUSUM alarm.",
            "none",
            (Query(f"mlvigil_training_slowdown_ratio{{{_RUN}}}", "{{run_id}}"),),
            (OK, Step(1.1, "orange"), Step(1.5, "red")),
            show_thresholds=True,
        ),
        PanelSpec(
            3,
            "Straggler score",
            "Compute time of a rank over the median rank (relative) and over its own best (individual)."
            " Above 1.5 (max_relative) the straggler finding fires.",
            "none",
            (Query(f"mlvigil_training_straggler_score{{{_RANK}}}", "{{run_id}} rank {{rank}} {{score}}"),),
            (OK, Step(1.1, "orange"), Step(1.5, "red")),
            show_thresholds=True,
        ),
        PanelSpec(
            4,
            "Goodput",
            "Productive step time over wall time; the rest is data wait, checkpointing and idle time.",
            "percentunit",
            (Query(f"mlvigil_training_goodput_ratio{{{_RUN}}}", "{{run_id}}"),),
            (Step(None, "red"), Step(0.7, "orange"), Step(0.9, "green")),
            min=0,
            max=1,
        ),
        PanelSpec(
            5,
            "Time by category",
            "Accumulated rank time by category (compute, data wait, checkpoint, ...): where the badput goes.",
            "s",
            (
                Query(
                    f"sum by (run_id, category) (mlvigil_training_time_seconds{{{_RUN}}})",
                    "{{run_id}} {{category}}",
                    instant=True,
                ),
            ),
            NEUTRAL,
            kind="bargauge",
            width=8,
        ),
        PanelSpec(
            6,
            "Throughput",
            "Rolling median throughput of the run, in the unit named (samples or tokens per second).",
            "short",
            (Query(f"mlvigil_training_throughput_per_second{{{_RUN}}}", "{{run_id}} {{unit}}/s"),),
            NEUTRAL,
            width=8,
        ),
        PanelSpec(
            7,
            "Data wait",
            "Rolling median share of step time spent waiting for the input pipeline, per rank. Above 30 %"
            " the dataloader is the bottleneck.",
            "percentunit",
            (Query(f"mlvigil_training_data_wait_ratio{{{_RANK}}}", "{{run_id}} rank {{rank}}"),),
            (OK, Step(0.1, "orange"), Step(0.3, "red")),
            width=8,
            min=0,
            max=1,
        ),
        PanelSpec(
            8,
            "Loss",
            "Training loss of the run (median over ranks of the latest step). Spikes, divergence and"
            " plateaus raise loss_anomaly findings.",
            "none",
            (Query(f"mlvigil_training_loss{{{_RUN}}}", "{{run_id}}"),),
            NEUTRAL,
            width=24,
        ),
    ),
)

# -- GPU health ------------------------------------------------------------------------------
_GPU = 'host=~"$host", gpu=~"$gpu"'
_SLOWDOWN = "hw_slowdown|hw_thermal_slowdown|hw_power_brake_slowdown|sw_thermal_slowdown"
_FAULT_XIDS = "48|61|62|64|74|79|95|109|119|120|140"
_IGNORED_XIDS = "13|31|43|45|68"
# A PromQL rendering of the GPU health rules' defaults (gpu_health.config): 2 = fault, 1 =
# degraded, 0 = healthy; ``or`` keeps the first (worst) branch per GPU. The server's
# findings (gpu_fault / gpu_degraded) remain the authority: they also see lost GPUs that
# stopped reporting and windows longer than the dashboard's.
GPU_VERDICT = (
    "max by (host, gpu, uuid) ("
    f"  (max by (host, gpu, uuid) (mlvigil_gpu_lost{{{_GPU}}}) == 1) * 0 + 2"
    f'  or (sum by (host, gpu, uuid) (increase(mlvigil_gpu_ecc_errors_total{{{_GPU}, type="uncorrected",'
    f' counter="volatile"}}[10m])) > 0) * 0 + 2'
    f'  or (sum by (host, gpu, uuid) (increase(mlvigil_gpu_xid_events_total{{{_GPU}, xid=~"{_FAULT_XIDS}"}}[1h]))'
    " > 0) * 0 + 2"
    f'  or (max by (host, gpu, uuid) (mlvigil_gpu_clock_event_active{{{_GPU}, reason=~"{_SLOWDOWN}"}}) == 1)'
    " * 0 + 1"
    f"  or (sum by (host, gpu, uuid) (increase(mlvigil_gpu_xid_events_total{{{_GPU},"
    f' xid!~"{_FAULT_XIDS}|{_IGNORED_XIDS}"}}[1h])) > 0) * 0 + 1'
    f"  or (max by (host, gpu, uuid) (rate(mlvigil_gpu_pcie_replays_total{{{_GPU}}}[5m])) * 60 > 8) * 0 + 1"
    f"  or max by (host, gpu, uuid) (mlvigil_gpu_lost{{{_GPU}}}) * 0"
    ")"
)
GPU = DashboardSpec(
    uid="mlvigil-gpu",
    title="mlvigil / GPU health",
    description="Per GPU: verdict, throttling, temperatures, power, clocks, ECC, PCIe, NVLink and XID errors.",
    tags=("gpu",),
    variables=(
        Variable("host", "host", "mlvigil_gpu_utilization_ratio", "Nodes running the mlvigil GPU agent."),
        Variable("gpu", "gpu", "mlvigil_gpu_utilization_ratio", "GPU index on the node (nvidia-smi order)."),
    ),
    panels=(
        PanelSpec(
            1,
            "Verdict per GPU",
            "healthy / degraded / fault per GPU from the agent's metrics: fault on a lost GPU, uncorrected"
            " ECC errors or a hardware XID; degraded while hardware slowdown holds clocks, on other XIDs"
            " or PCIe replays above 8/min. gpu_fault and gpu_degraded findings link here.",
            "none",
            (Query(GPU_VERDICT, "{{host}} GPU {{gpu}}"),),
            (OK, Step(1, "orange"), Step(2, "red")),
            kind="statetimeline",
            width=24,
            mappings=VERDICT,
        ),
        PanelSpec(
            2,
            "Utilization",
            "Fraction of time one or more kernels ran.",
            "percentunit",
            (Query(f"mlvigil_gpu_utilization_ratio{{{_GPU}}}", "{{host}} GPU {{gpu}}"),),
            NEUTRAL,
            width=8,
            min=0,
            max=1,
        ),
        PanelSpec(
            3,
            "Temperature",
            "GPU die temperature. The GPU slows itself down at its slowdown temperature (dashed at 85 C,"
            " the rule's fallback limit).",
            "celsius",
            (Query(f"mlvigil_gpu_temperature_celsius{{{_GPU}}}", "{{host}} GPU {{gpu}}"),),
            (OK, Step(80, "orange"), Step(85, "red")),
            width=8,
            show_thresholds=True,
        ),
        PanelSpec(
            4,
            "Power over limit",
            "Power draw over the enforced power limit. Sustained above 105 % the limit is not enforced.",
            "percentunit",
            (
                Query(
                    f"mlvigil_gpu_power_watts{{{_GPU}}} / on (host, gpu, uuid) mlvigil_gpu_power_limit_watts{{{_GPU}}}",
                    "{{host}} GPU {{gpu}}",
                ),
            ),
            (OK, Step(0.95, "orange"), Step(1.05, "red")),
            width=8,
            min=0,
        ),
        PanelSpec(
            5,
            "Throttle reasons active",
            "Clock-event (throttle) reasons holding clocks down now. hw_* and sw_thermal mean the hardware"
            " protects itself; sw_power_cap is routine under load.",
            "none",
            (
                Query(
                    f"max by (host, gpu, reason) (mlvigil_gpu_clock_event_active{{{_GPU}}})",
                    "{{host}} GPU {{gpu}} {{reason}}",
                ),
            ),
            (OK, Step(1, "orange")),
            kind="statetimeline",
            width=12,
            mappings={"0": ("off", "transparent"), "1": ("active", "orange")},
        ),
        PanelSpec(
            6,
            "SM clock over maximum",
            "SM clock over its maximum. Under 70 % while busy and unexplained by a throttle reason, the"
            " clocks rule reports the GPU degraded.",
            "percentunit",
            (
                Query(
                    f"mlvigil_gpu_sm_clock_hertz{{{_GPU}}} / on (host, gpu, uuid) mlvigil_gpu_sm_clock_max_hertz{{{_GPU}}}",
                    "{{host}} GPU {{gpu}}",
                ),
            ),
            (Step(None, "red"), Step(0.7, "green")),
            width=12,
            min=0,
            max=1,
        ),
        PanelSpec(
            7,
            "ECC errors",
            "ECC errors per interval by type (volatile counters). Any uncorrected error is a fault.",
            "short",
            (
                Query(
                    f'sum by (host, gpu, type) (increase(mlvigil_gpu_ecc_errors_total{{{_GPU}, counter="volatile"}}[{RI}]))',
                    "{{host}} GPU {{gpu}} {{type}}",
                ),
            ),
            (OK, Step(1, "red")),
            width=8,
        ),
        PanelSpec(
            8,
            "PCIe replays",
            "PCIe replays per minute. Above 8/min (DCGM's health-check limit) the link is degraded.",
            "short",
            (
                Query(
                    f"sum by (host, gpu) (rate(mlvigil_gpu_pcie_replays_total{{{_GPU}}}[{RI}])) * 60",
                    "{{host}} GPU {{gpu}}",
                ),
            ),
            (OK, Step(8, "red")),
            width=8,
            show_thresholds=True,
        ),
        PanelSpec(
            9,
            "NVLink errors",
            "NVLink errors per interval by link and type (CRC, replay, recovery).",
            "short",
            (
                Query(
                    f"sum by (host, gpu, link, type) (increase(mlvigil_gpu_nvlink_errors_total{{{_GPU}}}[{RI}]))",
                    "{{host}} GPU {{gpu}} link {{link}} {{type}}",
                ),
            ),
            (OK, Step(1, "orange")),
            width=8,
        ),
        PanelSpec(
            10,
            "XID events",
            "XID events in the selected range by XID. 48, 63, 64, 74, 79, 94, 95 and 119/120 point at the"
            " GPU; 13, 31, 43, 45 and 68 at the application.",
            "short",
            (
                Query(
                    f"sum by (host, gpu, xid) (increase(mlvigil_gpu_xid_events_total{{{_GPU}}}[{RANGE}]))",
                    "{{host}} GPU {{gpu}} XID {{xid}}",
                    instant=True,
                ),
            ),
            (OK, Step(1, "red")),
            kind="bargauge",
            width=12,
        ),
        PanelSpec(
            11,
            "Memory used",
            "Device memory in use over its total.",
            "percentunit",
            (
                Query(
                    f"mlvigil_gpu_memory_used_bytes{{{_GPU}}} / on (host, gpu, uuid) mlvigil_gpu_memory_total_bytes{{{_GPU}}}",
                    "{{host}} GPU {{gpu}}",
                ),
            ),
            (OK, Step(0.9, "orange"), Step(0.98, "red")),
            width=12,
            min=0,
            max=1,
        ),
    ),
)

# -- carbon ----------------------------------------------------------------------------------
_SUBJ = 'scope=~"$scope", subject=~"$subject"'
CARBON = DashboardSpec(
    uid="mlvigil-carbon",
    title="mlvigil / Carbon",
    description="Energy and CO2e of runs, models, namespaces and teams; budget burn-down and forecast.",
    tags=("carbon",),
    variables=(
        Variable(
            "scope",
            "scope",
            "mlvigil_carbon_energy_joules_total",
            "Budget scope: run_id, model, namespace or team.",
        ),
        Variable(
            "subject", "subject", "mlvigil_carbon_energy_joules_total", "The run, model, namespace or team."
        ),
    ),
    panels=(
        PanelSpec(
            1,
            "Power",
            "Average power of each subject (energy per second), by source (codecarbon or NVML).",
            "watt",
            (
                Query(
                    f"sum by (scope, subject, source) (rate(mlvigil_carbon_energy_joules_total{{{_SUBJ}}}[{RI}]))",
                    "{{scope}}={{subject}} {{source}}",
                ),
            ),
            NEUTRAL,
        ),
        PanelSpec(
            2,
            "Emission rate",
            "CO2e emitted per hour by each subject.",
            "massg",
            (
                Query(
                    f"sum by (scope, subject) (rate(mlvigil_carbon_emissions_grams_total{{{_SUBJ}}}[{RI}])) * 3600",
                    "{{scope}}={{subject}} per hour",
                ),
            ),
            NEUTRAL,
        ),
        PanelSpec(
            3,
            "Energy in range",
            "Energy used by each subject in the selected time range.",
            "joule",
            (
                Query(
                    f"sum by (scope, subject) (increase(mlvigil_carbon_energy_joules_total{{{_SUBJ}}}[{RANGE}]))",
                    "{{scope}}={{subject}}",
                    instant=True,
                ),
            ),
            NEUTRAL,
            kind="bargauge",
            width=8,
        ),
        PanelSpec(
            4,
            "Budget used",
            "CO2e emitted over the budget, per budget. At 100 % carbon_overrun fires.",
            "percentunit",
            (
                Query(
                    f"sum by (scope, subject) (mlvigil_carbon_emissions_grams_total{{{_SUBJ}}})"
                    f" / on (scope, subject) group_right () mlvigil_carbon_budget_grams{{{_SUBJ}}}",
                    "{{budget}} {{scope}}={{subject}}",
                    instant=True,
                ),
            ),
            (OK, Step(0.8, "orange"), Step(1, "red")),
            kind="bargauge",
            width=8,
            min=0,
            max=1,
        ),
        PanelSpec(
            5,
            "Budget remaining",
            "Budget burn-down: grams of CO2e left before the budget is spent (negative: overrun).",
            "massg",
            (
                Query(
                    f"mlvigil_carbon_budget_grams{{{_SUBJ}}} - on (scope, subject) group_left ()"
                    f" sum by (scope, subject) (mlvigil_carbon_emissions_grams_total{{{_SUBJ}}})",
                    "{{budget}} {{scope}}={{subject}}",
                ),
            ),
            (Step(None, "red"), Step(0, "green")),
            width=8,
            show_thresholds=True,
        ),
        PanelSpec(
            6,
            "Forecast against budget",
            "Projected final CO2e (with lower and upper bounds) against the budget. A projection over the"
            " budget raises carbon_forecast_overrun before the overrun happens.",
            "massg",
            (
                Query(f"mlvigil_carbon_forecast_grams{{{_SUBJ}}}", "{{budget}} {{subject}} {{bound}}"),
                Query(f"mlvigil_carbon_budget_grams{{{_SUBJ}}}", "{{budget}} {{subject}} budget"),
            ),
            NEUTRAL,
            width=12,
        ),
        PanelSpec(
            7,
            "Progress",
            "Progress the forecast divides by: steps done over planned, compute time over expected, or the"
            " share of the budget period gone.",
            "percentunit",
            (Query(f"mlvigil_carbon_progress_ratio{{{_SUBJ}}}", "{{budget}} {{scope}}={{subject}}"),),
            NEUTRAL,
            width=12,
            min=0,
            max=1,
        ),
    ),
)

DASHBOARDS: tuple[DashboardSpec, ...] = (FLEET, DRIFT, LLM, TRAINING, GPU, CARBON)
