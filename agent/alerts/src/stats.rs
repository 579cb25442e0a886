//! Robust statistics for the baselines: median and MAD (median absolute deviation).
//!
//! MAD is scaled by 1.4826 so that on normal data it estimates the standard deviation; a value
//! is unusual when it lies more than k scaled MADs above the median. The median and MAD
//! ignore the few outliers an attacker or a busy day puts in the history.

/// Scales a MAD to a standard deviation for normally distributed data.
pub const MAD_SCALE: f64 = 1.4826;

/// Median of the values (they are sorted in place); `None` when empty.
pub fn median(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    Some(if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    })
}

/// Median and scaled MAD of the values.
pub fn median_mad(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    let mut v: Vec<f64> = values.collect();
    let m = median(&mut v)?;
    let mut dev: Vec<f64> = v.iter().map(|x| (x - m).abs()).collect();
    let mad = median(&mut dev)?;
    Some((m, mad * MAD_SCALE))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_mad() {
        assert_eq!(
            median_mad([5.0, 7.0, 6.0, 100.0, 6.0].into_iter()),
            Some((6.0, MAD_SCALE))
        );
        assert_eq!(median_mad(std::iter::empty()), None);
        assert_eq!(median(&mut [1.0, 3.0]), Some(2.0));
    }
}
