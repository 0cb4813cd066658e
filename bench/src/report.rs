//! `results.json`, `report.md` and the SVG plots.

use std::fmt::Write as _;
use std::path::Path;

use plotters::prelude::*;
use serde::Serialize;

/// One measure and the limit it is held to.
#[derive(Debug, Clone, Serialize)]
pub struct Measure {
    pub name: String,
    pub value: f64,
    /// What the operation is compared with, measured in the same run.
    pub limit: Option<f64>,
    /// `value / limit` (for latencies, the worse over the better case).
    pub ratio: Option<f64>,
    /// What the ratio (or value) must be, as text: `≥ 0.9`, `≤ 1.5`, or `report` when the
    /// issue sets no bound.
    pub target: String,
    /// Whether the target holds; `null` when there is none.
    pub pass: Option<bool>,
    pub unit: String,
    /// How it was measured and what the limit is.
    pub method: String,
}

/// A target a ratio must meet.
#[derive(Debug, Clone, Copy)]
pub enum Target {
    AtLeast(f64),
    AtMost(f64),
    Report,
}

impl Measure {
    pub fn new(name: &str, value: f64, unit: &str, method: &str) -> Self {
        Self {
            name: name.to_owned(),
            value,
            limit: None,
            ratio: None,
            target: "report".to_owned(),
            pass: None,
            unit: unit.to_owned(),
            method: method.to_owned(),
        }
    }

    /// Compares with `limit` (ratio = value / limit) against `target`.
    pub fn against(mut self, limit: f64, target: Target) -> Self {
        let ratio = self.value / limit;
        self.limit = Some(limit);
        self.ratio = Some(ratio);
        (self.target, self.pass) = match target {
            Target::AtLeast(bound) => (format!("≥ {bound}"), Some(ratio >= bound)),
            Target::AtMost(bound) => (format!("≤ {bound}"), Some(ratio <= bound)),
            Target::Report => ("report".to_owned(), None),
        };
        self
    }

    /// A bound on the value itself, with no limit measured.
    pub fn bounded(mut self, target: Target) -> Self {
        (self.target, self.pass) = match target {
            Target::AtLeast(bound) => (format!("value ≥ {bound}"), Some(self.value >= bound)),
            Target::AtMost(bound) => (format!("value ≤ {bound}"), Some(self.value <= bound)),
            Target::Report => ("report".to_owned(), None),
        };
        self
    }
}

/// A named line of (x, y) points.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// A plot: title, axes and lines.
#[derive(Debug, Clone, Serialize)]
pub struct Plot {
    pub file: String,
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub log_x: bool,
    pub series: Vec<Series>,
}

/// Everything a run wrote.
#[derive(Debug, Serialize)]
pub struct Results {
    pub started_unix: u64,
    pub quick: bool,
    pub commit: String,
    pub machine: String,
    pub settings: serde_json::Value,
    pub measures: Vec<Measure>,
    pub plots: Vec<Plot>,
    pub notes: Vec<String>,
}

const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
    RGBColor(140, 86, 75),
];

/// Draws `plot` into `dir`.
pub fn draw(plot: &Plot, dir: &Path) -> anyhow::Result<()> {
    let path = dir.join(&plot.file);
    let root = SVGBackend::new(&path, (720, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e}"))?;
    let points = plot.series.iter().flat_map(|series| series.points.iter());
    let (mut x_max, mut y_max, mut x_min) = (0.0f64, 0.0f64, f64::MAX);
    for &(x, y) in points {
        x_max = x_max.max(x);
        x_min = x_min.min(x);
        y_max = y_max.max(y);
    }
    if x_min == f64::MAX {
        x_min = 0.0;
    }
    let y_range = 0.0..(y_max * 1.1).max(1e-9);
    let mut builder = ChartBuilder::on(&root);
    builder
        .caption(&plot.title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(64);
    let result = if plot.log_x {
        let x_range = (x_min.max(1e-9) * 0.8..x_max.max(1.0) * 1.25).log_scale();
        let mut chart = builder
            .build_cartesian_2d(x_range, y_range)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        chart
            .configure_mesh()
            .x_desc(&plot.x_label)
            .y_desc(&plot.y_label)
            .draw()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        for (index, series) in plot.series.iter().enumerate() {
            let color = COLORS[index % COLORS.len()];
            chart
                .draw_series(LineSeries::new(
                    series.points.iter().copied(),
                    color.stroke_width(2),
                ))
                .map_err(|e| anyhow::anyhow!("{e}"))?
                .label(&series.name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
            chart
                .draw_series(
                    series
                        .points
                        .iter()
                        .map(|&point| Circle::new(point, 3, color.filled())),
                )
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperLeft)
            .draw()
    } else {
        let x_range = x_min.min(0.0)..(x_max * 1.05).max(1e-9);
        let mut chart = builder
            .build_cartesian_2d(x_range, y_range)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        chart
            .configure_mesh()
            .x_desc(&plot.x_label)
            .y_desc(&plot.y_label)
            .draw()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        for (index, series) in plot.series.iter().enumerate() {
            let color = COLORS[index % COLORS.len()];
            chart
                .draw_series(LineSeries::new(
                    series.points.iter().copied(),
                    color.stroke_width(2),
                ))
                .map_err(|e| anyhow::anyhow!("{e}"))?
                .label(&series.name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::LowerRight)
            .draw()
    };
    result.map_err(|e| anyhow::anyhow!("{e}"))?;
    root.present().map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}

fn number(value: f64) -> String {
    if !value.is_finite() {
        "–".to_owned()
    } else if value.abs() >= 100.0 {
        format!("{value:.0}")
    } else if value.abs() >= 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.2}")
    }
}

/// The Markdown report.
pub fn markdown(results: &Results) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Twofold benchmark{}\n",
        if results.quick { " (quick)" } else { "" }
    );
    let _ = writeln!(out, "- commit: `{}`", results.commit);
    let _ = writeln!(out, "- machine: {}", results.machine);
    let _ = writeln!(out, "- settings: `{}`\n", results.settings);
    let _ = writeln!(
        out,
        "Each limit is measured in the same run as its operation, next to it in time, because the \
         machine is shared and its speed drifts: compare ratios, not absolute numbers.\n"
    );
    let _ = writeln!(
        out,
        "| measure | value | unit | limit | ratio | target | pass |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|");
    for measure in &results.measures {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} |",
            measure.name,
            number(measure.value),
            measure.unit,
            measure.limit.map_or_else(String::new, number),
            measure
                .ratio
                .map_or_else(String::new, |ratio| format!("{ratio:.2}")),
            measure.target,
            match measure.pass {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "",
            }
        );
    }
    let _ = writeln!(out, "\n## Methods\n");
    for measure in &results.measures {
        let _ = writeln!(out, "- **{}**: {}", measure.name, measure.method);
    }
    let _ = writeln!(out, "\n## Plots\n");
    for plot in &results.plots {
        let _ = writeln!(
            out,
            "### {}\n\n![{}]({})\n",
            plot.title, plot.title, plot.file
        );
    }
    if !results.notes.is_empty() {
        let _ = writeln!(out, "## Notes\n");
        for note in &results.notes {
            let _ = writeln!(out, "- {note}");
        }
    }
    out
}
