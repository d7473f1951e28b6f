//! The SVG: latency distribution, throughput against the limits, and the
//! outage's timeline (spool depth and retained WAL).

use std::path::Path;

use plotters::prelude::*;

use crate::report::{Report, quantile};

pub(crate) fn draw(report: &Report, path: &Path) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, (1660, 440)).into_drawing_area();
    root.fill(&WHITE)?;
    let (left, rest) = root.split_horizontally(560);
    let (middle, right) = rest.split_horizontally(540);
    latency(report, &left)?;
    throughput(report, &middle)?;
    outage(report, &right)?;
    root.present()?;
    Ok(())
}

/// Latency CDF: commit → arrival, in ms, against the fraction of events.
fn latency(
    report: &Report,
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
) -> anyhow::Result<()> {
    let l = &report.latency;
    let sorted = &l.all_ms;
    let x_max = quantile(sorted, 0.999).max(1.0) * 1.1;
    let mut chart = ChartBuilder::on(area)
        .caption(
            format!(
                "Latency at {} commits/s (p50 {:.1} ms, p99 {:.1} ms)",
                l.offered_per_second, l.ms.p50_ms, l.ms.p99_ms
            ),
            ("sans-serif", 18),
        )
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..x_max, 0.0..100.0)?;
    chart
        .configure_mesh()
        .light_line_style(RGBColor(238, 238, 238))
        .bold_line_style(RGBColor(215, 215, 215))
        .y_labels(11)
        .x_desc("commit → arrival (ms); green: p50, red: p99")
        .y_desc("% of events")
        .draw()?;
    let n = sorted.len().max(1) as f64;
    let points = sorted
        .iter()
        .enumerate()
        .filter(|(_, v)| **v <= x_max)
        .map(|(i, v)| (*v, (i + 1) as f64 * 100.0 / n));
    chart.draw_series(LineSeries::new(points, BLUE.stroke_width(2)))?;
    for (q, color) in [(0.5, GREEN), (0.99, RED)] {
        let x = quantile(sorted, q);
        chart.draw_series(LineSeries::new(
            [(x, 0.0), (x, 100.0)],
            color.stroke_width(1),
        ))?;
    }
    Ok(())
}

/// Throughput as horizontal bars: leadhook next to the limits it is held to.
fn throughput(
    report: &Report,
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
) -> anyhow::Result<()> {
    let t = &report.throughput;
    let slowest = report
        .fanout
        .events_per_second_per_webhook
        .iter()
        .copied()
        .fold(f64::INFINITY, f64::min);
    let bars = [
        ("leadhook, 1 webhook", t.events_per_second, BLUE),
        (
            "HTTP limit (same receiver)",
            t.http_limit_per_second,
            RGBColor(150, 150, 150),
        ),
        (
            "decode limit (pg_recvlogical)",
            t.decode_limit_per_second,
            RGBColor(150, 150, 150),
        ),
        (
            "leadhook, fan-out, per webhook",
            if slowest.is_finite() { slowest } else { 0.0 },
            RGBColor(60, 160, 220),
        ),
        (
            "fan-out limit per webhook",
            report.fanout.limit_per_second,
            RGBColor(190, 190, 190),
        ),
    ];
    let x_max = bars.iter().map(|b| b.1).fold(1.0, f64::max) * 1.25;
    let n = bars.len() as f64;
    let mut chart = ChartBuilder::on(area)
        .caption("Throughput vs. the limits (events/s)", ("sans-serif", 18))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(10)
        .build_cartesian_2d(0.0..x_max, 0.0..n)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(0)
        .light_line_style(RGBColor(238, 238, 238))
        .bold_line_style(RGBColor(215, 215, 215))
        .x_desc("events/s")
        .x_label_formatter(&|x| format!("{:.0}k", x / 1000.0))
        .draw()?;
    for (i, (label, value, color)) in bars.iter().enumerate() {
        let top = n - i as f64 - 0.35;
        let bottom = n - i as f64 - 0.85;
        chart.draw_series([Rectangle::new(
            [(0.0, bottom), (*value, top)],
            color.filled(),
        )])?;
        chart.draw_series([Text::new(
            label.to_string(),
            (x_max * 0.01, top + 0.28),
            ("sans-serif", 13),
        )])?;
        chart.draw_series([Text::new(
            format!("{value:.0}"),
            (*value + x_max * 0.01, top - 0.12),
            ("sans-serif", 13),
        )])?;
    }
    Ok(())
}

/// The outage run over time: the down webhook's spool depth (left axis)
/// and the WAL the slot retains (right axis); the outage shaded.
fn outage(
    report: &Report,
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
) -> anyhow::Result<()> {
    let o = &report.outage;
    let samples = &o.samples;
    let t_max = samples.last().map_or(1.0, |s| s.t).max(1.0);
    let depth_max = samples.iter().map(|s| s.spool_depth).fold(1.0, f64::max) * 1.1;
    let wal_max = samples
        .iter()
        .map(|s| s.retained_wal_bytes / 1e6)
        .fold(1.0, f64::max)
        * 1.1;
    let mut chart = ChartBuilder::on(area)
        .caption(
            format!(
                "Outage at {}/s: one webhook down {}–{} s",
                o.offered_per_second, o.down_from_seconds, o.down_until_seconds
            ),
            ("sans-serif", 18),
        )
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .right_y_label_area_size(50)
        .build_cartesian_2d(0.0..t_max, 0.0..depth_max)?
        .set_secondary_coord(0.0..t_max, 0.0..wal_max);
    chart
        .configure_mesh()
        .light_line_style(RGBColor(238, 238, 238))
        .bold_line_style(RGBColor(215, 215, 215))
        .x_desc("seconds; blue: spool depth, red: retained WAL")
        .y_desc("spool depth (rows)")
        .y_label_formatter(&|v| format!("{v:.0}"))
        .draw()?;
    chart
        .configure_secondary_axes()
        .y_desc("retained WAL (MB)")
        .y_label_formatter(&|v| format!("{v:.0}"))
        .draw()?;
    chart.draw_series([Rectangle::new(
        [
            (o.down_from_seconds, 0.0),
            (o.down_until_seconds, depth_max),
        ],
        RGBColor(255, 230, 230).filled(),
    )])?;
    chart.draw_series(LineSeries::new(
        samples.iter().map(|s| (s.t, s.spool_depth)),
        BLUE.stroke_width(2),
    ))?;
    chart.draw_secondary_series(LineSeries::new(
        samples.iter().map(|s| (s.t, s.retained_wal_bytes / 1e6)),
        RED.stroke_width(1),
    ))?;
    Ok(())
}
