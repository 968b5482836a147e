//! The chart: for each metric, one bar per path, its median as a ratio to
//! the best peer's (nftables, HAProxy, nginx) for that metric; a line at
//! 1.0. Written by hand: a few rectangles need no plotting library.

use std::fmt::Write;

use crate::{
    paths::Path,
    results::{Metric, Results},
};

const BAR: f64 = 14.0;
const GAP: f64 = 18.0;
const LEFT: f64 = 190.0;
const WIDTH: f64 = 760.0;
const SCALE_MAX: f64 = 2.0;
const COLORS: [&str; 6] = ["#9e9e9e", "#5c6bc0", "#26a69a", "#8d6e63", "#e53935", "#fb8c00"];

/// The SVG document.
pub fn chart(r: &Results) -> String {
    let metrics: Vec<(Metric, &str)> = vec![
        (Metric::Tcp1, "TCP 1 stream"),
        (Metric::Tcp4, "TCP 4 streams"),
        (Metric::Udp, "UDP 64 B rate"),
        (Metric::Conn, "connections/s"),
    ];
    let group = Path::ALL.len() as f64 * BAR + GAP;
    let height = 60.0 + group * metrics.len() as f64 + 30.0;
    let plot = WIDTH - LEFT - 60.0;
    let x = |ratio: f64| LEFT + plot * ratio.min(SCALE_MAX) / SCALE_MAX;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{height}\" \
         font-family=\"sans-serif\" font-size=\"11\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>"
    );
    let _ = writeln!(
        s,
        "<text x=\"10\" y=\"20\" font-size=\"14\">Median ratio to the best peer (nftables DNAT, \
         HAProxy, nginx) per measurement; bars capped at {SCALE_MAX:.1}x</text>"
    );
    let top = 40.0;
    for (gi, (metric, label)) in metrics.iter().enumerate() {
        let y0 = top + gi as f64 * group;
        let best = r.best_peer(*metric);
        let best_name = best.map_or("none", |b| b.0.name());
        let _ = writeln!(
            s,
            "<text x=\"10\" y=\"{:.1}\" font-weight=\"bold\">{label}</text>\
             <text x=\"10\" y=\"{:.1}\" fill=\"#555\">best peer: {best_name}</text>",
            y0 + BAR,
            y0 + 2.0 * BAR
        );
        for (pi, p) in Path::ALL.iter().enumerate() {
            let y = y0 + pi as f64 * BAR;
            let ratio = match (r.value(*p, *metric), best) {
                (Some(v), Some((_, b))) if b > 0.0 => Some(v.median / b),
                _ => None,
            };
            let _ = writeln!(
                s,
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
                LEFT - 4.0,
                y + BAR - 3.0,
                p.name()
            );
            if let Some(ratio) = ratio {
                let _ = writeln!(
                    s,
                    "<rect x=\"{LEFT}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{}\"/>\
                     <text x=\"{:.1}\" y=\"{:.1}\">{ratio:.2}x</text>",
                    y + 1.0,
                    x(ratio) - LEFT,
                    BAR - 2.0,
                    COLORS[pi % COLORS.len()],
                    x(ratio) + 4.0,
                    y + BAR - 3.0
                );
            } else {
                let _ = writeln!(
                    s,
                    "<text x=\"{:.1}\" y=\"{:.1}\" fill=\"#999\">n/a</text>",
                    LEFT + 4.0,
                    y + BAR - 3.0
                );
            }
        }
    }
    let bottom = top + group * metrics.len() as f64;
    let _ = writeln!(
        s,
        "<line x1=\"{0:.1}\" y1=\"{top}\" x2=\"{0:.1}\" y2=\"{bottom:.1}\" stroke=\"black\" \
         stroke-dasharray=\"4 3\"/><text x=\"{0:.1}\" y=\"{1:.1}\" text-anchor=\"middle\">1.0x = best peer</text>",
        x(1.0),
        bottom + 14.0
    );
    s.push_str("</svg>\n");
    s
}
