//! Queue depth and recent activity: `GET /api/v1/stats` (the admin
//! center's dashboard) and `GET /metrics` (Prometheus, OpenMetrics text
//! made by prometheus-client, no token).
//!
//! Both read counters, never the stored trace: the backend hands over the
//! queue's depth now and the [`TraceCounters`](crate::trace::TraceCounters)'
//! per-minute activity ([`NodeStats`]); [`summarize`] turns them into
//! per-bucket series. Queue depth in the past is worked back from the
//! depth now, minus the messages that entered the queue since, plus those
//! that left it since (both counted at the queue's commits, so it is exact
//! since the node started; before that, the series shows no change).
//!
//! Metric names: `sluice_` + what is counted + unit-less plural noun
//! (`sluice_queue_messages`), labels for the breakdown, `_last_hour` for
//! counts over a sliding window (gauges: they go down as the window moves),
//! `_total` for counters since the node started
//! (`sluice_trace_events_total`).

use super::{AdminError, ApiState};
use crate::trace::{Activity, TraceKind, MINUTE_MS};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::IntoResponse;
use axum::Json;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use std::time::Duration;

pub use crate::queue::QueueDepth;
pub use crate::trace::EventCounts;

/// What the backend reports (see [`super::AdminBackend::stats`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeStats {
    /// Queue entries now, by status.
    pub queue: QueueDepth,
    /// Counted activity of the window, the quarantine's size and the
    /// totals since start.
    pub activity: Activity,
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

/// The series of `stats` from `since_ms` to `now_ms` in buckets of
/// `bucket_ms`. Buckets end on a minute's end (the last one at the end of
/// the current minute), so each counted minute falls in one bucket.
pub fn summarize(stats: &NodeStats, now_ms: u64, since_ms: u64, bucket_ms: u64) -> StatsView {
    let bucket_ms = bucket_ms.max(1);
    let buckets = now_ms.saturating_sub(since_ms).div_ceil(bucket_ms).max(1);
    let end_ms = (now_ms / MINUTE_MS + 1) * MINUTE_MS;
    let start_ms = end_ms.saturating_sub(buckets * bucket_ms);
    let mut series: Vec<StatsBucket> = (0..buckets)
        .map(|i| StatsBucket {
            start: crate::trace::rfc3339(start_ms + i * bucket_ms),
            counts: EventCounts::default(),
            queue_depth: 0,
        })
        .collect();
    let mut totals = EventCounts::default();
    // Messages in and out of the queue per bucket, to work the depth back.
    let mut moved = vec![(0u64, 0u64); series.len()];
    let window = stats
        .activity
        .minutes
        .iter()
        .filter(|m| m.start_ms >= start_ms && m.start_ms < end_ms);
    for minute in window {
        let index = ((minute.start_ms - start_ms) / bucket_ms).min(buckets - 1) as usize;
        series[index].counts.merge(&minute.counts);
        totals.merge(&minute.counts);
        moved[index].0 += minute.entered;
        moved[index].1 += minute.left;
    }
    let mut depth = stats.queue.total as i64;
    for (bucket, (entered, left)) in series.iter_mut().zip(moved).rev() {
        bucket.queue_depth = depth.max(0) as u64;
        depth = depth - entered as i64 + left as i64;
    }
    StatsView {
        now: crate::trace::rfc3339(now_ms),
        bucket_seconds: bucket_ms / 1000,
        queue: stats.queue,
        quarantined: stats.activity.quarantined,
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

/// The exposition of the queue, the quarantine, the last hour's activity
/// and the trace counters. Reads only memory: cheap to scrape every second.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "node",
    security(()),
    responses((status = 200, description = "OpenMetrics text format 1.0.0 (Prometheus reads it)", content_type = "application/openmetrics-text", body = String))
)]
pub(super) async fn metrics(State(state): State<ApiState>) -> Result<impl IntoResponse, AdminError> {
    let now = crate::trace::now_ms();
    let since = now.saturating_sub(3_600_000);
    let raw = state.backend.stats(since).await?;
    let view = summarize(&raw, now, since, 3_600_000);
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        exposition(&view, &raw.activity),
    ))
}

/// The exposition text of `view` (its totals are the last hour's) and of
/// the counters since start in `activity`.
pub fn exposition(view: &StatsView, activity: &Activity) -> String {
    let mut registry = Registry::default();
    let gauge = |value: u64| {
        let gauge = Gauge::<i64>::default();
        gauge.set(i64::try_from(value).unwrap_or(i64::MAX));
        gauge
    };
    let queue = view.queue;
    registry.register(
        "sluice_queue_messages",
        "Messages in the queue",
        gauge(queue.total),
    );
    let by_status = Family::<[(&'static str, &'static str); 1], Gauge>::default();
    for status in crate::queue::QueueStatus::ALL {
        let count = match status {
            crate::queue::QueueStatus::Queued => queue.queued,
            crate::queue::QueueStatus::Deferred => queue.deferred,
            crate::queue::QueueStatus::Held => queue.held,
        };
        by_status
            .get_or_create(&[("status", status.as_str())])
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }
    registry.register(
        "sluice_queue_messages_by_status",
        "Messages in the queue, by status",
        by_status,
    );
    registry.register(
        "sluice_quarantine_messages",
        "Messages held in quarantine",
        gauge(view.quarantined),
    );
    let last_hour = Family::<[(&'static str, &'static str); 1], Gauge>::default();
    let t = view.totals;
    for (event, count) in [
        ("received", t.received),
        ("delivered", t.delivered),
        ("deferred", t.deferred),
        ("bounced", t.bounced),
        ("quarantined", t.quarantined),
        ("rejected", t.rejected),
    ] {
        last_hour
            .get_or_create(&[("event", event)])
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }
    registry.register(
        "sluice_trace_events_last_hour",
        "Trace events in the last hour, by event (received per message; delivered, deferred, bounced per recipient)",
        last_hour,
    );
    let since_start = Family::<[(&'static str, &'static str); 1], Counter>::default();
    for &(kind, count) in &activity.totals {
        since_start
            .get_or_create(&[("event", TraceKind::as_str(kind))])
            .inc_by(count);
    }
    registry.register(
        "sluice_trace_events",
        "Trace events since the node started, by event",
        since_start,
    );
    let mut text = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut text, &registry);
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::QueueStatus;
    use crate::trace::{Tally, TraceCounters};

    fn count(counters: &TraceCounters, at_ms: u64, kind: TraceKind) {
        let tally = Tally {
            events: vec![(at_ms, kind)],
            ..Tally::default()
        };
        counters.count(&tally, at_ms);
    }

    fn moved(counters: &TraceCounters, at_ms: u64, entered: u64, left: u64) {
        let tally = Tally {
            entered,
            left,
            ..Tally::default()
        };
        counters.count(&tally, at_ms);
    }

    #[test]
    fn events_fall_into_buckets_and_depth_is_worked_back() {
        // Now = 10 min 30 s; buckets of 1 min over the last 5 min: the last
        // bucket is the current minute.
        let minute = 60_000;
        let now = 10 * minute + 30_000;
        let counters = TraceCounters::default();
        count(&counters, 6 * minute + 10, TraceKind::Received); // A
        count(&counters, 6 * minute + 1, TraceKind::Received); // B
        moved(&counters, 6 * minute + 20, 2, 0);
        count(&counters, 7 * minute + 5, TraceKind::Deferred); // B
        count(&counters, 8 * minute + 5, TraceKind::Delivered); // A
        moved(&counters, 8 * minute + 5, 0, 1);
        count(&counters, 9 * minute + 5, TraceKind::Delivered); // B: another recipient waits
        count(&counters, 2 * minute, TraceKind::Received); // before the window
        moved(&counters, 2 * minute, 1, 0);
        let stats = NodeStats {
            queue: QueueDepth::count([QueueStatus::Deferred]),
            activity: counters.activity(now - 5 * minute),
        };
        let view = summarize(&stats, now, now - 5 * minute, minute);
        assert_eq!(view.series.len(), 5);
        assert_eq!(view.series[0].start, crate::trace::rfc3339(6 * minute));
        assert_eq!(view.series[0].counts.received, 2);
        assert_eq!(view.series[1].counts.deferred, 1);
        assert_eq!(view.series[2].counts.delivered, 1);
        assert_eq!(view.totals.received, 2);
        assert_eq!(view.totals.delivered, 2);
        let depths: Vec<u64> = view.series.iter().map(|b| b.queue_depth).collect();
        assert_eq!(depths, [2, 2, 1, 1, 1]);
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
        assert!(content_type
            .unwrap()
            .starts_with("application/openmetrics-text; version=1.0.0"));
        assert!(body.contains("sluice_queue_messages 0\n"), "{body}");
        assert!(body.ends_with("# EOF\n"), "{body}");

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
    fn exposition_has_the_documented_gauges_and_the_counters() {
        let counters = TraceCounters::default();
        counters.set_quarantined(3);
        count(&counters, 1_000, TraceKind::Received);
        count(&counters, 2_000, TraceKind::Bounced);
        count(&counters, 2_500, TraceKind::Routed);
        let stats = NodeStats {
            queue: QueueDepth::count([QueueStatus::Queued, QueueStatus::Held]),
            activity: counters.activity(0),
        };
        let text = exposition(&summarize(&stats, 3_000, 0, 3_600_000), &stats.activity);
        for line in [
            "# TYPE sluice_queue_messages gauge\nsluice_queue_messages 2\n",
            "sluice_queue_messages_by_status{status=\"held\"} 1\n",
            "sluice_queue_messages_by_status{status=\"deferred\"} 0\n",
            "sluice_quarantine_messages 3\n",
            "sluice_trace_events_last_hour{event=\"bounced\"} 1\n",
            "sluice_trace_events_last_hour{event=\"received\"} 1\n",
            "# TYPE sluice_trace_events counter\n",
            "sluice_trace_events_total{event=\"routed\"} 1\n",
            "sluice_trace_events_total{event=\"scanned\"} 0\n",
        ] {
            assert!(text.contains(line), "{line}: {text}");
        }
    }
}
