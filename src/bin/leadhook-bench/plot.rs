//! The SVG: latency distribution, and throughput against the limits.

use std::path::Path;

use plotters::prelude::*;

use crate::report::{Report, quantile};

pub fn draw(report: &Report, path: &Path) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, (1100, 440)).into_drawing_area();
    root.fill(&WHITE)?;
    let (left, right) = root.split_horizontally(560);
    latency(report, &left)?;
    throughput(report, &right)?;
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
                l.offered_per_second, l.p50_ms, l.p99_ms
            ),
            ("sans-serif", 18),
        )
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(0.0..x_max, 0.0..100.0)?;
    chart
        .configure_mesh()
        .x_desc("commit → arrival (ms)")
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

/// Throughput bars: leadhook (one webhook, slowest fan-out webhook) and the limits.
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
            "leadhook, fan-out (each)",
            if slowest.is_finite() { slowest } else { 0.0 },
            CYAN,
        ),
        (
            "fan-out limit (each)",
            report.fanout.limit_per_second,
            RGBColor(200, 200, 200),
        ),
        (
            "decode limit",
            t.decode_limit_per_second,
            RGBColor(120, 120, 120),
        ),
        (
            "HTTP limit",
            t.http_limit_per_second,
            RGBColor(160, 160, 160),
        ),
    ];
    let y_max = bars.iter().map(|b| b.1).fold(1.0, f64::max) * 1.15;
    let mut chart = ChartBuilder::on(area)
        .caption("Throughput vs. the limits (events/s)", ("sans-serif", 18))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..bars.len() as f64, 0.0..y_max)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .y_desc("events/s")
        .draw()?;
    for (i, (label, value, color)) in bars.iter().enumerate() {
        let x = i as f64;
        chart.draw_series([Rectangle::new(
            [(x + 0.15, 0.0), (x + 0.85, *value)],
            color.filled(),
        )])?;
        chart.draw_series([Text::new(
            format!("{value:.0}"),
            (x + 0.2, *value + y_max * 0.02),
            ("sans-serif", 14),
        )])?;
        chart.draw_series([Text::new(
            label.to_string(),
            (x + 0.05, y_max * 0.97 - (i % 2) as f64 * y_max * 0.05),
            ("sans-serif", 12),
        )])?;
    }
    Ok(())
}
