//! PNG charts of saved reports (the JSON the scenarios write):
//!
//! - `<scenario>-latency.png`: latency by percentile (an HDR plot: the x axis stretches the
//!   tail, 90 %, 99 %, 99.9 %, 99.99 % equally apart), one line per report, so peers and
//!   rates compare at a glance;
//! - `<file>-sweep.png`, for a rate sweep: send→deliver p50, p99 and p99.9 against the
//!   rate the server sustained.
//!
//! Text is drawn with a TrueType font of the system (DejaVu Sans or Liberation Sans).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use plotters::coord::CoordTranslate;
use plotters::prelude::*;
use serde_json::Value;

/// Fonts tried in order.
const FONTS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
];

const SIZE: (u32, u32) = (1000, 600);

/// One line of a chart.
struct Series {
    label: String,
    points: Vec<(f64, f64)>,
}

/// Draws every chart the reports allow into `out`; returns the files written.
pub fn draw(reports: &[PathBuf], out: &Path) -> anyhow::Result<Vec<PathBuf>> {
    register_font()?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut by_scenario: BTreeMap<String, Vec<Series>> = BTreeMap::new();
    let mut written = Vec::new();
    for path in reports {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let value: Value =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("report").to_owned();
        let steps = match value {
            Value::Array(steps) => steps,
            one => vec![one],
        };
        if steps.len() > 1 {
            let file = out.join(format!("{stem}-sweep.png"));
            sweep_chart(&stem, &steps, &file)?;
            written.push(file);
        }
        for step in &steps {
            let Some(scenario) = step["scenario"].as_str() else { continue };
            let Some((field, curve)) = ["deliver_curve", "resume_curve", "latency_curve"]
                .iter()
                .find_map(|f| step[*f].as_array().map(|c| (*f, c)))
            else {
                continue;
            };
            let points: Vec<(f64, f64)> = curve
                .iter()
                .filter_map(|p| Some((stretch(p["percentile"].as_f64()?), p["ms"].as_f64()?)))
                .collect();
            if points.is_empty() {
                continue;
            }
            let label = label(&stem, step, field);
            by_scenario.entry(scenario.to_owned()).or_default().push(Series { label, points });
        }
    }
    for (scenario, series) in by_scenario {
        let file = out.join(format!("{scenario}-latency.png"));
        latency_chart(&scenario, &series, &file)?;
        written.push(file);
    }
    Ok(written)
}

/// A report's line label: target, file and rate.
fn label(stem: &str, step: &Value, field: &str) -> String {
    let what = match field {
        "resume_curve" => "resume".to_owned(),
        "latency_curve" => "login".to_owned(),
        _ => match step["target_rate"].as_f64() {
            Some(rate) => format!("{rate:.0} msg/s"),
            None => String::new(),
        },
    };
    match step["target"].as_str() {
        Some(target) => format!("{target} {what} ({stem})"),
        None => format!("{what} ({stem})"),
    }
}

/// The HDR plot's x position of a percentile: log10 of 1 / (1 - p).
fn stretch(percentile: f64) -> f64 {
    let rest = (1.0 - percentile / 100.0).max(1e-7);
    -rest.log10()
}

fn register_font() -> anyhow::Result<()> {
    let path = FONTS
        .iter()
        .find(|p| Path::new(p).exists())
        .context("no TrueType font found for the charts: apt-get install fonts-dejavu-core")?;
    let bytes: &'static [u8] = Box::leak(std::fs::read(path)?.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
        .map_err(|_| anyhow::anyhow!("{path} is not a usable font"))
}

fn colour(i: usize) -> RGBColor {
    const PALETTE: [RGBColor; 8] = [
        RGBColor(31, 119, 180),
        RGBColor(214, 39, 40),
        RGBColor(44, 160, 44),
        RGBColor(255, 127, 14),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(127, 127, 127),
    ];
    PALETTE[i % PALETTE.len()]
}

/// Latency by percentile, one line per series, log-scaled milliseconds.
fn latency_chart(scenario: &str, series: &[Series], file: &Path) -> anyhow::Result<()> {
    let root = BitMapBackend::new(file, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(plot_error)?;
    let max = series.iter().flat_map(|s| s.points.iter().map(|p| p.1)).fold(1.0f64, f64::max);
    let min = series.iter().flat_map(|s| s.points.iter().map(|p| p.1)).fold(max, f64::min).max(0.01);
    let mut chart = ChartBuilder::on(&root)
        .caption(format!("{scenario}: latency by percentile"), ("sans-serif", 24))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(64)
        .build_cartesian_2d(0.0..5.0f64, (min * 0.8..max * 1.25).log_scale())
        .map_err(plot_error)?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("milliseconds")
        .x_labels(6)
        .x_label_formatter(&|x| percentile_name(*x))
        .draw()
        .map_err(plot_error)?;
    for (i, s) in series.iter().enumerate() {
        line(&mut chart, &s.points, i, &s.label)?;
    }
    legend(&mut chart)?;
    root.present().map_err(plot_error)
}

/// Draws `points` as a line in the chart's `i`th colour, with a legend entry.
fn line<'a, DB: DrawingBackend + 'a, CT: CoordTranslate<From = (f64, f64)>>(
    chart: &mut ChartContext<'a, DB, CT>,
    points: &[(f64, f64)],
    i: usize,
    label: &str,
) -> anyhow::Result<()> {
    let c = colour(i);
    chart
        .draw_series(LineSeries::new(points.iter().copied(), c.stroke_width(2)))
        .map_err(plot_error)?
        .label(label)
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2)));
    Ok(())
}

/// The legend box, top left.
fn legend<'a, DB: DrawingBackend + 'a, CT: CoordTranslate>(
    chart: &mut ChartContext<'a, DB, CT>,
) -> anyhow::Result<()> {
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(plot_error)
}

/// The name of an HDR plot's x position: 0 is p0, 1 is p90, 2 is p99 and so on.
fn percentile_name(x: f64) -> String {
    let nines = x.round() as i32;
    if nines <= 0 {
        return "0".to_owned();
    }
    let p = 100.0 * (1.0 - 10f64.powi(-nines));
    let text = format!("{p:.4}");
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// One step of a sweep: achieved rate, then p50, p99 and p99.9 in milliseconds.
type Row = (f64, f64, f64, f64);

/// A rate sweep: p50, p99, p99.9 of send→deliver against the achieved rate.
fn sweep_chart(name: &str, steps: &[Value], file: &Path) -> anyhow::Result<()> {
    let rows: Vec<Row> = steps
        .iter()
        .filter_map(|s| {
            let d = &s["deliver"];
            Some((
                s["achieved_rate"].as_f64()?,
                d["p50_ms"].as_f64()?,
                d["p99_ms"].as_f64()?,
                d["p999_ms"].as_f64()?,
            ))
        })
        .collect();
    let root = BitMapBackend::new(file, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(plot_error)?;
    let max_rate = rows.iter().map(|r| r.0).fold(1.0f64, f64::max);
    let max_ms = rows.iter().map(|r| r.3).fold(1.0f64, f64::max);
    let min_ms = rows.iter().map(|r| r.1).fold(max_ms, f64::min).max(0.01);
    let target = steps.first().and_then(|s| s["target"].as_str()).unwrap_or("");
    let mut chart = ChartBuilder::on(&root)
        .caption(format!("{target} {name}: send→deliver latency by rate"), ("sans-serif", 24))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(64)
        .build_cartesian_2d(0.0..max_rate * 1.05, (min_ms * 0.8..max_ms * 1.25).log_scale())
        .map_err(plot_error)?;
    chart
        .configure_mesh()
        .x_desc("messages a second (acknowledged)")
        .y_desc("milliseconds")
        .draw()
        .map_err(plot_error)?;
    for (i, label) in ["p50", "p99", "p99.9"].into_iter().enumerate() {
        let points: Vec<(f64, f64)> = rows.iter().map(|r| (r.0, [r.1, r.2, r.3][i])).collect();
        line(&mut chart, &points, i, label)?;
        chart
            .draw_series(points.iter().map(|p| Circle::new(*p, 4, colour(i).filled())))
            .map_err(plot_error)?;
    }
    legend(&mut chart)?;
    root.present().map_err(plot_error)
}

fn plot_error<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow::anyhow!("drawing a chart: {e:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_axis() {
        assert_eq!(percentile_name(0.0), "0");
        assert_eq!(percentile_name(1.0), "90");
        assert_eq!(percentile_name(2.0), "99");
        assert_eq!(percentile_name(3.0), "99.9");
        assert!((stretch(99.0) - 2.0).abs() < 1e-9);
        assert_eq!(stretch(0.0), 0.0);
    }
}
