#!/usr/bin/env python3
"""Writes Chattr's Grafana dashboards, deploy/grafana/dashboards/*.json.

The dashboards are edited here and the JSON is generated: change this file, run
`python3 deploy/grafana/generate.py`, commit both. `--check` writes nothing and exits 1
when a JSON file differs from what this script would write (scripts/check-prometheus.sh
runs it).

Query conventions (a test evaluates every query against a Prometheus scraping a live
cluster, with `$__rate_interval` replaced by `1m`):
- metric names and labels are those of docs/metrics.md;
- the only Grafana variable is `$__rate_interval`;
- every query returns a series on a running cluster: group only by labels whose values
  come from traffic (op, method, topic, type...), never select one label value that may
  not exist yet, and no `or vector(0)`.
"""

import json
import sys
from pathlib import Path

OUT_DIR = Path(__file__).resolve().parent / "dashboards"
DATASOURCE = {"type": "prometheus", "uid": "prometheus"}
RATE = "$__rate_interval"
# gRPC codes that mean the server failed, as opposed to answering a bad request.
RPC_FAILURE_CODES = "UNAVAILABLE|INTERNAL|UNKNOWN|DEADLINE_EXCEEDED"


# ---- query helpers ----------------------------------------------------------------------


def rate(selector):
    return f"rate({selector}[{RATE}])"


def sum_rate(selector, by=""):
    grouping = f" by ({by}) " if by else ""
    return f"sum{grouping}({rate(selector)})"


def quantile(q, histogram, by=""):
    """The q-quantile of a `_seconds` histogram over the rate interval, optionally per label."""
    labels = f"{by}, le" if by else "le"
    return f"histogram_quantile({q}, sum by ({labels}) ({rate(histogram + '_bucket')}))"


def rpc_failures(side, by=""):
    """Calls per second that failed on `side` (server or client) with a failure code.

    Written as all calls minus the others: the failure codes have no series until the first
    failure, the other codes do.
    """
    metric = f"chattr_rpc_{side}_seconds_count"
    answered = f'{metric}{{code!~"{RPC_FAILURE_CODES}"}}'
    return f"{sum_rate(metric, by)} - {sum_rate(answered, by)}"


def target(expr, legend):
    return {"expr": expr, "legendFormat": legend}


# ---- panels -----------------------------------------------------------------------------


def timeseries(title, description, targets, unit="short", width=12, height=8, stacked=False):
    custom = {
        "drawStyle": "line",
        "lineWidth": 1,
        "fillOpacity": 20 if stacked else 10,
        "showPoints": "never",
        "spanNulls": False,
        "stacking": {"mode": "normal" if stacked else "none", "group": "A"},
    }
    return {
        "type": "timeseries",
        "title": title,
        "description": description,
        "fieldConfig": {"defaults": {"unit": unit, "min": 0, "custom": custom}, "overrides": []},
        "options": {
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
        "targets": targets,
        "_size": (width, height),
    }


def stat(title, description, expr, unit="short", red_above=None, width=4, height=4):
    steps = [{"color": "green", "value": None}]
    if red_above is not None:
        steps.append({"color": "red", "value": red_above})
    return {
        "type": "stat",
        "title": title,
        "description": description,
        "fieldConfig": {
            "defaults": {
                "unit": unit,
                "thresholds": {"mode": "absolute", "steps": steps},
                "color": {"mode": "thresholds"},
            },
            "overrides": [],
        },
        "options": {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "value",
            "graphMode": "area",
            "justifyMode": "auto",
            "orientation": "auto",
            "textMode": "auto",
        },
        "targets": [target(expr, title)],
        "_size": (width, height),
    }


def dashboard(uid, title, description, rows):
    """A dashboard whose panels are laid out row by row, left to right."""
    panels = []
    y = 0
    for row in rows:
        x = 0
        row_height = 0
        for panel in row:
            width, height = panel.pop("_size")
            row_height = max(row_height, height)
            panel["id"] = len(panels) + 1
            panel["datasource"] = DATASOURCE
            panel["gridPos"] = {"h": height, "w": width, "x": x, "y": y}
            for index, t in enumerate(panel["targets"]):
                t["refId"] = chr(ord("A") + index)
                t["datasource"] = DATASOURCE
                t["range"] = True
            # Keys in a stable, readable order: identity and place first.
            order = ["id", "type", "title", "description", "datasource", "gridPos"]
            panels.append({k: panel[k] for k in order} | {k: v for k, v in panel.items() if k not in order})
            x += width
        assert x <= 24, f"{title}: a row is {x} units wide"
        y += row_height
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["chattr"],
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "graphTooltip": 1,
        "timezone": "browser",
        "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"},
        "links": [
            {
                "title": "Chattr dashboards",
                "type": "dashboards",
                "tags": ["chattr"],
                "asDropdown": True,
                "includeVars": False,
                "keepTime": True,
            }
        ],
        "annotations": {"list": []},
        "templating": {"list": []},
        "panels": panels,
    }


# ---- the dashboards ---------------------------------------------------------------------

DELIVERY = "chattr_gateway_delivery_latency_seconds"
COMMIT = "chattr_messaging_send_commit_seconds"


def overview():
    return dashboard(
        "chattr-overview",
        "Chattr / Overview",
        "Is Chattr up and are messages flowing? Start here, then follow the links to the other dashboards.",
        [
            [
                stat("Open sockets", "WebSocket connections open on all gateways.", "sum(chattr_gateway_connections)"),
                stat(
                    "Connected users",
                    "Users with an open socket, summed over gateways (a user connected to two gateways counts twice).",
                    "sum(chattr_gateway_users)",
                ),
                stat(
                    "Messages committed",
                    "Messages committed per second.",
                    sum_rate("chattr_messaging_messages_accepted_total"),
                    unit="ops",
                ),
                stat(
                    "Delivery p99",
                    "99th percentile from commit to the receiver's socket. Pages above 0.5 s (ChattrDeliveryLatencyHigh).",
                    quantile(0.99, DELIVERY),
                    unit="s",
                    red_above=0.5,
                ),
                stat("Active calls", "Live calls in the cluster.", "max(chattr_video_calls_active)"),
                stat(
                    "Oldest unpublished event",
                    "Age of the oldest outbox row not yet on Kafka. Pages above 30 s (ChattrOutboxOldestRowTooOld).",
                    "max(chattr_outbox_oldest_age_seconds)",
                    unit="s",
                    red_above=30,
                ),
            ],
            [
                timeseries(
                    "Instances up by role",
                    "Scraped instances answering, per role (Prometheus `up`).",
                    [target('sum by (job) (up{job=~"chattr-.+"})', "{{job}}")],
                ),
                timeseries(
                    "Backends reachable",
                    "1 when every process that uses the backend passed its last health probe; 0 when at least one did not (see Backends).",
                    [target("min by (backend) (chattr_backend_up)", "{{backend}}")],
                ),
            ],
            [
                timeseries(
                    "Messages",
                    "Messages committed, and message events written to receivers' sockets (one per receiving socket).",
                    [
                        target(sum_rate("chattr_messaging_messages_accepted_total"), "committed"),
                        target(sum_rate("chattr_gateway_messages_delivered_total"), "delivered"),
                    ],
                    unit="ops",
                ),
                timeseries(
                    "Latency",
                    "Commit to the receiver's socket (delivery), and the commit itself (the sender's ack).",
                    [
                        target(quantile(0.5, DELIVERY), "delivery p50"),
                        target(quantile(0.99, DELIVERY), "delivery p99"),
                        target(quantile(0.99, COMMIT), "commit p99"),
                    ],
                    unit="s",
                ),
            ],
            [
                timeseries(
                    "Logins by result",
                    "Login attempts per second.",
                    [target(sum_rate("chattr_auth_attempts_total", "result"), "{{result}}")],
                    unit="ops",
                ),
                timeseries(
                    "Failures",
                    "Failed backend calls, retried pipeline failures and gRPC calls that failed on the server, per second. Zero on a healthy cluster.",
                    [
                        target(sum_rate("chattr_store_errors_total"), "store"),
                        target(sum_rate("chattr_cache_errors_total"), "cache"),
                        target(sum_rate("chattr_bus_produce_errors_total"), "bus produce"),
                        target(sum_rate("chattr_outbox_relay_errors_total"), "outbox relay"),
                        target(sum_rate("chattr_fanout_errors_total"), "fan-out"),
                        target(rpc_failures("server"), "gRPC server"),
                    ],
                    unit="ops",
                ),
            ],
        ],
    )


def delivery():
    fanout = "chattr_fanout_commit_to_publish_seconds"
    return dashboard(
        "chattr-delivery",
        "Chattr / Delivery",
        "The path of a message: commit in PostgreSQL, outbox relay to Kafka, fan-out to the recipients' channels, write to their sockets.",
        [
            [
                timeseries(
                    "Commit to socket",
                    "From the message's commit to the write of its frame to a receiver's socket. Wall clocks of two machines: needs NTP.",
                    [
                        target(quantile(0.5, DELIVERY), "p50"),
                        target(quantile(0.9, DELIVERY), "p90"),
                        target(quantile(0.99, DELIVERY), "p99"),
                    ],
                    unit="s",
                ),
                timeseries(
                    "Commit (sender's ack)",
                    "Time to commit a message, which is when the sender gets its ack.",
                    [target(quantile(0.5, COMMIT), "p50"), target(quantile(0.99, COMMIT), "p99")],
                    unit="s",
                ),
            ],
            [
                timeseries(
                    "Commit to channel publish",
                    "From commit to publication on the recipients' pub/sub channels: the relay, Kafka and fan-out part of delivery.",
                    [target(quantile(0.5, fanout), "p50"), target(quantile(0.99, fanout), "p99")],
                    unit="s",
                ),
                timeseries(
                    "Throughput",
                    "Each stage per second. Committed and published count messages (published includes other events); fanned out counts message events per user channel; delivered counts writes to sockets.",
                    [
                        target(sum_rate("chattr_messaging_messages_accepted_total"), "committed"),
                        target(sum_rate("chattr_outbox_published_total"), "published to Kafka"),
                        target(sum_rate("chattr_fanout_messages_total"), "fanned out"),
                        target(sum_rate("chattr_gateway_messages_delivered_total"), "delivered"),
                    ],
                    unit="ops",
                ),
            ],
            [
                timeseries(
                    "Resumes",
                    "Per conversation on (re)connect: caught up from the client's position (ok), or told to page history instead (resync).",
                    [target(sum_rate("chattr_gateway_resume_total", "result"), "{{result}}")],
                    unit="ops",
                    stacked=True,
                ),
                timeseries(
                    "Duplicates and gaps",
                    "Deliveries a gateway dropped because the socket had them already, and gaps in live delivery filled from the store.",
                    [
                        target(sum_rate("chattr_gateway_duplicates_dropped_total"), "duplicates dropped"),
                        target(sum_rate("chattr_gateway_gaps_filled_total"), "gaps filled"),
                    ],
                    unit="ops",
                ),
            ],
        ],
    )


def gateway():
    return dashboard(
        "chattr-gateway",
        "Chattr / Gateway",
        "WebSocket gateways: sockets, frames, queues and the sockets they close.",
        [
            [
                timeseries(
                    "Open sockets by gateway",
                    "WebSocket connections open on each gateway.",
                    [target("sum by (instance) (chattr_gateway_connections)", "{{instance}}")],
                ),
                timeseries(
                    "Sessions and users",
                    "Distinct sessions (devices) and users with an open socket, summed over gateways.",
                    [
                        target("sum(chattr_gateway_sessions)", "sessions"),
                        target("sum(chattr_gateway_users)", "users"),
                    ],
                ),
            ],
            [
                timeseries(
                    "Frames in by type",
                    "Frames received from clients; `invalid` counts frames that did not parse.",
                    [target(sum_rate("chattr_gateway_frames_in_total", "type"), "{{type}}")],
                    unit="ops",
                ),
                timeseries(
                    "Frames out by type",
                    "Frames sent to clients.",
                    [target(sum_rate("chattr_gateway_frames_out_total", "type"), "{{type}}")],
                    unit="ops",
                ),
            ],
            [
                timeseries(
                    "Queued deliveries",
                    "Deliveries waiting in socket queues on each gateway, and the fullest single queue (sampled every 5 s).",
                    [
                        target("sum by (instance) (chattr_gateway_queued_events)", "queued {{instance}}"),
                        target("max(chattr_gateway_queue_depth_max)", "fullest queue"),
                    ],
                ),
                timeseries(
                    "Messages delivered by gateway",
                    "Message events written to sockets by each gateway.",
                    [target(sum_rate("chattr_gateway_messages_delivered_total", "instance"), "{{instance}}")],
                    unit="ops",
                ),
            ],
            [
                timeseries(
                    "Sockets closed by the gateway",
                    "Closed because their queue overflowed (slow consumer, resumable) or because a write stalled.",
                    [
                        target(sum_rate("chattr_gateway_slow_consumer_disconnects_total"), "slow consumer"),
                        target(sum_rate("chattr_gateway_write_timeouts_total"), "write timeout"),
                    ],
                    unit="ops",
                ),
                timeseries(
                    "Frames refused by the rate limit",
                    "Frames refused by the per-socket limiter.",
                    [target(sum_rate("chattr_gateway_rate_limited_total", "bucket"), "{{bucket}}")],
                    unit="ops",
                ),
            ],
        ],
    )


def auth():
    hashing = "chattr_auth_password_hash_seconds"
    return dashboard(
        "chattr-auth",
        "Chattr / Auth",
        "Logins, signups, token refreshes, rate limits and password hashing.",
        [
            [
                timeseries(
                    "Logins by result",
                    "Login attempts per second.",
                    [target(sum_rate("chattr_auth_attempts_total", "result"), "{{result}}")],
                    unit="ops",
                    stacked=True,
                ),
                timeseries(
                    "Signups",
                    "Accounts created per second.",
                    [target(sum_rate("chattr_auth_signups_total"), "signups")],
                    unit="ops",
                ),
            ],
            [
                timeseries(
                    "Token refreshes by result",
                    "Refresh-token exchanges per second.",
                    [target(sum_rate("chattr_auth_refreshes_total", "result"), "{{result}}")],
                    unit="ops",
                    stacked=True,
                ),
                timeseries(
                    "Rate limited by bucket",
                    "Requests refused by a rate limit: logins per user and per IP, signups per IP.",
                    [target(sum_rate("chattr_auth_rate_limited_total", "bucket"), "{{bucket}}")],
                    unit="ops",
                ),
            ],
            [
                timeseries(
                    "Password hashing time",
                    "Argon2id hashing and verification. Logins and signups spend most of their time here; capacity follows CPU cores.",
                    [target(quantile(0.5, hashing), "p50"), target(quantile(0.99, hashing), "p99")],
                    unit="s",
                ),
                timeseries(
                    "Auth CPU",
                    "CPU used by each auth process, in cores.",
                    [
                        target(
                            sum_rate('process_cpu_seconds_total{job="chattr-auth"}', "instance"),
                            "{{instance}}",
                        )
                    ],
                ),
            ],
        ],
    )


def video():
    return dashboard(
        "chattr-video",
        "Chattr / Video",
        "Calls: ringing, answering, ending, signaling relay.",
        [
            [
                timeseries(
                    "Active calls",
                    "Live calls in the cluster (each video instance reports the same number).",
                    [target("max(chattr_video_calls_active)", "active calls")],
                ),
                timeseries(
                    "Calls started",
                    "Calls started per second.",
                    [target(sum_rate("chattr_video_calls_started_total"), "started")],
                    unit="ops",
                ),
            ],
            [
                timeseries(
                    "Calls ended by outcome",
                    "Calls ended per second: completed, missed (nobody answered), declined, cancelled by the caller.",
                    [target(sum_rate("chattr_video_calls_ended_total", "outcome"), "{{outcome}}")],
                    unit="ops",
                    stacked=True,
                ),
                timeseries(
                    "Participants dropped",
                    "Devices dropped from a call after going silent for the grace period.",
                    [target(sum_rate("chattr_video_participants_dropped_total"), "dropped")],
                    unit="ops",
                ),
            ],
            [
                timeseries(
                    "Signals relayed",
                    "Offers, answers and ICE candidates relayed between participants.",
                    [target(sum_rate("chattr_video_signals_relayed_total"), "signals")],
                    unit="ops",
                ),
                timeseries(
                    "Call starts refused by the rate limit",
                    "Call starts refused by the per-user limit.",
                    [target(sum_rate("chattr_video_rate_limited_total"), "refused")],
                    unit="ops",
                ),
            ],
        ],
    )


def backends():
    return dashboard(
        "chattr-backends",
        "Chattr / Backends",
        "PostgreSQL (store), Redis (cache), Kafka (bus), the outbox, gRPC between roles, and the processes themselves.",
        [
            [
                timeseries(
                    "Backend up by process",
                    "1 if the backend answered the process's last health probe (every 5 s).",
                    [target("chattr_backend_up", "{{backend}} {{instance}}")],
                ),
                timeseries(
                    "Health probe time p99",
                    "How long the health probes take; the bus probe is a full canary round trip.",
                    [target(quantile(0.99, "chattr_backend_probe_seconds", "backend"), "{{backend}}")],
                    unit="s",
                ),
            ],
            [
                timeseries(
                    "Store call latency p99 by op",
                    "PostgreSQL calls.",
                    [target(quantile(0.99, "chattr_store_op_seconds", "op"), "{{op}}")],
                    unit="s",
                ),
                timeseries(
                    "Store errors by op",
                    'Store calls that failed ("not found" is not a failure).',
                    [target(sum_rate("chattr_store_errors_total", "op"), "{{op}}")],
                    unit="ops",
                ),
            ],
            [
                timeseries(
                    "Cache call latency p99 by op",
                    "Redis calls.",
                    [target(quantile(0.99, "chattr_cache_op_seconds", "op"), "{{op}}")],
                    unit="s",
                ),
                timeseries(
                    "Cache errors by op",
                    "Redis calls that failed.",
                    [target(sum_rate("chattr_cache_errors_total", "op"), "{{op}}")],
                    unit="ops",
                ),
            ],
            [
                timeseries(
                    "Bus produce latency p99 by topic",
                    "Time to publish a batch, acknowledged by the broker.",
                    [target(quantile(0.99, "chattr_bus_produce_seconds", "topic"), "{{topic}}")],
                    unit="s",
                ),
                timeseries(
                    "Bus produce errors by topic",
                    "Failed publishes.",
                    [target(sum_rate("chattr_bus_produce_errors_total", "topic"), "{{topic}}")],
                    unit="ops",
                ),
            ],
            [
                timeseries(
                    "Bus consume delay p99 by topic",
                    "From a record's publication to its delivery to a consumer.",
                    [target(quantile(0.99, "chattr_bus_consume_delay_seconds", "topic"), "{{topic}}")],
                    unit="s",
                ),
                timeseries(
                    "Consumer lag",
                    "Records behind the end of the topic, per consumer group. Pages above 1000 for 10 minutes (ChattrBusConsumerLagHigh).",
                    [target("sum by (topic, group) (chattr_bus_consumer_lag)", "{{group}} on {{topic}}")],
                ),
            ],
            [
                timeseries(
                    "Outbox backlog",
                    "Unpublished outbox rows (reported by the relay holding the lease), and rows published per second.",
                    [
                        target("max(chattr_outbox_backlog)", "unpublished rows"),
                        target(sum_rate("chattr_outbox_published_total"), "published/s"),
                    ],
                ),
                timeseries(
                    "Oldest unpublished row",
                    "Age of the oldest outbox row not yet on Kafka (0 when the outbox is empty).",
                    [target("max(chattr_outbox_oldest_age_seconds)", "oldest row")],
                    unit="s",
                ),
            ],
            [
                timeseries(
                    "Relay leader",
                    "1 on the relay holding the outbox lease; exactly one relay should.",
                    [target("chattr_outbox_relay_leader", "{{instance}}")],
                    width=8,
                ),
                timeseries(
                    "gRPC server latency p99 by method",
                    "Handling time in auth, messaging and video, all status codes.",
                    [target(quantile(0.99, "chattr_rpc_server_seconds", "method"), "{{method}}")],
                    unit="s",
                    width=8,
                ),
                timeseries(
                    "gRPC client latency p99 by method",
                    "The same calls seen by their callers, network and failover included.",
                    [target(quantile(0.99, "chattr_rpc_client_seconds", "method"), "{{method}}")],
                    unit="s",
                    width=8,
                ),
            ],
            [
                timeseries(
                    "gRPC server calls by code",
                    "Calls handled per second by status code. NOT_FOUND, PERMISSION_DENIED, INVALID_ARGUMENT and UNAUTHENTICATED are answers to the caller; UNAVAILABLE, INTERNAL, UNKNOWN and DEADLINE_EXCEEDED are failures.",
                    [target(sum_rate("chattr_rpc_server_seconds_count", "code"), "{{code}}")],
                    unit="ops",
                    width=8,
                ),
                timeseries(
                    "gRPC server failures by method",
                    f"Calls per second that ended in {RPC_FAILURE_CODES.replace('|', ', ')}.",
                    [target(rpc_failures("server", "method"), "{{method}}")],
                    unit="ops",
                    width=8,
                ),
                timeseries(
                    "gRPC client calls by code",
                    "Calls made per second by status code, as their callers saw them.",
                    [target(sum_rate("chattr_rpc_client_seconds_count", "code"), "{{code}}")],
                    unit="ops",
                    width=8,
                ),
            ],
            [
                timeseries(
                    "CPU by role",
                    "CPU used by all processes of each role, in cores.",
                    [target(sum_rate('process_cpu_seconds_total{job=~"chattr-.+"}', "job"), "{{job}}")],
                ),
                timeseries(
                    "Resident memory by role",
                    "Resident memory of all processes of each role.",
                    [target('sum by (job) (process_resident_memory_bytes{job=~"chattr-.+"})', "{{job}}")],
                    unit="bytes",
                ),
            ],
        ],
    )


DASHBOARDS = {
    "overview.json": overview,
    "delivery.json": delivery,
    "gateway.json": gateway,
    "auth.json": auth,
    "video.json": video,
    "backends.json": backends,
}


def render(build):
    return json.dumps(build(), indent=2) + "\n"


def main(argv):
    check = argv[1:] == ["--check"]
    if argv[1:] and not check:
        print(f"usage: {argv[0]} [--check]", file=sys.stderr)
        return 2
    stale = []
    for name, build in DASHBOARDS.items():
        path = OUT_DIR / name
        text = render(build)
        if check:
            if not path.exists() or path.read_text() != text:
                stale.append(str(path))
        else:
            OUT_DIR.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    if stale:
        print("out of date with deploy/grafana/generate.py (run it):", *stale, sep="\n  ", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
