//! The chart: for each metric, one bar per path, its median as a ratio to
//! the best peer's (nftables, HAProxy, nginx) for that metric, with the
//! median itself in its unit; a line at 1.0; a legend saying what each
//! path is; the interface settings every figure used. Written by hand: a
//! few rectangles need no plotting library.
//!
//! Looked at in Chromium as a reader would (`lb-peers` writes it beside the
//! markdown): labels never cross the 1.0 line unreadably (a white halo),
//! every figure carries its unit, and nothing needs the markdown to decode.

use std::fmt::Write;

use crate::{
    paths::Path,
    results::{Metric, Results},
};

const BAR: f64 = 14.0;
const GAP: f64 = 20.0;
const LEFT: f64 = 190.0;
const WIDTH: f64 = 860.0;
const SCALE_MAX: f64 = 2.0;
const LINE: f64 = 15.0;
const COLORS: [&str; 8] =
    ["#9e9e9e", "#5c6bc0", "#26a69a", "#8d6e63", "#e53935", "#ad1457", "#fb8c00", "#43a047"];

/// The charted metrics: title and unit (latency has a table of its own in
/// the markdown).
const METRICS: [(Metric, &str, Unit); 7] = [
    (Metric::Tcp1, "TCP, 1 stream", Unit::Gbps),
    (Metric::Tcp4, "TCP, 4 streams", Unit::Gbps),
    (Metric::TcpDown, "TCP download (backend sends), 1 stream", Unit::Gbps),
    (Metric::Udp, "UDP, 64 B datagrams", Unit::Mpps),
    (Metric::Conn, "short connections, 8 clients", Unit::PerSecond("conn/s")),
    (Metric::Conn1k, "short connections, 1000 clients", Unit::PerSecond("conn/s")),
    (Metric::Rr1k, "requests on 1000 connections", Unit::PerSecond("req/s")),
];

#[derive(Clone, Copy)]
enum Unit {
    Gbps,
    Mpps,
    PerSecond(&'static str),
}

impl Unit {
    fn show(self, v: f64) -> String {
        match self {
            Unit::Gbps => format!("{v:.2} Gbit/s"),
            Unit::Mpps => format!("{v:.3} Mpps"),
            Unit::PerSecond(u) if v >= 10_000.0 => format!("{:.1}k {u}", v / 1000.0),
            Unit::PerSecond(u) => format!("{v:.0} {u}"),
        }
    }
}

/// What each path is, for the legend.
fn describe(p: Path) -> &'static str {
    match p {
        Path::Direct => "kernel routing straight to the backend, no balancer (the ceiling)",
        Path::Nft => "nftables DNAT in the balancer namespace",
        Path::Haproxy => "HAProxy 2.6, TCP mode",
        Path::Nginx => "nginx 1.22, stream module",
        Path::LbXdp => "lb, kernel datapath at the XDP hook (native)",
        Path::LbTc => "lb, kernel datapath at the tc hook",
        Path::LbSplice => "lb, userspace proxy (splice)",
        Path::LbDsr => {
            "lb at the tc hook, direct server return (dsr-ipip, lb decap on the backend)"
        }
    }
}

/// Text with a white halo, readable over bars and the 1.0 line.
fn text(s: &mut String, x: f64, y: f64, attrs: &str, body: &str) {
    let _ = writeln!(
        s,
        "<text x=\"{x:.1}\" y=\"{y:.1}\" paint-order=\"stroke\" stroke=\"white\" \
         stroke-width=\"3\" {attrs}>{}</text>",
        escape(body)
    );
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// The SVG document; `settings` are the interfaces' MTU and offloads.
pub fn chart(r: &Results, settings: &[(String, String)]) -> String {
    // Each group: a header line (title, best peer), then one bar per path.
    let group = LINE + Path::ALL.len() as f64 * BAR + GAP;
    let top = 70.0;
    let bottom = top + group * METRICS.len() as f64;
    let legend_top = bottom + 30.0;
    let height = legend_top + LINE * (Path::ALL.len() + settings.len() + 2) as f64 + 10.0;
    let plot = WIDTH - LEFT - 230.0;
    let x = |ratio: f64| LEFT + plot * ratio.min(SCALE_MAX) / SCALE_MAX;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{height:.0}\" \
         font-family=\"sans-serif\" font-size=\"11\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>"
    );
    text(
        &mut s,
        10.0,
        20.0,
        "font-size=\"14\" font-weight=\"bold\"",
        "lb against its peers, one run on one machine: higher is better",
    );
    for (i, line) in [
        "Bar: the path's median as a ratio to the best peer's (nftables DNAT, HAProxy or nginx,",
        &format!(
            "whichever did best in that measurement), drawn up to {SCALE_MAX:.1}x; after it, the median itself."
        ),
    ]
    .iter()
    .enumerate()
    {
        text(&mut s, 10.0, 38.0 + LINE * i as f64, "fill=\"#444\"", line);
    }
    // The 1.0 line first: bars and labels are drawn over it.
    let _ = writeln!(
        s,
        "<line x1=\"{0:.1}\" y1=\"{top}\" x2=\"{0:.1}\" y2=\"{bottom:.1}\" stroke=\"#333\" \
         stroke-dasharray=\"4 3\"/>",
        x(1.0)
    );
    text(&mut s, x(1.0), bottom + 4.0, "text-anchor=\"middle\"", "1.0x = best peer");
    for (gi, (metric, title, unit)) in METRICS.iter().enumerate() {
        let y0 = top + gi as f64 * group;
        let best = r.best_peer(*metric);
        let best_text = best.map_or("best peer: none measured".to_owned(), |(p, v)| {
            format!("best peer: {} {}", p.name(), unit.show(v))
        });
        let _ = writeln!(
            s,
            "<text x=\"10\" y=\"{:.1}\"><tspan font-weight=\"bold\">{}</tspan>\
             <tspan fill=\"#555\">  ({})</tspan></text>",
            y0 + LINE - 3.0,
            escape(title),
            escape(&best_text)
        );
        for (pi, p) in Path::ALL.iter().enumerate() {
            let y = y0 + LINE + pi as f64 * BAR;
            text(&mut s, LEFT - 4.0, y + BAR - 3.0, "text-anchor=\"end\"", p.name());
            let value = r.value(*p, *metric).map(|v| v.median);
            match (value, best) {
                (Some(v), Some((_, b))) if b > 0.0 => {
                    let ratio = v / b;
                    let _ = writeln!(
                        s,
                        "<rect x=\"{LEFT}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{}\"/>",
                        y + 1.0,
                        x(ratio) - LEFT,
                        BAR - 2.0,
                        COLORS[pi % COLORS.len()],
                    );
                    let more = if ratio > SCALE_MAX { " (bar cut)" } else { "" };
                    let label = format!("{ratio:.2}x  {}{more}", unit.show(v));
                    text(&mut s, x(ratio) + 4.0, y + BAR - 3.0, "", &label);
                }
                _ => text(&mut s, LEFT + 4.0, y + BAR - 3.0, "fill=\"#999\"", "not measured"),
            }
        }
    }
    text(&mut s, 10.0, legend_top, "font-weight=\"bold\"", "Paths");
    for (pi, p) in Path::ALL.iter().enumerate() {
        let y = legend_top + LINE * (pi + 1) as f64;
        let _ = writeln!(
            s,
            "<rect x=\"10\" y=\"{:.1}\" width=\"10\" height=\"10\" fill=\"{}\"/>",
            y - 9.0,
            COLORS[pi % COLORS.len()]
        );
        text(&mut s, 26.0, y, "", &format!("{}: {}", p.name(), describe(*p)));
    }
    let settings_top = legend_top + LINE * (Path::ALL.len() + 1) as f64 + 6.0;
    text(&mut s, 10.0, settings_top, "font-weight=\"bold\"", "Interface settings");
    for (i, (iface, what)) in settings.iter().enumerate() {
        let y = settings_top + LINE * (i + 1) as f64;
        text(&mut s, 10.0, y, "fill=\"#444\"", &format!("{iface}: {what}"));
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::measure::Sample;

    /// A chart of made-up figures, with every path and metric but one.
    fn sample_chart() -> String {
        let mut r = Results::default();
        for (pi, p) in Path::ALL.iter().enumerate() {
            for (metric, _, _) in METRICS {
                if *p == Path::Haproxy && metric == Metric::Udp {
                    continue;
                }
                let base = if metric == Metric::Conn { 9000.0 } else { 3.0 };
                let boost = if *p == Path::Direct && metric == Metric::Udp { 10.0 } else { 1.0 };
                let value = (1.0 + pi as f64 * 0.3) * base * boost;
                r.push(*p, metric, Sample { value, ..Sample::default() });
            }
        }
        let settings = vec![("client c0".to_owned(), "mtu 1500, tx-checksum off".to_owned())];
        chart(&r, &settings)
    }

    #[test]
    fn every_bar_says_its_ratio_and_its_figure_with_the_unit() {
        let svg = sample_chart();
        assert!(svg.contains("best peer: nginx 5.70 Gbit/s"), "{svg}");
        assert!(svg.contains("1.00x  5.70 Gbit/s"));
        assert!(svg.contains("k conn/s"));
        assert!(svg.contains("Mpps"));
        assert!(svg.contains("(bar cut)"));
        assert!(svg.contains("not measured"));
    }

    #[test]
    fn the_legend_names_every_path_and_the_settings_are_shown() {
        let svg = sample_chart();
        // For a look in a browser: LB_CHART_SAMPLE=/tmp/chart.svg.
        if let Some(path) = std::env::var_os("LB_CHART_SAMPLE") {
            std::fs::write(path, &svg).expect("write the sample chart");
        }
        for p in Path::ALL {
            assert!(svg.contains(&format!("{}: {}", p.name(), describe(p))), "{}", p.name());
        }
        assert!(svg.contains("client c0: mtu 1500, tx-checksum off"));
    }
}
