//! The status page's 24-hour chart: requests and errors per hour as bar geometry for an inline SVG (no
//! script, no library: the page works offline and under a CSP that allows no script at all).

use serde::Serialize;

use crate::metrics::HourCount;

/// Width of one hour's bar slot and the plot's height, in SVG units.
const SLOT: u32 = 12;
const PLOT_HEIGHT: u32 = 60;

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Chart {
    pub width: u32,
    pub height: u32,
    /// Height of the bar area (labels go below it).
    pub plot_height: u32,
    pub bars: Vec<Bar>,
    /// The busiest hour's requests (the top of the scale).
    pub max: u64,
    pub requests: u64,
    pub errors: u64,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Bar {
    pub x: u32,
    /// Top of the request bar and its height.
    pub y: u32,
    pub h: u32,
    /// Top of the error bar (drawn over the request bar, from the baseline) and its height.
    pub ey: u32,
    pub eh: u32,
    /// The tooltip: `14:00 UTC: 12 requests, 2 errors`.
    pub label: String,
}

/// Bars for `hours` (oldest first), scaled to the busiest hour. A non-zero count is never drawn less than
/// one unit high, so a single error in a busy hour still shows.
pub fn chart(hours: &[HourCount]) -> Chart {
    let max = hours.iter().map(|h| h.requests).max().unwrap_or(0);
    let scale = |n: u64| -> u32 {
        if n == 0 || max == 0 {
            0
        } else {
            ((n as f64 / max as f64 * f64::from(PLOT_HEIGHT)).round() as u32).clamp(1, PLOT_HEIGHT)
        }
    };
    let bars = hours
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let (height, error_height) = (scale(h.requests), scale(h.errors.min(h.requests)));
            Bar {
                x: i as u32 * SLOT + 1,
                y: PLOT_HEIGHT - height,
                h: height,
                ey: PLOT_HEIGHT - error_height,
                eh: error_height,
                label: format!("{:02}:00 UTC: {} requests, {} errors", h.hour % 24, h.requests, h.errors),
            }
        })
        .collect();
    Chart {
        width: hours.len() as u32 * SLOT,
        height: PLOT_HEIGHT + 14,
        plot_height: PLOT_HEIGHT,
        bars,
        max,
        requests: hours.iter().map(|h| h.requests).sum(),
        errors: hours.iter().map(|h| h.errors).sum(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_scale_to_the_busiest_hour_and_small_counts_still_show() {
        let hours: Vec<HourCount> = (0..24)
            .map(|i| HourCount { hour: 100 + i, requests: if i == 23 { 600 } else { i }, errors: u64::from(i == 23) })
            .collect();
        let c = chart(&hours);
        assert_eq!(c.bars.len(), 24);
        assert_eq!((c.max, c.requests, c.errors), (600, 600 + (0..23).sum::<u64>(), 1));
        let last = &c.bars[23];
        assert_eq!((last.y, last.h), (0, PLOT_HEIGHT), "the busiest hour is full height");
        assert_eq!(last.eh, 1, "one error in 600 is still visible");
        assert_eq!(c.bars[0].h, 0, "an idle hour draws nothing");
        assert_eq!(c.bars[1].h, 1, "one request in a 600-request day is still visible");
        assert!(c.bars.iter().all(|b| b.y + b.h == PLOT_HEIGHT && b.ey + b.eh == PLOT_HEIGHT));
        assert!(last.label.starts_with("03:00 UTC: 600 requests, 1 errors"), "{}", last.label);
        assert_eq!(chart(&[]).bars.len(), 0);
    }
}
