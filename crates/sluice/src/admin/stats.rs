//! Queue depth and recent activity: `GET /api/v1/stats` (the admin
//! center's dashboard) and `GET /metrics` (Prometheus text, no token).
//!
//! The backend hands over raw counts and the trace events of the window
//! ([`NodeStats`]); [`summarize`] turns them into per-bucket series. Queue
//! depth in the past is not stored: it is worked back from the depth now,
//! minus the messages received since, plus those that left the queue since
//! (their last delivered/bounced/expired/deleted/quarantined event, for
//! messages no longer queued). It is an estimate, exact when every message
//! left the queue in one piece.
//!
//! Metric names: `sluice_` + what is counted + unit-less plural noun
//! (`sluice_queue_messages`), labels for the breakdown, `_last_hour` for
//! counts over a sliding window (gauges: they go down as the window moves).

use super::{AdminError, ApiState, QueueStatus};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::IntoResponse;
use axum::Json;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::time::Duration;

/// What the backend reports (see [`super::AdminBackend::stats`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeStats {
    /// Queue entries now, by status.
    pub queue: QueueDepth,
    /// Messages in quarantine now.
    pub quarantined: u64,
    /// Ids of the messages in the queue now.
    pub queued_ids: Vec<String>,
    /// Trace events of the window, any order.
    pub events: Vec<EventStamp>,
}

impl NodeStats {
    /// Counts queue entries given as (id, status).
    pub fn from_queue<'a>(entries: impl IntoIterator<Item = (&'a str, QueueStatus)>) -> NodeStats {
        let mut stats = NodeStats::default();
        for (id, status) in entries {
            stats.queued_ids.push(id.to_string());
            match status {
                QueueStatus::Queued => stats.queue.queued += 1,
                QueueStatus::Deferred => stats.queue.deferred += 1,
                QueueStatus::Held => stats.queue.held += 1,
            }
        }
        stats.queue.total = stats.queue.queued + stats.queue.deferred + stats.queue.held;
        stats
    }
}

/// One trace event, as much as statistics need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventStamp {
    /// Milliseconds since the epoch.
    pub at_ms: u64,
    /// The trace word (`received`, `delivered`...).
    pub event: String,
    /// The message.
    pub queue_id: String,
}

/// Queue entries by status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct QueueDepth {
    /// Waiting for a first attempt.
    pub queued: u64,
    /// Waiting for a retry.
    pub deferred: u64,
    /// Held by an administrator.
    pub held: u64,
    /// All of them.
    pub total: u64,
}

/// Trace events counted over a span of time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EventCounts {
    /// Messages accepted (one per message).
    pub received: u64,
    /// Recipients accepted by the next hop.
    pub delivered: u64,
    /// Temporary failures (per recipient and attempt).
    pub deferred: u64,
    /// Permanent failures and expiries (per recipient).
    pub bounced: u64,
    /// Messages a rule put in quarantine.
    pub quarantined: u64,
    /// Messages or recipients refused in session.
    pub rejected: u64,
}

impl EventCounts {
    fn add(&mut self, event: &str) {
        match event {
            "received" => self.received += 1,
            "delivered" => self.delivered += 1,
            "deferred" => self.deferred += 1,
            "bounced" | "expired" => self.bounced += 1,
            "quarantined" => self.quarantined += 1,
            "rejected" => self.rejected += 1,
            _ => {}
        }
    }
}

/// One bucket of the series.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StatsBucket {
    /// Start of the bucket (RFC 3339).
    pub start: String,
    /// Events inside the bucket.
    pub counts: EventCounts,
    /// Estimated queue depth at the end of the bucket.
    pub queue_depth: u64,
}

/// `GET /api/v1/stats`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StatsView {
    /// When the numbers were taken (RFC 3339).
    pub now: String,
    /// Length of each bucket.
    pub bucket_seconds: u64,
    /// The queue now.
    pub queue: QueueDepth,
    /// Messages in quarantine now.
    pub quarantined: u64,
    /// Events over the whole window.
    pub totals: EventCounts,
    /// Oldest bucket first; the last one ends now.
    pub series: Vec<StatsBucket>,
}

/// Query of `GET /api/v1/stats`.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct StatsQuery {
    /// Window: "6h" [1h], at most 7 days.
    #[serde(default)]
    pub since: Option<String>,
    /// Bucket length: "5m" [1m], at least 1m, at most 1440 buckets.
    #[serde(default)]
    pub bucket: Option<String>,
}

const MAX_WINDOW: Duration = Duration::from_secs(7 * 24 * 3600);
const MAX_BUCKETS: u64 = 1440;

/// Events that end a message's stay in the queue.
fn leaves_queue(event: &str) -> bool {
    matches!(
        event,
        "delivered" | "bounced" | "expired" | "deleted" | "quarantined"
    )
}

/// The series of `stats` from `since_ms` to `now_ms` in buckets of `bucket_ms`.
pub fn summarize(stats: &NodeStats, now_ms: u64, since_ms: u64, bucket_ms: u64) -> StatsView {
    let bucket_ms = bucket_ms.max(1);
    let buckets = now_ms.saturating_sub(since_ms).div_ceil(bucket_ms).max(1);
    let start_ms = now_ms.saturating_sub(buckets * bucket_ms);
    let mut series: Vec<StatsBucket> = (0..buckets)
        .map(|i| StatsBucket {
            start: crate::trace::rfc3339(start_ms + i * bucket_ms),
            counts: EventCounts::default(),
            queue_depth: 0,
        })
        .collect();
    let mut totals = EventCounts::default();
    let still_queued: HashSet<&str> = stats.queued_ids.iter().map(String::as_str).collect();
    let mut arrived: HashMap<&str, u64> = HashMap::new();
    let mut left: HashMap<&str, u64> = HashMap::new();
    for event in &stats.events {
        if event.at_ms < start_ms || event.at_ms > now_ms {
            continue;
        }
        let index = ((event.at_ms - start_ms) / bucket_ms).min(buckets - 1) as usize;
        series[index].counts.add(&event.event);
        totals.add(&event.event);
        if event.event == "received" {
            let first = arrived.entry(&event.queue_id).or_insert(event.at_ms);
            *first = (*first).min(event.at_ms);
        } else if leaves_queue(&event.event) && !still_queued.contains(event.queue_id.as_str()) {
            let last = left.entry(&event.queue_id).or_insert(event.at_ms);
            *last = (*last).max(event.at_ms);
        }
    }
    let mut arrivals: Vec<u64> = arrived.into_values().collect();
    let mut departures: Vec<u64> = left.into_values().collect();
    arrivals.sort_unstable();
    departures.sort_unstable();
    let after = |times: &[u64], t: u64| (times.len() - times.partition_point(|&x| x <= t)) as u64;
    for (i, bucket) in series.iter_mut().enumerate() {
        let end = start_ms + (i as u64 + 1) * bucket_ms;
        let depth = stats.queue.total as i64 - after(&arrivals, end) as i64 + after(&departures, end) as i64;
        bucket.queue_depth = depth.max(0) as u64;
    }
    StatsView {
        now: crate::trace::rfc3339(now_ms),
        bucket_seconds: bucket_ms / 1000,
        queue: stats.queue,
        quarantined: stats.quarantined,
        totals,
        series,
    }
}

fn duration(text: Option<&str>, default: Duration, key: &str) -> Result<Duration, AdminError> {
    match text {
        None => Ok(default),
        Some(text) => crate::config::parse_duration(text)
            .map_err(|message| AdminError::Invalid(format!("{key}: {message}"))),
    }
}

/// Queue depth and activity over a window.
#[utoipa::path(
    get,
    path = "/stats",
    tag = "stats",
    params(StatsQuery),
    responses(
        (status = 200, description = "Series over the window", body = StatsView),
        (status = 400, description = "Bad window or bucket", body = super::ErrorBody),
    )
)]
pub(super) async fn stats(
    State(state): State<ApiState>,
    query: Result<Query<StatsQuery>, QueryRejection>,
) -> Result<Json<StatsView>, AdminError> {
    let Query(query) = query.map_err(|rejection| AdminError::Invalid(rejection.body_text()))?;
    let window = duration(query.since.as_deref(), Duration::from_secs(3600), "since")?;
    let bucket = duration(query.bucket.as_deref(), Duration::from_secs(60), "bucket")?;
    if window > MAX_WINDOW {
        return Err(AdminError::Invalid("since: at most 7d".into()));
    }
    if bucket < Duration::from_secs(60) {
        return Err(AdminError::Invalid("bucket: at least 1m".into()));
    }
    if window.as_millis() / bucket.as_millis() > u128::from(MAX_BUCKETS) {
        return Err(AdminError::Invalid(format!(
            "bucket: at most {MAX_BUCKETS} buckets per window"
        )));
    }
    let now = crate::trace::now_ms();
    let since = now.saturating_sub(window.as_millis() as u64);
    let raw = state.backend.stats(since).await?;
    Ok(Json(summarize(&raw, now, since, bucket.as_millis() as u64)))
}

/// Prometheus text exposition of the queue and the last hour's activity.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "node",
    security(()),
    responses((status = 200, description = "Prometheus text format 0.0.4", content_type = "text/plain", body = String))
)]
pub(super) async fn metrics(State(state): State<ApiState>) -> Result<impl IntoResponse, AdminError> {
    let now = crate::trace::now_ms();
    let since = now.saturating_sub(3_600_000);
    let raw = state.backend.stats(since).await?;
    let view = summarize(&raw, now, since, 3_600_000);
    Ok((
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        prometheus_text(&view),
    ))
}

/// The exposition text of `view` (its totals are the last hour's).
pub fn prometheus_text(view: &StatsView) -> String {
    let mut out = String::new();
    let mut gauge = |name: &str, help: &str, samples: &[(Option<(&str, &str)>, u64)]| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for (label, value) in samples {
            match label {
                Some((key, word)) => {
                    let _ = writeln!(out, "{name}{{{key}=\"{word}\"}} {value}");
                }
                None => {
                    let _ = writeln!(out, "{name} {value}");
                }
            }
        }
    };
    let queue = view.queue;
    gauge(
        "sluice_queue_messages",
        "Messages in the queue.",
        &[(None, queue.total)],
    );
    gauge(
        "sluice_queue_messages_by_status",
        "Messages in the queue, by status.",
        &[
            (Some(("status", "queued")), queue.queued),
            (Some(("status", "deferred")), queue.deferred),
            (Some(("status", "held")), queue.held),
        ],
    );
    gauge(
        "sluice_quarantine_messages",
        "Messages held in quarantine.",
        &[(None, view.quarantined)],
    );
    let t = view.totals;
    gauge(
        "sluice_trace_events_last_hour",
        "Trace events in the last hour, by event (received per message; delivered, deferred, bounced per recipient).",
        &[
            (Some(("event", "received")), t.received),
            (Some(("event", "delivered")), t.delivered),
            (Some(("event", "deferred")), t.deferred),
            (Some(("event", "bounced")), t.bounced),
            (Some(("event", "quarantined")), t.quarantined),
            (Some(("event", "rejected")), t.rejected),
        ],
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(at_ms: u64, event: &str, id: &str) -> EventStamp {
        EventStamp {
            at_ms,
            event: event.into(),
            queue_id: id.into(),
        }
    }

    #[test]
    fn events_fall_into_buckets_and_depth_is_worked_back() {
        // Now = 10 min; buckets of 1 min over the last 5 min.
        let minute = 60_000;
        let now = 10 * minute;
        let mut stats = NodeStats::from_queue([("B", QueueStatus::Deferred)]);
        stats.events = vec![
            stamp(6 * minute + 10, "received", "A"),
            stamp(6 * minute + 1, "received", "B"),
            stamp(7 * minute + 5, "deferred", "B"),
            stamp(8 * minute + 5, "delivered", "A"),
            stamp(9 * minute + 5, "delivered", "B"), // B still queued: another recipient waits
            stamp(2 * minute, "received", "old"),    // before the window
        ];
        let view = summarize(&stats, now, now - 5 * minute, minute);
        assert_eq!(view.series.len(), 5);
        assert_eq!(view.series[1].counts.received, 2);
        assert_eq!(view.series[2].counts.deferred, 1);
        assert_eq!(view.series[3].counts.delivered, 1);
        assert_eq!(view.totals.received, 2);
        assert_eq!(view.totals.delivered, 2);
        let depths: Vec<u64> = view.series.iter().map(|b| b.queue_depth).collect();
        assert_eq!(depths, [0, 2, 2, 1, 1]);
        assert_eq!(view.queue.total, 1);
        assert_eq!(view.queue.deferred, 1);
    }

    #[tokio::test]
    async fn metrics_need_no_token_and_stats_do() {
        use super::super::tests::{TestNode, TOKEN};
        use axum::body::Body;
        use axum::http::{Request, StatusCode};
        use http_body_util::BodyExt;
        use tower::ServiceExt;
        let node = TestNode::new().await;
        let router = super::super::router(node.backend(), TOKEN.into());
        let send = |uri: &str, token: bool| {
            let mut request = Request::builder().uri(uri);
            if token {
                request = request.header(header::AUTHORIZATION, format!("Bearer {TOKEN}"));
            }
            let request = request.body(Body::empty()).unwrap();
            let router = router.clone();
            async move {
                let response = router.oneshot(request).await.unwrap();
                let status = response.status();
                let content_type = response
                    .headers()
                    .get(header::CONTENT_TYPE)
                    .map(|v| v.to_str().unwrap().to_string());
                let body = response.into_body().collect().await.unwrap().to_bytes();
                (status, content_type, String::from_utf8(body.to_vec()).unwrap())
            }
        };
        let (status, content_type, body) = send("/metrics", false).await;
        assert_eq!(status, StatusCode::OK);
        assert!(content_type.unwrap().starts_with("text/plain; version=0.0.4"));
        assert!(body.contains("sluice_queue_messages 0\n"), "{body}");

        assert_eq!(send("/api/v1/stats", false).await.0, StatusCode::UNAUTHORIZED);
        let (status, _, body) = send("/api/v1/stats?since=2h&bucket=10m", true).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let view: StatsView = serde_json::from_str(&body).unwrap();
        assert_eq!((view.bucket_seconds, view.series.len()), (600, 12));
        for (uri, key) in [
            ("/api/v1/stats?since=30d", "since"),
            ("/api/v1/stats?bucket=10s", "bucket"),
            ("/api/v1/stats?since=7d&bucket=1m", "bucket"),
            ("/api/v1/stats?since=soon", "since"),
        ] {
            let (status, _, body) = send(uri, true).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}");
            assert!(body.contains(&format!("\"{key}: ")), "{uri}: {body}");
        }
    }

    #[test]
    fn prometheus_text_has_the_queue_gauge() {
        let mut stats = NodeStats::from_queue([("A", QueueStatus::Queued), ("B", QueueStatus::Held)]);
        stats.quarantined = 3;
        stats.events = vec![stamp(1_000, "received", "A"), stamp(2_000, "bounced", "C")];
        let text = prometheus_text(&summarize(&stats, 3_000, 0, 3_000));
        assert!(
            text.contains("# TYPE sluice_queue_messages gauge\nsluice_queue_messages 2\n"),
            "{text}"
        );
        assert!(
            text.contains("sluice_queue_messages_by_status{status=\"held\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("sluice_quarantine_messages 3\n"), "{text}");
        assert!(
            text.contains("sluice_trace_events_last_hour{event=\"bounced\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("sluice_trace_events_last_hour{event=\"received\"} 1\n"),
            "{text}"
        );
    }
}
