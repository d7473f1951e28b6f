//! The status page, `GET /`: one server-rendered HTML document (styles
//! inline, no scripts, nothing fetched from elsewhere) that reloads itself
//! every few seconds and reads on a phone. maud escapes every value, so a
//! failure reason an endpoint wrote cannot become markup.

use std::time::{Duration, SystemTime};

use maud::{DOCTYPE, Markup, PreEscaped, html};

use super::status::{SourceStatus, Status, WebhookStatus, timestamp};

/// Seconds between the page's reloads.
const REFRESH_SECONDS: u32 = 5;

const STYLE: &str = "
:root{color-scheme:light dark;--ok:#1a7f37;--warn:#9a6700;--bad:#cf222e;--off:#6e7781;--line:#d0d7de}
*{box-sizing:border-box}
body{font:15px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;margin:0 auto;max-width:72rem;padding:1rem}
header{display:flex;flex-wrap:wrap;align-items:baseline;gap:.25rem 1rem}
h1{font-size:1.3rem;margin:0}h2{font-size:1.05rem;margin:0 0 .5rem;overflow-wrap:anywhere}
.muted{color:var(--off)}
.cards{display:grid;gap:.75rem;grid-template-columns:repeat(auto-fill,minmax(min(100%,21rem),1fr));margin-top:.75rem}
section,article{border:1px solid var(--line);border-radius:.5rem;padding:.75rem}
dl{display:grid;grid-template-columns:auto 1fr;gap:.15rem .75rem;margin:0}
dt{color:var(--off)}dd{margin:0;overflow-wrap:anywhere}
.state{display:inline-block;border-radius:1rem;padding:0 .6rem;color:#fff;font-size:.85rem;font-weight:600;vertical-align:middle}
.healthy,.connected{background:var(--ok)}.failing,.spooling,.paused{background:var(--warn)}
.open,.invalid,.disconnected{background:var(--bad)}.disabled{background:var(--off)}
";

/// The whole page; `None` before the sidecar's first snapshot.
pub(super) fn render(status: Option<&Status>) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta http-equiv="refresh" content=(REFRESH_SECONDS);
                title { "leadhook status" }
                style { (PreEscaped(STYLE)) }
            }
            body {
                @match status {
                    None => {
                        header { h1 { "leadhook" } }
                        p { "Starting: no status yet. This page reloads itself." }
                    }
                    Some(status) => (body(status)),
                }
            }
        }
    }
}

fn body(status: &Status) -> Markup {
    let webhooks = status.webhooks.len();
    html! {
        header {
            h1 { "leadhook" }
            span.muted { "v" (status.version) }
            span.muted { "as of " time datetime=(timestamp(status.taken_at)) { (timestamp(status.taken_at)) } }
        }
        div.cards {
            (source(&status.source))
        }
        h2 style="margin-top:1rem" {
            (webhooks) @if webhooks == 1 { " webhook" } @else { " webhooks" }
            span.muted { " · last " (status.window_minutes) " minutes" }
        }
        div.cards {
            @for hook in &status.webhooks {
                (webhook(hook, status.taken_at, status.window_minutes))
            }
        }
        p.muted { "Reloads every " (REFRESH_SECONDS) " s. The same data as JSON: " a href="/api/status" { "/api/status" } "." }
    }
}

fn source(source: &SourceStatus) -> Markup {
    let (class, label) = if source.connected {
        ("connected", "connected")
    } else {
        ("disconnected", "not connected")
    };
    html! {
        section #source data-connected=(source.connected) {
            h2 { "Source " span class={ "state " (class) } { (label) } }
            dl {
                dt { "Mode" } dd { (source.mode) }
                dt { "Table" } dd { (source.table) }
                @if let Some(slot) = &source.slot { dt { "Slot" } dd { (slot) } }
                @if let Some(why) = &source.not_ready { dt { "Why" } dd { (why) } }
                @if let Some(lag) = source.lag_bytes { dt { "Lag" } dd { (bytes(lag)) " of WAL not yet confirmed" } }
            }
        }
    }
}

fn webhook(hook: &WebhookStatus, now: SystemTime, window: usize) -> Markup {
    html! {
        article data-webhook=(hook.name) data-state=(hook.state) {
            h2 { (hook.name) " " span class={ "state " (hook.state) } { (hook.state) } }
            dl {
                dt { "Endpoint" } dd { (hook.method) " " (hook.url) }
                @if let Some(problem) = &hook.problem { dt { "Problem" } dd { (problem) } }
                dt { "Last success" } dd { (when(hook.last_success_at, now)) }
                dt { "Last failure" } dd {
                    (when(hook.last_failure_at, now))
                    @if let Some(reason) = &hook.last_failure { ": " span.reason { (reason) } }
                }
                dt { "Delivered" } dd { (hook.delivered_recently) " in " (window) " min" }
                dt { "Failed attempts" } dd { (hook.failed_recently) " in " (window) " min" }
                dt { "Lag p50 / p99" } dd {
                    @match (hook.lag_p50_seconds, hook.lag_p99_seconds) {
                        (Some(p50), Some(p99)) => { (seconds(p50)) " / " (seconds(p99)) }
                        _ => "–",
                    }
                }
                dt { "In flight" } dd { (hook.in_flight) }
                dt { "Spooled" } dd { (hook.spooled) }
                dt { "Dead letters" } dd {
                    @match hook.dead_letters { Some(n) => (n), None => "–" }
                }
            }
        }
    }
}

/// "12 s ago", or "never".
fn when(at: Option<SystemTime>, now: SystemTime) -> Markup {
    match at {
        None => html! { "never" },
        Some(at) => {
            let ago = now.duration_since(at).unwrap_or_default();
            html! { time datetime=(timestamp(at)) title=(timestamp(at)) { (ago_text(ago)) } }
        }
    }
}

fn ago_text(ago: Duration) -> String {
    let secs = ago.as_secs();
    match secs {
        0..60 => format!("{secs} s ago"),
        60..3600 => format!("{} min ago", secs / 60),
        3600..86400 => format!("{} h {} min ago", secs / 3600, secs % 3600 / 60),
        _ => format!("{} days ago", secs / 86400),
    }
}

fn seconds(s: f64) -> String {
    match s {
        s if s < 0.001 => format!("{:.0} µs", s * 1e6),
        s if s < 1.0 => format!("{:.1} ms", s * 1e3),
        s => format!("{s:.2} s"),
    }
}

fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests;
