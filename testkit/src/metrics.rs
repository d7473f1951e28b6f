//! What the sidecar's `/metrics` says, parsed from the Prometheus text format.

use std::collections::HashMap;

/// One scraped sample: metric name, labels, value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: HashMap<String, String>,
    pub value: f64,
}

/// Every sample `admin`'s `/metrics` serves now.
pub async fn scrape(admin: &str) -> Vec<Sample> {
    crate::install_crypto_provider();
    let text = reqwest::get(format!("{admin}/metrics"))
        .await
        .and_then(|response| response.error_for_status())
        .unwrap_or_else(|e| panic!("scrape {admin}/metrics: {e}"))
        .text()
        .await
        .unwrap_or_else(|e| panic!("read {admin}/metrics: {e}"));
    parse(&text)
}

/// The text format's sample lines (comments and blank lines skipped).
pub fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .map(|line| {
            let (series, value) = line
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("a sample line without a value: {line:?}"));
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let labels = labels
                .split(',')
                .filter_map(|pair| pair.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.trim_matches('"').to_owned()))
                .collect();
            Sample {
                name: name.to_owned(),
                labels,
                value: value
                    .parse()
                    .unwrap_or_else(|_| panic!("a sample with a bad value: {line:?}")),
            }
        })
        .collect()
}

/// The value of the series `name` whose labels include `labels`.
pub fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
}

/// One series' value from `admin`'s `/metrics` (0 when absent).
pub async fn metric(admin: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    value(&scrape(admin).await, name, labels).unwrap_or(0.0)
}
