//! The comparison chart of `fastquery bench`: bytes and latency per token of every scheme, on a
//! logarithmic axis (the schemes differ by orders of magnitude), as SVG.

use std::path::Path;

use fastquery_protocol::harness::SchemeReport;
use plotters::prelude::*;

/// Draws two panels: communication per token (MB) and LAN/WAN latency per token (ms).
pub fn bytes_and_latency(path: &Path, title: &str, reports: &[SchemeReport]) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, (960, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow::anyhow!("chart: {e}"))?;
    let root = root.titled(title, ("sans-serif", 20)).map_err(|e| anyhow::anyhow!("chart: {e}"))?;
    let (left, right) = root.split_horizontally(480);
    let names: Vec<&str> = reports.iter().map(|r| r.scheme.as_str()).collect();
    let comm: Vec<f64> =
        reports.iter().map(|r| (r.upload_bytes_per_token + r.download_bytes_per_token) / 1e6).collect();
    panel(&left, "MB per token (up + down)", &names, &[("total", &comm, BLUE)])?;
    let lan: Vec<f64> = reports.iter().map(|r| r.lan_ms_per_token).collect();
    let wan: Vec<f64> = reports.iter().map(|r| r.wan_ms_per_token).collect();
    panel(&right, "ms per token", &names, &[("LAN", &lan, GREEN), ("WAN", &wan, RED)])?;
    root.present().map_err(|e| anyhow::anyhow!("chart: {e}"))?;
    Ok(())
}

fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    caption: &str,
    names: &[&str],
    series: &[(&str, &[f64], RGBColor)],
) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| anyhow::anyhow!("chart: {e:?}");
    let all = series.iter().flat_map(|s| s.1.iter().copied()).filter(|v| *v > 0.0);
    let (lo, hi) = all.fold((f64::MAX, f64::MIN), |(l, h), v| (l.min(v), h.max(v)));
    let (lo, hi) = if lo <= hi { (lo / 2.0, hi * 2.0) } else { (0.1, 10.0) };
    let k = names.len();
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..k as f64, (lo..hi).log_scale())
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_labels(k)
        .x_label_formatter(&|x| names.get(x.floor() as usize).map_or(String::new(), |s| s.to_string()))
        .disable_x_mesh()
        .draw()
        .map_err(err)?;
    let width = 0.8 / series.len() as f64;
    for (si, (label, values, color)) in series.iter().enumerate() {
        let bars = values.iter().enumerate().map(|(i, &v)| {
            let x0 = i as f64 + 0.1 + si as f64 * width;
            Rectangle::new([(x0, lo), (x0 + width, v.max(lo))], color.filled())
        });
        chart
            .draw_series(bars)
            .map_err(err)?
            .label(*label)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled()));
    }
    chart.configure_series_labels().border_style(BLACK).draw().map_err(err)?;
    Ok(())
}
